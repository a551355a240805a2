"""Limits and settings of the web app, in one frozen dataclass.

Every limit that protects the server from its clients lives here, so ``mel2mel serve`` and
the tests can change them in one place (``create_app(config=WebConfig(...))``).

Memory is bounded by these limits: :meth:`WebConfig.memory_budget` adds up the most each part
of the server and its parse workers can hold, and :meth:`WebConfig.check_memory` refuses
limits whose sum exceeds ``max_rss_bytes`` (1.5 GB by default; ``mel2mel serve`` checks it
before it loads anything).
"""

from __future__ import annotations

from dataclasses import dataclass

MB = 1 << 20
#: Bytes of one note held by an upload (a packed record: pitch, velocity, channel, program,
#: track, start and end; ``mel2mel.web.uploads.NOTE_DTYPE``).
PACKED_NOTE_BYTES = 22
#: Bytes of one note while a render reads it (a ``mel2mel.midi.Note`` object and the render's
#: roll arrays; measured 360 B on CPython 3.11, rounded up).
NOTE_OBJECT_BYTES = 400
#: Bytes of audio a render keeps per second (16-bit mono PCM at 16 kHz).
PCM_BYTES_PER_SECOND = 32_000
#: Peak bytes of Python objects per byte of MIDI while ``mido`` reads a file (measured 195 for
#: a 1 MB file of 170,000 notes).
PARSE_BYTES_PER_BYTE = 200
#: Resident size of an idle parse worker (Python, numpy, mido; measured 55-60 MB).
PARSE_WORKER_BYTES = 64 * MB


