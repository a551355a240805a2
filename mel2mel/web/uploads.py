"""Uploaded MIDI files: checked defensively, packed, kept in memory under server-made ids.

The client never names a file on the server: an upload returns a random id, and renders
refer to that id. An upload is parsed once (:func:`parse_piece`, which may run in another
process), and kept as a :class:`PackedPiece`: its notes in one numpy record array of
:data:`NOTE_DTYPE` (22 bytes a note, where ``mel2mel.midi.Note`` objects take about 360).
A render unpacks the notes while it runs and drops them when it ends.

:class:`UploadStore` counts uploads by their notes: it keeps at most ``max_uploads`` uploads
holding at most ``max_held_notes`` notes together, dropping the least recently used (and
those unused for ``upload_ttl_s``) first. An upload that a render is using is *pinned*: it
stays, and counts, until the render ends.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from mel2mel.errors import one_line
from mel2mel.midi import MidiError, Note, NoteSequence, read_notes, time_to_frame
from mel2mel.web.config import PACKED_NOTE_BYTES, WebConfig
from mel2mel.web.errors import ApiError

MIDI_MAGIC = b"MThd"
RIFF_MAGIC = b"RIFF"  # RIFF-wrapped MIDI (.rmi) starts with this
NOTE_DTYPE = np.dtype(
    [("start", "<f8"), ("end", "<f8"), ("track", "<u2"), ("pitch", "u1"),
     ("velocity", "u1"), ("channel", "u1"), ("program", "u1")]
)  # fmt: skip
assert NOTE_DTYPE.itemsize == PACKED_NOTE_BYTES


@dataclass(frozen=True)
class PackedPiece:
    """A :class:`~mel2mel.midi.NoteSequence` in numpy arrays (cheap to keep and to pickle).

    ``notes`` is ``NOTE_DTYPE[N]`` in the sequence's order; ``volume`` maps a channel to
    ``float64[K x 2]`` rows of ``(time, gain)``.
    """

    notes: np.ndarray
    duration: float
    dropped_out_of_range: int = 0
    dropped_drums: int = 0
    channels: frozenset[int] = frozenset()
    volume: dict[int, np.ndarray] = field(default_factory=dict)

    @classmethod
    def pack(cls, seq: NoteSequence) -> PackedPiece:
        """Pack ``seq`` (its notes keep their order and exact values)."""
        notes = np.array(
            [(n.start, n.end, n.track, n.pitch, n.velocity, n.channel, n.program)
             for n in seq.notes], dtype=NOTE_DTYPE,
        )  # fmt: skip
        volume = {ch: np.array(p, dtype=np.float64).reshape(-1, 2) for ch, p in seq.volume.items()}
        return cls(notes, seq.duration, seq.dropped_out_of_range, seq.dropped_drums,
                   frozenset(seq.channels), volume)  # fmt: skip

    def unpack(self) -> NoteSequence:
        """The :class:`~mel2mel.midi.NoteSequence` again, equal to the one packed."""
        cols = [self.notes[k].tolist() for k in ("pitch", "start", "end", "velocity",
                                                  "channel", "track", "program")]  # fmt: skip
        return NoteSequence(
            notes=[Note(*row) for row in zip(*cols, strict=True)],
            duration=self.duration,
            dropped_out_of_range=self.dropped_out_of_range,
            dropped_drums=self.dropped_drums,
            channels=set(self.channels),
            volume={ch: [(t, g) for t, g in pts.tolist()] for ch, pts in self.volume.items()},
        )

    @property
    def num_notes(self) -> int:
        """Notes held."""
        return len(self.notes)

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays."""
        return self.notes.nbytes + sum(v.nbytes for v in self.volume.values())

    def num_frames(self) -> int:
        """Frames needed to hold every note (as :meth:`NoteSequence.num_frames`)."""
        return time_to_frame(self.duration) + 1

    def notes_json(self, max_notes: int) -> bytes:
        """The first ``max_notes`` notes as JSON columns (``pitch``, ``start``, ``end``,
        ``velocity``; times rounded to 0.1 ms), for the page's piano roll."""
        n = self.notes[:max_notes]
        columns = {
            "pitch": n["pitch"].tolist(),
            "start": [round(v, 4) for v in n["start"].tolist()],
            "end": [round(v, 4) for v in n["end"].tolist()],
            "velocity": n["velocity"].tolist(),
        }
        return json.dumps(columns, separators=(",", ":")).encode()


