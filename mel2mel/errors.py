"""The one exception type the CLI turns into a one-line message and a non-zero exit."""

from __future__ import annotations

import re


class UserError(Exception):
    """Bad input or environment a user can fix: the message is shown as is, without traceback.

    ``public`` is the message for a client of the web server when the full one holds what
    only the operator should see (server paths, the timbre library's names).
    """

    public: str | None = None

    def public_message(self) -> str:
        """The message for a remote client (``public`` if set, else the message)."""
        return self.public if self.public is not None else str(self)


def require(module: str, extra: str) -> None:
    """Raise UserError naming the pip extra when an optional dependency is missing."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise UserError(
            f"this needs the optional package '{module}': pip install 'mel2mel[{extra}]'"
        )


def one_line(err: BaseException) -> str:
    """``err``'s message on one line, never empty, without an empty ``(EOFError: )`` cause
    (some parsers raise exceptions without a message)."""
    text = " ".join(str(err).split())
    text = re.sub(r"\((\w+): \)", r"(\1)", text)
    return text or type(err).__name__
