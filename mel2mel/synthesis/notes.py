"""A piece's notes as a piano roll built window by window, and its parts (tracks or channels).

The roll of a two-hour piece (176 x 900,000 float32, 630 MB) is never built whole:
:class:`NoteRoll` makes any run of frames from the note list.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mel2mel import constants as C
from mel2mel.midi import Note, NoteSequence, time_to_frame
from mel2mel.models.beats import BeatNotes


class NoteRoll:
    """The onset/frame roll of a note list, built window by window.

    ``window(lo, hi)`` equals ``mel2mel.midi.piano_roll(notes, num_frames)[:, lo:hi]``.

    Parameters
    ----------
    notes:
        The notes (any order).
    num_frames:
        Frames of the whole roll; notes are cut there.
    log_gain:
        ``float32[num_frames]``: the channel volume/expression gain of these notes
        (:func:`mel2mel.midi.log_gain`), added to their log-mel; ``None`` for none.
    """

    def __init__(
        self, notes: Sequence[Note], num_frames: int, log_gain: np.ndarray | None = None
    ) -> None:
        self.log_gain = None if log_gain is None else torch.from_numpy(log_gain)
        ordered = sorted(notes, key=lambda n: n.start)  # piano_roll's write order
        on = np.array([time_to_frame(n.start) for n in ordered], dtype=np.int64)
        end = np.array([time_to_frame(n.end) for n in ordered], dtype=np.int64)
        keep = on < num_frames
        self.num_frames = num_frames
        self.on = on[keep]
        self.off = np.minimum(np.maximum(end[keep], self.on + 1), num_frames)
        self.key = np.array([n.pitch - C.MIDI_MIN for n in ordered], dtype=np.int64)[keep]
        self.vel = np.array([n.velocity / 127.0 for n in ordered], dtype=np.float32)[keep]
        self.longest = int((self.off - self.on).max()) if len(self.on) else 0

    def window(self, lo: int, hi: int) -> np.ndarray:
        """Frames ``lo .. hi - 1`` of the roll, ``float32[ROLL_CHANNELS x (hi - lo)]``."""
        roll = np.zeros((C.ROLL_CHANNELS, hi - lo), dtype=np.float32)
        first = int(np.searchsorted(self.on, lo - self.longest, side="left"))
        last = int(np.searchsorted(self.on, hi, side="left"))
        sl = slice(first, last)
        cols = (self.on[sl], self.off[sl], self.key[sl], self.vel[sl])
        for on, off, k, v in zip(*(c.tolist() for c in cols), strict=True):
            if off <= lo:
                continue
            roll[k, max(on, lo) - lo : min(off, hi) - lo] = v
            if on >= lo:
                roll[C.N_KEYS + k, on - lo] = v
        return roll

    def notes_near(self, lo: int, hi: int, hold: int) -> BeatNotes:
        """The notes that sound in frames ``lo .. hi - 1`` or end at most ``hold`` frames
        before ``lo`` (their onset, end, key and velocity; :class:`NoteBeats` needs them)."""
        first = int(np.searchsorted(self.on, lo - self.longest - hold, side="left"))
        last = int(np.searchsorted(self.on, hi, side="left"))
        keep = np.arange(first, last)
        keep = keep[self.off[keep] + hold > lo]
        return BeatNotes(self.on[keep], self.off[keep], self.key[keep], self.vel[keep])


def split_parts(seq: NoteSequence) -> tuple[str, dict[int, list[Note]]]:
    """The parts of a piece, ``("track", {track: notes})``, or by channel when every note is in
    one track (type-0 files, or type-1 files with a single note track)."""
    by_track: dict[int, list[Note]] = {}
    for n in seq.notes:
        by_track.setdefault(n.track, []).append(n)
    if len(by_track) > 1:
        return "track", by_track
    by_channel: dict[int, list[Note]] = {}
    for n in seq.notes:
        by_channel.setdefault(n.channel, []).append(n)
    return "channel", by_channel
