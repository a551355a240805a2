"""The SoundFont behind an instrument of the timbre space: FluidSynth plays what the model plays.

The paper's demo lets a visitor click a dot of the 100-instrument space and hear a sample of
the SoundFont it stands for. :class:`SoundFontSamples` renders a passage (the fixed reference
passage of :mod:`mel2mel.timbre.map`, or any MIDI such as an upload) with an instrument's
SoundFont and program, exactly as the training data was rendered (the program forced onto
every channel, FluidSynth's default gain, reverb and chorus, 16 kHz mono; see
:mod:`mel2mel.data.fluidsynth`), and keeps the audio in a cache keyed by everything that
changes it: the MIDI bytes, the SoundFont (path, size and modification time), the program, the
render settings and FluidSynth's version.

An instrument's SoundFont comes from the named instrument sets (``space100`` names such as
``"Trumpet (FluidR3)"``), else it is MuseScore General, the SoundFont of the 10-instrument
models (:func:`soundfont_for`).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import tempfile
import threading
from pathlib import Path

import numpy as np

from mel2mel import constants as C
from mel2mel.data.fluidsynth import (
    RenderSettings,
    check_soundfont,
    find_fluidsynth,
    fluidsynth_version,
    force_program,
    render_midi,
)
from mel2mel.data.instrument_sets import INSTRUMENT_SETS, SOUNDFONTS, soundfont_path
from mel2mel.data.perform import PNote, write_midi
from mel2mel.errors import UserError
from mel2mel.fileio import atomic_write, cache_root
from mel2mel.instruments import Instrument
from mel2mel.midi import DEFAULT_VOLUME, VOLUME_CC, NoteSequence
from mel2mel.timbre.map import reference_passage

CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """:func:`mel2mel.fileio.cache_root` / ``soundfont-samples``."""
    return cache_root() / "soundfont-samples"


def soundfont_for(instrument: Instrument) -> Path:
    """The SoundFont an instrument of a model was trained on.

    ``instrument.soundfont`` if set, else the SoundFont its name has in a named instrument set
    (:data:`mel2mel.data.instrument_sets.INSTRUMENT_SETS`), else MuseScore General. Raises
    UserError naming the Debian package when the file is missing.
    """
    if instrument.soundfont is not None:
        return soundfont_path(instrument.soundfont)
    for spec in INSTRUMENT_SETS.values():
        for name, _, key in spec():
            if key is not None and name == instrument.name:
                return soundfont_path(SOUNDFONTS[key].path)
    return check_soundfont(None)


class SoundFontSamples:
    """FluidSynth renders of instruments' SoundFonts, cached on disk (thread-safe).

    Parameters
    ----------
    cache_dir:
        Where rendered audio is kept (``<key>.npy``, float32); :func:`default_cache_dir` if
        ``None``.
    max_seconds:
        Longest audio kept per render (longer input is cut), so an upload cannot fill the disk.
    """

    def __init__(self, cache_dir: str | os.PathLike | None = None, max_seconds: float = 60.0):
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.max_seconds = max_seconds
        self._lock = threading.Lock()
        self._version: str | None = None

    @staticmethod
    def available() -> bool:
        """Whether FluidSynth is installed (the SoundFonts are checked per instrument)."""
        try:
            find_fluidsynth()
        except UserError:
            return False
        return True

    def key(self, instrument: Instrument, midi: bytes) -> str:
        """Cache key of ``midi`` played by ``instrument`` (see the module docstring)."""
        if instrument.program is None:
            raise UserError(f"instrument {instrument.name!r} has no General MIDI program")
        sf = soundfont_for(instrument)
        stat = sf.stat()
        if self._version is None:
            self._version = fluidsynth_version()
        head = {
            "v": CACHE_VERSION,
            "soundfont": [str(sf), stat.st_size, stat.st_mtime_ns],
            "program": instrument.program,
            "settings": RenderSettings(str(sf)).to_dict(),
            "fluidsynth": self._version,
            "max_seconds": self.max_seconds,
        }
        h = hashlib.sha256(json.dumps(head, sort_keys=True).encode())
        h.update(midi)
        return h.hexdigest()[:32]

    def render(self, instrument: Instrument, midi: bytes) -> np.ndarray:
        """``float32[N]`` audio of ``midi`` (Standard MIDI File bytes) played by ``instrument``.

        Rendered once, then read from the cache. Raises UserError when FluidSynth or the
        SoundFont is missing or the MIDI cannot be read.
        """
        import mido

        key = self.key(instrument, midi)
        path = self.cache_dir / f"{key}.npy"
        if path.is_file():
            try:
                return np.load(path)
            except (OSError, ValueError):
                path.unlink(missing_ok=True)  # a damaged cache file is redone
        try:
            parsed = mido.MidiFile(file=io.BytesIO(midi))
        except (OSError, ValueError, EOFError, KeyError, IndexError) as err:
            raise UserError(f"cannot read the MIDI to render: {err}") from err
        forced, _ = force_program(parsed, int(instrument.program))  # type: ignore[arg-type]
        settings = RenderSettings(str(soundfont_for(instrument)))
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.cache_dir) as work:
            audio = render_midi(forced, settings, work_dir=work, name="sample")
        audio = audio[: round(self.max_seconds * C.SAMPLE_RATE)].astype(np.float32)
        with self._lock:
            atomic_write(path, lambda tmp: np.save(tmp, audio), suffix=".npy")
        return audio


def sequence_midi(seq: NoteSequence, start: float = 0.0, seconds: float | None = None) -> bytes:
    """Standard MIDI File bytes of ``seq`` from ``start`` for ``seconds`` (all of it: ``None``).

    Notes keep their sounding ends (pedal included, so no pedal events are written), cut to
    the segment and shifted to start at 0. The channels' volume curves (CC7 x CC11, see
    :mod:`mel2mel.midi`) come back as CC7 changes of the same gain (CC7 = 100 sqrt(gain),
    at most 127), so FluidSynth plays the segment as it played the whole file.
    """
    stop = math.inf if seconds is None else start + seconds
    notes = [
        PNote(n.pitch, max(n.start, start) - start, min(n.end, stop) - start, n.velocity, n.channel)
        for n in seq.notes
        if n.end > start and n.start < stop and n.start >= start - 1e-9
    ]
    controls = []
    for ch, points in seq.volume.items():
        before = [g for t, g in points if t <= start]
        gains = [(0.0, before[-1] if before else 1.0)]
        gains += [(t - start, g) for t, g in points if start < t < stop]
        for t, g in gains:
            controls.append((t, ch, VOLUME_CC, min(127, round(DEFAULT_VOLUME * math.sqrt(g)))))
    return write_midi(notes, controls=controls)


def reference_midi() -> bytes:
    """The reference passage of :func:`mel2mel.timbre.map.reference_passage` as MIDI."""
    return sequence_midi(reference_passage())
