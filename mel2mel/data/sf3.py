"""Decompress an SF3 SoundFont to SF2 once, so that each FluidSynth run starts in a blink.

MuseScore General (the default SoundFont) is an SF3 file: its samples are Ogg Vorbis streams,
and every FluidSynth process decodes those of the presets it plays before the first note
(1-3 CPU-seconds per run even with dynamic sample loading, against about 0.1 s for the whole
15-s render), so a dataset of short items spends most of its time decoding the same samples
again. :func:`playable_soundfont` decodes every sample once, with the same library call as
FluidSynth (``sf_readf_short`` of the system's libsndfile, the one the ``fluidsynth`` binary
links), writes the 16-bit samples into an SF2 file in a cache folder, and returns its path;
FluidSynth then only reads the samples it needs.

What FluidSynth plays from the SF2 is what it plays from the SF3 (the same PCM, sample headers
with the loop points moved from SF3's per-sample to SF2's absolute offsets, the same preset and
instrument data), except where a sample runs out while a note still plays it: FluidSynth then
reads on into the 46 zero words an SF2 puts after each sample (a few millionths of full scale
for MuseScore General's Pizzicato Strings; docs/DATA.md). ``tests/data/test_sf3.py`` compares
renders.

The conversion runs in a fresh Python process: in one that has loaded torch, the CPU's
flush-to-zero modes can be on, and then a few samples (0.01 % of MuseScore General's) decode
one step away from what the ``fluidsynth`` program decodes.

The cache file is named after the SF3's size, modification time and a hash of its first and
last MiB (``<stem>-<key>.sf2`` in :func:`cache_dir`, ``~/.cache/mel2mel/soundfonts``),
written atomically; ``MEL2MEL_SF3_CACHE=0`` turns the cache off. When it cannot be written (no
space, read-only home) FluidSynth simply reads the SF3 as before.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import hashlib
import logging
import os
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from mel2mel.fileio import publish, temp_file

log = logging.getLogger(__name__)

SHDR_SIZE = 46  # one sample header: name[20], 5 x uint32, 2 x int8/uint8, 2 x uint16
SHDR = struct.Struct("<20s5I2B2H")
VORBIS = 0x10  # sample type bit of an Ogg Vorbis sample (the SF3 extension)
PAD_WORDS = 46  # zero sample words the SF2 format puts after each sample
CACHE_SWITCH = "MEL2MEL_SF3_CACHE"  # "0" turns the decompressed copy off
FORMAT_VERSION = 2  # bump when the converter's output changes, to rebuild old caches


class _SfInfo(ctypes.Structure):
    _fields_ = [
        ("frames", ctypes.c_int64),
        ("samplerate", ctypes.c_int),
        ("channels", ctypes.c_int),
        ("format", ctypes.c_int),
        ("sections", ctypes.c_int),
        ("seekable", ctypes.c_int),
    ]


@functools.cache
def _libsndfile() -> ctypes.CDLL | None:
    """The system's libsndfile (what FluidSynth decodes SF3 samples with), or None."""
    name = ctypes.util.find_library("sndfile")
    if name is None:
        return None
    lib = ctypes.CDLL(name)
    lib.sf_open_fd.restype = ctypes.c_void_p
    lib.sf_open_fd.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_SfInfo), ctypes.c_int]
    lib.sf_readf_short.restype = ctypes.c_int64
    lib.sf_readf_short.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    lib.sf_close.argtypes = [ctypes.c_void_p]
    return lib


def decode_vorbis(data: bytes) -> np.ndarray:
    """One SF3 sample's Ogg Vorbis stream -> ``int16[N]``, decoded as FluidSynth decodes it."""
    lib = _libsndfile()
    if lib is None:
        raise RuntimeError("libsndfile was not found (it comes with the fluidsynth package)")
    with tempfile.TemporaryFile() as f:
        f.write(data)
        f.flush()
        f.seek(0)
        return _read_shorts(lib, f.fileno())


