"""Render jobs: a bounded pool of worker threads, a bounded queue, timeouts, audio in chunks.

``POST /api/render`` creates a :class:`Job` through :meth:`JobManager.submit`, which refuses
(503 with ``Retry-After``) once ``max_concurrent_renders + max_queued_renders`` jobs are
waiting or running, or when the queue would not reach the new job within ``queue_timeout_s``
at the recent real-time factor (so a busy server refuses early instead of failing late).
Jobs run in a :class:`~concurrent.futures.ThreadPoolExecutor` with
``max_concurrent_renders`` threads, so the event loop keeps answering while torch works (it
releases the GIL). Each job appends 16-bit PCM chunks as they are made; readers on the event
loop wait for the next chunk with :meth:`Job.wait`, woken through
``loop.call_soon_threadsafe`` (no thread per waiting client).

A job stops between chunks when cancelled (``DELETE``, a new click, or the last reader of
its stream going away: several pages may read one job), when it waited longer than
``queue_timeout_s`` for a worker, or when it ran longer than ``render_timeout_s``. When the
server stops (:meth:`JobManager.close`), every job ends at once, so its streams end.

A job holds its notes (the :class:`RenderSpec`) only until it ends; then it drops them and
calls its ``release`` (which unpins the upload). Finished jobs keep their audio for the WAV
download for ``job_ttl_s``, while the kept audio fits in ``max_kept_audio_bytes`` and at most
``max_kept_jobs`` are kept (oldest dropped first).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import logging
import math
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from mel2mel import constants as C
from mel2mel.errors import UserError
from mel2mel.web.config import WebConfig
from mel2mel.web.errors import ApiError
from mel2mel.web.segments import RenderSpec, render_segments

RUNNING_STATES = ("queued", "running")
log = logging.getLogger("mel2mel.web")


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc
    except (OSError, AttributeError):
        return None


def trim_heap() -> None:
    """Give the C heap's free pages back to the system (glibc only). A render frees the
    notes it unpacked and its arrays in a worker thread's arena, where glibc would keep the
    pages: the server's RSS would creep up render after render."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


class JobStopped(Exception):
    """Raised inside a render to end it (cancel or timeout); the message says why."""


class Job:
    """One render: its state and the PCM chunks made so far.

    ``release`` is called once when the job ends; ``spec`` is ``None`` from then on.
    """

    def __init__(
        self, spec: RenderSpec, label: str, release: Callable[[], None] | None = None
    ) -> None:
        self.id = secrets.token_urlsafe(12)
        self.spec: RenderSpec | None = spec
        self.vocoder = spec.vocoder
        self.seconds_total = spec.seconds
        self.label = label
        self.state = "queued"
        self.error: str | None = None
        self.chunks: list[bytes] = []
        self.samples = 0
        self.created = time.monotonic()
        self.started: float | None = None
        self.finished: float | None = None
        self.cancelled = False
        self.readers = 0  # streams reading it now (event loop only)
        self._release = release
        self._lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    @property
    def done(self) -> bool:
        """Whether the job has ended (done, failed or cancelled)."""
        return self.state not in RUNNING_STATES

    @property
    def nbytes(self) -> int:
        """Bytes of audio held."""
        return 2 * self.samples

    def info(self) -> dict[str, Any]:
        """The job's status as JSON."""
        return {
            "id": self.id,
            "state": self.state,
            "error": self.error,
            "label": self.label,
            "vocoder": self.vocoder,
            "sample_rate": C.SAMPLE_RATE,
            "seconds_rendered": round(self.samples / C.SAMPLE_RATE, 3),
            "seconds_total": round(self.seconds_total, 3),
        }

    def add(self, audio: np.ndarray) -> None:
        """Append float32 audio as 16-bit PCM and wake the readers."""
        pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
        with self._lock:
            if self.done:  # ended while its worker was busy (the server stopping, say)
                return
            self.chunks.append(pcm)
            self.samples += len(pcm) // 2
        self._wake()

    def begin(self) -> RenderSpec | None:
        """Mark the job running and return what to render; ``None`` if it already ended."""
        with self._lock:
            if self.done or self.spec is None:
                return None
            self.state, self.started = "running", time.monotonic()
            return self.spec

    def finish(self, state: str, error: str | None = None) -> None:
        """End the job in ``state`` (done, failed, cancelled) and drop its notes."""
        with self._lock:
            if self.done:
                return
            self.state, self.error, self.finished = state, error, time.monotonic()
            self.spec, release, self._release = None, self._release, None
        if release is not None:
            release()
        self._wake()

    def _wake(self) -> None:
        with self._lock:
            waiters = list(self._waiters)
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # that loop has closed
                loop.call_soon_threadsafe(event.set)

    async def wait(self, n_chunks: int, timeout: float) -> None:
        """Return once more than ``n_chunks`` chunks exist, the job ended, or ``timeout``."""
        loop, event = asyncio.get_running_loop(), asyncio.Event()
        with self._lock:
            if len(self.chunks) > n_chunks or self.done:
                return
            self._waiters.append((loop, event))
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            with self._lock:
                self._waiters.remove((loop, event))