@dataclass(frozen=True)
class WebConfig:
    """Settings of :func:`mel2mel.web.app.create_app` and :func:`mel2mel.web.server.run`.

    Attributes
    ----------
    max_upload_bytes:
        Largest MIDI file accepted (413 above it).
    max_upload_notes:
        Most notes one file may hold (422 above it); a 1 MB file holds at most about 175,000.
    max_piece_seconds:
        Longest piece accepted at upload (422 above it).
    max_render_seconds:
        Longest time range one render may ask for (400 above it).
    max_notes_shown:
        Notes sent to the page for the piano roll (the rest are still rendered).
    upload_ttl_s, max_uploads, max_held_notes:
        Uploads expire this long after their last use; at most ``max_uploads`` are kept,
        holding at most ``max_held_notes`` notes together (the least recently used go first;
        an upload a render is using stays until the render ends).
    max_receiving_uploads:
        Upload bodies being received at once (503 above it): each may hold up to
        ``max_upload_bytes``.
    quick_parse_bytes:
        Files up to this size are read at once in a thread of the server; larger ones in the
        parse pool, so a small file never waits behind large ones.
    parse_workers, max_queued_parses:
        Processes of the parse pool, and files that may wait for one (503 with
        ``Retry-After`` beyond). Parsing a 1 MB file takes seconds of pure-Python work and
        about 200 MB at its peak; in separate processes it neither holds the server's GIL
        nor grows the server's memory. One worker by default: with 1 MB files a second one
        would not fit the 1.5 GB ceiling with the other defaults.
    max_concurrent_renders:
        Renders that run at once, each in a worker thread.
    max_queued_renders:
        Renders that may wait for a worker; beyond running + queued, requests get 503 with
        ``Retry-After``.
    queue_timeout_s, render_timeout_s:
        A render fails when it waited longer than the first for a worker, or ran longer than
        the second. New renders are refused (503) when the expected wait, from the recent
        real-time factor, exceeds ``queue_timeout_s``.
    job_ttl_s, max_kept_audio_bytes, max_kept_jobs:
        Finished renders (their WAV for download) are kept this long, and only while all kept
        audio fits in the byte budget and they are at most ``max_kept_jobs`` (oldest dropped
        first).
    parse_timeout_s, preview_timeout_s:
        Per-request limits for reading a MIDI file and for a mel preview (504 after).
    preview_workers, max_queued_previews:
        Threads that compute previews (and WAV downloads), and requests that may wait for
        one (503 beyond).
    max_json_bytes:
        Largest ``POST /api/render`` body (413 above it, before it is parsed).
    header_timeout_s:
        Time a connection has to send a request's headers (the connection is closed after,
        with a 408 when possible); an idle connection between requests is closed after
        ``keep_alive_s``.
    min_body_rate, body_grace_s:
        A request body must arrive at ``min_body_rate`` bytes per second on average, measured
        from ``body_grace_s`` after its headers; slower clients get 408 and are disconnected.
    body_drain_s:
        After a response, time left to a client to finish sending a body the server did not
        read (after a 413, say) before its connection is closed.
    max_connections:
        Open connections (uvicorn's ``limit_concurrency``; 503 beyond).
    shutdown_grace_s:
        On SIGTERM or Ctrl-C, streams are cancelled at once; other requests get this long to
        finish.
    space_clip_seconds:
        Length of the clip played when a dot of the 100-instrument space is clicked.
    torch_threads:
        Threads torch uses inside the server (``None``: leave torch's setting).
    base_rss_bytes, max_rss_bytes:
        Resident memory of the server before any request (torch, the models, the timbre map;
        measured 729 MB with the shipped models once the map, a preview and a render of the
        100-instrument space are done), and the ceiling that the limits above must keep the
        server and its parse workers under (:meth:`memory_budget`).
    """

    max_upload_bytes: int = 1 * MB
    max_upload_notes: int = 200_000
    max_piece_seconds: float = 3600.0
    max_render_seconds: float = 900.0
    max_notes_shown: int = 50_000
    upload_ttl_s: float = 3600.0
    max_uploads: int = 64
    max_held_notes: int = 4_000_000
    max_receiving_uploads: int = 32
    quick_parse_bytes: int = 64 * 1024
    parse_workers: int = 1
    max_queued_parses: int = 8
    max_concurrent_renders: int = 2
    max_queued_renders: int = 24
    queue_timeout_s: float = 300.0
    render_timeout_s: float = 600.0
    job_ttl_s: float = 900.0
    max_kept_audio_bytes: int = 128 * MB
    max_kept_jobs: int = 1024
    parse_timeout_s: float = 30.0
    preview_timeout_s: float = 20.0
    preview_workers: int = 2
    max_queued_previews: int = 16
    max_json_bytes: int = 16 * 1024
    header_timeout_s: float = 10.0
    keep_alive_s: int = 5
    min_body_rate: float = 8 * 1024
    body_grace_s: float = 10.0
    body_drain_s: float = 2.0
    max_connections: int = 256
    shutdown_grace_s: float = 0.5
    space_clip_seconds: float = 4.0
    torch_threads: int | None = None
    base_rss_bytes: int = 768 * MB
    max_rss_bytes: int = 1536 * MB

    def page_limits(self) -> dict[str, float]:
        """The limits the page is told (``/api/info`` and the static site's ``info.json``), so
        that it refuses what the server would, with the server's words."""
        return {
            "max_upload_bytes": self.max_upload_bytes,
            "max_piece_seconds": self.max_piece_seconds,
            "max_render_seconds": self.max_render_seconds,
        }

    def memory_budget(self) -> dict[str, int]:
        """The most memory, in bytes, each part of the server and its parse workers may hold
        under these limits.

        ``base`` is the measured start-up size; the rest follow from the limits: packed notes
        of the kept uploads, upload bodies being received or waiting to be parsed, the quick
        parse in the server and the parse workers (:data:`PARSE_BYTES_PER_BYTE` of MIDI at
        their peak), the notes and audio of running renders, and kept audio for downloads.
        """
        running = self.max_concurrent_renders
        parse_peak = PARSE_BYTES_PER_BYTE * self.max_upload_bytes
        bodies = self.max_receiving_uploads + self.parse_workers + self.max_queued_parses
        return {
            "base": self.base_rss_bytes,
            "uploads": self.max_held_notes * PACKED_NOTE_BYTES,
            "upload bodies": bodies * self.max_upload_bytes,
            "quick parse": PARSE_BYTES_PER_BYTE * self.quick_parse_bytes,
            "parse workers": self.parse_workers * (PARSE_WORKER_BYTES + parse_peak),
            "render notes": running * self.max_upload_notes * NOTE_OBJECT_BYTES,
            "render audio": running * round(self.max_render_seconds * PCM_BYTES_PER_SECOND),
            "kept audio": self.max_kept_audio_bytes,
        }

    def check_memory(self) -> None:
        """Raise ValueError (one line) when :meth:`memory_budget` exceeds ``max_rss_bytes``."""
        budget = self.memory_budget()
        total = sum(budget.values())
        if total > self.max_rss_bytes:
            parts = ", ".join(f"{k} {v / MB:.0f}" for k, v in budget.items())
            raise ValueError(
                f"these limits may need {total / MB:.0f} MB ({parts}), over the memory ceiling "
                f"of {self.max_rss_bytes / MB:.0f} MB: lower them or raise the ceiling"
            )
