"""Training configuration: frozen dataclasses read from YAML.

A run is described by a :class:`RunConfig` = model architecture + training hyperparameters::

    model:                 # AcousticConfig fields, optionally starting from a preset
      preset: paper
      embedding_dim: 2
    train:                 # TrainConfig fields
      steps: 2000
      batch_size: 16
      ...

``model.n_instruments`` is filled in from the dataset manifest when training starts, so a
YAML file does not need to know how many instruments a dataset holds. Unknown keys are errors.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mel2mel.configs import config_from_dict
from mel2mel.data.corpus import AUGMENT_KINDS
from mel2mel.errors import UserError
from mel2mel.models.config import AcousticConfig
from mel2mel.models.losses import LOSSES, TANH_OFFSET, TANH_SCALE
from mel2mel.models.texture import TextureConfig
from mel2mel.train.settings import check_train_settings, settings_dict
from mel2mel.vocoders.fast import FastVocoderConfig
from mel2mel.vocoders.wavenet import WaveNetConfig


def check_repeat(repeat: Any) -> None:
    """ValueError unless ``repeat`` maps piece kinds (:data:`AUGMENT_KINDS`) to whole numbers
    >= 1."""
    if not isinstance(repeat, Mapping):
        raise ValueError(f"train.repeat must map piece kinds to counts, got {repeat!r}")
    for kind, count in repeat.items():
        if kind not in AUGMENT_KINDS:
            raise ValueError(
                f"train.repeat: unknown piece kind {kind!r}; choose from {', '.join(AUGMENT_KINDS)}"
            )
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"train.repeat.{kind} must be a whole number >= 1, got {count!r}")


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one acoustic-model training run.

    Parameters
    ----------
    steps:
        Optimizer steps in the whole run (a resumed run continues up to this number).
    batch_size:
        Crops per step *per process*; the global batch is ``batch_size * world_size``.
    crop_frames:
        Frames per training crop (125 frames = 1 s).
    crops_per_item:
        Random crops drawn from each dataset item per epoch.
    instruments:
        Optional subset of the dataset's instruments (names, case-insensitive, or GM program
        numbers) to train on; ``None`` = all. The embedding table still has a row for every
        instrument of the dataset.
    lr, min_lr:
        Peak and final learning rate of the schedule: linear warmup from 0 over
        ``warmup_steps``, then cosine decay to ``min_lr`` at ``steps``.
    warmup_steps:
        Length of the linear warmup.
    weight_decay:
        AdamW decoupled weight decay, applied to matrices only (not biases, the embedding
        table or FiLM maps).
    embedding_lr_scale:
        Learning rate of the embedding table relative to ``lr`` (same schedule). Adam moves a
        parameter by about ``lr`` per step whatever its scale, so a table of 100 instruments
        that each see a few hundredths of the batches needs a larger step to organize.
    embedding_weight_decay:
        AdamW decoupled weight decay of the embedding table (default 0): each step shrinks
        every instrument's vector by ``lr * embedding_lr_scale * embedding_weight_decay`` of
        itself, so a direction that the loss does not need to tell two instruments apart
        collapses instead of keeping where its start put it.
    betas:
        AdamW betas.
    grad_clip:
        Maximum global gradient norm (``0`` disables clipping).
    loss:
        ``abs``, ``log-abs`` or ``tanh-log-abs`` (see :mod:`mel2mel.models.losses`).
    tanh_offset, tanh_scale:
        Squashing constants of ``tanh-log-abs``.
    level_weight:
        Weight of :func:`mel2mel.models.losses.level_loss` (frame power, nepers) added to the
        loss; 0 (the default) adds nothing.
    level_frames:
        The frames the level term averages over: ``all``, or ``sounding`` (those where a note
        sounds, leaving out silences and release tails).
    slope_weight:
        Weight of :func:`mel2mel.models.losses.slope_loss` (the error of each frame's frequency
        slopes, which asks for harmonic peaks as sharp as the truth's) added to the loss; 0
        (the default) adds nothing.
    flux_weight:
        Weight of :func:`mel2mel.models.losses.flux_loss` (the error of each bin's rises from
        frame to frame, which asks that held notes not rise when others are struck) added to
        the loss; 0 (the default) adds nothing.
    variation_weight:
        Weight of :func:`mel2mel.models.losses.variation_loss` (the error of how much each bin
        moves over a crop, in time and across bins, whenever it moves) added to the loss; 0
        (the default) adds nothing.
    quiet_weight:
        Weight in the loss of the frames whose loudest sounding note is pp (velocity < 40, the
        evaluation's band), against 1 for the others (:func:`mel2mel.models.losses.reweighted`);
        quiet playing is a small share of any corpus. 1 (the default) weighs all frames alike.
    quiet_level_weight:
        The same for the level term: the weight of the pp frames in its mean (a weighted mean
        over the frames that ``level_frames`` selects). A soft note's few partials stand a few
        nepers above the floor, and a bin-wise loss that is unsure where they fall draws them
        too quiet (docs/MODELS.md, "Stop 29"); 1 (the default) weighs all frames alike.
    bin_balance:
        Exponent ``a`` of per-bin loss weights ``(mean_b v_ib / v_ib) ** a``, normalized to a
        mean of 1 over the bins of each instrument ``i``, where ``v_ib`` is the variance of
        its bin ``b`` over the train split's mels (:func:`mel2mel.train.data.bin_variances`).
        The paper's analysis scores every bin by its Pearson r, which does not care how far a
        bin swings; a squared error does, and leaves the bins that barely leave the floor
        (the high bins of the decaying instruments: r 0.3-0.6 for the Electric Piano) to
        chance. ``a = 1`` weighs each bin's error against its own spread, ``0`` (the default)
        weighs all bins alike. ``log-abs`` loss only. The shipped model's last cycle used 0.5:
        a little closer everywhere, those top bins no closer (docs/MODELS.md, "Stage 24").
    floor_margin:
        The loss sees the prediction as inference plays it, floored at the analysis floor,
        with a dead band of this many nepers below the floor in which a bin whose target is the
        floor costs nothing and under which it is pulled back
        (:func:`mel2mel.models.losses.dead_band_floor`). ``None`` (the default): the loss sees
        the unfloored prediction, every bin pulled towards its target.
    repeat:
        Times per epoch that each train item of a piece of the given kind appears, by the
        manifest's piece kind (``plain``, ``excerpt``, ``perform``, ``texture``, ``strikes``,
        ``solo``), e.g. ``{strikes: 3}``; kinds not named appear once. ``None`` (the default)
        repeats nothing.
    num_workers:
        DataLoader worker processes per training process.
    seed:
        Seeds the model initialization, the data order and the crops.
    log_every:
        Steps between training-loss log lines (TensorBoard, ``metrics.jsonl``).
    valid_every:
        Steps between validations (``0`` disables them).
    valid_batches:
        Batches of fixed validation crops per validation (``0`` = the whole valid split).
    valid_crops_per_item:
        Fixed crops per valid item, spread evenly over the piece.
    checkpoint_every:
        Steps between checkpoints (a checkpoint is also written at the end and on SIGTERM).
    keep_checkpoints:
        Numbered checkpoints to keep besides ``checkpoint.pt`` (``0`` keeps all).
    init_from:
        Optional exported model (prefix, directory, ``.safetensors``/``.json``) or checkpoint
        (``.pt`` file or run directory) whose weights initialize a fresh run wherever name and
        shape match (see :func:`mel2mel.train.loop.init_from_pretrained`); ignored on resume.
    """

    steps: int = 2000
    batch_size: int = 16
    crop_frames: int = 512
    crops_per_item: int = 1
    instruments: tuple[str, ...] | None = None
    lr: float = 2e-3
    min_lr: float = 2e-5
    warmup_steps: int = 150
    weight_decay: float = 0.01
    embedding_lr_scale: float = 1.0
    embedding_weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0
    loss: str = "tanh-log-abs"
    tanh_offset: float = TANH_OFFSET
    tanh_scale: float = TANH_SCALE
    level_weight: float = 0.0
    level_frames: str = "all"
    slope_weight: float = 0.0
    flux_weight: float = 0.0
    variation_weight: float = 0.0
    quiet_weight: float = 1.0
    quiet_level_weight: float = 1.0
    bin_balance: float = 0.0
    floor_margin: float | None = None
    repeat: dict[str, int] | None = None
    num_workers: int = 1
    seed: int = 0
    log_every: int = 25
    valid_every: int = 250
    valid_batches: int = 0
    valid_crops_per_item: int = 2
    checkpoint_every: int = 250
    keep_checkpoints: int = 3
    init_from: str | None = None

    def __post_init__(self) -> None:
        if self.instruments is not None:
            object.__setattr__(self, "instruments", tuple(str(i) for i in self.instruments))
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; choose from {', '.join(LOSSES)}")
        positive = ("steps", "batch_size", "crop_frames", "crops_per_item", "log_every")
        if not self.embedding_lr_scale > 0:
            raise ValueError("train.embedding_lr_scale must be > 0")
        if self.embedding_weight_decay < 0:
            raise ValueError("train.embedding_weight_decay must be >= 0")
        if self.level_weight < 0:
            raise ValueError("train.level_weight must be >= 0")
        if self.slope_weight < 0:
            raise ValueError("train.slope_weight must be >= 0")
        if self.flux_weight < 0:
            raise ValueError("train.flux_weight must be >= 0")
        if self.variation_weight < 0:
            raise ValueError("train.variation_weight must be >= 0")
        if self.level_frames not in ("all", "sounding"):
            raise ValueError("train.level_frames must be 'all' or 'sounding'")
        if not self.quiet_weight > 0:
            raise ValueError("train.quiet_weight must be > 0")
        if not self.quiet_level_weight > 0:
            raise ValueError("train.quiet_level_weight must be > 0")
        if not 0 <= self.bin_balance <= 1:
            raise ValueError("train.bin_balance must be in [0, 1]")
        if self.bin_balance and self.loss != "log-abs":
            raise ValueError("train.bin_balance weighs a squared error: use train.loss=log-abs")
        if self.floor_margin is not None and not self.floor_margin >= 0:
            raise ValueError("train.floor_margin must be >= 0 (or null)")
        if self.repeat is not None:
            check_repeat(self.repeat)
        check_train_settings(self, (*positive, "valid_crops_per_item", "checkpoint_every"))

    def to_dict(self) -> dict[str, Any]:
        """Plain ``dict`` of the fields (tuples become lists, for YAML/JSON)."""
        return settings_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a dict, rejecting unknown keys."""
        return config_from_dict(cls, data)


@dataclass(frozen=True)
class RunConfig:
    """Everything a training run needs besides the data: model + training settings."""

    model: AcousticConfig = field(default_factory=AcousticConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        """``{"model": {...}, "train": {...}}``."""
        return {"model": self.model.to_dict(), "train": self.train.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Build from ``{"model": {...}, "train": {...}}``; ``model.preset`` picks a base."""
        unknown = sorted(set(data) - {"model", "train"})
        if unknown:
            raise ValueError(f"unknown config section(s) {unknown}; valid: ['model', 'train']")
        model = dict(data.get("model") or {})
        preset = model.pop("preset", None)
        base = AcousticConfig.preset(preset) if preset else AcousticConfig()
        base_dict = base.to_dict()
        bad = sorted(set(model) - set(base_dict))
        if bad:
            raise ValueError(f"unknown AcousticConfig field(s) {bad}; valid: {sorted(base_dict)}")
        return cls(
            model=AcousticConfig.from_dict({**base_dict, **model}),
            train=TrainConfig.from_dict(dict(data.get("train") or {})),
        )


