"""Render MIDI to 16 kHz mono audio with the FluidSynth command-line program.

Rendering runs the Debian ``fluidsynth`` binary directly (no Python bindings), once per
(piece, instrument), with FluidSynth's default synthesis settings (gain 0.2, reverb and chorus
on) unless the caller changes them. Two things are not defaults, and neither changes a sample:

* ``-o synth.dynamic-sample-loading=1`` makes FluidSynth decompress only the samples of the
  presets a file selects instead of the whole SF3 SoundFont (bit-identical output, but about
  5x faster per file for MuseScore General);
* ``-f /dev/null`` keeps a user's ``~/.fluidsynth`` configuration out of the dataset.

An SF3 SoundFont is played from its decompressed SF2 copy (:mod:`mel2mel.data.sf3`, made once
and cached), which spares each run the decoding of its presets' samples (1-3 s) and renders the
same audio.

FluidSynth writes raw little-endian float32 stereo, so nothing saturates on the way; the
stereo pair is averaged to mono here and clipping is detected on that mono signal. The first
64 samples are dropped to undo the fixed one-block delay of FluidSynth's MIDI player (see
:data:`PLAYER_DELAY`), so that a note sounds within half a frame of its roll onset.

Before rendering, :func:`force_program` rewrites the MIDI so that the audio contains exactly
the notes of :func:`mel2mel.midi.read_notes`: every melodic channel plays the target program,
the drum channel is silenced and notes outside A0..C8 are removed.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import mido
import numpy as np

from mel2mel import constants as C
from mel2mel.data.sf3 import playable_soundfont
from mel2mel.errors import UserError
from mel2mel.fileio import temp_name
from mel2mel.midi import ALL_NOTES_OFF_CC, SUSTAIN_CC

DEFAULT_SOUNDFONT = Path("/usr/share/sounds/sf3/MuseScore_General.sf3")
SOUNDFONT_PACKAGE = "musescore-general-soundfont"
FLUIDSYNTH_PACKAGE = "fluidsynth"
DRUM_CHANNEL = 9
BANK_SELECT_CCS = (0, 32)  # bank select MSB and LSB: dropped so every channel uses bank 0
INT16_SCALE = 32767.0
# FluidSynth's file renderer applies MIDI events only at 64-sample block boundaries, one block
# late: an event at sample s sounds from sample (ceil(s / 64) + 1) * 64 on (measured with 2.3).
# The first block is therefore always silent; dropping it makes notes start 0-63 samples
# (under half a frame) after their MIDI time instead of 64-127 samples.
PLAYER_DELAY = 64


@dataclass(frozen=True)
class RenderSettings:
    """How FluidSynth renders; stored with every item so a resumed build cannot mix settings.

    Parameters
    ----------
    soundfont:
        Absolute path of the SoundFont (``.sf2``/``.sf3``).
    gain:
        FluidSynth master gain, ``None`` for FluidSynth's default (0.2).
    reverb, chorus:
        FluidSynth's reverb and chorus effects (both on by default, as in the paper's data).
    """

    soundfont: str
    gain: float | None = None
    reverb: bool = True
    chorus: bool = True

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, the one compared when a build resumes."""
        return asdict(self)

    def fluidsynth_args(self) -> list[str]:
        """The command-line options that differ from FluidSynth's defaults because of us."""
        args = []
        if self.gain is not None:
            args += ["-g", f"{self.gain:g}"]
        if not self.reverb:
            args += ["-R", "0"]
        if not self.chorus:
            args += ["-C", "0"]
        return args


@dataclass(frozen=True)
class ForceStats:
    """What :func:`force_program` removed from a MIDI file."""

    drum_notes: int
    out_of_range_notes: int
    channels: tuple[int, ...]


@functools.cache
def find_fluidsynth() -> str:
    """Path of the ``fluidsynth`` binary, or UserError naming the Debian package to install."""
    path = shutil.which("fluidsynth")
    if path is None:
        raise UserError(
            "the 'fluidsynth' program was not found on PATH: "
            f"install it with 'apt install {FLUIDSYNTH_PACKAGE}'"
        )
    return path


