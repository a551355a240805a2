"""Timbre from an example: fit an embedding vector to a recording of known notes.

Given audio and the MIDI it plays, :func:`learn_timbre` keeps the acoustic network frozen and
looks for the embedding ``e`` whose predicted mel for the notes is closest to the recording's
log-mel under the model's own training loss (``tanh-log-abs`` for the shipped model, see
:mod:`mel2mel.models.losses`). How:

1. **Target.** Up to ``duration`` seconds (30 by default) from ``start`` are cut on the frame
   grid, so roll frame ``first + i`` and mel frame ``i`` are centred on the same sample, and
   split into windows of ``window_seconds`` (2 s); the model sees each window on its own, as
   it saw its 512-frame crops in training.
2. **Starts.** Every trained instrument and the mean of them is scored on all windows (one
   batched forward pass), and the ``restarts`` best become starting points (``init`` instead
   gives a single start).
3. **Fit.** Adam on the ``restarts x E`` start vectors together (each its own loss), on
   ``windows_per_step`` random windows per step, with a cosine-decayed learning rate.
4. **Pick.** Each fitted vector is scored on all windows; the best wins. Its error is then
   measured on the whole excerpt with one full-length forward pass:
   ``mel_error_db`` is the mean absolute log-mel error in dB (``20 / ln 10`` per neper), as
   the trainer's ``valid/mae_db``.

The model runs through :class:`~mel2mel.timbre.sweep.EmbeddingSweep`, which shares the input
projection of each window between all vectors, so only the LSTM recurrence is paid per vector.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mel2mel import constants as C
from mel2mel.audio import log_mel
from mel2mel.errors import UserError
from mel2mel.midi import NoteSequence, piano_roll, time_to_frame
from mel2mel.models.losses import TANH_OFFSET, TANH_SCALE, squash
from mel2mel.timbre.space import TimbreSpace
from mel2mel.timbre.sweep import EmbeddingSweep, model_of

MIN_SECONDS = 1.0


@dataclass
class LearnResult:
    """The fitted timbre.

    Attributes
    ----------
    vector: float32[E]
        The embedding.
    loss:
        Training loss of ``vector`` averaged over the windows.
    mel_error_db:
        Mean absolute log-mel error over the whole excerpt (full forward pass), dB.
    init:
        Label of the start that won.
    frames:
        Frames of the excerpt.
    steps, seconds, cpu_seconds:
        Adam steps, and the wall-clock and CPU time (this process) of the whole fit.
    starts:
        ``(label, loss)`` of the scored starting points, best first.
    history:
        Minibatch loss of the winning start at every step.
    """

    vector: np.ndarray
    loss: float
    mel_error_db: float
    init: str
    frames: int
    steps: int
    seconds: float
    cpu_seconds: float
    starts: list[tuple[str, float]] = field(default_factory=list)
    history: list[float] = field(default_factory=list)


def aligned_excerpt(
    audio: np.ndarray, notes: NoteSequence, start: float = 0.0, duration: float | None = 30.0
) -> tuple[np.ndarray, np.ndarray]:
    """Roll and log-mel of the same excerpt, frame for frame.

    Parameters
    ----------
    audio: float[N]
        16 kHz mono audio of the whole piece (sample 0 = MIDI time 0).
    notes:
        The notes it plays.
    start, duration:
        Seconds; ``None`` duration: to the end of the audio.

    Returns
    -------
    (roll float32[ROLL_CHANNELS x T], log_mel float32[N_MELS x T])
    """
    first = time_to_frame(start)
    a = first * C.HOP_LENGTH
    stop = len(audio) if duration is None else min(len(audio), a + round(duration * C.SAMPLE_RATE))
    if stop - a < MIN_SECONDS * C.SAMPLE_RATE:
        raise UserError(
            f"the excerpt is {max(0, stop - a) / C.SAMPLE_RATE:.2f} s long; timbre learning needs "
            f"at least {MIN_SECONDS:g} s of audio after --start"
        )
    target = log_mel(np.asarray(audio[a:stop], dtype=np.float32))
    frames = target.shape[1]
    roll = piano_roll(notes.notes, first + frames)[:, first:]
    if not roll[: C.N_KEYS].any():
        raise UserError("no notes sound in the excerpt: check --start/--duration and the MIDI")
    if target.max() <= C.LOG_SILENCE + 1e-3:
        raise UserError("the audio excerpt is silent")
    return roll, target


def split_windows(frames: int, width: int) -> list[int]:
    """Starts of windows of ``width`` frames covering ``[0, frames)`` (the last one ends at
    ``frames``, overlapping its neighbour); ``[0]`` when ``frames <= width``."""
    if frames <= width:
        return [0]
    starts = list(range(0, frames - width + 1, width))
    if starts[-1] + width < frames:
        starts.append(frames - width)
    return starts


def _loss_fn(model: Any) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Per-item training loss: ``(Tensor[K x W x M x T], Tensor[W x M x T]) -> Tensor[K]``."""
    meta = getattr(model, "metadata", {}).get("train", {})
    name = getattr(model, "metadata", {}).get("loss", "tanh-log-abs")
    offset, scale = meta.get("tanh_offset", TANH_OFFSET), meta.get("tanh_scale", TANH_SCALE)

    def loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if name == "abs":
            diff = torch.exp(pred.clamp_max(10.0)) - torch.exp(target)
        elif name == "log-abs":
            diff = pred - target
        else:
            diff = squash(pred, offset, scale) - squash(target, offset, scale)
        return diff.square().flatten(1).mean(1)

    return loss