def _read_shorts(lib: ctypes.CDLL, fd: int) -> np.ndarray:
    info = _SfInfo()
    handle = lib.sf_open_fd(fd, 0x10, ctypes.byref(info), 0)  # SFM_READ, keep the fd
    if not handle:
        raise RuntimeError("libsndfile could not open an Ogg Vorbis sample")
    try:
        if info.frames <= 0 or info.channels <= 0:
            return np.zeros(0, np.int16)
        if info.channels != 1:
            raise RuntimeError(f"SF3 sample with {info.channels} channels (mono expected)")
        out = np.zeros(info.frames, np.int16)
        got = lib.sf_readf_short(handle, out.ctypes.data, info.frames)
        if got < info.frames:
            raise RuntimeError(f"Ogg Vorbis sample decoded {got} of {info.frames} frames")
        return out
    finally:
        lib.sf_close(handle)


def _chunks(buf: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(id, data start, data end) of the RIFF chunks in ``buf[start:end]``."""
    pos = start
    while pos + 8 <= end:
        cid, size = buf[pos : pos + 4], struct.unpack_from("<I", buf, pos + 4)[0]
        yield cid, pos + 8, pos + 8 + size
        pos += 8 + size + (size & 1)


def _lists(buf: bytes) -> dict[bytes, tuple[int, int]]:
    """The top-level ``LIST`` chunks of an sfbk file by type: INFO, sdta, pdta."""
    if buf[:4] != b"RIFF" or buf[8:12] != b"sfbk":
        raise ValueError("not a SoundFont (RIFF sfbk) file")
    end = min(len(buf), 8 + struct.unpack_from("<I", buf, 4)[0])
    return {buf[s : s + 4]: (s, e) for cid, s, e in _chunks(buf, 12, end) if cid == b"LIST"}


def is_sf3(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a SoundFont whose ``ifil`` version is 3 (compressed samples)."""
    with open(path, "rb") as f:
        head = f.read(4096)
    if head[:4] != b"RIFF" or head[8:12] != b"sfbk":
        return False
    i = head.find(b"ifil")
    return i >= 0 and struct.unpack_from("<H", head, i + 8)[0] == 3


def _chunk(cid: bytes, data: bytes) -> bytes:
    """A RIFF chunk: id, little-endian size, data, a pad byte to an even length."""
    return cid + struct.pack("<I", len(data)) + data + b"\0" * (len(data) & 1)


def convert_sf3(src: str | os.PathLike, dst: str | os.PathLike) -> int:
    """Write an SF2 copy of the SF3 file ``src`` to ``dst`` with every sample decoded.

    The INFO list is kept with ``ifil`` set to 2.1; each Vorbis sample's PCM is appended to the
    new ``smpl`` chunk followed by 46 zero words, its header's start and end become word
    offsets and its loop points (relative to the sample in SF3) absolute; uncompressed samples
    are copied with their offsets moved. The preset and instrument chunks are copied unchanged.

    Returns the number of samples decoded.
    """
    buf = Path(src).read_bytes()
    lists = _lists(buf)
    if not {b"INFO", b"sdta", b"pdta"} <= lists.keys():
        raise ValueError(f"{src}: a SoundFont needs INFO, sdta and pdta lists")
    smpl = next((s, e) for cid, s, e in _chunks(buf, *_shift(lists[b"sdta"])) if cid == b"smpl")
    pdta = list(_chunks(buf, *_shift(lists[b"pdta"])))
    shdr = next(buf[s:e] for cid, s, e in pdta if cid == b"shdr")
    info = bytearray(buf[lists[b"INFO"][0] : lists[b"INFO"][1]])
    i = info.find(b"ifil")
    if i < 0:
        raise ValueError(f"{src}: no ifil (version) chunk")
    struct.pack_into("<HH", info, i + 8, 2, 1)

    shdrs, decoded = [], 0
    with open(dst, "wb") as out:
        out.write(b"RIFF\0\0\0\0sfbk")
        out.write(_chunk(b"LIST", bytes(info)))
        sdta_at = out.tell()
        out.write(b"LIST\0\0\0\0sdtasmpl\0\0\0\0")
        words = 0
        for k in range(len(shdr) // SHDR_SIZE):
            name, start, end, loop0, loop1, rate, pitch, corr, link, kind = SHDR.unpack_from(
                shdr, k * SHDR_SIZE
            )
            if k == len(shdr) // SHDR_SIZE - 1:  # the terminal "EOS" record
                shdrs.append(SHDR.pack(name, 0, 0, 0, 0, rate, pitch, corr, link, kind))
                break
            if kind & VORBIS:
                pcm = decode_vorbis(buf[smpl[0] + start : smpl[0] + end])
                loop0, loop1 = loop0 + words, loop1 + words
                kind &= ~VORBIS
                decoded += 1
            else:  # already PCM: word offsets into the old smpl chunk
                pcm = np.frombuffer(buf, "<i2", end - start, smpl[0] + 2 * start)
                loop0, loop1 = loop0 - start + words, loop1 - start + words
            stop = words + len(pcm)
            shdrs.append(SHDR.pack(name, words, stop, loop0, loop1, rate, pitch, corr, link, kind))
            out.write(pcm.astype("<i2").tobytes() + b"\0" * (2 * PAD_WORDS))
            words += len(pcm) + PAD_WORDS
        smpl_end = out.tell()
        out.seek(sdta_at + 4)
        out.write(struct.pack("<I", smpl_end - sdta_at - 8))
        out.seek(sdta_at + 16)
        out.write(struct.pack("<I", smpl_end - sdta_at - 20))
        out.seek(smpl_end)
        kept = b"".join(_chunk(cid, buf[s:e]) for cid, s, e in pdta if cid != b"shdr")
        out.write(_chunk(b"LIST", b"pdta" + kept + _chunk(b"shdr", b"".join(shdrs))))
        size = out.tell()
        out.seek(4)
        out.write(struct.pack("<I", size - 8))
    return decoded


def _shift(span: tuple[int, int]) -> tuple[int, int]:
    """A LIST chunk's sub-chunks start after its 4-byte type."""
    return span[0] + 4, span[1]


def cache_dir() -> Path:
    """Where decompressed SoundFonts are kept (``$MEL2MEL_CACHE/soundfonts``)."""
    root = os.environ.get("MEL2MEL_CACHE") or Path.home() / ".cache" / "mel2mel"
    return Path(root) / "soundfonts"


def _cache_key(path: Path) -> str:
    st = path.stat()
    h = hashlib.sha256(f"{FORMAT_VERSION}:{st.st_size}:{st.st_mtime_ns}".encode())
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
        f.seek(max(0, st.st_size - (1 << 20)))
        h.update(f.read())
    return h.hexdigest()[:16]


@contextlib.contextmanager
def sf3_cache(on: bool) -> Iterator[None]:
    """Turn the decompressed copy on or off (``MEL2MEL_SF3_CACHE``) for this process and the
    processes it starts, within a ``with`` block; used to time and compare the two."""
    old = os.environ.get(CACHE_SWITCH)
    os.environ[CACHE_SWITCH] = "1" if on else "0"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(CACHE_SWITCH, None)
        else:
            os.environ[CACHE_SWITCH] = old


def playable_soundfont(path: str) -> str:
    """The file FluidSynth should load for the SoundFont ``path``.

    An SF2 file is returned as is. For an SF3 file, its decompressed SF2 copy in
    :func:`cache_dir`, made on first use (6 s and 490 MB for MuseScore General), or ``path``
    itself when the cache is turned off (``MEL2MEL_SF3_CACHE=0``) or cannot be made.
    """
    if os.environ.get(CACHE_SWITCH, "1") == "0":
        return path
    return _decompressed(path)


@functools.cache
def _decompressed(path: str) -> str:
    src = Path(path).resolve()
    if not is_sf3(src):
        return path
    out = cache_dir() / f"{src.stem}-{_cache_key(src)}.sf2"
    if out.is_file():
        return str(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_file(out)
        try:
            log.info("decompressing %s to %s (once)", src, out)
            # In a fresh process: a library loaded here (torch) may have set the CPU's
            # flush-to-zero modes, which change a few decoded samples by one step.
            cmd = [sys.executable, "-m", "mel2mel.data.sf3", str(src), str(tmp)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise RuntimeError((proc.stderr.strip().splitlines() or ["failed"])[-1])
            publish(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
    except (OSError, RuntimeError, ValueError) as err:
        log.warning("rendering from %s directly: could not decompress it (%s)", src, err)
        return path
    return str(out)


if __name__ == "__main__":  # python -m mel2mel.data.sf3 SRC.sf3 DST.sf2
    convert_sf3(sys.argv[1], sys.argv[2])
