"""Shared validators: every number and name that enters from outside, and every output.

Inputs (CLI options, HTTP parameters, files, timbre-library entries) are checked once, at the
edge, by the functions here, so that a value deep inside the package is always finite and in
range. Each raises :class:`~mel2mel.errors.UserError` with one line that names the value and
the range it must lie in:

* times: finite seconds in ``0 .. MAX_SECONDS`` (a day), tails up to ``MAX_TAIL_SECONDS``;
* thread counts: ``1 .. os.cpu_count()`` (torch segfaults when asked for 100,000 threads);
* seeds: ``0 .. MAX_SEED`` (2**32 - 1): the texture noise multiplies the seed before
  seeding a 64-bit generator, so larger seeds would overflow it;
* program numbers: ASCII digits only (``"²".isdigit()`` is true, ``int("²")`` fails);
* timbre coordinates: finite and within the instruments' bounding box widened on every side
  by ``COORD_MARGIN`` (a quarter) of its largest side (far outside it a model makes silence,
  DC or full-scale noise: the shipped model is 30 dB louder at (10, 10), NaN at (40, 40));
* a JSON body: at most ``MAX_JSON_DEPTH`` levels of nesting, checked on the bytes before
  parsing (Python's parser recurses);
* a ``.npy`` file: its header's shape must fit the file before anything is allocated.

Outputs: :class:`AudioCheck` is the last check before audio is written or streamed (NaN or
infinite samples, DC, full-scale noise), and :func:`check_mel` that of a log-mel.
"""

from __future__ import annotations

import math
import os
import urllib.parse
from pathlib import Path
from typing import Any

import numpy as np

from mel2mel import constants as C
from mel2mel.errors import UserError

MAX_SECONDS = 86_400.0  # any time given by a user: a day
MAX_TAIL_SECONDS = 60.0
MAX_SEED = 2**32 - 1
COORD_MARGIN = 0.25  # of the box's largest side, on every side (the timbre map shows 0.25)
MIN_COORD_PAD = 0.5  # at least this much, for boxes of (nearly) one point
MAX_JSON_DEPTH = 32
MEL_MAX = 6.0  # log-mel above this is ~30 dB over full scale (full-scale audio is ~2.5)

# Output checks, on the model's level before any gain (see AudioCheck).
CHECK_MIN_SAMPLES = C.SAMPLE_RATE // 4  # DC and level need a quarter second to mean much
DC_RATIO = 0.5  # |mean| / rms above this: a DC offset, not sound
FULL_SCALE_RMS = 0.5  # rms of a stretch above this (-6 dBFS): full-scale noise


def number(value: Any, name: str, lo: float = -math.inf, hi: float = math.inf) -> float:
    """``value`` as a finite float in ``[lo, hi]``, or a UserError naming ``name``."""
    try:
        x = float(value)
    except (TypeError, ValueError, OverflowError):
        raise UserError(f"{name}: expected a number, got {str(value)[:40]!r}") from None
    if not math.isfinite(x) or not lo <= x <= hi:
        raise UserError(f"{name}: must be a finite number in {lo:g} .. {hi:g}, got {x:g}")
    return x


def integer(value: Any, name: str, lo: int, hi: int) -> int:
    """``value`` (an int or a string of ASCII digits, optionally signed) in ``[lo, hi]``."""
    text = str(value).strip()
    digits = text[1:] if text[:1] in "+-" else text
    if isinstance(value, bool) or not (digits.isascii() and digits.isdigit()):
        raise UserError(f"{name}: expected a whole number, got {text[:40]!r}")
    n = int(text)
    if not lo <= n <= hi:
        raise UserError(f"{name}: must be in {lo} .. {hi}, got {text[:40]}")
    return n


def program_number(text: Any) -> int | None:
    """The int of ``text`` if it is a program number (ASCII digits only), else ``None``."""
    s = str(text).strip()
    return int(s) if s.isascii() and s.isdigit() else None


def max_threads() -> int:
    """The most CPU threads accepted: the machine's cores."""
    return max(1, os.cpu_count() or 1)


def threads(value: Any, name: str = "--threads") -> int:
    """A thread count in ``1 .. max_threads()``."""
    return integer(value, name, 1, max_threads())


def seed(value: Any, name: str = "--seed") -> int:
    """A seed in ``0 .. MAX_SEED``."""
    return integer(value, name, 0, MAX_SEED)


def seconds(value: float, name: str, hi: float = MAX_SECONDS) -> float:
    """A time in ``0 .. hi`` seconds."""
    return number(value, name, 0.0, hi)


