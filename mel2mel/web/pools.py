"""Bounded pools for the work the event loop must not do: parsing MIDI and making previews.

A :class:`Lane` is an executor with a bound on the work it holds (running plus waiting):
beyond it a request gets 503 with ``Retry-After`` at once instead of queueing without end,
and a request that waits longer than its timeout gets 504 (the work it asked for still counts
against the bound until it ends, so abandoned work cannot pile up).

The server has three lanes, so that no kind of work starves another:

* *parse*: files larger than ``quick_parse_bytes``, read in ``parse_workers`` processes
  (:func:`process_pool`). Reading 1 MB of MIDI is seconds of pure-Python work and about
  200 MB at its peak: in threads it would hold the server's GIL and grow its memory. The
  processes run at a lower priority and exit when the server dies;
* *quick parse*: smaller files, read in one thread of the server, so a small upload never
  waits behind large ones;
* *light*: hover previews and WAV downloads, in ``preview_workers`` threads.

Renders have their own pool (:mod:`mel2mel.web.jobs`).
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from mel2mel.web.errors import ApiError

PARSE_NICENESS = 5  # added to the server's: the event loop, previews and renders come first
#: First guess of the time to read a megabyte of MIDI, until the lane has measured its own
#: (2.3 s measured for 1 MB of 170,000 notes, niced on a loaded 2-core machine; 4-5 s busier).
PARSE_SECONDS_PER_MB = 4.0


class Lane:
    """An executor that holds at most ``limit`` pieces of work (see the module docstring).

    ``make`` builds the executor, on first use (and again if a process pool broke).
    ``what`` names the work in messages ("reading a file"). Each piece of work has a
    ``cost`` (megabytes of MIDI, say); the lane learns the seconds its workers take per unit
    of cost (``rate``, starting at ``seconds_per_cost``), and refuses work that would not be
    done within half its timeout behind what already waits (the other half allows for the
    rate changing with the machine's load): a busy server answers 503 at once rather than
    504 after the wait.
    """

    def __init__(self, make: Callable[[], Executor], workers: int, limit: int, what: str,
                 seconds_per_cost: float = 1.0) -> None:  # fmt: skip
        self.make, self.workers, self.limit, self.what = make, workers, limit, what
        self.pending = 0  # submitted and not yet ended
        self.pending_cost = 0.0
        self.rate = seconds_per_cost
        self._executor: Executor | None = None
        self._lock = threading.Lock()

    @property
    def executor(self) -> Executor:
        """The executor (built now if needed)."""
        with self._lock:
            if self._executor is None:
                self._executor = self.make()
            return self._executor

    def expected_wait(self, cost: float = 0.0) -> float:
        """Seconds until work of ``cost`` given now would be done, at the recent rate."""
        return (self.pending_cost + cost) * self.rate / self.workers

    async def run(
        self, fn: Callable[..., Any], *args: Any, timeout: float, cost: float = 1.0
    ) -> Any:
        """``fn(*args)`` in the lane; 503 when the lane is full or would not get to it within
        half of ``timeout`` (unless it is idle), 504 after ``timeout``."""
        with self._lock:
            late = self.pending > 0 and self.expected_wait(cost) > timeout / 2
            if late or self.pending >= self.limit:
                wait = math.ceil(self.expected_wait() / 2)
                raise ApiError(
                    503, f"the server is busy ({self.pending} waiting for {self.what}); "
                    "retry shortly", {"Retry-After": str(min(60, max(1, wait)))},
                )  # fmt: skip
            self.pending += 1
            self.pending_cost += cost
        executor = self.executor
        try:
            future = executor.submit(_timed, fn, *args)
        except BaseException as err:
            self._ended(cost, None)
            if isinstance(err, BrokenProcessPool):
                raise self._broken(executor) from None
            raise
        future.add_done_callback(lambda done: self._ended(cost, done))
        try:
            return (await asyncio.wait_for(asyncio.wrap_future(future), timeout))[1]
        except TimeoutError:
            raise ApiError(504, f"{self.what} took longer than {timeout:g} s") from None
        except BrokenProcessPool:  # a worker died (killed, out of memory)
            raise self._broken(executor) from None

    def _broken(self, executor: Executor) -> ApiError:
        """Drop a broken process pool (the next request starts a new one)."""
        with self._lock:
            if self._executor is executor:
                self._executor = None
        shutdown(executor)
        return ApiError(503, f"{self.what} failed: its worker stopped; retry shortly",
                        {"Retry-After": "1"})  # fmt: skip

    def _ended(self, cost: float, done: Future[tuple[float, Any]] | None) -> None:
        with self._lock:
            self.pending -= 1
            self.pending_cost = max(0.0, self.pending_cost - cost)
            if done is not None and not done.cancelled() and done.exception() is None and cost > 0:
                self.rate = 0.7 * self.rate + 0.3 * done.result()[0] / cost

    def shutdown(self) -> None:
        """Stop the workers (processes are terminated); waiting work is cancelled."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            shutdown(executor)


def shutdown(executor: Executor) -> None:
    """Shut ``executor`` down without waiting for its work. A process pool's processes are
    terminated and its manager thread joined (quick, once they are gone), so that its queues
    are released before the server exits (or the resource tracker reports leaked
    semaphores)."""
    if isinstance(executor, ProcessPoolExecutor):
        for process in list((getattr(executor, "_processes", None) or {}).values()):
            process.terminate()
        executor.shutdown(wait=True, cancel_futures=True)
    else:
        executor.shutdown(wait=False, cancel_futures=True)


def thread_pool(workers: int, name: str) -> Callable[[], Executor]:
    """A factory of a thread pool of ``workers`` threads named ``name``."""
    return lambda: ThreadPoolExecutor(workers, name)


def process_pool(workers: int) -> Callable[[], Executor]:
    """A factory of a pool of ``workers`` fresh processes (spawned: the server's threads and
    torch state are not forked), niced by :data:`PARSE_NICENESS`, that exit with the server."""
    context = multiprocessing.get_context("spawn")
    return lambda: ProcessPoolExecutor(
        workers, mp_context=context, initializer=_worker_start, initargs=(os.getpid(),)
    )


def _timed(fn: Callable[..., Any], *args: Any) -> tuple[float, Any]:
    """``(seconds, fn(*args))``: run in the worker, so the lane learns the time of the work
    itself, not of its wait."""
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def _worker_start(parent: int) -> None:
    os.nice(PARSE_NICENESS)
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()


def _exit_with(parent: int) -> None:
    """Exit this worker once its server is gone (killed without a shutdown, say)."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)