def read_config_mapping(path: str | os.PathLike) -> dict[str, Any]:
    """The raw mapping of a YAML run config; every problem becomes a :class:`UserError`."""
    try:
        import yaml
    except ImportError as err:
        raise UserError("reading YAML configs needs pyyaml: pip install 'mel2mel[train]'") from err
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise UserError(f"cannot read config {path}: {err}") from err
    if not isinstance(data, dict):
        raise UserError(f"{path}: a config must be a mapping with 'model' and 'train' sections")
    return data


def load_run_config(path: str | os.PathLike) -> RunConfig:
    """Read and check a YAML run config; every problem becomes a :class:`UserError`."""
    try:
        return RunConfig.from_dict(read_config_mapping(path))
    except (TypeError, ValueError) as err:
        raise UserError(f"{path}: {err}") from err


# -- vocoder runs ----------------------------------------------------------------------


@dataclass(frozen=True)
class VocoderTrainConfig:
    """Hyperparameters of a vocoder run (see :class:`mel2mel.train.config.TrainConfig` for the
    meaning of the shared fields). ``crop_frames`` crops of ``crop_frames * 128`` samples;
    ``valid_crops`` fixed crops of the valid split are scored at each validation.

    ``acoustic`` (fast vocoder only): an acoustic export whose predictions of the dataset's
    pieces replace the true mels as the vocoder's input, while the loss still compares with the
    true audio (ground-truth-aligned training, :mod:`mel2mel.train.predictions`): the vocoder
    learns to play what that model predicts as FluidSynth would. Validation then scores the
    vocoded prediction against the true mel.
    """

    steps: int = 12000
    batch_size: int = 8
    crop_frames: int = 96
    lr: float = 1e-3
    min_lr: float = 1e-5
    warmup_steps: int = 200
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.99)
    grad_clip: float = 10.0
    num_workers: int = 1
    seed: int = 0
    log_every: int = 50
    valid_every: int = 1000
    valid_crops: int = 64
    valid_crop_frames: int = 256
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    init_from: str | None = None
    acoustic: str | None = None

    def __post_init__(self) -> None:
        positive = ("steps", "batch_size", "crop_frames", "log_every", "checkpoint_every")
        check_train_settings(self, positive)

    def to_dict(self) -> dict[str, Any]:
        return settings_dict(self)


