"""Progressive rendering for the page: a time range cut into growing segments.

:meth:`Synthesizer.stream` yields audio in vocoder chunks of about 8 s, and for a long piece
its first chunk waits for a batch of 32-second acoustic windows: seconds before the first
sound. The page wants sound within a second of a click, so a render is cut into segments
whose lengths grow (:data:`HEAD_SECONDS`: 1 s, 2 s, 4 s, then the rest of the range):

* the first segment runs through a *quick* synthesizer that shares the acoustic model but
  uses short windows (2 s core, 1 s of context each side), so its audio is ready in a few
  hundred milliseconds whatever the length of the piece;
* the others run through a *medium* one (8 s cores, 2 s of context); each starts while the
  previous segment still plays;
* every segment but the last is rendered ``SEAM_FRAMES`` longer, and that overlap is
  cross-faded (equal power) into the start of the next, so the joins do not click. The
  models see the notes around each segment (the synthesizer's own context and pre-roll).

An upload's notes arrive packed (:class:`~mel2mel.web.uploads.PackedPiece`); a render
unpacks them once when it starts and drops them when it ends.

Vocoders are copied per worker thread (``copy.deepcopy``): WaveNet's incremental generator
keeps state, and two renders must never share it.
"""

from __future__ import annotations

import copy
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from mel2mel import constants as C
from mel2mel.midi import NoteSequence
from mel2mel.synthesizer import Synthesizer
from mel2mel.timbre.spec import Timbre
from mel2mel.vocoders.base import Vocoder
from mel2mel.web.uploads import PackedPiece

HEAD_SECONDS = (1.0, 2.0, 4.0)
SEAM_FRAMES = 8  # 64 ms of overlap between segments
QUICK = {"chunk_frames": 250, "context_frames": 125, "crossfade_frames": 16, "batch_windows": 1}
MEDIUM = {"chunk_frames": 1000, "context_frames": 250, "crossfade_frames": 16, "batch_windows": 1}


@dataclass(frozen=True)
class RenderSpec:
    """What to render: the notes, a resolved timbre, a vocoder and a frame range.

    ``seq`` is a note sequence or an upload's packed notes; ``voc`` is a template: each worker
    thread renders with its own copy of it.
    """

    synth: Synthesizer
    seq: NoteSequence | PackedPiece
    timbre: Timbre
    vocoder: str
    voc: Vocoder
    first: int  # frames [first, stop) of the piece
    stop: int
    tail: float = 1.0

    @property
    def seconds(self) -> float:
        """Length of the range in seconds."""
        return (self.stop - self.first) / C.FRAME_RATE


def segment_plan(first: int, stop: int) -> list[tuple[int, int]]:
    """Frame ranges ``[(a, b), ...]`` covering ``[first, stop)``, growing as HEAD_SECONDS."""
    out, a = [], first
    for seconds in HEAD_SECONDS:
        b = a + round(seconds * C.FRAME_RATE)
        if b >= stop - SEAM_FRAMES:  # too little left for another seam
            break
        out.append((a, b))
        a = b
    out.append((a, stop))
    return out


class _Parts(threading.local):
    """Per-thread synthesizer variants and vocoder copies, keyed by the objects they derive
    from (weakly: an ``id()`` key could be reused by a later object and return the variant of
    another model)."""

    def __init__(self) -> None:
        self.synths: weakref.WeakKeyDictionary[Synthesizer, dict[str, Synthesizer]] = (
            weakref.WeakKeyDictionary()
        )
        self.vocoders: weakref.WeakKeyDictionary[Vocoder, Vocoder] = weakref.WeakKeyDictionary()


_parts = _Parts()


def _variant(synth: Synthesizer, which: str) -> Synthesizer:
    variants = _parts.synths.setdefault(synth, {})
    if which not in variants:
        kwargs = QUICK if which == "quick" else MEDIUM
        variants[which] = Synthesizer(
            synth.acoustic, synth.vocoder, device=synth.device, texture=synth.texture,
            texture_strength=synth.texture_strength, seed=synth.seed, **kwargs,
        )  # fmt: skip
    return variants[which]


def _vocoder(template: Vocoder) -> Vocoder:
    if template not in _parts.vocoders:
        _parts.vocoders[template] = copy.deepcopy(template)
    return _parts.vocoders[template]


def equal_power(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Fade-out and fade-in curves of ``n`` samples whose squares sum to one."""
    t = (np.arange(n, dtype=np.float32) + 0.5) / n
    return np.cos(t * np.pi / 2).astype(np.float32), np.sin(t * np.pi / 2).astype(np.float32)


def render_segments(spec: RenderSpec, check: Callable[[], None]) -> Iterator[np.ndarray]:
    """The audio of ``spec`` as float32 chunks, segment by segment, seams cross-faded.

    ``check`` is called before each piece of work; it raises to stop the render (cancel,
    timeout).
    """
    voc = _vocoder(spec.voc)
    seq = spec.seq.unpack() if isinstance(spec.seq, PackedPiece) else spec.seq
    plan = segment_plan(spec.first, spec.stop)
    seam = SEAM_FRAMES * C.HOP_LENGTH
    fade_out, fade_in = equal_power(seam)
    tail: np.ndarray | None = None
    for i, (a, b) in enumerate(plan):
        last = i == len(plan) - 1
        end = b if last else b + SEAM_FRAMES
        synth = _variant(spec.synth, "quick" if i == 0 else "medium")
        check()
        chunks = synth.stream(
            seq, spec.timbre, vocoder=voc, start=a / C.FRAME_RATE,
            duration=(end - a) / C.FRAME_RATE, tail=spec.tail,
        )  # fmt: skip
        held = np.zeros(0, dtype=np.float32)
        for chunk in chunks:
            y = np.concatenate([held, chunk]) if len(held) else chunk.copy()
            if tail is not None:  # the overlap rendered at the end of the previous segment
                n = min(len(tail), len(y))
                y[:n] = tail[:n] * fade_out[:n] + y[:n] * fade_in[:n]
                tail = None
            keep = len(y) if last else max(0, len(y) - seam)
            held = y[keep:]
            if keep:
                yield y[:keep]
            check()
        tail = None if last else held
