"""The texture post-net's adversarial training loop (command and config:
:mod:`mel2mel.train.config`).

1. The frozen acoustic model predicts the log-mel of every train and valid item once, exactly
   (whole pieces, as the synthesizer runs them); the predictions are cached in the run
   directory under the digest of the acoustic weights.
2. Each step draws random crops holding the true mel, the prediction and the instrument, and
   takes a least-squares GAN step: the discriminator learns to tell true mels from textured
   predictions, both given the prediction and the instrument (a conditional discriminator, so
   it judges "is this the texture of this instrument playing this?"), then the post-net
   (:class:`~mel2mel.models.texture.TexturePostnet`) takes a step on the adversarial loss, the
   feature-matching loss, the level-keeping loss and the change-matching loss.

The discriminator has two branches: a 2-D one over (mel bin, frame) patches, which sees the
local fine structure, and a 1-D one over frames with all bins as channels, which sees
modulation shared across bins (the beating of an organ moves all its partials). Both end in a
projection on a learned per-instrument vector (Miyato & Koyama 2018). For a post-net with
``note_detail`` both nets also read the detail of the sounding notes' harmonic combs.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel

from mel2mel import constants as C
from mel2mel import pretrained
from mel2mel.data.dataset import read_manifest
from mel2mel.errors import UserError
from mel2mel.fileio import refuse_overwrite
from mel2mel.instruments import slugify
from mel2mel.models.acoustic import Mel2Mel
from mel2mel.models.blend import values_by_instrument
from mel2mel.models.export import (
    export_paths,
    load_acoustic,
    save_texture,
    texture_paths,
    weights_digest,
)
from mel2mel.models.texture import InstrumentStrengths, TexturePostnet, texture_noise
from mel2mel.train import checkpoint as ckpt
from mel2mel.train.config import TextureRunConfig
from mel2mel.train.distributed import DistInfo, all_reduce_sum
from mel2mel.train.logger import RunLogger
from mel2mel.train.loop import (
    ThroughputWindow,
    TrainerBase,
    TrainResult,
    copy_matching,
    lr_lambda,
    train_session,
)
from mel2mel.train.predictions import PairCrops, prepare_predictions

KIND = "texture"
LEAK = 0.2


class Discriminator(nn.Module):
    """Conditional two-branch discriminator on log-mels.

    Parameters
    ----------
    n_instruments:
        Instruments of the dataset (rows of the projection table).
    n_mels:
        Mel bins.
    channels:
        Width c of the 2-D branch (c, 2c, 4c, 4c channels); the 1-D branch has 4c.
    notes:
        Also given the notes' comb detail (for a ``note_detail`` post-net): it then judges
        whether the peaks and valleys lie where the notes' partials do.
    """

    def __init__(
        self, n_instruments: int, n_mels: int = C.N_MELS, channels: int = 16, notes: bool = False
    ) -> None:
        super().__init__()
        c, w = channels, 4 * channels
        inputs = 3 if notes else 2
        # strided from the first layer: a full-resolution 2-D layer would cost more than all
        # the rest of the training step on a CPU
        shapes2d = [(inputs, c, 2), (c, 2 * c, 2), (2 * c, 4 * c, 2), (4 * c, 4 * c, 1)]
        self.conv2d = nn.ModuleList(
            nn.Conv2d(i, o, (3, 5), stride=(s, s), padding=(1, 2)) for i, o, s in shapes2d
        )
        self.out2d = nn.Conv2d(4 * c, 1, 3, padding=1)
        shapes1d = [(inputs * n_mels, w, 1, 1), (w, w, 2, 1), (w, w, 1, 2)]
        self.conv1d = nn.ModuleList(
            nn.Conv1d(i, o, 5, stride=s, dilation=d, padding=2 * d) for i, o, s, d in shapes1d
        )
        self.out1d = nn.Conv1d(w, 1, 3, padding=1)
        self.project2d = nn.Embedding(n_instruments, 4 * c)
        self.project1d = nn.Embedding(n_instruments, w)
        for table in (self.project2d, self.project1d):
            nn.init.normal_(table.weight, std=0.02)

    def forward(
        self,
        mel: torch.Tensor,
        condition: torch.Tensor,
        instrument: torch.Tensor,
        notes: torch.Tensor | None = None,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Score mels.

        Parameters
        ----------
        mel: Tensor[B x n_mels x T]
            True or textured log-mels.
        condition: Tensor[B x n_mels x T]
            The acoustic model's predictions for them.
        instrument: Tensor[B] (int64)
            Dataset instrument indices.
        notes: Tensor[B x n_mels x T], optional
            The notes' comb detail (a discriminator made with ``notes``).

        Returns
        -------
        (logits, features): ``[Tensor[B x 1 x F' x T'], Tensor[B x 1 x T'']]`` real-vs-fake
        scores of the two branches, and every hidden layer's activations.
        """
        x = (torch.stack([mel, condition], dim=1) - C.MEL_CENTER) / C.MEL_SCALE  # B x 2 x F x T
        if notes is not None:
            x = torch.cat([x, notes[:, None] / C.MEL_SCALE], dim=1)  # B x 3 x F x T
        feats: list[torch.Tensor] = []
        h = x
        for conv in self.conv2d:
            h = F.leaky_relu(conv(h), LEAK)
            feats.append(h)
        proj = (h * self.project2d(instrument)[:, :, None, None]).sum(1, keepdim=True)
        logits = [self.out2d(h) + proj]
        h = x.flatten(1, 2)  # B x 2F x T
        for conv in self.conv1d:
            h = F.leaky_relu(conv(h), LEAK)
            feats.append(h)
        proj = (h * self.project1d(instrument)[:, :, None]).sum(1, keepdim=True)
        logits.append(self.out1d(h) + proj)
        return logits, feats