@dataclass(frozen=True)
class VocoderRunConfig:
    """``kind`` (``fast`` or ``wavenet``), the model's config fields and the training settings."""

    kind: str = "fast"
    model: dict[str, Any] = field(default_factory=dict)
    train: VocoderTrainConfig = field(default_factory=VocoderTrainConfig)

    def __post_init__(self) -> None:
        if self.kind not in ("fast", "wavenet"):
            raise ValueError(f"unknown vocoder kind {self.kind!r}; choose fast or wavenet")
        if self.train.acoustic and self.kind != "fast":
            raise ValueError("train.acoustic (an acoustic model's mels as input) needs kind: fast")
        # Validate, and store every field so that equal models have equal configs.
        object.__setattr__(self, "model", self.model_config().to_dict())

    def model_config(self) -> Any:
        cls = FastVocoderConfig if self.kind == "fast" else WaveNetConfig
        return cls.from_dict({**cls().to_dict(), **self.model})

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "model": self.model_config().to_dict(),
            "train": self.train.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VocoderRunConfig:
        unknown = sorted(set(data) - {"kind", "model", "train"})
        if unknown:
            raise ValueError(f"unknown config section(s) {unknown}; valid: kind, model, train")
        return cls(
            kind=str(data.get("kind", "fast")),
            model=dict(data.get("model") or {}),
            train=config_from_dict(VocoderTrainConfig, dict(data.get("train") or {})),
        )