def fluidsynth_version() -> str:
    """FluidSynth's version string (e.g. ``"2.3.1"``), or ``"unknown"``."""
    try:
        out = subprocess.run(
            [find_fluidsynth(), "--version"], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    for line in out.splitlines():
        if line.startswith("FluidSynth runtime version"):
            return line.rsplit(" ", 1)[-1]
    return "unknown"


def check_soundfont(path: str | os.PathLike | None) -> Path:
    """Absolute path of a readable SoundFont, ``None`` meaning MuseScore General.

    Raises UserError (naming the Debian package for the default SoundFont) when it is missing.
    """
    sf = Path(path) if path is not None else DEFAULT_SOUNDFONT
    if not sf.is_file():
        hint = (
            f": install it with 'apt install {SOUNDFONT_PACKAGE}'"
            if path is None or sf == DEFAULT_SOUNDFONT
            else ""
        )
        raise UserError(f"SoundFont not found: {sf}{hint}")
    if not os.access(sf, os.R_OK):
        raise UserError(f"SoundFont is not readable: {sf}")
    return Path(os.path.abspath(sf))


def _is_dropped_note(msg: mido.Message) -> tuple[bool, bool]:
    """(is a drum note, is an out-of-range note) for note messages."""
    if msg.type not in ("note_on", "note_off"):
        return False, False
    if msg.channel == DRUM_CHANNEL:
        return True, False
    return False, not C.MIDI_MIN <= msg.note <= C.MIDI_MAX


def force_program(midi: mido.MidiFile, program: int) -> tuple[mido.MidiFile, ForceStats]:
    """Copy of ``midi`` in which every sounding channel plays General MIDI ``program``.

    Program changes, bank selects (CC0/CC32) and system-exclusive messages (which can switch
    channels to drum kits) are removed; drum-channel notes and notes outside A0..C8 are removed;
    a ``program_change`` at tick 0, at the very start of the first track, is inserted for each
    channel that still has notes. The delta times of removed messages are carried over to the
    next kept message, so every remaining event keeps its absolute tick.

    Parameters
    ----------
    midi:
        Parsed MIDI file (not modified).
    program:
        0-based General MIDI program number.

    Returns
    -------
    The rewritten file and what was removed.
    """
    if not 0 <= program <= 127:
        raise ValueError(f"program must be in 0..127, got {program}")
    out = mido.MidiFile(type=midi.type, ticks_per_beat=midi.ticks_per_beat, charset=midi.charset)
    drums = out_of_range = 0
    channels: set[int] = set()
    for track in midi.tracks:
        new = mido.MidiTrack()
        carry = 0
        for msg in track:
            carry += msg.time
            drum, outside = _is_dropped_note(msg)
            if drum or outside:
                if msg.type == "note_on" and msg.velocity > 0:
                    drums += drum
                    out_of_range += outside
                continue
            if msg.type in ("program_change", "sysex") or (
                msg.type == "control_change" and msg.control in BANK_SELECT_CCS
            ):
                continue
            if msg.type in ("note_on", "note_off"):
                channels.add(msg.channel)
            # skip_checks: the values come from a parsed file; only the time changes.
            new.append(
                msg.copy(time=carry) if msg.is_meta else msg.copy(skip_checks=True, time=carry)
            )
            carry = 0
        if carry:  # trailing messages were dropped and there was no end_of_track to carry it
            new.append(mido.MetaMessage("end_of_track", time=carry))
        out.tracks.append(new)
    if not out.tracks:
        out.tracks.append(mido.MidiTrack())
    out.tracks[0][0:0] = [
        mido.Message("program_change", channel=ch, program=program) for ch in sorted(channels)
    ]
    _release_at_end(out, sorted(channels))
    return out, ForceStats(drums, out_of_range, tuple(sorted(channels)))


def _release_at_end(midi: mido.MidiFile, channels: list[int]) -> None:
    """Lift the sustain pedal and send "all notes off" on ``channels`` at the file's last tick.

    FluidSynth's file renderer runs until every voice has ended, so a note left on (or held by
    the pedal) with a looped sample would render forever; :func:`mel2mel.midi.read_notes` ends
    such notes at the end of the file, and so does this.
    """
    if not channels:
        return
    ends = [sum(m.time for m in t) for t in midi.tracks]
    track = midi.tracks[int(np.argmax(ends))]
    delta = 0
    if track and track[-1].type == "end_of_track":
        delta = track.pop().time
    for i, ch in enumerate(channels):
        for control in (SUSTAIN_CC, ALL_NOTES_OFF_CC):
            msg = mido.Message("control_change", channel=ch, control=control, value=0)
            track.append(msg.copy(time=delta if i == 0 and control == SUSTAIN_CC else 0))
    track.append(mido.MetaMessage("end_of_track", time=0))


def run_fluidsynth(
    midi_path: str | os.PathLike,
    out_raw: str | os.PathLike,
    settings: RenderSettings,
    *,
    timeout: float | None = None,
) -> None:
    """Render ``midi_path`` to raw little-endian float32 stereo at 16 kHz in ``out_raw``.

    An SF3 SoundFont is read from its decompressed copy (:func:`playable_soundfont`). Raises
    RuntimeError with FluidSynth's own message if it fails or writes nothing.
    """
    cmd = [
        find_fluidsynth(), "-n", "-i", "-q", "-f", os.devnull,
        "-r", str(C.SAMPLE_RATE),
        "-o", "synth.dynamic-sample-loading=1",
        "-T", "raw", "-O", "float", "-E", "little",
        *settings.fluidsynth_args(),
        "-F", str(out_raw), playable_soundfont(settings.soundfont), str(midi_path),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0 or not Path(out_raw).is_file():
        msg = (proc.stderr or proc.stdout).strip().splitlines()
        detail = msg[-1] if msg else f"exit status {proc.returncode}"
        raise RuntimeError(f"fluidsynth failed on {midi_path}: {detail}")


def read_raw_stereo(path: str | os.PathLike) -> np.ndarray:
    """FluidSynth's raw float32 stereo output as ``float32[N x 2]``."""
    data = np.fromfile(path, dtype="<f4")
    return data[: len(data) // 2 * 2].reshape(-1, 2).astype(np.float32, copy=False)


def render_midi(
    midi: mido.MidiFile,
    settings: RenderSettings,
    *,
    work_dir: str | os.PathLike,
    name: str = "render",
) -> np.ndarray:
    """Render a (program-forced) MIDI file to mono audio.

    Parameters
    ----------
    midi:
        The file to render as is; see :func:`force_program`.
    settings:
        FluidSynth settings.
    work_dir:
        Folder for the two temporary files (removed before returning).
    name:
        Base of the temporary file names.

    Returns
    -------
    float32[N]: the mean of FluidSynth's two channels, not normalized or clipped, without
    the first :data:`PLAYER_DELAY` (always silent) samples.
    """
    work = Path(work_dir)
    mid_tmp = temp_name(work / f"{name}.mid")
    raw_tmp = temp_name(work / f"{name}.raw")
    try:
        midi.save(str(mid_tmp))
        run_fluidsynth(mid_tmp, raw_tmp, settings)
        stereo = read_raw_stereo(raw_tmp)
    finally:
        mid_tmp.unlink(missing_ok=True)
        raw_tmp.unlink(missing_ok=True)
    mono = np.float32(0.5) * (stereo[:, 0] + stereo[:, 1])  # 10x faster than .mean(axis=1)
    return mono[PLAYER_DELAY:]


def clip_stats(audio: np.ndarray) -> tuple[float, int]:
    """Peak ``max |x|`` and the number of samples at or beyond full scale (``|x| >= 1``)."""
    if audio.size == 0:
        return 0.0, 0
    mag = np.abs(audio)
    return float(mag.max()), int(np.count_nonzero(mag >= 1.0))


def to_int16(audio: np.ndarray) -> np.ndarray:
    """``float[N]`` in [-1, 1] -> ``int16[N]`` as ``round(clip(x) * 32767)``."""
    return np.round(np.clip(audio, -1.0, 1.0) * INT16_SCALE).astype(np.int16)


def from_int16(audio: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_int16` (up to rounding): ``int16[N]`` -> ``float32[N]``."""
    return np.asarray(audio, dtype=np.float32) / np.float32(INT16_SCALE)
