"""The one exception type the CLI turns into a one-line message and a non-zero exit."""

from __future__ import annotations


class UserError(Exception):
    """Bad input or environment a user can fix: the message is shown as is, without traceback."""


def require(module: str, extra: str) -> None:
    """Raise UserError naming the pip extra when an optional dependency is missing."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise UserError(
            f"this needs the optional package '{module}': pip install 'mel2mel[{extra}]'"
        )