def coordinate_box(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(lo, hi)`` per axis of the accepted timbre coordinates for an embedding table
    ``float[N x E]``: its bounding box widened on every side by ``COORD_MARGIN`` of its
    largest side (at least ``MIN_COORD_PAD``)."""
    t = np.asarray(table, dtype=np.float64)
    lo, hi = t.min(axis=0), t.max(axis=0)
    pad = max(COORD_MARGIN * float(np.max(hi - lo)), MIN_COORD_PAD)  # the same on every axis
    return lo - pad, hi + pad


def within_box(vector: Any, box: tuple[np.ndarray, np.ndarray], what: str) -> np.ndarray:
    """``vector`` as float32 if finite and inside ``box`` (:func:`coordinate_box`)."""
    v = np.asarray(vector, dtype=np.float64).reshape(-1)
    lo, hi = box
    if v.shape != lo.shape or not np.all(np.isfinite(v)) or np.any(v < lo) or np.any(v > hi):
        ranges = ", ".join(f"{a:.2f}..{b:.2f}" for a, b in zip(lo, hi, strict=True))
        shown = ", ".join(f"{x:.3g}" for x in v[:4]) + (", ..." if v.size > 4 else "")
        raise UserError(
            f"{what} ({shown}) is outside the timbre space: {len(lo)} finite coordinates "
            f"within ({ranges}), the instruments' box plus a margin"
        )
    return v.astype(np.float32)


def json_depth(data: bytes, limit: int = MAX_JSON_DEPTH) -> None:
    """Refuse JSON bytes nested deeper than ``limit`` (brackets outside strings), unparsed."""
    depth, in_string, escaped = 0, False, False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > limit:
                raise UserError(f"the JSON is nested more than {limit} levels deep")
        elif byte in (0x5D, 0x7D):
            depth -= 1


def content_disposition(filename: str) -> str:
    """An ``attachment`` header value for any file name (RFC 6266 / RFC 5987): an ASCII
    ``filename`` fallback and the UTF-8 name in ``filename*``."""
    ascii_name = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "_"
                         for c in filename)  # fmt: skip
    quoted = urllib.parse.quote(filename, safe="")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quoted}"


def npy_header(path: Path, max_bytes: int | None = None) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a ``.npy`` file, refused before loading unless its data fits in
    the file (and in ``max_bytes``, if given)."""
    from numpy.lib import format as npf

    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            major, _ = npf.read_magic(f)
            read = npf.read_array_header_1_0 if major == 1 else npf.read_array_header_2_0
            shape, _fortran, dtype = read(f)
            offset = f.tell()
    except (ValueError, OSError, EOFError, SyntaxError) as err:
        raise UserError(f"{path.name}: not a .npy array ({err or type(err).__name__})") from None
    if dtype.hasobject:
        raise UserError(f"{path.name}: holds Python objects, not numbers")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > size - offset or (max_bytes is not None and nbytes > max_bytes):
        raise UserError(
            f"{path.name}: its header claims shape {list(shape)} ({nbytes:,} bytes), "
            f"more than the file holds ({size - offset:,} bytes)"
        )
    return tuple(shape), dtype


def check_mel(mel: np.ndarray, what: str = "the mel") -> np.ndarray:
    """``mel`` if finite and not above ``MEL_MAX`` (natural-log magnitude)."""
    if not np.all(np.isfinite(mel)):
        raise UserError(f"{what} contains NaN or infinite values: nothing was written")
    if mel.size and float(np.max(mel)) > MEL_MAX:
        raise UserError(
            f"{what} reaches {float(np.max(mel)):.1f} (log magnitude), far above full scale "
            f"(at most {MEL_MAX:g}): nothing was written"
        )
    return mel


class AudioCheck:
    """The last check of audio before it is written or streamed, chunk by chunk.

    :meth:`check` raises a :class:`UserError` on NaN or infinite samples, on a DC offset
    (``|mean| > DC_RATIO * rms``) or on full-scale noise (``rms > FULL_SCALE_RMS``); the
    last two are judged on stretches of at least ``CHECK_MIN_SAMPLES`` samples (shorter
    chunks are pooled), at the model's level, before any output gain. A peak above full
    scale alone is not an error: the writers lower the level (``mel2mel render``) or clip.
    """

    def __init__(self, what: str = "the output") -> None:
        self.what = what
        self.peak = 0.0
        self._n = 0
        self._sum = 0.0
        self._sq = 0.0

    def check(self, chunk: np.ndarray) -> np.ndarray:
        """Return ``chunk`` unchanged if it is sane (see the class)."""
        x = np.asarray(chunk)
        if not x.size:
            return chunk
        if not np.all(np.isfinite(x)):
            raise UserError(
                f"{self.what} contains NaN or infinite samples (the models failed on this "
                "input or timbre): nothing was written"
            )
        x64 = x.astype(np.float64)
        self.peak = max(self.peak, float(np.max(np.abs(x64))))
        self._n += x.size
        self._sum += float(x64.sum())
        self._sq += float(np.dot(x64, x64))
        if self._n >= CHECK_MIN_SAMPLES:
            self._judge()
        return chunk

    def finish(self) -> None:
        """Judge what is pooled (call after the last chunk)."""
        if self._n:
            self._judge()

    def _judge(self) -> None:
        mean, rms = self._sum / self._n, math.sqrt(self._sq / self._n)
        long_enough = self._n >= CHECK_MIN_SAMPLES  # a short tail may lean to one side
        self._n, self._sum, self._sq = 0, 0.0, 0.0
        if long_enough and rms > 1e-4 and abs(mean) > DC_RATIO * rms:
            raise UserError(
                f"{self.what} is a DC offset (mean {mean:+.3f}, rms {rms:.3f}), not music: "
                "nothing was written"
            )
        if rms > FULL_SCALE_RMS:
            raise UserError(
                f"{self.what} is full-scale noise (rms {rms:.2f}), not music: nothing was written"
            )
