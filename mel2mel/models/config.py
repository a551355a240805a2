"""Frozen configuration dataclasses for the acoustic model.

A config is the single description of an architecture: :func:`mel2mel.models.build_acoustic`
turns it into a module, checkpoints and exported models store it as a plain dict
(:meth:`AcousticConfig.to_dict`) and rebuild it with :meth:`AcousticConfig.from_dict`, which
rejects unknown keys so that a typo in a YAML file never passes silently.

Presets
-------
``paper``      the published Mel2Mel for 10 instruments (2-D embedding), about 1.14 M parameters;
``paper100``   the same network with a 10-D embedding for the 100-instrument experiment;
``debug``      a tiny variant (a few thousand parameters) for tests and smoke runs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from mel2mel import constants as C
from mel2mel.configs import config_from_dict

VELOCITY_CODINGS = ("linear", "log", "linear+log")


@dataclass(frozen=True)
class AcousticConfig:
    """Architecture of the Mel2Mel acoustic model (piano roll -> log-mel).

    The defaults are the published network: a 1x1 convolution ``roll_channels -> channels``,
    FiLM from the instrument embedding, a bidirectional LSTM with ``lstm_hidden`` units per
    direction, FiLM on its ``2 * lstm_hidden`` outputs and a 1x1 convolution to ``n_mels``.

    Parameters
    ----------
    n_instruments:
        Rows of the learned embedding table (the training set's instruments).
    embedding_dim:
        Size E of an instrument embedding: 2 for the paper's 10 instruments, 10 for 100.
    roll_channels:
        Input channels: ``2 * 88`` (sounding block, then onset block).
    channels:
        Width of the input projection (256 in the paper).
    lstm_hidden:
        LSTM units per direction (256 in the paper).
    lstm_layers:
        Stacked bidirectional LSTM layers (1 in the paper; a variation).
    frontend_layers:
        Extra ``Conv1d(channels, channels, frontend_kernel) + ReLU`` blocks after the input
        projection, before the first FiLM (0 in the paper; a variation).
    frontend_kernel:
        Odd kernel size of those blocks (``same`` padding, so the frame count is kept).
    dropout:
        Dropout between stacked LSTM layers (only used when ``lstm_layers > 1``).
    n_mels:
        Output mel bins.
    velocity_coding:
        How a note's velocity ``v`` enters the roll's nonzero entries (the paper says only
        "normalized"): ``linear``, ``v / 127`` (every model before the performance corpus);
        ``log``, ``0.2 + 0.8 ln(v) / ln(127)`` (0.2 at ``v = 1``, 1 at 127), affine in
        FluidSynth's velocity gain in dB (40 log10(v / 127)), so the input projection can map
        a note's velocity onto a log-mel level linearly; ``linear+log``, both side by side (the
        input projection then reads ``2 * roll_channels`` rows, see :attr:`input_channels`), so
        that a model trained with ``linear`` can be extended without changing what it plays
        (the new rows' weights start at zero, :meth:`Mel2Mel.fit_input_projection`). See
        :func:`mel2mel.models.code_velocity`.
    embedding_init_std:
        Standard deviation of the embedding table's normal initialization (1, PyTorch's
        default, for every 10-instrument model). A small value (0.1 for the 100-instrument
        space) starts every instrument near the origin, so that where it ends up is set by
        training rather than by its random starting point (see docs/SPACE100.md).
    embedding_noise:
        In training mode only, Gaussian noise added to every looked-up embedding, with a
        standard deviation of this fraction of the table's own spread in each dimension (the
        standard deviation over instruments, not a gradient path), so that the table cannot
        outgrow it by scaling up. A model trained so must play nearly the same for nearby
        points, which is meant to pull instruments that sound alike together; on the
        100-instrument space it measurably did not (docs/SPACE100.md), and no shipped model
        uses it. 0 (the default) adds none.
    harmonic_detail:
        Add to the output the bin-to-bin detail of the sounding notes' harmonic combs, scaled
        per mel bin by a gain affine in the embedding (zero at initialization), see
        :mod:`mel2mel.models.harmonic`. A variation (not in the paper): the network alone draws
        low notes without their harmonic peaks. Off by default.
    head_channels:
        Width of a nonlinear readout added to the linear output layer (a per-frame MLP on the
        modulated LSTM states, FiLM-conditioned, zero at initialization; see
        :mod:`mel2mel.models.readout`). A variation; 0 (the default, the paper's) adds none.
    detail_gate:
        With ``harmonic_detail``: let the modulated LSTM states move the detail's gain in
        every frame and bin (a 1x1 convolution added to the instrument's gain, zero at
        initialization), so that how deep the combs are drawn can follow the music (the
        shipped model draws them shallower at attacks, deeper in held and dense frames). A
        variation; off by default.
    harmonic_heights:
        With ``harmonic_detail``: let the embedding set the height of each group of harmonic
        ranks in the combs (the fundamental, the 2nd ... 6th harmonics, then bands; affine,
        zero at initialization: the fixed ``1 / k`` comb), so that an instrument's comb can
        have its own partials (a square wave's odd harmonics, a bell's few). A variation; off
        by default.
    note_modulation:
        Add the onset-locked tremolo and vibrato of the sounding keys (a bank of sinusoids of
        the time since each key's onset, their coefficients read frame by frame from the
        modulated LSTM states, zero at initialization; see :mod:`mel2mel.models.modulation`),
        so that a held note can move as FluidSynth's does. A variation; off by default. The
        fast path folds it; the in-page ONNX graph does not support it yet.
    velocity_gain:
        Add the sounding notes' level (from their velocities, held through silences) times a
        per-bin slope affine in the embedding, zero at initialization, to the output past the
        LSTM (see :mod:`mel2mel.models.velocity_gain`), so that a soft note can be drawn as a
        louder one turned down, as FluidSynth plays it. A variation; off by default. The fast
        path adds it; the in-page ONNX graph does not support it yet.
    """

    n_instruments: int = 10
    embedding_dim: int = 2
    roll_channels: int = C.ROLL_CHANNELS
    channels: int = 256
    lstm_hidden: int = 256
    lstm_layers: int = 1
    frontend_layers: int = 0
    frontend_kernel: int = 3
    dropout: float = 0.0
    n_mels: int = C.N_MELS
    velocity_coding: str = "linear"
    embedding_init_std: float = 1.0
    embedding_noise: float = 0.0
    harmonic_detail: bool = False
    head_channels: int = 0
    detail_gate: bool = False
    harmonic_heights: bool = False
    note_modulation: bool = False
    velocity_gain: bool = False

    def __post_init__(self) -> None:
        positive = ("n_instruments", "embedding_dim", "roll_channels", "channels")
        positive += ("lstm_hidden", "lstm_layers", "n_mels")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"AcousticConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("frontend_layers", "head_channels"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"AcousticConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.frontend_kernel < 1 or self.frontend_kernel % 2 == 0:
            raise ValueError("AcousticConfig.frontend_kernel must be odd and >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("AcousticConfig.dropout must be in [0, 1)")
        if not self.embedding_init_std > 0:
            raise ValueError("AcousticConfig.embedding_init_std must be > 0")
        if self.embedding_noise < 0:
            raise ValueError("AcousticConfig.embedding_noise must be >= 0")
        needs = {
            "harmonic_detail": C.N_KEYS,
            "note_modulation": C.ROLL_CHANNELS,
            "velocity_gain": C.N_KEYS,
        }
        for name, rows in needs.items():
            if getattr(self, name) and (self.roll_channels < rows or self.n_mels != C.N_MELS):
                raise ValueError(
                    f"AcousticConfig.{name} needs {rows} roll rows and {C.N_MELS} mel bins"
                )
        for name in ("detail_gate", "harmonic_heights"):
            if getattr(self, name) and not self.harmonic_detail:
                raise ValueError(f"AcousticConfig.{name} needs harmonic_detail")
        if self.velocity_coding not in VELOCITY_CODINGS:
            raise ValueError(f"AcousticConfig.velocity_coding must be one of {VELOCITY_CODINGS}")

    @property
    def input_channels(self) -> int:
        """Rows of the coded roll that the input projection reads."""
        return self.roll_channels * (2 if self.velocity_coding == "linear+log" else 1)

    def to_dict(self) -> dict[str, Any]:
        """Plain ``dict`` of the fields (JSON/YAML serializable)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AcousticConfig:
        """Build from a dict, rejecting unknown keys; missing keys take their defaults."""
        return config_from_dict(cls, data)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> AcousticConfig:
        """A named preset (``paper``, ``paper100``, ``debug``) with optional field overrides."""
        try:
            base = PRESETS[name]
        except KeyError:
            msg = f"unknown acoustic preset {name!r}; choose from {sorted(PRESETS)}"
            raise ValueError(msg) from None
        return dataclasses.replace(base, **overrides)


PRESETS: dict[str, AcousticConfig] = {
    "paper": AcousticConfig(),
    "paper100": AcousticConfig(n_instruments=100, embedding_dim=10),
    "debug": AcousticConfig(embedding_dim=2, channels=8, lstm_hidden=8),
}
