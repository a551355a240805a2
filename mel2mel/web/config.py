"""Limits and settings of the web app, in one frozen dataclass.

Every limit that protects the server from its clients lives here, so ``mel2mel serve`` and
the tests can change them in one place (``create_app(config=WebConfig(...))``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WebConfig:
    """Settings of :func:`mel2mel.web.app.create_app`.

    Attributes
    ----------
    max_upload_bytes:
        Largest MIDI file accepted (413 above it).
    max_piece_seconds:
        Longest piece accepted at upload (422 above it).
    max_render_seconds:
        Longest time range one render may ask for (400 above it).
    max_notes_shown:
        Notes sent to the page for the piano roll (the rest are still rendered).
    upload_ttl_s, max_uploads:
        Uploads expire this long after their last use; at most this many are kept (the least
        recently used goes first).
    max_concurrent_renders:
        Renders that run at once, each in a worker thread.
    max_queued_renders:
        Renders that may wait for a worker; beyond running + queued, requests get 503 with
        ``Retry-After``.
    queue_timeout_s, render_timeout_s:
        A render fails when it waited longer than the first for a worker, or ran longer than
        the second. New renders are refused (503) when the expected wait, from the recent
        real-time factor, exceeds ``queue_timeout_s``.
    job_ttl_s, max_kept_audio_bytes:
        Finished renders (their WAV for download) are kept this long, and only while all kept
        audio fits in the byte budget (oldest dropped first).
    parse_timeout_s, preview_timeout_s:
        Per-request limits for reading a MIDI file and for a mel preview (504 after).
    space_clip_seconds:
        Length of the clip played when a dot of the 100-instrument space is clicked.
    torch_threads:
        Threads torch uses inside the server (``None``: leave torch's setting).
    """

    max_upload_bytes: int = 1 << 20
    max_piece_seconds: float = 3600.0
    max_render_seconds: float = 900.0
    max_notes_shown: int = 50_000
    upload_ttl_s: float = 3600.0
    max_uploads: int = 64
    max_concurrent_renders: int = 2
    max_queued_renders: int = 24
    queue_timeout_s: float = 300.0
    render_timeout_s: float = 600.0
    job_ttl_s: float = 900.0
    max_kept_audio_bytes: int = 256 << 20
    parse_timeout_s: float = 30.0
    preview_timeout_s: float = 20.0
    space_clip_seconds: float = 4.0
    torch_threads: int | None = None