class JobManager:
    """Admission, execution and bookkeeping of render jobs (see the module docstring)."""

    def __init__(self, config: WebConfig) -> None:
        self.config = config
        self._pool = ThreadPoolExecutor(config.max_concurrent_renders, "mel2mel-render")
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._rates: list[float] = []  # render wall seconds per audio second, recent jobs
        self.rejected = 0
        self.closing = False

    def active(self) -> int:
        """Jobs queued or running."""
        return sum(not j.done for j in self._jobs.values())

    def expected_wait(self) -> float:
        """Seconds until the queued and running renders are done (when a new one would start),
        from the recent real-time factor (1 before any render finished)."""
        rate = sorted(self._rates)[len(self._rates) // 2] if self._rates else 1.0
        left = sum(j.seconds_total - j.samples / C.SAMPLE_RATE for j in self._jobs.values()
                   if not (j.done or j.cancelled))  # fmt: skip
        return rate * left / self.config.max_concurrent_renders

    def retry_after(self) -> int:
        """Seconds a refused client should wait: half the queue's expected drain time, 1..60."""
        return int(min(60, max(1, math.ceil(self.expected_wait() / 2))))

    def submit(
        self, spec: RenderSpec, label: str, release: Callable[[], None] | None = None
    ) -> Job:
        """Queue a render, or raise a 503 ApiError when the server is saturated (then
        ``release`` is called at once; otherwise when the job ends)."""
        try:
            return self._submit(spec, label, release)
        except ApiError:
            if release is not None:
                release()
            raise

    def _submit(self, spec: RenderSpec, label: str, release: Callable[[], None] | None) -> Job:
        limit = self.config.max_concurrent_renders + self.config.max_queued_renders
        with self._lock:
            if self.closing:
                raise ApiError(503, "the server is shutting down", {"Retry-After": "5"})
            self._evict()
            full = self.active() >= limit
            if full or self.expected_wait() > self.config.queue_timeout_s:
                self.rejected += 1
                why = f"{limit} renders running or queued" if full else "its queue is too long"
                raise ApiError(
                    503,
                    f"the server is busy ({why}); retry shortly",
                    {"Retry-After": str(self.retry_after())},
                )
            job = Job(spec, label, release)
            self._jobs[job.id] = job
        self._pool.submit(self._run, job)
        return job

    def get(self, job_id: str) -> Job:
        """The job with this id; 404 if unknown or expired."""
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise ApiError(404, f"unknown render id {job_id[:40]!r} (expired?)")
        return job

    def cancel(self, job: Job) -> None:
        """Ask a job to stop; a queued one ends at once."""
        job.cancelled = True
        if job.state == "queued":
            job.finish("cancelled", "cancelled")

    def close(self) -> None:
        """End every job now, as the server stops: their streams end at once, and workers
        stop at their next check. New renders get 503."""
        with self._lock:
            self.closing = True
            jobs = list(self._jobs.values())
        for job in jobs:
            job.cancelled = True
            job.finish("cancelled", "the server is shutting down")

    def shutdown(self) -> None:
        """End everything and stop the workers."""
        self.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self, job: Job) -> None:
        spec = job.begin()
        if spec is None:
            return
        cfg = self.config
        assert job.started is not None
        if job.started - job.created > cfg.queue_timeout_s:
            job.finish("failed", f"timed out after waiting {cfg.queue_timeout_s:g} s in the queue")
            return
        deadline = job.started + cfg.render_timeout_s

        def check() -> None:
            if job.cancelled:
                raise JobStopped("cancelled")
            if time.monotonic() > deadline:
                raise JobStopped(f"timed out: renders are limited to {cfg.render_timeout_s:g} s")

        try:
            for audio in render_segments(spec, check):
                job.add(audio)
        except JobStopped as stop:
            job.finish("cancelled" if job.cancelled else "failed", str(stop))
        except UserError as err:  # bad audio (NaN, DC, full scale) and the like
            job.finish("failed", f"render failed: {err.public_message()}")
        except Exception as err:  # reported to the page without details; the server goes on
            log.error("render %s failed", job.id, exc_info=err)
            job.finish("failed", f"render failed: internal error ({type(err).__name__})")
        else:
            job.finish("done")
            rate = (time.monotonic() - job.started) / max(job.seconds_total, 0.1)
            self._rates = [*self._rates[-19:], rate]
        finally:
            trim_heap()

    def _evict(self) -> None:
        """Drop finished jobs past their time, then the oldest while over the byte budget or
        the count."""
        now = time.monotonic()
        for key, job in list(self._jobs.items()):
            if job.done and job.finished is not None and now - job.finished > self.config.job_ttl_s:
                del self._jobs[key]
        kept = sum(j.nbytes for j in self._jobs.values())
        count = sum(j.done for j in self._jobs.values())
        for key, job in list(self._jobs.items()):
            if kept <= self.config.max_kept_audio_bytes and count <= self.config.max_kept_jobs:
                break
            if job.done:
                kept -= job.nbytes
                count -= 1
                del self._jobs[key]