# -- texture post-net runs ------------------------------------------------------------


@dataclass(frozen=True)
class TextureTrainConfig:
    """Hyperparameters of a texture run (shared fields as in
    :class:`mel2mel.train.config.TrainConfig`).

    ``acoustic`` is the frozen acoustic export whose predictions are textured (default: the
    shipped one). Losses of the post-net: least-squares adversarial (weight 1), feature
    matching on the discriminator's layers (``fm_weight``), and ``mean_weight`` times the L1
    distance between the post-net's output and its input after a moving average of
    ``mean_frames`` frames: texture may move a bin up and down, not shift its level; and
    ``change_weight`` times the L1 distance between the mean frame-to-frame change of the
    output and of the true mel, per crop and group of 10 bins, over frames with notes (a
    modulation statistic in the spirit of the global-variance and modulation-spectrum
    post-filters of speech synthesis): it holds the amount of texture to the instrument's,
    where the adversarial loss alone over-textured steady instruments. ``modulation_weight``
    times the L1 distance between the log modulation spectra of output and true mel
    (:func:`mel2mel.train.texture_loop.band_modulation`: per group of 10 bins, in bands of 2-4,
    4-8, 8-16, 16-32 and 32-62.5 Hz) over the crops where notes sound at least half the time:
    it holds not only the amount of texture but its speed to the instrument's (0, the
    default, leaves it out; the frame-to-frame change alone is met by fast flicker where
    FluidSynth's modulation is at 4-16 Hz, docs/TEXTURE.md). ``disc_channels``
    sizes the discriminator. ``init_from``: a texture checkpoint (or run directory), or an exported
    post-net (``.safetensors``/``.json``, e.g. to adapt the shipped one to a retrained acoustic
    model), whose post-net weights start the run; its discriminator and optimizers start afresh (to
    continue a run with all its state, resume it instead).
    """

    steps: int = 6000
    batch_size: int = 16
    crop_frames: int = 128
    lr: float = 2e-4
    min_lr: float = 2e-5
    warmup_steps: int = 100
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.5, 0.9)
    grad_clip: float = 10.0
    num_workers: int = 1
    seed: int = 0
    log_every: int = 50
    valid_every: int = 500
    valid_crop_frames: int = 512
    valid_crops_per_item: int = 1
    checkpoint_every: int = 250
    keep_checkpoints: int = 3
    fm_weight: float = 2.0
    mean_weight: float = 10.0
    mean_frames: int = 64
    change_weight: float = 10.0
    modulation_weight: float = 0.0
    disc_channels: int = 16
    acoustic: str | None = None
    init_from: str | None = None

    def __post_init__(self) -> None:
        positive = ("steps", "batch_size", "crop_frames", "log_every", "checkpoint_every")
        check_train_settings(self, (*positive, "mean_frames", "disc_channels"))

    def to_dict(self) -> dict[str, Any]:
        return settings_dict(self)


@dataclass(frozen=True)
class TextureRunConfig:
    """The post-net's config fields (:class:`~mel2mel.models.texture.TextureConfig`; its
    ``embedding_dim`` is set from the acoustic model) and the training settings."""

    model: dict[str, Any] = field(default_factory=dict)
    train: TextureTrainConfig = field(default_factory=TextureTrainConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", self.model_config().to_dict())

    def model_config(self) -> Any:
        return TextureConfig.from_dict({**TextureConfig().to_dict(), **self.model})

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model_config().to_dict(), "train": self.train.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TextureRunConfig:
        unknown = sorted(set(data) - {"model", "train"})
        if unknown:
            raise ValueError(f"unknown config section(s) {unknown}; valid: model, train")
        train = config_from_dict(TextureTrainConfig, dict(data.get("train") or {}))
        return cls(model=dict(data.get("model") or {}), train=train)
