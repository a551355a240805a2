"""The vocoder training loop (see :mod:`mel2mel.train.config` for the command and config).

Shares the acoustic loop's machinery: :class:`ResumableSampler` + :class:`SeededCrops` for a data
order that survives resumes and process counts, the warmup + cosine schedule, signal-safe
checkpointing and the run logger.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mel2mel import constants as C
from mel2mel.audio import LogMel
from mel2mel.errors import UserError
from mel2mel.fileio import refuse_overwrite
from mel2mel.models import export
from mel2mel.train import checkpoint as ckpt
from mel2mel.train.config import VocoderRunConfig
from mel2mel.train.data import SeededCrops
from mel2mel.train.distributed import (
    DistInfo,
    all_reduce_sum,
)
from mel2mel.train.logger import RunLogger
from mel2mel.train.loop import (
    TrainerBase,
    TrainResult,
    lr_lambda,
    train_session,
)
from mel2mel.train.predictions import PairCrops, Predictions, prepare_predictions
from mel2mel.vocoders.base import Vocoder
from mel2mel.vocoders.fast import FastVocoder, training_losses
from mel2mel.vocoders.wavenet import WaveNet, training_step

KIND = "vocoder"


def build_vocoder(config: VocoderRunConfig) -> Vocoder:
    """A freshly initialized vocoder of the run's kind and sizes."""
    cls = FastVocoder if config.kind == "fast" else WaveNet
    return cls(config.model_config())


