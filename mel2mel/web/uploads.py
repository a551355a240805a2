"""Uploaded MIDI files: checked defensively, kept in memory under server-made ids.

The client never names a file on the server: an upload returns a random id, and renders
refer to that id. Uploads are parsed once (:func:`mel2mel.midi.read_notes` on the bytes),
kept as :class:`~mel2mel.midi.NoteSequence` objects, and dropped after ``upload_ttl_s`` of
disuse or when more than ``max_uploads`` are held (least recently used first).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from mel2mel.errors import one_line
from mel2mel.midi import MidiError, NoteSequence, read_notes
from mel2mel.web.config import WebConfig
from mel2mel.web.errors import ApiError

MIDI_MAGIC = b"MThd"
RIFF_MAGIC = b"RIFF"  # RIFF-wrapped MIDI (.rmi) starts with this


@dataclass
class Upload:
    """One uploaded piece."""

    id: str
    name: str
    seq: NoteSequence
    used: float

    def summary(self, max_notes: int) -> dict[str, Any]:
        """The JSON the page gets: duration, counts and (up to ``max_notes``) notes as columns."""
        notes = self.seq.notes[:max_notes]
        return {
            "id": self.id,
            "name": self.name,
            "duration": round(self.seq.duration, 3),
            "num_notes": len(self.seq.notes),
            "notes_shown": len(notes),
            "dropped_out_of_range": self.seq.dropped_out_of_range,
            "dropped_drums": self.seq.dropped_drums,
            "notes": {
                "pitch": [n.pitch for n in notes],
                "start": [round(n.start, 4) for n in notes],
                "end": [round(n.end, 4) for n in notes],
                "velocity": [n.velocity for n in notes],
            },
        }


def parse_midi(data: bytes, config: WebConfig) -> NoteSequence:
    """Check and read the bytes of an uploaded MIDI file.

    Raises
    ------
    ApiError
        413 when too big; 422 when empty, not MIDI, unreadable, without playable notes (drums
        only, say) or longer than ``config.max_piece_seconds``.
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
    if seq.duration > config.max_piece_seconds:
        raise ApiError(
            422,
            f"piece too long: {seq.duration:.0f} s, the limit is {config.max_piece_seconds:.0f} s",
        )
    return seq


class UploadStore:
    """Thread-safe, bounded, expiring store of parsed uploads."""

    def __init__(self, config: WebConfig) -> None:
        self.config = config
        self._items: OrderedDict[str, Upload] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, name: str, seq: NoteSequence) -> Upload:
        """Keep ``seq`` under a new random id (evicting expired and least recently used)."""
        upload = Upload(secrets.token_urlsafe(12), name[:200], seq, time.monotonic())
        with self._lock:
            self._expire()
            self._items[upload.id] = upload
            while len(self._items) > self.config.max_uploads:
                self._items.popitem(last=False)
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

    def __len__(self) -> int:
        return len(self._items)

    def _expire(self) -> None:
        limit = time.monotonic() - self.config.upload_ttl_s
        for key in [k for k, u in self._items.items() if u.used < limit]:
            del self._items[key]
