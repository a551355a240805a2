"""The training loop every model shares: small, plain PyTorch, resumable, multi-process.

:class:`TrainerBase` holds what a trainer of any model kind needs (model, optimizer, schedule,
data position, checkpoints); a model kind subclasses it with its ``train_step`` and
``validate`` (:mod:`~mel2mel.train.acoustic_loop`, :mod:`~mel2mel.train.vocoder_loop`,
:mod:`~mel2mel.train.texture_loop`) and calls :func:`train_session`. :func:`run_session` is the
loop: AdamW steps with gradient clipping and a warmup + cosine learning-rate schedule,
validation every ``valid_every`` steps, ``metrics.jsonl`` + TensorBoard on rank 0, checkpoints,
and a checkpoint on SIGTERM or Ctrl-C.

Exact resume: the data order depends only on ``(seed, epoch)`` (:class:`ResumableSampler`), the
checkpoint stores the position inside the epoch plus every RNG state, so stopping after ``k``
steps and resuming reproduces the weights of an uninterrupted run (with deterministic kernels;
on CPU that is the default).
"""

from __future__ import annotations

import math
import signal
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from mel2mel.errors import UserError
from mel2mel.models.acoustic import Mel2Mel
from mel2mel.models.export import export_paths
from mel2mel.train import checkpoint as ckpt
from mel2mel.train.config import RunConfig
from mel2mel.train.data import quiet_worker, stop_workers
from mel2mel.train.distributed import (
    DistInfo,
    ResumableSampler,
    all_reduce_sum,
    any_rank,
    init_distributed,
)
from mel2mel.train.logger import RunLogger


@dataclass
class TrainResult:
    """What a (possibly interrupted) training session ended with."""

    model: nn.Module
    step: int
    interrupted: bool
    checkpoint: Path | None
    valid: dict[str, float]
    frames_per_second: float