def parse_midi(data: bytes, config: WebConfig) -> NoteSequence:
    """Check and read the bytes of an uploaded MIDI file.

    Raises
    ------
    ApiError
        413 when too big; 422 when empty, not MIDI, unreadable, without playable notes (drums
        only, say), with more than ``config.max_upload_notes`` notes or longer than
        ``config.max_piece_seconds``.
    """
    if len(data) > config.max_upload_bytes:
        raise ApiError(
            413, f"file too big: {len(data)} bytes, the limit is {config.max_upload_bytes}"
        )
    if not data:
        raise ApiError(422, "the file is empty")
    if not (data.startswith(MIDI_MAGIC) or data.startswith(RIFF_MAGIC)):
        raise ApiError(422, "not a MIDI file (it does not start with 'MThd')")
    try:
        seq = read_notes(data, warn=False)
    except MidiError as err:
        raise ApiError(422, one_line(err).removeprefix("<bytes>: ")) from None
    except Exception as err:  # a parser bug must not become a 500 with a traceback
        raise ApiError(422, f"not a readable MIDI file ({type(err).__name__})") from None
    if len(seq.notes) > config.max_upload_notes:
        raise ApiError(
            422, f"too many notes: {len(seq.notes)}, the limit is {config.max_upload_notes}"
        )
    if seq.duration > config.max_piece_seconds:
        raise ApiError(
            422,
            f"piece too long: {seq.duration:.0f} s, the limit is {config.max_piece_seconds:.0f} s",
        )
    return seq


def parse_piece(data: bytes, config: WebConfig) -> tuple[PackedPiece, bytes]:
    """Read an upload (:func:`parse_midi`) and pack it; returns the piece and its notes as
    JSON for the page (:meth:`PackedPiece.notes_json`). Runs in a worker thread or process:
    everything it returns is cheap to pickle."""
    piece = PackedPiece.pack(parse_midi(data, config))
    return piece, piece.notes_json(config.max_notes_shown)


@dataclass
class Upload:
    """One uploaded piece; ``pins`` counts the renders using it."""

    id: str
    name: str
    piece: PackedPiece
    used: float
    pins: int = 0

    def summary(self, notes_json: bytes, max_notes: int) -> bytes:
        """The JSON the page gets: id, name, duration, counts and the notes as columns
        (``notes_json``, from :meth:`PackedPiece.notes_json` with ``max_notes``)."""
        head = {
            "id": self.id,
            "name": self.name,
            "duration": round(self.piece.duration, 3),
            "num_notes": self.piece.num_notes,
            "notes_shown": min(self.piece.num_notes, max_notes),
            "dropped_out_of_range": self.piece.dropped_out_of_range,
            "dropped_drums": self.piece.dropped_drums,
        }
        return json.dumps(head).encode()[:-1] + b', "notes": ' + notes_json + b"}"


class UploadStore:
    """Thread-safe, bounded, expiring store of parsed uploads (see the module docstring)."""

    def __init__(self, config: WebConfig) -> None:
        self.config = config
        self._items: OrderedDict[str, Upload] = OrderedDict()
        self._lock = threading.Lock()
        self.notes = 0  # notes held by the uploads kept

    def add(self, name: str, piece: PackedPiece) -> Upload:
        """Keep ``piece`` under a new random id, dropping expired and least recently used
        uploads to make room; 503 when the uploads that renders are using leave none."""
        if piece.num_notes > self.config.max_held_notes:
            raise ApiError(422, f"too many notes: {piece.num_notes}, the limit is "
                           f"{self.config.max_held_notes}")  # fmt: skip
        upload = Upload(secrets.token_urlsafe(12), name[:200], piece, time.monotonic())
        with self._lock:
            self._expire()
            self._items[upload.id] = upload
            self.notes += piece.num_notes
            for key, old in list(self._items.items()):
                if not self._over():
                    break
                if old.pins == 0 and key != upload.id:
                    self._drop(key)
            if self._over():
                self._drop(upload.id)
                raise ApiError(
                    503, "the server is busy (its uploads are all being rendered); retry shortly",
                    {"Retry-After": "10"},
                )  # fmt: skip
        return upload

    def get(self, upload_id: str) -> Upload:
        """The upload with this id, marked as used; 404 if unknown or expired."""
        with self._lock:
            self._expire()
            upload = self._items.get(upload_id)
            if upload is None:
                raise ApiError(404, f"unknown upload id {upload_id[:40]!r} (expired? upload again)")
            upload.used = time.monotonic()
            self._items.move_to_end(upload_id)
            return upload

    def pin(self, upload: Upload) -> None:
        """Keep ``upload`` while a render uses it (until :meth:`unpin`)."""
        with self._lock:
            upload.pins += 1

    def unpin(self, upload: Upload) -> None:
        """A render of ``upload`` ended."""
        with self._lock:
            upload.pins -= 1

    def __len__(self) -> int:
        return len(self._items)

    def _over(self) -> bool:
        cfg = self.config
        return len(self._items) > cfg.max_uploads or self.notes > cfg.max_held_notes

    def _drop(self, key: str) -> None:
        self.notes -= self._items.pop(key).piece.num_notes

    def _expire(self) -> None:
        limit = time.monotonic() - self.config.upload_ttl_s
        for key in [k for k, u in self._items.items() if u.used < limit and u.pins == 0]:
            self._drop(key)
