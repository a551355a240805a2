"""Mel2Mel: the acoustic model turning a piano roll into a log-mel spectrogram.

The network is the one published by Kim et al. (ICASSP 2019)::

    roll (B, 176, T)
      -> Conv1d 1x1, 176 -> 256
      -> FiLM(instrument embedding)
      -> bidirectional LSTM, 256 units per direction          (B, 512, T)
      -> FiLM(instrument embedding)
      -> Conv1d 1x1, 512 -> 80                                (B, 80, T) natural-log mel
      [+ a nonlinear readout of the same states, ``head_channels`` wide]
      [+ harmonic detail of the roll's sounding notes, per-bin gain from the embedding,
         moved frame by frame by the same states with ``detail_gate``, the harmonics'
         heights set by the embedding with ``harmonic_heights``]
      [+ the sounding notes' level times a per-bin slope from the embedding, with
         ``velocity_gain``]
      -> floored at log(1e-5), the floor of every analysed log-mel

The instrument enters only through its embedding, which can come from the learned table (an
index per sequence) or be given directly: one free vector per sequence ``(B, E)`` or one per
frame ``(B, E, T)`` for timbre morphing over time. The config switches ``lstm_layers``,
``frontend_layers``, ``dropout``, ``head_channels``, ``harmonic_detail``, ``detail_gate`` and
``harmonic_heights`` (see
:class:`~mel2mel.models.config.AcousticConfig`) give the usual variations; the defaults are
the paper's network.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from mel2mel import validate
from mel2mel.audio import floor_log_mel
from mel2mel.errors import UserError
from mel2mel.instruments import Instrument, normalize_name
from mel2mel.models.acoustic_fast import fast_forward, supports_fast_path, symmetric_windows
from mel2mel.models.beats import NoteBeats
from mel2mel.models.config import AcousticConfig
from mel2mel.models.contrast import NoteContrast
from mel2mel.models.film import FiLM
from mel2mel.models.harmonic import HarmonicDetail
from mel2mel.models.modulation import NoteModulation
from mel2mel.models.readout import ReadoutHead
from mel2mel.models.sharpen import DetailGains
from mel2mel.models.velocity_gain import VelocityGain

OUTPUT_BIAS_INIT = -6.0  # between the silence floor (-11.5) and loud music (~0); natural log


def code_velocity(roll: torch.Tensor, coding: str) -> torch.Tensor:
    """The network's view of a roll's velocities (see ``AcousticConfig.velocity_coding``).

    Parameters
    ----------
    roll: Tensor[... x 176 x T]
        Onset/frame roll carrying ``velocity / 127`` (0 where no note), as every part of the
        package stores and passes it.
    coding:
        ``linear`` returns ``roll`` itself; ``log`` maps each nonzero entry ``x = v / 127`` to
        ``0.2 + 0.8 (1 + ln(x) / ln(127))`` and keeps zeros at 0; ``linear+log`` stacks the
        two, linear rows first.

    Returns
    -------
    Tensor of the same shape and dtype (``linear+log``: twice the rows, Tensor[... x 352 x T]).
    """
    if coding == "linear":
        return roll
    if coding not in ("log", "linear+log"):
        raise ValueError(f"unknown velocity coding {coding!r}")
    coded = 1.0 + LOG_VELOCITY_SLOPE * torch.log(roll.clamp_min(1.0 / 127.0))
    coded = torch.where(roll > 0, coded, torch.zeros_like(roll))
    return coded if coding == "log" else torch.cat([roll, coded], dim=-2)


LOG_VELOCITY_SLOPE = 0.8 / math.log(127.0)  # ``log`` coding: 0.2 at velocity 1, 1 at 127


class UnknownInstrumentError(UserError, ValueError):
    """An instrument name or program that the model was not trained on."""


def resolve_instrument(instruments: list[Instrument], query: str | int) -> int:
    """Row of ``instruments`` named ``query`` (as :func:`~mel2mel.instruments.normalize_name`
    compares names: case and punctuation ignored) or with that GM program.

    A string of digits is read as a 0-based General MIDI program number.

    Raises
    ------
    UnknownInstrumentError
        If nothing matches; the message lists the valid names and programs.
    """
    text = str(query).strip()
    program = validate.program_number(text)  # ASCII digits only: int("²") fails
    if program is not None:
        for i, inst in enumerate(instruments):
            if inst.program == program:
                return i
    key = normalize_name(text)
    for i, inst in enumerate(instruments):
        if normalize_name(inst.name) == key:
            return i
    valid = ", ".join(
        inst.name if inst.program is None else f"{inst.name} ({inst.program})"
        for inst in instruments
    )
    raise UnknownInstrumentError(f"unknown instrument {query!r}; valid: {valid}")


class Mel2Mel(nn.Module):
    """Piano roll -> natural-log mel magnitude, conditioned on an instrument embedding.

    Parameters
    ----------
    config:
        The architecture (use :meth:`AcousticConfig.preset` for the published one).
    instruments:
        Optional names/programs of the embedding rows, kept as metadata (not parameters) so an
        exported model can resolve instruments by name. Defaults to ``instrument 0..N-1``.
    """

    def __init__(self, config: AcousticConfig, instruments: list[Instrument] | None = None) -> None:
        super().__init__()
        self.config = config
        self.instruments = self._check_instruments(config, instruments)
        self.metadata: dict[str, Any] = {}  # provenance (loss, step, ...) kept by exports
        #: Gains on the cross-bin detail fitted for these weights (:mod:`mel2mel.models.sharpen`),
        #: kept by exports; the synthesizer applies them. None: not fitted.
        self.detail_gains: DetailGains | None = None
        self.note_contrast: NoteContrast | None = None
        #: The beats of each instrument's detuned layers, measured on its SoundFont
        #: (:mod:`mel2mel.models.beats`), kept by exports; the synthesizer draws them. None: not
        #: measured.
        self.note_beats: NoteBeats | None = None
        c = config
        self.embedding = nn.Embedding(c.n_instruments, c.embedding_dim)
        if c.embedding_init_std != 1.0:  # nn.Embedding draws N(0, 1) itself
            nn.init.normal_(self.embedding.weight, std=c.embedding_init_std)
        self.input = nn.Conv1d(c.input_channels, c.channels, 1)
        front: list[nn.Module] = []
        for _ in range(c.frontend_layers):
            front += [
                nn.Conv1d(
                    c.channels, c.channels, c.frontend_kernel, padding=c.frontend_kernel // 2
                ),
                nn.ReLU(),
            ]
        self.frontend = nn.Sequential(*front)
        self.film_in = FiLM(c.embedding_dim, c.channels)
        self.lstm = nn.LSTM(
            c.channels,
            c.lstm_hidden,
            num_layers=c.lstm_layers,
            batch_first=True,
            bidirectional=True,
            dropout=c.dropout if c.lstm_layers > 1 else 0.0,
        )
        self.film_out = FiLM(c.embedding_dim, 2 * c.lstm_hidden)
        self.output = nn.Conv1d(2 * c.lstm_hidden, c.n_mels, 1)
        # Start from a typical log-mel level instead of 0, which is louder than any real frame:
        # the first steps then learn structure rather than the global offset.
        nn.init.constant_(self.output.bias, OUTPUT_BIAS_INIT)
        self.head = (
            ReadoutHead(c.embedding_dim, 2 * c.lstm_hidden, c.head_channels, c.n_mels)
            if c.head_channels
            else None
        )
        gate_features = 2 * c.lstm_hidden if c.detail_gate else 0
        self.harmonic = (
            HarmonicDetail(c.embedding_dim, c.roll_channels, gate_features, c.harmonic_heights)
            if c.harmonic_detail
            else None
        )
        self.modulation = NoteModulation(2 * c.lstm_hidden) if c.note_modulation else None
        self.velocity_gain = VelocityGain(c.embedding_dim, c.n_mels) if c.velocity_gain else None

    @staticmethod
    def _check_instruments(
        config: AcousticConfig, instruments: list[Instrument] | None
    ) -> list[Instrument]:
        if instruments is None:
            return [Instrument(f"instrument {i}") for i in range(config.n_instruments)]
        instruments = [i if isinstance(i, Instrument) else Instrument(**i) for i in instruments]
        if len(instruments) != config.n_instruments:
            raise ValueError(
                f"{len(instruments)} instrument names for a table of {config.n_instruments} rows"
            )
        return instruments

    @property
    def embedding_dim(self) -> int:
        """Size E of an instrument embedding."""
        return self.config.embedding_dim

    def instrument_index(self, query: str | int) -> int:
        """Embedding row for an instrument name (case-insensitive) or GM program number."""
        return resolve_instrument(self.instruments, query)

    def code_roll(self, roll: torch.Tensor) -> torch.Tensor:
        """Tensor[B x 176 x T] roll (``velocity / 127``) -> the input of :attr:`input`,
        Tensor[B x K x T] with ``K = config.input_channels``."""
        return code_velocity(roll, self.config.velocity_coding)

    def coded_rows(self, channels: torch.Tensor) -> torch.Tensor:
        """Rows of :attr:`input` that read the roll ``channels`` (int64 Tensor[K] of 0..175):
        the channels, then (``linear+log``) their log-coded rows, in :meth:`code_roll`'s order."""
        if self.config.velocity_coding != "linear+log":
            return channels
        return torch.cat([channels, channels + self.config.roll_channels])

    def fit_input_projection(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Another Mel2Mel's ``state`` with its input projection fitted to this model's rows
        when only their number differs (another velocity coding): more rows get zero weights
        after the source's (the model first plays as the source), fewer keep its leading,
        linear rows. Every other tensor is passed as it is."""
        theirs, ours = state.get("input.weight"), self.input.weight
        if theirs is None or theirs.shape == ours.shape:
            return state
        if theirs.shape[0] != ours.shape[0] or theirs.shape[2:] != ours.shape[2:]:
            return state
        n = min(theirs.shape[1], ours.shape[1])
        fitted = torch.zeros_like(ours, device=theirs.device, dtype=theirs.dtype)
        fitted[:, :n] = theirs[:, :n]
        return {**state, "input.weight": fitted}

    def readout(
        self,
        h: torch.Tensor,
        embedding: torch.Tensor,
        tones: torch.Tensor | None = None,
        roll: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """LSTM states Tensor[B x 2H x T] -> log-mel Tensor[B x N_MELS x T]: the output FiLM
        and layer, plus the nonlinear readout when ``config.head_channels``, plus the harmonic
        detail of ``tones`` (:meth:`tones_of` the roll; None for a model without it) scaled
        for the instrument, and gated by the states when ``config.detail_gate``, plus the
        note modulation of the raw ``roll`` Tensor[B x 176 x T] when
        ``config.note_modulation``, plus the velocity gain of that roll when
        ``config.velocity_gain``; floored at the analysis floor (:func:`floor_log_mel`)."""
        h = self.film_out(h, embedding)
        mel = self.output(h)
        if self.head is not None:
            mel = mel + self.head(h, embedding)
        if self.harmonic is not None:
            if tones is None:
                raise ValueError("this model adds harmonic detail: pass tones_of(roll)")
            gate = None if self.harmonic.gate is None else self.harmonic.gate(h)
            mel = mel + self.harmonic(tones.to(mel.dtype), embedding.to(mel.dtype), gate)
        if self.modulation is not None:
            if roll is None:
                raise ValueError("this model adds note modulation: pass the roll")
            mel = mel + self.modulation(roll, h)
        if self.velocity_gain is not None:
            if roll is None:
                raise ValueError("this model adds a velocity gain: pass the roll")
            mel = mel + self.velocity_gain(roll, embedding.to(mel.dtype))
        return floor_log_mel(mel)

    def tones_of(
        self,
        roll: torch.Tensor,
        channels: torch.Tensor | None = None,
        embedding: torch.Tensor | None = None,
    ) -> torch.Tensor | None:
        """The sounding notes' harmonic tones Tensor[B x S x N_MELS x T] of ``roll`` (the raw
        roll, or its rows ``channels``) whose detail :meth:`readout` adds, mixed for one
        ``embedding`` Tensor[E] shared by the batch if given (:meth:`HarmonicDetail.tones`);
        None when the model has none."""
        if self.harmonic is None:
            return None
        return self.harmonic.tones(roll, channels, embedding)

    def embed(self, instrument: torch.Tensor | int) -> torch.Tensor:
        """Table lookup: Tensor[B] (or an int) of indices -> Tensor[B x E] embeddings."""
        idx = torch.as_tensor(instrument, dtype=torch.long, device=self.embedding.weight.device)
        return self.embedding(idx.reshape(-1))

    def conditioning(
        self,
        roll: torch.Tensor,
        instrument: torch.Tensor | int | None = None,
        embedding: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Check the inputs of :meth:`forward` and return one embedding per sequence.

        Returns
        -------
        Tensor[B x E] or Tensor[B x E x T]
            The looked-up (and broadcast) or given embedding; a looked-up one carries the
            training noise of ``config.embedding_noise`` in training mode.
        """
        if (instrument is None) == (embedding is None):
            raise ValueError("give exactly one of instrument= and embedding=")
        if roll.dim() != 3 or roll.shape[1] != self.config.roll_channels:
            raise ValueError(
                f"roll must be (B, {self.config.roll_channels}, T), got {tuple(roll.shape)}"
            )
        if embedding is None:
            embedding = self.embed(instrument)
            if self.training and self.config.embedding_noise > 0:
                spread = self.embedding.weight.detach().std(dim=0, correction=0)  # E
                noise = torch.randn_like(embedding) * spread * self.config.embedding_noise
                embedding = embedding + noise
            if embedding.shape[0] == 1 and roll.shape[0] > 1:
                embedding = embedding.expand(roll.shape[0], -1)
        if embedding.shape[0] != roll.shape[0] or embedding.shape[1] != self.embedding_dim:
            raise ValueError(
                f"embedding must be (B={roll.shape[0]}, E={self.embedding_dim}[, T]), "
                f"got {tuple(embedding.shape)}"
            )
        if embedding.dim() == 3 and embedding.shape[2] != roll.shape[2]:
            raise ValueError("a per-frame embedding must have as many frames as the roll")
        return embedding

    def forward(
        self,
        roll: torch.Tensor,
        instrument: torch.Tensor | int | None = None,
        embedding: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict the log-mel of ``roll`` for an instrument or a free embedding.

        Parameters
        ----------
        roll: Tensor[B x 176 x T]
            Onset/frame piano roll (velocity / 127), see :mod:`mel2mel.midi`.
        instrument: Tensor[B] of int64, or an int
            Rows of the embedding table. Give exactly one of ``instrument`` and ``embedding``.
        embedding: Tensor[B x E] or Tensor[B x E x T]
            Free timbre vectors, per sequence or per frame (morphing over time).

        Returns
        -------
        Tensor[B x N_MELS x T]
            Natural-log mel magnitude.
        """
        embedding = self.conditioning(roll, instrument, embedding)
        embedding = embedding.to(roll.dtype)
        h = self.frontend(self.input(self.code_roll(roll)))  # B x C x T
        h = self.film_in(h, embedding)
        # A channels-last copy: the CPU LSTM kernels run ~3x slower on a strided input.
        h, _ = self.lstm(h.transpose(1, 2).contiguous())  # B x T x 2H
        return self.readout(h.transpose(1, 2), embedding, self.tones_of(roll), roll)

    @torch.inference_mode()
    def infer(
        self,
        roll: torch.Tensor,
        instrument: torch.Tensor | int | None = None,
        embedding: torch.Tensor | None = None,
        *,
        chunk_frames: int | None = None,
        context_frames: int = 250,
        workers: int | None = None,
    ) -> torch.Tensor:
        """Fast inference, exact or (with ``chunk_frames``) as a batch of overlapping windows.

        With one LSTM layer this runs :func:`~mel2mel.models.acoustic_fast.fast_forward`:
        the affine layers folded into the LSTM for a shared embedding, the two directions as
        separate LSTM calls (in two threads if ``workers`` is 2). Without ``chunk_frames``
        the result is :meth:`forward`'s up to float rounding (~1e-5 nats); :meth:`forward`
        itself stays the reference.

        With ``chunk_frames`` the piece is cut into cores of at most ``chunk_frames`` frames,
        each run with ``context_frames`` frames of context on the side its direction needs
        (or the true start/end of the piece; silence does not count), all windows as one
        batch: less CPU time, but an approximation, since no output frame sees further than
        its context (errors measured in docs/MODELS.md, "Fast inference"). Stacked LSTMs and
        other devices than the CPU run
        :func:`~mel2mel.models.acoustic_fast.symmetric_windows` instead.

        Parameters
        ----------
        roll: Tensor[B x 176 x T]
        instrument, embedding:
            As in :meth:`forward`.
        chunk_frames:
            Core frames per window; ``None`` (or ``T`` short enough) runs exactly.
        context_frames:
            Context frames (with notes) for each window's core.
        workers:
            2 runs the two LSTM directions in parallel threads, each with half of torch's
            intra-op threads; ``None``: 2 if torch may use 2 or more threads
            (:func:`torch.get_num_threads`), else 1.

        Returns
        -------
        Tensor[B x N_MELS x T]
        """
        if (chunk_frames is not None and chunk_frames < 1) or context_frames < 0:
            raise ValueError("chunk_frames must be >= 1 and context_frames >= 0")
        if workers is None:
            workers = min(2, torch.get_num_threads())
        was_training = self.training
        self.eval()
        try:
            embedding = self.conditioning(roll, instrument, embedding)
            kw = {"chunk_frames": chunk_frames, "context_frames": context_frames}
            if supports_fast_path(self) and roll.device.type == "cpu":
                return fast_forward(self, roll, embedding, workers=workers, **kw)
            return symmetric_windows(self, roll, embedding, **kw)
        finally:
            self.train(was_training)

    def sharpen(
        self, mel: torch.Tensor, embedding: torch.Tensor, strength: float = 1.0
    ) -> torch.Tensor:
        """``mel`` Tensor[B x N_MELS x T] predicted for ``embedding`` (Tensor[B x E] or
        Tensor[B x E x T]) with its cross-bin detail scaled by :attr:`detail_gains` times
        ``strength`` (:meth:`DetailGains.apply`); unchanged when the model has none."""
        if self.detail_gains is None:
            return mel
        return self.detail_gains.apply(mel, embedding, strength)

    def contrast(
        self, mel: torch.Tensor, embedding: torch.Tensor, roll: torch.Tensor, strength: float = 1.0
    ) -> torch.Tensor:
        """``mel`` Tensor[B x N_MELS x T] predicted from ``roll`` (Tensor[B x 176 x T]) for
        ``embedding`` with each bin corrected by its role among the struck and held notes,
        times ``strength`` (:meth:`NoteContrast.apply`); unchanged when the model has none."""
        if self.note_contrast is None:
            return mel
        return self.note_contrast.apply(mel, embedding, roll, strength)

    @property
    def drawn_beats(self) -> NoteBeats | None:
        """:attr:`note_beats` when some instrument beats (what a synthesizer draws), else
        None."""
        beats = self.note_beats
        return beats if beats is not None and beats.beats_anywhere() else None

    def extra_repr(self) -> str:
        return f"instruments={[i.name for i in self.instruments]}"


def build_acoustic(
    config: AcousticConfig | str = "paper", instruments: list[Instrument] | None = None
) -> Mel2Mel:
    """Build a :class:`Mel2Mel` from a config or a preset name (``paper``, ``debug``, ...)."""
    if isinstance(config, str):
        config = AcousticConfig.preset(config)
    return Mel2Mel(config, instruments)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