# -- data -------------------------------------------------------------------------------------


def initial_weights(source: str | Path) -> dict[str, torch.Tensor]:
    """Post-net weights to start from: a texture checkpoint or run directory, or an exported
    post-net (its ``.safetensors`` or ``.json``, e.g. ``mel2mel/pretrained/acoustic_texture.json``)
    whatever acoustic model it was exported for."""
    path = Path(source)
    if path.suffix in (".safetensors", ".json"):
        from safetensors.torch import load_file

        weights = path.with_suffix(".safetensors")
        if not weights.is_file():
            raise UserError(f"train.init_from: no exported post-net weights at {weights}")
        return load_file(str(weights))
    return ckpt.load_checkpoint(path, kind=KIND)["model"]


def band_change(mel: torch.Tensor, active: torch.Tensor, bands: int = 8) -> torch.Tensor:
    """Mean absolute frame-to-frame change of ``mel`` Tensor[B x F x T] over pairs of active
    frames (``active`` bool Tensor[B x T]), per sequence and group of ``F // bands`` bins:
    Tensor[B x bands] (nats); 0 where a sequence has no active pair."""
    both = (active[:, 1:] & active[:, :-1]).unsqueeze(1).to(mel)
    diff = (mel[..., 1:] - mel[..., :-1]).abs() * both
    b, f, t = diff.shape
    per = diff.reshape(b, bands, f // bands, t).sum((2, 3))
    return per / (both.sum((1, 2)) * (f // bands)).clamp_min(1).unsqueeze(1)


#: Modulation-frequency bands (Hz) of :func:`band_modulation`: below 2 Hz is the level, which
#: the post-net keeps; FluidSynth's held notes move at 4-16 Hz (tremolo, vibrato, beating).
MODULATION_BANDS = ((2.0, 4.0), (4.0, 8.0), (8.0, 16.0), (16.0, 32.0), (32.0, C.FRAME_RATE / 2))


def band_modulation(mel: torch.Tensor, bands: int = 8) -> torch.Tensor:
    """How much ``mel`` Tensor[B x F x T] moves at each modulation frequency: the power
    spectrum of every bin's course over the crop (Hann window, mean removed), averaged over
    each group of ``F // bands`` bins and summed within each of :data:`MODULATION_BANDS`,
    as natural logs: Tensor[B x bands x len(MODULATION_BANDS)]."""
    b, f, t = mel.shape
    window = torch.hann_window(t, device=mel.device, dtype=mel.dtype)
    course = (mel - mel.mean(-1, keepdim=True)) * window
    power = torch.fft.rfft(course, dim=-1).abs().square()  # B x F x (T // 2 + 1)
    power = power.reshape(b, bands, f // bands, -1).mean(2)
    freqs = torch.fft.rfftfreq(t, 1.0 / C.FRAME_RATE).to(mel.device)
    summed = [power[..., (freqs >= lo) & (freqs < hi)].sum(-1) for lo, hi in MODULATION_BANDS]
    return torch.log(torch.stack(summed, -1) + 1e-6)


# -- the trainer ------------------------------------------------------------------------------


class _TextureTrainer(TrainerBase):
    """State and steps of one texture training session."""

    kind = KIND

    def __init__(
        self,
        data: Path,
        run_dir: Path,
        config: TextureRunConfig,
        info: DistInfo,
        progress: bool = True,
    ) -> None:
        self.data, self.run_dir, self.info = data, run_dir, info
        t = config.train
        predictions, acoustic = prepare_predictions(t.acoustic, data, run_dir, info, progress)
        self.predictions, self.rows = predictions, predictions.rows
        self.names = [i["name"] for i in read_manifest(data)["instruments"]]
        self.table = acoustic.embedding.weight.detach()[torch.tensor(self.rows)].to(info.device)
        model = {**config.model, "embedding_dim": acoustic.embedding_dim}
        self.config = config = dataclasses.replace(config, model=model)
        cache = predictions.cache
        del acoustic

        torch.manual_seed(t.seed)
        self.model = TexturePostnet(config.model_config()).to(info.device)
        if t.init_from:  # another embedding size (a 100-instrument model) keeps fresh FiLM maps
            _, fresh = copy_matching(self.model, initial_weights(t.init_from), t.init_from)
            if fresh and info.is_main:
                print(f"mel2mel: fresh (not in {t.init_from}): {', '.join(fresh)}", flush=True)
        notes = self.model.config.note_detail
        self.disc = Discriminator(len(self.rows), channels=t.disc_channels, notes=notes)
        self.disc = self.disc.to(info.device)
        self.gen: nn.Module = self.model
        self.dnet: nn.Module = self.disc
        if info.distributed:
            ids = [info.device.index] if info.device.type == "cuda" else None
            self.gen = DistributedDataParallel(self.model, device_ids=ids)
            self.dnet = DistributedDataParallel(self.disc, device_ids=ids)

        def schedule(opt: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
            floor = t.min_lr / t.lr
            return torch.optim.lr_scheduler.LambdaLR(
                opt, lambda s: lr_lambda(s, warmup=t.warmup_steps, total=t.steps, floor=floor)
            )

        adam = {"lr": t.lr, "betas": t.betas, "weight_decay": t.weight_decay}
        self.optimizer = torch.optim.AdamW(self.model.parameters(), **adam)
        self.d_optimizer = torch.optim.AdamW(self.disc.parameters(), **adam)
        self.scheduler, self.d_scheduler = schedule(self.optimizer), schedule(self.d_optimizer)
        common = {"seed": t.seed, "cache": cache}
        self.valid_set = PairCrops(
            data, "valid", t.valid_crop_frames, crops_per_item=t.valid_crops_per_item,
            random_crops=False, **common,
        )  # fmt: skip
        self.use_train_set(PairCrops(data, "train", t.crop_frames, random_crops=True, **common),
                           "items")  # fmt: skip
        self.terms = torch.zeros(7, dtype=torch.float64)  # d, adv, fm, level, change, mod, n

    # -- checkpoints -------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        state = super().state()
        state["metadata"].update(self.predictions.metadata())
        return {
            **state,
            "disc": self.disc.state_dict(),
            "disc_optimizer": self.d_optimizer.state_dict(),
            "disc_scheduler": self.d_scheduler.state_dict(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        if state["config"]["model"] != self.config.to_dict()["model"]:
            raise UserError(
                f"the checkpoint's post-net differs from this run's: {state['config']['model']}"
            )
        if state["metadata"].get("acoustic_digest") != self.predictions.digest:
            raise UserError("the checkpoint was trained on another acoustic model")
        super().restore(state)
        self.disc.load_state_dict(state["disc"])
        self.d_optimizer.load_state_dict(state["disc_optimizer"])
        self.d_scheduler.load_state_dict(state["disc_scheduler"])

    # -- steps -------------------------------------------------------------------------------

    def train_step(self, batch: dict[str, torch.Tensor]) -> tuple[float, float]:
        """A discriminator step, then a post-net step; returns the post-net's (loss, norm)."""
        t, dev = self.config.train, self.info.device
        true, pred = batch["mel"].to(dev), batch["pred"].to(dev)
        inst, roll = batch["instrument"].to(dev), batch["roll"].to(dev)
        b = true.shape[0]
        noise = torch.randn(b, self.model.config.noise_channels, true.shape[-1], device=dev)
        fake = self.gen(pred, self.table[inst], noise, 1.0, roll)
        cond, both_inst = torch.cat([pred, pred]), torch.cat([inst, inst])
        notes = None
        if self.model.notes is not None:
            notes = self.model.notes(roll).repeat(2, 1, 1)

        logits, _ = self.dnet(torch.cat([true, fake.detach()]), cond, both_inst, notes)
        d_loss = sum(((x[:b] - 1) ** 2).mean() + (x[b:] ** 2).mean() for x in logits)
        self.d_optimizer.zero_grad(set_to_none=True)
        d_loss.backward()
        nn.utils.clip_grad_norm_(self.disc.parameters(), t.grad_clip or float("inf"))
        self.d_optimizer.step()
        self.d_scheduler.step()

        logits, feats = self.dnet(torch.cat([true, fake]), cond, both_inst, notes)
        adv = sum(((x[b:] - 1) ** 2).mean() for x in logits)
        fm = sum(F.l1_loss(f[b:], f[:b].detach()) for f in feats) / len(feats)
        k = t.mean_frames
        level = F.avg_pool1d(fake - pred, k, stride=max(1, k // 4)).abs().mean()
        loss = adv + t.fm_weight * fm + t.mean_weight * level
        change = torch.zeros(())
        if t.change_weight:
            active = roll[:, : C.N_KEYS].sum(1) > 0
            change = (band_change(fake, active) - band_change(true, active)).abs().mean()
            loss = loss + t.change_weight * change
        modulation = torch.zeros(())
        if t.modulation_weight:  # crops where notes sound at least half the time
            held = (roll[:, : C.N_KEYS].sum(1) > 0).float().mean(1) >= 0.5
            gap = (band_modulation(fake) - band_modulation(true)).abs().mean((1, 2))
            modulation = (gap * held).sum() / held.sum().clamp_min(1)
            loss = loss + t.modulation_weight * modulation
        values = [d_loss.item(), adv.item(), fm.item(), level.item(), change.item()]
        values += [modulation.item(), 1.0]
        self.terms += torch.tensor(values, dtype=torch.float64)
        return self.optimize(loss)

    def train_scalars(self, window: ThroughputWindow, frames_per_step: int) -> dict[str, float]:
        scalars = super().train_scalars(window, frames_per_step)
        terms = all_reduce_sum(self.terms, self.info)
        self.terms = torch.zeros_like(self.terms)
        n = max(float(terms[-1]), 1.0)
        names = ("train/d_loss", "train/adv", "train/fm", "train/level", "train/change")
        names += ("train/modulation",)
        return {**scalars, **{k: float(v) / n for k, v in zip(names, terms[:6], strict=True)}}

    @torch.no_grad()
    def validate(self, logger: RunLogger | None = None) -> dict[str, float]:
        """Frame-to-frame change of true, predicted and textured mels over active frames (per
        instrument and overall, dB), the level shift of the texture and the textured MAE."""
        n_inst = len(self.rows)
        sums = torch.zeros(n_inst, 6, dtype=torch.float64)  # true, pred, fake, shift, mae, n
        self.model.eval()
        for i in range(self.info.rank, len(self.valid_set), self.info.world_size):
            item = self.valid_set[i]
            true, pred = item["mel"][None], item["pred"][None]
            k = int(item["instrument"])
            noise = texture_noise(i, 0, true.shape[-1], self.model.config.noise_channels)[None]
            dev = self.info.device
            roll = item["roll"][None].to(dev)
            fake = self.model(pred.to(dev), self.table[k][None], noise.to(dev), 1.0, roll).cpu()
            active = item["roll"][None, : C.N_KEYS].sum(1) > 0
            mask = active.unsqueeze(1).expand_as(true)
            vals = [band_change(m, active, bands=1)[0, 0] for m in (true, pred, fake)]
            vals += [((fake - pred)[mask]).mean(), (fake - true).abs().mean(), 1.0]
            sums[k] += torch.tensor([float(v) for v in vals], dtype=torch.float64)
        self.model.train()
        sums = all_reduce_sum(sums, self.info)
        seen = sums[:, -1] > 0
        if not seen.any():
            return {}
        per = sums[seen, :5] / sums[seen, -1:] * C.DB_PER_NEPER
        mean = per.mean(0)
        out = {
            "valid/change_true_db": float(mean[0]),
            "valid/change_pred_db": float(mean[1]),
            "valid/change_textured_db": float(mean[2]),
            "valid/level_shift_db": float(mean[3]),
            "valid/mae_db": float(mean[4]),
        }
        for k, row in zip(torch.nonzero(seen).flatten().tolist(), per, strict=True):
            out[f"valid/ratio_{slugify(self.names[k])}"] = float(row[2] / row[0])
        return out


def train_texture(
    data: str | Path,
    run_dir: str | Path,
    config: TextureRunConfig,
    *,
    resume: bool | str | Path | None = None,
    stop_at: int | None = None,
    device: str | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train (or continue training) a texture post-net; arguments as in
    :func:`mel2mel.train.acoustic_loop.train_acoustic`."""
    return train_session(_TextureTrainer, data, run_dir, config, resume, stop_at, device, progress)


def export_texture_checkpoint(
    checkpoint: str | Path, out: str | Path, *, name: str = "acoustic", force: bool = False,
    strength: float = 1.0, per_instrument: dict[str, float] | None = None,
) -> tuple[Path, Path]:  # fmt: skip
    """Write ``<out>/<name>_texture.safetensors`` + ``.json`` from a texture checkpoint (or run
    directory), without the discriminator and optimizer states.

    ``strength`` is the default strength a synthesizer will use. With ``per_instrument``
    (instrument name or GM program -> strength) every instrument of the acoustic model gets
    its own strength (the others ``strength``), stored as the post-net's
    :class:`~mel2mel.models.texture.InstrumentStrengths`, and the default strength becomes 1:
    a synthesizer's strength then scales each instrument's own. That needs the acoustic model
    the post-net was trained on, at its ``train.acoustic`` (None: the shipped one) or at
    ``<out>/<name>``.
    """
    state = ckpt.load_checkpoint(checkpoint, kind=KIND)
    config = TextureRunConfig.from_dict(state["config"])
    model = TexturePostnet(config.model_config())
    model.load_state_dict(state["model"])
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a directory")
    refuse_overwrite(texture_paths(out / name), force)
    meta = state["metadata"]
    if per_instrument:
        shipped = pretrained.path(pretrained.ACOUSTIC)  # train.acoustic None: the shipped one
        places = [config.train.acoustic or shipped, out / name]
        acoustic = trained_on(meta["acoustic_digest"], places)
        model.instrument_strengths = strengths_for(acoustic, strength, per_instrument)
        strength = 1.0
    info = {"step": state["step"], "train": config.train.to_dict(), "data": meta.get("data")}
    info["valid"] = meta.get("valid", {})
    return save_texture(model, out / name, meta["acoustic_digest"], info, strength)


def trained_on(digest: str, places: list[str | Path]) -> Mel2Mel:
    """The acoustic export among ``places`` whose weights have ``digest``."""
    for place in places:
        weights, _ = export_paths(place)
        if weights.is_file() and weights_digest(weights) == digest:
            return load_acoustic(place)
    tried = ", ".join(str(p) for p in places)
    raise UserError(
        f"strengths per instrument need the acoustic model the post-net was trained on "
        f"(weights digest {digest}); not found at {tried}"
    )


def strengths_for(
    acoustic: Mel2Mel, default: float, chosen: dict[str, float]
) -> InstrumentStrengths:
    """Every instrument of ``acoustic`` with its embedding and its strength: ``chosen`` (keyed
    by name or GM program, as :meth:`Mel2Mel.instrument_index` reads them) or ``default``.

    Raises UnknownInstrumentError (listing the valid names) for a key the model lacks."""
    n = len(acoustic.instruments)
    values = values_by_instrument(n, acoustic.instrument_index, default, chosen)
    table = tuple(tuple(row) for row in acoustic.embedding.weight.detach().cpu().tolist())
    return InstrumentStrengths(tuple(i.name for i in acoustic.instruments), table, values)
