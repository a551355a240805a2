"""The acoustic-model training loop: small, plain PyTorch, resumable, multi-process.

One step draws a batch of random crops from :class:`~mel2mel.data.dataset.CropDataset`,
predicts their log-mels from the roll and the instrument index, and takes an AdamW step on the
configured loss with gradient clipping and a warmup + cosine learning-rate schedule. Every
``valid_every`` steps the model runs on fixed crops of the valid split. Rank 0 writes
``metrics.jsonl``, TensorBoard scalars and mel images (if tensorboard is installed) and the
checkpoints.

Exact resume: the data order depends only on ``(seed, epoch)`` (:class:`ResumableSampler`), the
checkpoint stores the position inside the epoch plus every RNG state, so stopping after ``k``
steps and resuming reproduces the weights of an uninterrupted run (with deterministic kernels;
on CPU that is the default).

Run it through ``mel2mel train acoustic`` (see :mod:`mel2mel.train.cli`), or under
``torchrun --nproc_per_node N -m mel2mel train acoustic ...`` for data-parallel training.
"""

from __future__ import annotations

import dataclasses
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
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from mel2mel.errors import UserError
from mel2mel.models.acoustic import Mel2Mel
from mel2mel.models.io import export_paths
from mel2mel.train import checkpoint as ckpt
from mel2mel.train.config import RunConfig
from mel2mel.train.data import dataset_instruments, make_datasets, quiet_worker, stop_workers
from mel2mel.train.distributed import (
    DistInfo,
    ResumableSampler,
    all_reduce_sum,
    any_rank,
    init_distributed,
    replicas_max_difference,
)
from mel2mel.train.logger import RunLogger
from mel2mel.train.losses import LOSSES, get_loss

DB_PER_NEPER = 20.0 / math.log(10.0)  # natural-log magnitude difference -> dB


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
    """AdamW with weight decay on weight matrices of the convolutions and the LSTM only."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.dim() < 2 or name.startswith(("embedding.", "film_"))
        (no_decay if skip else decay).append(p)
    t = config.train
    groups = [
        {"params": decay, "weight_decay": t.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=t.lr, betas=t.betas)


def init_from_pretrained(model: nn.Module, source: str | Path) -> tuple[list[str], list[str]]:
    """Copy every weight of ``source`` whose name and shape match into ``model``.

    A model with another instrument table (say 100 rows of 10-D instead of 10 of 2-D) keeps its
    fresh embedding and FiLM matrices, and takes the convolutions, the LSTM and the FiLM
    biases (the instrument-independent part of the modulation) from the source.

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


