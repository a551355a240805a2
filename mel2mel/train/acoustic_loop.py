"""The acoustic model's trainer: piano-roll crops -> log-mel, on the shared loop.

One step draws a batch of random crops from :class:`~mel2mel.data.dataset.CropDataset`,
predicts their log-mels from the roll and the instrument index, and takes an AdamW step on the
configured loss with gradient clipping and a warmup + cosine learning-rate schedule. Every
``valid_every`` steps the model runs on fixed crops of the valid split. Rank 0 writes
``metrics.jsonl``, TensorBoard scalars and mel images (if tensorboard is installed) and the
checkpoints.

The loop itself, exact resume included, is :mod:`mel2mel.train.loop`'s.

Run it through ``mel2mel train acoustic`` (see :mod:`mel2mel.cli.train`), or under
``torchrun --nproc_per_node N -m mel2mel train acoustic ...`` for data-parallel training.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from mel2mel import constants as C
from mel2mel.errors import UserError
from mel2mel.models.acoustic import Mel2Mel
from mel2mel.models.losses import (
    LOSSES,
    bin_weights,
    dead_band_floor,
    flux_loss,
    frame_level,
    get_loss,
    level_loss,
    reweighted,
    slope_loss,
    variation_loss,
)
from mel2mel.train.config import RunConfig
from mel2mel.train.data import bin_variances, dataset_instruments, make_datasets
from mel2mel.train.distributed import (
    DistInfo,
    all_reduce_sum,
    replicas_max_difference,
)
from mel2mel.train.logger import RunLogger
from mel2mel.train.loop import (
    TrainerBase,
    TrainResult,
    init_from_pretrained,
    lr_lambda,
    make_optimizer,
    train_session,
)


class _Trainer(TrainerBase):
    """State and steps of one training session (a helper of :func:`train_acoustic`)."""

    def __init__(
        self, data: Path, run_dir: Path, config: RunConfig, info: DistInfo, progress: bool = True
    ) -> None:
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
        self.bin_scale = None  # N x M: square roots of the bin weights of train.bin_balance
        if t.bin_balance:
            variances = torch.from_numpy(bin_variances(train_set, len(self.instruments)))
            weights = bin_weights(variances.float(), t.bin_balance)
            self.bin_scale = weights.sqrt().to(info.device)

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
        pred = self.net(roll, instrument=inst)
        t = self.config.train
        if t.floor_margin is not None:
            pred = dead_band_floor(pred, t.floor_margin)
        loud = None  # B x T: the loudest sounding note of each frame (0 where none sounds)
        quiet = None  # B x T: the pp frames (the evaluation's band)
        sounding = t.level_weight > 0 and t.level_frames == "sounding"
        if t.quiet_weight != 1.0 or t.quiet_level_weight != 1.0 or sounding:
            loud = (roll[:, : C.N_KEYS].amax(dim=1) * 127.0).round()[:, : pred.shape[-1]]
            pp = C.VELOCITY_BANDS["pp"]
            quiet = (loud >= pp[0]) & (loud <= pp[1])
        scaled_pred, scaled_mel = pred, mel
        if self.bin_scale is not None:  # w (x - y)^2 = (sqrt(w) x - sqrt(w) y)^2
            scale = self.bin_scale[inst][:, :, None]  # B x M x 1
            scaled_pred, scaled_mel = pred * scale, mel * scale
        if t.quiet_weight != 1.0:
            loss = reweighted(self.loss_fn, scaled_pred, scaled_mel, quiet, t.quiet_weight)
        else:
            loss = self.loss_fn(scaled_pred, scaled_mel)
        if t.level_weight > 0:
            frames = None  # every frame alike
            if sounding or t.quiet_level_weight != 1.0:
                frames = loud > 0 if sounding else torch.ones_like(quiet)
                frames = frames * torch.where(quiet, t.quiet_level_weight, 1.0)
            loss = loss + t.level_weight * level_loss(pred, mel, frames)
        if t.slope_weight > 0:
            loss = loss + t.slope_weight * slope_loss(pred, mel)
        if t.flux_weight > 0:
            loss = loss + t.flux_weight * flux_loss(pred, mel)
        if t.variation_weight > 0:
            loss = loss + t.variation_weight * variation_loss(pred, mel)
        return self.optimize(loss)

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
        sums = torch.zeros(len(LOSSES) + 4, dtype=torch.float64)
        first = None
        for i, batch in enumerate(loader):
            if t.valid_batches and i >= t.valid_batches:
                break
            mel = batch["mel"].to(self.info.device)
            pred = self.model(batch["roll"].to(self.info.device), instrument=batch["instrument"])
            n = mel.shape[0]
            for j, name in enumerate(LOSSES):
                sums[j] += self.metric_fns[name](pred, mel).item() * n
            sums[-4] += (pred - mel).abs().mean().item() * C.DB_PER_NEPER * n
            sums[-3] += slope_loss(pred, mel).item() * C.DB_PER_NEPER * n
            level_db = (frame_level(pred) - frame_level(mel)).abs().mean() * C.DB_PER_NEPER
            sums[-2] += level_db.item() * n
            sums[-1] += n
            if first is None:
                first = (mel[0].cpu(), pred[0].cpu(), int(batch["instrument"][0]))
        self.model.train()
        sums = all_reduce_sum(sums, self.info)
        if sums[-1] == 0:
            return {}
        result = {f"valid/{name}": float(sums[j] / sums[-1]) for j, name in enumerate(LOSSES)}
        result["valid/loss"] = result[f"valid/{t.loss}"]
        result["valid/mae_db"] = float(sums[-4] / sums[-1])
        result["valid/slope_db"] = float(sums[-3] / sums[-1])
        result["valid/level_db"] = float(sums[-2] / sums[-1])
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
