"""Atomic file writing: a file appears complete under its name, or not at all.

Every file mel2mel writes goes through here: :func:`atomic_write` for a file written in one
go, :func:`temp_file` + :func:`publish` for one written in passes (the rendered audio). The
temporary files are hidden beside the target and named ``.<name>.tmp-*``, so a resumed dataset
build can find and remove what an interrupted one left.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

from mel2mel.errors import UserError

TEMP_MARK = ".tmp-"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temp_name(final: str | os.PathLike) -> Path:
    """A unique hidden name beside ``final`` (``.<name>.tmp-<hex>``); no file is created."""
    final = Path(final)
    return final.with_name(f".{final.name}{TEMP_MARK}{uuid.uuid4().hex[:12]}")


def temp_file(final: str | os.PathLike, suffix: str = "") -> Path:
    """Create an empty hidden temporary file beside ``final`` and return its path.

    ``suffix`` keeps libraries that pick a format by extension (numpy, soundfile) happy.
    """
    final = Path(final)
    prefix = f".{final.name}{TEMP_MARK}"
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=prefix, suffix=suffix)
    os.close(fd)
    return Path(tmp)


def publish(tmp: str | os.PathLike, final: str | os.PathLike) -> None:
    """Give ``tmp`` the usual permissions (``0o666`` less the umask, not ``mkstemp``'s
    owner-only ones) and move it to ``final`` in one step."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, final)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], suffix: str = "") -> None:
    """Call ``write(tmp)`` on a hidden temporary file beside ``path``, then move it into place.

    Readers never see a partial file and an interrupted write leaves nothing behind.
    """
    tmp = temp_file(path, suffix)
    try:
        write(str(tmp))
        publish(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through :func:`atomic_write`."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def refuse_overwrite(paths: Iterable[str | os.PathLike], force: bool, hint: str = "-f") -> None:
    """Raise :class:`~mel2mel.errors.UserError` naming the first of ``paths`` that exists,
    unless ``force``: nothing is overwritten silently."""
    if force:
        return
    for path in paths:
        if Path(path).exists():
            raise UserError(f"{path} exists; pass {hint} to overwrite")


def cache_root() -> Path:
    """The folder of mel2mel's caches: ``$MEL2MEL_CACHE``, else ``$XDG_CACHE_HOME/mel2mel``,
    else ``~/.cache/mel2mel`` (ONNX graphs of the served models, SoundFont renders)."""
    if os.environ.get("MEL2MEL_CACHE"):
        return Path(os.environ["MEL2MEL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mel2mel"