def batch_losses(model: nn.Module, kind: str, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Loss terms of one batch (``"loss"`` is the one to minimize)."""
    if kind == "fast":
        return training_losses(model, batch)  # type: ignore[arg-type]

    return {"loss": training_step(model, batch)}  # type: ignore[arg-type]


class _Objective(nn.Module):
    """The loss as a module's forward, so that DistributedDataParallel can wrap it (DDP syncs
    gradients of what runs inside the wrapper's forward)."""

    def __init__(self, model: nn.Module, kind: str) -> None:
        super().__init__()
        self.model, self.kind = model, kind

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return batch_losses(self.model, self.kind, batch)["loss"]


class _VocoderTrainer(TrainerBase):
    """State and steps of one vocoder training session."""

    kind = KIND

    def __init__(
        self,
        data: Path,
        run_dir: Path,
        config: VocoderRunConfig,
        info: DistInfo,
        progress: bool = True,
    ) -> None:
        self.data, self.run_dir, self.config, self.info = data, run_dir, config, info
        t = config.train
        torch.manual_seed(t.seed)
        self.model = build_vocoder(config).to(info.device)
        if t.init_from:
            self._init_from(t.init_from)
        self.objective: nn.Module = _Objective(self.model, config.kind)
        if info.distributed:
            ids = [info.device.index] if info.device.type == "cuda" else None
            self.objective = DistributedDataParallel(self.objective, device_ids=ids)
        decay = [p for p in self.model.parameters() if p.dim() >= 2]
        other = [p for p in self.model.parameters() if p.dim() < 2]
        self.optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": t.weight_decay},
                {"params": other, "weight_decay": 0.0},
            ],
            lr=t.lr,
            betas=t.betas,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: lr_lambda(s, warmup=t.warmup_steps, total=t.steps, floor=t.min_lr / t.lr),
        )
        self.predictions: Predictions | None = None
        crops: Any = SeededCrops
        if t.acoustic:
            self.predictions, _ = prepare_predictions(t.acoustic, data, run_dir, info, progress)
            crops = functools.partial(PairCrops, cache=self.predictions.cache)
        common = {"audio": True, "seed": t.seed}
        self.valid_set = crops(data, "valid", t.valid_crop_frames, random_crops=False, **common)
        train_set = crops(data, "train", t.crop_frames, random_crops=True, **common)
        self.use_train_set(train_set, "items")
        self._log_mel = LogMel().to(info.device)

    def _init_from(self, stem: str) -> None:
        source = export.load_vocoder(stem)
        if source.kind != self.config.kind:
            raise UserError(f"train.init_from: {stem} is a {source.kind} vocoder")
        training_only = getattr(type(self.model.config), "TRAINING_FIELDS", ())

        def sizes(config: Any) -> dict[str, Any]:
            return {k: v for k, v in dataclasses.asdict(config).items() if k not in training_only}

        if sizes(source.config) != sizes(self.model.config):
            raise UserError(f"train.init_from: {stem} has other sizes: {source.config}")
        self.model.load_state_dict(source.state_dict())

    def state(self) -> dict[str, Any]:
        state = super().state()
        if self.predictions is not None:
            state["metadata"].update(self.predictions.metadata())
        return state

    def restore(self, state: dict[str, Any]) -> None:
        digest = None if self.predictions is None else self.predictions.digest
        if state["metadata"].get("acoustic_digest") != digest:
            raise UserError("the checkpoint was trained on other mels (train.acoustic differs)")
        saved = state["config"]
        if (saved["kind"], saved["model"]) != (self.config.kind, self.config.to_dict()["model"]):
            raise UserError(
                "the checkpoint's vocoder differs from this run's config; "
                f"checkpoint: {saved['kind']} {saved['model']}"
            )
        super().restore(state)

    def train_step(self, batch: dict[str, torch.Tensor]) -> tuple[float, float]:
        dev = self.info.device
        batch = {k: v.to(dev, non_blocking=True) for k, v in batch.items() if k != "item"}
        if "pred" in batch:  # ground-truth-aligned: the model's mel in, the true audio out
            batch["mel"] = batch.pop("pred")
        return self.optimize(self.objective(batch))

    @torch.no_grad()
    def validate(self, logger: RunLogger | None = None) -> dict[str, float]:
        """Copy-synthesis log-mel error (fast; with ``train.acoustic``, of the vocoded
        prediction against the true mel) or teacher-forced cross-entropy (WaveNet)."""
        t = self.config.train
        n = min(len(self.valid_set), t.valid_crops) if t.valid_crops else len(self.valid_set)
        mine = range(self.info.rank, n, self.info.world_size)
        sums = torch.zeros(2, dtype=torch.float64)
        self.model.eval()
        for i in mine:
            item = self.valid_set[i]
            mel = item["mel"][None].to(self.info.device)
            if self.config.kind == "fast":
                source = item["pred"][None].to(self.info.device) if "pred" in item else mel
                audio = self.model.vocode(source, item["roll"][None])
                value = (self._log_mel(audio)[..., : mel.shape[-1]] - mel).abs().mean()
            else:
                batch = {"mel": mel, "audio": item["audio"][None].to(self.info.device)}
                value = batch_losses(self.model, "wavenet", batch)["loss"]
            sums += torch.tensor([float(value), 1.0], dtype=torch.float64)
        self.model.train()
        sums = all_reduce_sum(sums, self.info)
        if sums[1] == 0:
            return {}
        mean = float(sums[0] / sums[1])
        if self.config.kind == "fast":
            return {"valid/log_mel_l1": mean, "valid/log_mel_db": mean * C.DB_PER_NEPER}
        return {"valid/cross_entropy": mean}


def train_vocoder(
    data: str | Path,
    run_dir: str | Path,
    config: VocoderRunConfig,
    *,
    resume: bool | str | Path | None = None,
    stop_at: int | None = None,
    device: str | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train (or continue training) a vocoder; arguments as in
    :func:`mel2mel.train.acoustic_loop.train_acoustic`."""
    return train_session(_VocoderTrainer, data, run_dir, config, resume, stop_at, device, progress)


def export_vocoder_checkpoint(
    checkpoint: str | Path, out: str | Path, *, name: str | None = None, force: bool = False
) -> tuple[Path, Path]:
    """Write the safetensors + JSON export of a vocoder checkpoint (or run directory)."""
    state = ckpt.load_checkpoint(checkpoint, kind=KIND)
    config = VocoderRunConfig.from_dict(state["config"])
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, init_from=None))
    model = build_vocoder(config)
    model.load_state_dict(state["model"])
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a directory")
    stem = out / (name or export.VOCODER_STEMS[config.kind])
    refuse_overwrite((stem.with_suffix(".json"), stem.with_suffix(".safetensors")), force)
    meta = {"step": state["step"], "data": state["metadata"].get("data"), **state["metadata"]}
    meta["train"] = config.train.to_dict()
    return export.save_vocoder(model, stem, meta)