class _Trainer(TrainerBase):
    """State and steps of one training session (a helper of :func:`train_acoustic`)."""

    def __init__(self, data: Path, run_dir: Path, config: RunConfig, info: DistInfo) -> None:
        self.data, self.run_dir, self.config, self.info = data, run_dir, config, info
        t = config.train
        self.instruments = dataset_instruments(data)
        self.config = config = dataclasses.replace(
            config,
            model=dataclasses.replace(config.model, n_instruments=len(self.instruments)),
        )
        torch.manual_seed(t.seed)
        self.model = Mel2Mel(config.model, self.instruments).to(info.device)
        self.model.metadata = {"loss": t.loss}
        if t.init_from:
            copied, fresh = init_from_pretrained(self.model, t.init_from)
            if info.is_main:
                print(
                    f"mel2mel: initialized {len(copied)} tensor(s) from {t.init_from}; "
                    f"fresh: {', '.join(fresh) or 'none'}",
                    flush=True,
                )
        self.net: nn.Module = self.model
        if info.distributed:
            ids = [info.device.index] if info.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)
        self.optimizer = make_optimizer(self.model, config)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: lr_lambda(s, warmup=t.warmup_steps, total=t.steps, floor=t.min_lr / t.lr),
        )
        self.loss_fn = get_loss(t.loss, tanh_offset=t.tanh_offset, tanh_scale=t.tanh_scale)
        self.metric_fns = {
            name: get_loss(name, tanh_offset=t.tanh_offset, tanh_scale=t.tanh_scale)
            for name in LOSSES
        }
        train_set, self.valid_set = make_datasets(data, config, self.instruments)
        self.use_train_set(train_set, "crops")

    # -- checkpoints -------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        instruments = [{"name": i.name, "program": i.program} for i in self.instruments]
        return {**super().state(), "instruments": instruments}

    def restore(self, state: dict[str, Any]) -> None:
        saved = state["config"]["model"]
        if saved != self.config.model.to_dict():
            raise UserError(
                "the checkpoint's model config differs from this run's; "
                f"checkpoint: {saved}, config: {self.config.model.to_dict()}"
            )
        changed = {
            k: (v, self.config.train.to_dict()[k])
            for k, v in state["config"]["train"].items()
            if self.config.train.to_dict().get(k) != v
        }
        if changed and self.info.is_main:
            warnings.warn(
                f"resuming with changed train settings (old, new): {changed}", stacklevel=2
            )
        super().restore(state)

    # -- steps -------------------------------------------------------------------------------

    def train_step(self, batch: dict[str, torch.Tensor]) -> tuple[float, float]:
        """One optimizer step on ``batch``; advances the step and data position.

        Returns (loss, gradient norm before clipping).
        """
        dev = self.info.device
        roll = batch["roll"].to(dev, non_blocking=True)
        mel = batch["mel"].to(dev, non_blocking=True)
        inst = batch["instrument"].to(dev, non_blocking=True)
        return self.optimize(self.loss_fn(self.net(roll, instrument=inst), mel))

    @torch.no_grad()
    def validate(self, logger: RunLogger | None) -> dict[str, float]:
        t = self.config.train
        if len(self.valid_set) == 0:
            return {}
        sampler = torch.utils.data.DistributedSampler(
            self.valid_set,
            num_replicas=self.info.world_size,
            rank=self.info.rank,
            shuffle=False,
        )
        loader = DataLoader(self.valid_set, batch_size=t.batch_size, sampler=sampler)
        self.model.eval()
        sums = torch.zeros(len(LOSSES) + 2, dtype=torch.float64)
        first = None
        for i, batch in enumerate(loader):
            if t.valid_batches and i >= t.valid_batches:
                break
            mel = batch["mel"].to(self.info.device)
            pred = self.model(batch["roll"].to(self.info.device), instrument=batch["instrument"])
            n = mel.shape[0]
            for j, name in enumerate(LOSSES):
                sums[j] += self.metric_fns[name](pred, mel).item() * n
            sums[-2] += (pred - mel).abs().mean().item() * DB_PER_NEPER * n
            sums[-1] += n
            if first is None:
                first = (mel[0].cpu(), pred[0].cpu(), int(batch["instrument"][0]))
        self.model.train()
        sums = all_reduce_sum(sums, self.info)
        if sums[-1] == 0:
            return {}
        result = {f"valid/{name}": float(sums[j] / sums[-1]) for j, name in enumerate(LOSSES)}
        result["valid/loss"] = result[f"valid/{t.loss}"]
        result["valid/mae_db"] = float(sums[-2] / sums[-1])
        if self.info.distributed:  # DDP keeps replicas equal; make that visible in the log
            result["dist/replica_max_diff"] = replicas_max_difference(self.model, self.info)
        if logger is not None and first is not None:
            name = self.instruments[first[2]].name
            logger.mel_image("valid/mel", first[0], first[1], self.step, caption=name)
        return result


def train_acoustic(
    data: str | Path,
    run_dir: str | Path,
    config: RunConfig,
    *,
    resume: bool | str | Path | None = None,
    stop_at: int | None = None,
    device: str | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train (or continue training) the acoustic model.

    Parameters
    ----------
    data:
        Dataset root (``manifest.json``, ``rolls/``, ``items/``).
    run_dir:
        Output directory: checkpoints, ``config.yaml``, ``metrics.jsonl``, ``tb/``.
    config:
        Model and training settings; ``model.n_instruments`` is set from the dataset.
    resume:
        ``None``: continue from ``run_dir/checkpoint.pt`` if it exists; ``True``: require it;
        ``False``: start afresh (refuses a run directory that has a checkpoint); a path:
        continue from that checkpoint.
    stop_at:
        End this session after this many total steps (checkpointing), without changing the
        schedule, which always spans ``config.train.steps``.
    device:
        ``"cpu"``, ``"cuda"`` or ``None`` (CUDA if available).
    progress:
        Show a tqdm bar (rank 0 only).

    Returns
    -------
    TrainResult
    """
    return train_session(_Trainer, data, run_dir, config, resume, stop_at, device, progress)


def train_session(
    make: Callable[[Path, Path, Any, DistInfo], TrainerBase],
    data: str | Path,
    run_dir: str | Path,
    config: Any,
    resume: bool | str | Path | None,
    stop_at: int | None,
    device: str | None,
    progress: bool,
) -> TrainResult:
    """What every ``train_*`` function does: join the process group, build the trainer with
    ``make(data, run_dir, config, info)``, restore the checkpoint to resume (of the trainer's
    ``kind``), and run one session up to ``stop_at`` (default: the end of the schedule)."""
    data, run_dir = Path(data), Path(run_dir)
    info = init_distributed(device)
    start_from = checkpoint_to_resume(run_dir, resume)
    trainer = make(data, run_dir, config, info)
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