def mel_error_db(model: Any, roll: np.ndarray, target: np.ndarray, vector: np.ndarray) -> float:
    """Mean absolute log-mel error (dB) of ``vector`` over a whole excerpt, one forward pass.

    ``roll``: float32[ROLL_CHANNELS x T], ``target``: float32[N_MELS x T], ``vector``: [E].
    """
    with torch.inference_mode():
        sweep = EmbeddingSweep(model, torch.from_numpy(roll)[None])
        pred = sweep(torch.as_tensor(np.asarray(vector, dtype=np.float32))[None])[0, 0]
    diff = pred.float().cpu().numpy() - target
    return float(np.abs(diff).mean() * C.DB_PER_NEPER)


def _start_points(model: Any, space: Any, init: Any) -> list[tuple[str, np.ndarray]]:
    if init is not None:
        vector, label = space.embedding(init)
        return [(label, np.asarray(vector, dtype=np.float32))]
    table = model.embedding.weight.detach().float().cpu().numpy()
    starts = [(inst.name, row) for inst, row in zip(model.instruments, table, strict=True)]
    return [*starts, ("mean of the instruments", table.mean(0))]


def _scores(sweep: EmbeddingSweep, target: torch.Tensor, points: np.ndarray, loss: Any) -> Any:
    """Loss of each point over all windows, float64[K] (batches of <= 256 sequences)."""
    per = max(1, 256 // sweep.rolls.shape[0])
    out = []
    with torch.inference_mode():
        for a in range(0, len(points), per):
            pred = sweep(torch.from_numpy(points[a : a + per]))
            out.append(loss(pred, target).double().cpu().numpy())
    return np.concatenate(out)


def learn_timbre(
    synth_or_model: Any,
    audio: np.ndarray,
    notes: NoteSequence,
    *,
    steps: int = 40,
    init: Any = None,
    restarts: int = 2,
    start: float = 0.0,
    duration: float | None = 30.0,
    window_seconds: float = 2.0,
    windows_per_step: int = 6,
    lr: float = 0.05,
    seed: int = 0,
    progress: bool | None = None,
) -> LearnResult:
    """Fit an embedding to a recording of ``notes`` (module docstring).

    Parameters
    ----------
    synth_or_model:
        A :class:`~mel2mel.Synthesizer` or a :class:`~mel2mel.models.Mel2Mel` (frozen).
    audio: float[N]
        16 kHz mono audio, aligned with the MIDI (sample 0 = time 0).
    notes:
        The notes the audio plays (:func:`mel2mel.midi.read_notes`).
    steps:
        Adam steps (0: keep the best start).
    init:
        Any fixed timbre spec (name, user timbre, ``"x,y"``) as the single start; ``None``:
        the ``restarts`` best of the instruments and their mean.
    start, duration:
        The excerpt, seconds (``duration=None``: to the end).
    window_seconds, windows_per_step:
        Window length, and windows per Adam step.
    lr:
        Adam's learning rate (cosine-decayed to a tenth of it).
    seed:
        Seeds the choice of windows.
    progress:
        A progress bar on stderr (default: when stderr is a terminal).
    """
    from tqdm import tqdm

    t0, cpu0 = time.perf_counter(), time.process_time()
    model = model_of(synth_or_model)
    space = getattr(synth_or_model, "timbres", None) or TimbreSpace.from_model(model)
    roll, target = aligned_excerpt(np.asarray(audio), notes, start, duration)
    frames = roll.shape[1]
    width = min(frames, round(window_seconds * C.FRAME_RATE))
    offsets = split_windows(frames, width)
    device = next(model.parameters()).device
    rolls = torch.stack([torch.from_numpy(roll[:, o : o + width]) for o in offsets]).to(device)
    targets = torch.stack([torch.from_numpy(target[:, o : o + width]) for o in offsets]).to(device)
    loss_fn = _loss_fn(model)
    was_training = model.training
    model.eval()
    requires = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        sweep = EmbeddingSweep(model, rolls)
        labelled = _start_points(model, space, init)
        scores = _scores(sweep, targets, np.stack([v for _, v in labelled]), loss_fn)
        order = np.argsort(scores, kind="stable")
        ranked = [(labelled[i][0], float(scores[i])) for i in order]
        chosen = order[: max(1, restarts)]
        points = torch.tensor(np.stack([labelled[i][1] for i in chosen]), device=device)
        points.requires_grad_(True)
        opt = torch.optim.Adam([points], lr=lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps), lr / 10)
        rng = np.random.default_rng(seed)
        history: list[np.ndarray] = []
        show = sys.stderr.isatty() if progress is None else progress
        bar = tqdm(range(steps), desc="learning timbre", disable=not show, file=sys.stderr)
        for _ in bar:
            pick = rng.choice(len(offsets), min(windows_per_step, len(offsets)), replace=False)
            per_start = loss_fn(sweep.subset(pick)(points), targets[pick])
            opt.zero_grad()
            per_start.sum().backward()
            opt.step()
            sched.step()
            history.append(per_start.detach().cpu().numpy())
            bar.set_postfix(loss=f"{float(per_start.detach().min()):.5f}")
        bar.close()
        fitted = points.detach().cpu().numpy().astype(np.float32)
        final = _scores(sweep, targets, fitted, loss_fn)
        best = int(np.argmin(final))
        error = mel_error_db(model, roll, target, fitted[best])
    finally:
        for p, flag in zip(model.parameters(), requires, strict=True):
            p.requires_grad_(flag)
        model.train(was_training)
    return LearnResult(
        vector=fitted[best],
        loss=float(final[best]),
        mel_error_db=error,
        init=labelled[chosen[best]][0],
        frames=frames,
        steps=steps,
        seconds=time.perf_counter() - t0,
        cpu_seconds=time.process_time() - cpu0,
        starts=ranked,
        history=[float(h[best]) for h in history],
    )