def lr_lambda(step: int, *, warmup: int, total: int, floor: float) -> float:
    """Learning-rate factor: linear warmup to 1 over ``warmup`` steps, cosine to ``floor``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(model: nn.Module, config: RunConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on weight matrices of the convolutions and the LSTM only (not
    on the maps from the embedding: FiLM's and the harmonic detail's gain).

    With ``train.embedding_lr_scale != 1`` or ``train.embedding_weight_decay > 0`` the
    embedding table gets a third group at ``lr * embedding_lr_scale`` with that decay (only
    then, so the checkpoints of earlier runs, with two groups, still resume).
    """
    t = config.train
    own_group = t.embedding_lr_scale != 1 or t.embedding_weight_decay > 0
    decay, no_decay, table = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith("embedding.") and own_group:
            table.append(p)
        elif p.dim() < 2 or name.startswith(("film_", "harmonic.")):
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [
        {"params": decay, "weight_decay": t.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if table:
        lr = t.lr * t.embedding_lr_scale
        groups.append({"params": table, "weight_decay": t.embedding_weight_decay, "lr": lr})
    return torch.optim.AdamW(groups, lr=t.lr, betas=t.betas)


def init_from_pretrained(model: Mel2Mel, source: str | Path) -> tuple[list[str], list[str]]:
    """Copy every weight of ``source`` whose name and shape match into ``model``.

    A model with another instrument table (say 100 rows of 10-D instead of 10 of 2-D) keeps its
    fresh embedding and FiLM matrices, and takes the convolutions, the LSTM and the FiLM
    biases (the instrument-independent part of the modulation) from the source. An input
    projection with more input rows than the source's (``velocity_coding: linear+log`` from a
    ``linear`` model) takes the source's in its leading rows and zeros in the others, so the
    new model starts out playing exactly as the source; one with fewer (a ``linear`` model from
    a ``linear+log`` one, as the 100-instrument recipe starts from the shipped model) takes the
    leading, linear rows (:meth:`Mel2Mel.fit_input_projection`).

    Parameters
    ----------
    model:
        The freshly built model (modified in place).
    source:
        An export (prefix, directory, ``.safetensors`` or ``.json``) or a training checkpoint
        (``.pt`` file or run directory).

    Returns
    -------
    (copied, fresh): names of the model's tensors taken from ``source`` and of those left as
    initialized (absent from ``source`` or of another shape).
    """
    path = Path(source)
    if path.suffix == ".pt" or ckpt.find_checkpoint(path) is not None:
        theirs = ckpt.load_checkpoint(path)["model"]
    else:
        from safetensors.torch import load_file

        weights, _ = export_paths(path)
        if not weights.is_file():
            raise UserError(f"train.init_from: no checkpoint or exported weights at {source}")
        theirs = load_file(str(weights))
    return copy_matching(model, model.fit_input_projection(theirs), source)


def copy_matching(
    model: nn.Module, theirs: dict[str, torch.Tensor], source: str | Path
) -> tuple[list[str], list[str]]:
    """Load the tensors of ``theirs`` whose name and shape match into ``model``; returns
    ``(copied, fresh)`` names as :func:`init_from_pretrained` does."""
    ours = model.state_dict()
    match = {k: v for k, v in theirs.items() if k in ours and ours[k].shape == v.shape}
    if not match:
        raise UserError(f"train.init_from: no tensor of {source} matches this model")
    model.load_state_dict(match, strict=False)
    return sorted(match), sorted(set(ours) - set(match))


@contextmanager
def stop_on_signals() -> Iterator[dict[str, bool]]:
    """Turn SIGTERM/SIGINT into a flag so the loop can checkpoint before it exits."""
    flag = {"stop": False}

    def handler(signum: int, frame: Any) -> None:
        flag["stop"] = True

    previous = {}
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread: leave signals alone
        pass
    try:
        yield flag
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)


class TrainerBase:
    """What every trainer shares: the data position, the DataLoader, the optimizer step and the
    checkpoint state.

    A subclass sets ``config`` (whose ``train`` has ``batch_size``, ``num_workers``, ``seed``,
    ``grad_clip``, ``keep_checkpoints``), ``info``, ``data``, ``run_dir``, ``model``,
    ``optimizer`` and ``scheduler``, hands its training set to :meth:`use_train_set`, and
    adds its own :meth:`restore` checks and batch loss.
    """

    kind: str = "acoustic"  # written into checkpoints and checked when loading them
    config: Any
    info: DistInfo
    data: Path
    run_dir: Path
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    train_set: Any
    sampler: ResumableSampler

    def use_train_set(self, train_set: Any, unit: str) -> None:
        """Take ``train_set`` (its ``unit``: "crops", "items"), check that it fills one global
        batch, shard it over the processes and start at step 0."""
        t, world = self.config.train, self.info.world_size
        if len(train_set) < t.batch_size * world:
            raise UserError(
                f"the train split has {len(train_set)} {unit}, fewer than one global batch "
                f"({t.batch_size} x {world} processes)"
            )
        self.train_set = train_set
        self.sampler = ResumableSampler(
            train_set, batch_size=t.batch_size, num_replicas=world, rank=self.info.rank,
            seed=t.seed,
        )  # fmt: skip
        self.start_position()

    def start_position(self) -> None:
        """Step 0, at the start of epoch 0, no DataLoader yet."""
        self.step = self.epoch = self.epoch_batch = 0
        self._loader: DataLoader | None = None
        self.valid: dict[str, float] = {}

    # -- checkpoints -------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "epoch_batch": self.epoch_batch,
            "rng": ckpt.rng_state(),
            "metadata": {
                "data": str(self.data),
                "world_size": self.info.world_size,
                "valid": dict(self.valid),
            },
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Load weights, optimizer, schedule, data position and RNG states (subclasses check
        that the checkpoint's model matches first)."""
        if state["metadata"].get("world_size", 1) != self.info.world_size and self.info.is_main:
            warnings.warn(
                "resuming with another number of processes: the data order changes", stacklevel=3
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        self.epoch_batch = int(state["epoch_batch"])
        self.valid = dict(state["metadata"].get("valid", {}))
        ckpt.set_rng_state(state["rng"])

    def save(self) -> Path | None:
        if not self.info.is_main:
            return None
        keep = self.config.train.keep_checkpoints
        return ckpt.save_checkpoint(self.state(), self.run_dir, keep=keep, kind=self.kind)

    def close(self) -> None:
        """Stop the DataLoader workers (see :func:`~mel2mel.train.data.quiet_worker`)."""
        stop_workers(self._loader)
        self._loader = None

    # -- steps -------------------------------------------------------------------------------

    def epoch_batches(self) -> Iterator[dict[str, torch.Tensor]]:
        """The batches from the current data position to the end of its epoch."""
        t = self.config.train
        self.sampler.set_position(self.epoch, self.epoch_batch)
        if self._loader is None:
            # Workers persist across epochs: the sampler runs in this process and SeededCrops
            # keeps no state, so nothing in them needs refreshing.
            self._loader = DataLoader(
                self.train_set,
                batch_size=t.batch_size,
                sampler=self.sampler,
                num_workers=t.num_workers,
                drop_last=True,
                pin_memory=self.info.device.type == "cuda",
                persistent_workers=t.num_workers > 0,
                prefetch_factor=4 if t.num_workers > 0 else None,
                # Its own generator: starting an epoch must not consume the global torch RNG.
                generator=torch.Generator().manual_seed(t.seed),
                worker_init_fn=quiet_worker,
            )
        return iter(self._loader)

    def optimize(self, loss: torch.Tensor) -> tuple[float, float]:
        """Backward, clip, AdamW and schedule step on ``loss``; advance step and data position.

        Returns (loss, gradient norm before clipping).
        """
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip = self.config.train.grad_clip
        norm = nn.utils.clip_grad_norm_(self.model.parameters(), clip or float("inf"))
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        self.epoch_batch += 1
        if self.epoch_batch >= self.sampler.batches_per_epoch():
            self.epoch, self.epoch_batch = self.epoch + 1, 0
        return loss.detach().item(), float(norm)

    def train_scalars(self, window: ThroughputWindow, frames_per_step: int) -> dict[str, float]:
        """The training log line: loss averaged over the window and over all ranks."""
        loss_sum, steps, norm = window.take(frames_per_step)
        total = all_reduce_sum(torch.tensor([loss_sum, float(steps)]), self.info)
        return {
            "train/loss": float(total[0] / total[1]),
            "train/grad_norm": norm,
            "train/lr": self.scheduler.get_last_lr()[0],
            "train/frames_per_s": window.fps,
            "train/epoch": self.epoch,
        }

    def validate(self, logger: RunLogger | None) -> dict[str, float]:
        """Validation scalars (``valid/...``); may log images through ``logger``."""
        raise NotImplementedError


def train_session(
    make: Callable[[Path, Path, Any, DistInfo, bool], TrainerBase],
    data: str | Path,
    run_dir: str | Path,
    config: Any,
    resume: bool | str | Path | None,
    stop_at: int | None,
    device: str | None,
    progress: bool,
) -> TrainResult:
    """What every ``train_*`` function does: join the process group, build the trainer with
    ``make(data, run_dir, config, info, progress)`` (``progress``: bars for its setup work, such
    as predicting the mels it trains on), restore the checkpoint to resume (of the trainer's
    ``kind``), and run one session up to ``stop_at`` (default: the end of the schedule)."""
    data, run_dir = Path(data), Path(run_dir)
    info = init_distributed(device)
    start_from = checkpoint_to_resume(run_dir, resume)
    trainer = make(data, run_dir, config, info, progress)
    if start_from is not None:
        state = ckpt.load_checkpoint(start_from, map_location=info.device, kind=trainer.kind)
        trainer.restore(state)
    end = config.train.steps if stop_at is None else min(stop_at, config.train.steps)
    return run_session(trainer, end, progress)


def run_session(trainer: TrainerBase, end: int, progress: bool) -> TrainResult:
    """Train ``trainer`` up to step ``end``: the loop every model shares (logging, validation,
    checkpoints, stopping on SIGTERM/SIGINT with a checkpoint)."""
    info, run_dir = trainer.info, trainer.run_dir
    t = trainer.config.train
    if trainer.step >= end and info.is_main:
        print(f"mel2mel: {run_dir} is already at step {trainer.step} (of {t.steps}); nothing to do")
    logger = RunLogger(run_dir, trainer.config, trainer.step) if info.is_main else None
    frames_per_step = t.batch_size * t.crop_frames * info.world_size
    bar = tqdm(
        total=t.steps,
        initial=trainer.step,
        disable=not (progress and info.is_main),
        dynamic_ncols=True,
        unit="step",
    )
    window = ThroughputWindow()
    interrupted = False
    latest: Path | None = None
    trainer.model.train()
    with stop_on_signals() as signals, closing(trainer):
        while trainer.step < end and not interrupted:
            for batch in trainer.epoch_batches():
                window.add(trainer.train_step(batch))
                bar.update(1)
                step = trainer.step
                if step % t.log_every == 0 or step == end:
                    scalars = trainer.train_scalars(window, frames_per_step)
                    bar.set_postfix(loss=f"{scalars['train/loss']:.4f}", fps=f"{window.fps:.0f}")
                    if logger:
                        logger.scalars(scalars, step)
                        if not progress:
                            print(_format_train(step, t.steps, scalars), flush=True)
                if t.valid_every and (step % t.valid_every == 0 or step == t.steps):
                    trainer.valid = trainer.validate(logger)
                    if logger and trainer.valid:
                        logger.scalars(trainer.valid, step)
                        tqdm.write(_format_valid(step, trainer.valid))
                    window.restart()  # keep validation out of the throughput
                stop = any_rank(signals["stop"], info)
                if step % t.checkpoint_every == 0 or step == end or stop:
                    latest = trainer.save() or latest
                    window.restart()
                interrupted = stop
                if interrupted or step >= end or trainer.epoch_batch == 0:
                    break  # stop, or the epoch is over: the next loader starts the next one
    bar.close()
    if logger:
        logger.close()
        if interrupted:
            print(f"mel2mel: stopped at step {trainer.step}; rerun the same command to resume")
    trainer.model.eval()
    return TrainResult(trainer.model, trainer.step, interrupted, latest, trainer.valid, window.fps)


class ThroughputWindow:
    """Loss sum, step count and throughput since the last log line."""

    def __init__(self) -> None:
        self.fps = self.loss = self.norm = 0.0
        self.steps = 0
        self.restart()

    def restart(self) -> None:
        """Restart the clock (after a pause such as validation or checkpointing)."""
        self.start = time.perf_counter()

    def add(self, loss_and_norm: tuple[float, float]) -> None:
        self.loss += loss_and_norm[0]
        self.norm = loss_and_norm[1]
        self.steps += 1

    def take(self, frames_per_step: int) -> tuple[float, int, float]:
        """(loss sum, steps, last grad norm) of the window, then start a new one."""
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        self.fps = frames_per_step * self.steps / elapsed
        out = (self.loss, self.steps, self.norm)
        self.loss, self.steps = 0.0, 0
        self.restart()
        return out


def checkpoint_to_resume(run_dir: Path, resume: bool | str | Path | None) -> Path | None:
    found = ckpt.find_checkpoint(run_dir)
    if resume is None:
        return found
    if resume is True:
        if found is None:
            raise UserError(f"--resume: no checkpoint in {run_dir}")
        return found
    if resume is False:
        if found is not None:
            raise UserError(
                f"{run_dir} already holds a checkpoint; resume it, or choose another --out"
            )
        return None
    return Path(resume)


def _format_train(step: int, total: int, s: dict[str, float]) -> str:
    return (
        f"step {step}/{total}: loss={s['train/loss']:.4f} lr={s['train/lr']:.2e} "
        f"grad_norm={s['train/grad_norm']:.3f} frames/s={s['train/frames_per_s']:.0f}"
    )


def _format_valid(step: int, valid: dict[str, float]) -> str:
    parts = [
        f"{k.split('/')[1]}={v:.4g}"
        for k, v in valid.items()
        if k.startswith("valid/") and k != "valid/loss"
    ]
    return f"step {step}: valid " + " ".join(parts)
