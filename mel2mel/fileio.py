"""Atomic file writing: a file appears complete under its name, or not at all."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], suffix: str = "") -> None:
    """Call ``write(tmp)`` on a hidden temporary file beside ``path``, then move it into place.

    Readers never see a partial file and an interrupted write leaves nothing behind. The file
    gets the usual permissions (``0o666`` less the umask), not ``mkstemp``'s owner-only ones.
    ``suffix`` keeps libraries that pick a format by extension (numpy, soundfile) happy.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
