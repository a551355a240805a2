"""Our default vocoder: a small non-autoregressive network that predicts an STFT, then ISTFT.

Design (justified, with measurements, in ``docs/VOCODERS.md``), after Vocos (Siuzdak, 2023):

* the whole network runs at the frame rate (125 Hz), not the sample rate: a ConvNeXt
  backbone (depthwise temporal convolution, LayerNorm, pointwise MLP, layer scale) maps the
  log-mel, and optionally the piano roll, to per-frame features;
* a linear head predicts, per frame, the log-magnitude and the phase of a 1024-point,
  hop-128 STFT (the analysis settings of the mel); an inverse STFT (windowed overlap-add)
  makes the waveform on exactly :mod:`mel2mel.constants`' grid (frame ``i`` centred on
  sample ``128 i``);
* the log-magnitude is a *correction* of a fixed, cheap estimate from the mel
  (:class:`~mel2mel.vocoders.griffinlim.BandInverter`), so the untrained model already has
  the right spectral envelope and training goes to phase and fine structure;
* the phase integrates a predicted instantaneous frequency (each bin starts at its centre
  frequency) plus a local offset: a purely local frame model gives identical frames for a
  stationary input, i.e. a waveform periodic in the hop, and cannot hold a sustained note
  at an arbitrary pitch; the running phase can;
* the piano roll, when the model has it, enters through a bias-free 1x1 projection added to
  the mel embedding; rolls are dropped at random in training, so a missing roll (all zeros)
  is a case the model knows;
* with ``partial_phase``, the bins near a harmonic of a held note advance at that harmonic's
  frequency, known from the roll, instead of the predicted one
  (:mod:`~mel2mel.vocoders.partials`);
* with ``held_partials``, after the refinement a held note's low partials may not rise while
  other notes are struck (:mod:`~mel2mel.vocoders.held`).

The network sees ``receptive_field`` frames on each side; the phase carries information
forward only. :meth:`FastVocoder.vocode_stream` runs chunks with that much context and carries
the phase, reproducing the unchunked output.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from mel2mel import constants as C
from mel2mel.configs import config_from_dict
from mel2mel.vocoders.base import ArrayLike, Vocoder, as_batch
from mel2mel.vocoders.fast_layers import ConvNeXtBlock, ISTFTHead, conv_channels_last
from mel2mel.vocoders.held import HeldPartials
from mel2mel.vocoders.losses import FastVocoderLoss
from mel2mel.vocoders.partials import PartialPhase
from mel2mel.vocoders.refine import MelMatching, context_frames, magnitude_into

STREAM_CHUNK: int = 1000  # frames per chunk when vocoding long inputs
# When streaming, the network runs on blocks of whole chunks of about this many frames: its
# context is then paid once per block, while the refinement runs chunk by chunk (in cache).
STREAM_NETWORK_FRAMES: int = 2000


@dataclass(frozen=True)
class FastVocoderConfig:
    """Sizes of a :class:`FastVocoder`; saved with its weights."""

    dim: int = 128
    intermediate: int = 384
    layers: int = 6
    kernel_size: int = 7
    n_fft: int = 1024
    use_roll: bool = True
    prior_iterations: int = 6  # magnitude estimate refined before the network's correction
    integrate_phase: bool = True
    roll_dropout: float = 0.5  # training only: probability of hiding the roll of an example
    phase_weight: float = 0.0  # training only: weight of the phase-derivative loss (losses.py)
    refine_iterations: int = 4  # mel-matching refinement at inference (vocoders/refine.py)
    train_refine_iterations: int = 2  # ... unrolled inside the training loss
    refine_step: float = 1.5
    partial_phase: bool = False  # phase advance of the roll's partials (vocoders/partials.py)
    held_partials: bool = False  # held notes' low partials may not rise (vocoders/held.py)

    TRAINING_FIELDS: ClassVar[tuple[str, ...]] = ("roll_dropout", "phase_weight")  # not sizes

    def __post_init__(self) -> None:
        if self.n_fft < 2 * C.HOP_LENGTH or self.n_fft % C.HOP_LENGTH:
            raise ValueError(f"n_fft must be a multiple of {C.HOP_LENGTH} and at least twice it")
        if self.kernel_size % 2 == 0:
            raise ValueError("kernel_size must be odd")
        if self.phase_weight < 0:
            raise ValueError("phase_weight must be >= 0")
        if min(self.refine_iterations, self.train_refine_iterations) < 0:
            raise ValueError("refine_iterations must be >= 0")
        refined = self.refine_iterations or self.train_refine_iterations
        if refined and self.n_fft != C.N_FFT:
            raise ValueError(f"refinement needs the analysis frame size, n_fft={C.N_FFT}")

    @classmethod
    def debug(cls) -> FastVocoderConfig:
        """A tiny model for tests and smoke runs."""
        return cls(
            dim=16,
            intermediate=32,
            layers=2,
            n_fft=512,
            prior_iterations=3,
            refine_iterations=0,
            train_refine_iterations=0,
        )

    @property
    def receptive_field(self) -> int:
        """Frames on each side of a frame that can change its audio (network, refinement and
        overlap-add)."""
        half = self.kernel_size // 2
        refine = context_frames(self.refine_iterations)
        return half * (self.layers + 1) + refine + self.n_fft // (2 * C.HOP_LENGTH)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FastVocoderConfig:
        return config_from_dict(cls, data)


class FastVocoder(Vocoder):
    """Log-mel (+ optional piano roll) -> waveform, non-autoregressive (see module docstring).

    Parameters
    ----------
    config:
        Sizes; :meth:`FastVocoderConfig.debug` gives a tiny model.
    """

    kind: ClassVar[str] = "fast"

    def __init__(self, config: FastVocoderConfig | None = None) -> None:
        super().__init__()
        cfg = config or FastVocoderConfig()
        self.config = cfg
        k = cfg.kernel_size
        self.embed = nn.Conv1d(C.N_MELS, cfg.dim, k, padding=k // 2)
        self.roll_embed = (
            nn.Conv1d(C.ROLL_CHANNELS, cfg.dim, 1, bias=False) if cfg.use_roll else None
        )
        self.norm = nn.LayerNorm(cfg.dim)
        scale = 1.0 / cfg.layers
        self.blocks = nn.ModuleList(
            ConvNeXtBlock(cfg.dim, cfg.intermediate, k, scale) for _ in range(cfg.layers)
        )
        self.final_norm = nn.LayerNorm(cfg.dim)
        self.head = ISTFTHead(cfg.dim, cfg.n_fft, cfg.prior_iterations, cfg.integrate_phase)
        refined = cfg.refine_iterations or cfg.train_refine_iterations
        self.refine = MelMatching(cfg.refine_step) if refined else None
        use_partials = cfg.partial_phase and cfg.integrate_phase
        self.partials = PartialPhase(cfg.n_fft) if use_partials else None
        self.held = HeldPartials(cfg.n_fft) if cfg.held_partials else None

    @property
    def uses_roll(self) -> bool:
        return self.config.use_roll or self.partials is not None or self.held is not None

    def with_refinement(self, iterations: int) -> FastVocoder:
        """A copy with the same weights and ``iterations`` mel-matching refinement iterations
        (0: the network alone, fastest; each iteration costs about a fifth of the network)."""
        return self._with(refine_iterations=iterations)

    def with_partials(self, on: bool) -> FastVocoder:
        """A copy with the same weights that plays the notes' partials (``partial_phase``) or
        not."""
        return self._with(partial_phase=on)

    def with_held_partials(self, on: bool) -> FastVocoder:
        """A copy with the same weights that keeps held notes' partials down
        (``held_partials``) or not."""
        return self._with(held_partials=on)

    def _with(self, **changes: Any) -> FastVocoder:
        other = FastVocoder(dataclasses.replace(self.config, **changes))
        other.load_state_dict(self.state_dict())
        return other.to(self.device()).train(self.training)

    @property
    def stream_context_frames(self) -> int:
        return self.config.receptive_field + 1

    def frame_outputs(
        self, mel: torch.Tensor, roll: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The network's per-frame predictions (shift-invariant, local).

        Parameters
        ----------
        mel: Tensor[B x N_MELS x T]
        roll: Tensor[B x ROLL_CHANNELS x T], optional

        Returns
        -------
        ``(log_magnitude, phase_offset, delta)``, each Tensor[B x T x F] (frames-major) with
        ``F = n_fft / 2 + 1`` (``delta`` is ``None`` without ``integrate_phase``).
        """
        return self.head.frame_outputs(self.features(mel, roll), mel)

    def features(self, mel: torch.Tensor, roll: torch.Tensor | None = None) -> torch.Tensor:
        """The backbone: Tensor[B x N_MELS x T] (+ roll) -> Tensor[B x T x dim], channels last."""
        x = conv_channels_last(((mel - C.MEL_CENTER) / C.MEL_SCALE).transpose(1, 2), self.embed)
        if self.roll_embed is not None and roll is not None:
            x = x + torch.matmul(roll.transpose(1, 2), self.roll_embed.weight[:, :, 0].T)
        x = self.norm(x)
        for block in self.blocks:
            x = block(x)
        return self.final_norm(x)

    def spectrum(self, mel: torch.Tensor, roll: torch.Tensor | None = None) -> torch.Tensor:
        """The predicted STFT: Tensor[B x N_MELS x T] -> complex Tensor[B x T x F]."""
        return self.refined_spectrum(mel, roll, 0)

    def forward(self, mel: torch.Tensor, roll: torch.Tensor | None = None) -> torch.Tensor:
        """Differentiable synthesis.

        Parameters
        ----------
        mel: Tensor[B x N_MELS x T]
            Natural-log mel magnitude.
        roll: Tensor[B x ROLL_CHANNELS x T], optional
            Piano roll; ignored by a model without ``use_roll``; ``None`` means no notes known.

        Returns
        -------
        Tensor[B x 128*T] waveform: the network's spectrum, refined toward ``mel`` when the
        config asks for ``refine_iterations``.
        """
        return self.head.istft(self.refined_spectrum(mel, roll, self.config.refine_iterations))

    def refined_spectrum(
        self, mel: torch.Tensor, roll: torch.Tensor | None, iterations: int
    ) -> torch.Tensor:
        """:meth:`spectrum` after ``iterations`` steps of mel-matching refinement."""
        log_mag, offset, delta = self.frame_outputs(mel, roll)
        phase, _ = self.head.phase(offset, delta, partials=self.note_partials(roll, offset))
        spec = self._spectrum(log_mag, phase, mel, iterations)
        if self.held is None or roll is None:
            return spec
        return self.keep_held_down(spec, roll, roll.shape[2] - spec.shape[1])[0]

    def keep_held_down(
        self,
        spec: torch.Tensor,
        roll: torch.Tensor,
        first: int,
        state: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``spec`` (complex Tensor[B x T x F]) with the held partials' ceiling of
        :class:`~mel2mel.vocoders.held.HeldPartials` (``roll``'s frame ``first`` is ``spec``'s
        first; ``state`` continues an earlier call), and the ceiling per frame."""
        assert self.held is not None
        # The roll from ``hold`` frames before to ``lookahead`` after is all the ceiling reads.
        lo = max(0, first - self.held.hold)
        roll = roll[..., lo : first + spec.shape[1] + self.held.lookahead]
        magnitude = magnitude_into(spec, spec.real.new_empty(spec.shape))
        capped, ceiling = self.held(magnitude, roll, first - lo, state)
        return spec * (capped / magnitude.clamp_min(1e-30)), ceiling

    def note_partials(
        self, roll: torch.Tensor | None, offset: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The held notes' partials for :meth:`ISTFTHead.phase` when the config asks for
        ``partial_phase`` and the roll is known, else ``None``: ``(advance, near)`` of
        :class:`~mel2mel.vocoders.partials.PartialPhase` for the frames of ``offset``
        (Tensor[B x T x F]). ``roll`` (Tensor[B x ROLL_CHANNELS x T']) may start ``T' - T``
        frames earlier: those frames only tell which keys are still held."""
        if self.partials is None or roll is None:
            return None
        advance, near = self.partials(roll)
        return advance[:, -offset.shape[1] :], near[:, -offset.shape[1] :]

    def _spectrum(
        self,
        log_mag: torch.Tensor,
        phase: torch.Tensor,
        mel: torch.Tensor,
        iterations: int,
        context: tuple[bool, bool] = (False, False),
    ) -> torch.Tensor:
        """Complex Tensor[B x T' x F] from the head's outputs, refined toward ``mel`` (context
        frames dropped as :class:`~mel2mel.vocoders.refine.MelMatching` does)."""
        magnitude = self.head.magnitude(log_mag)
        spec = self.head.polar(magnitude, phase)
        if self.refine is not None and iterations:
            spec = self.refine(spec, mel, iterations, magnitude, context)
        return spec

    def _vocode(self, mel: torch.Tensor, roll: torch.Tensor | None) -> torch.Tensor:
        if mel.shape[-1] <= 2 * STREAM_CHUNK or not self.config.integrate_phase:
            return self(mel, roll)
        # Long inputs go through the (exact) stream: less memory, and faster as the
        # per-chunk temporaries stay in cache.
        rows = []
        for i in range(mel.shape[0]):
            r = None if roll is None else roll[i]
            chunks = self.vocode_stream(mel[i], STREAM_CHUNK, r)
            rows.append(torch.from_numpy(np.concatenate(list(chunks))))
        return torch.stack(rows).to(mel.device)

    def vocode_stream(
        self, mel: ArrayLike, chunk_frames: int = STREAM_CHUNK, roll: ArrayLike | None = None
    ) -> Iterator[np.ndarray]:
        """Chunked synthesis that equals :meth:`vocode` of the whole mel (float rounding aside).

        The network runs on blocks of whole chunks (about ``STREAM_NETWORK_FRAMES`` frames)
        with ``receptive_field`` frames of context on both sides, the refinement and the inverse
        STFT chunk by chunk with the context they need; the integrated phase is carried from
        block to block. See :meth:`Vocoder.vocode_stream`.
        """
        if not self.config.integrate_phase:
            yield from super().vocode_stream(mel, chunk_frames, roll)
            return
        if chunk_frames < 1:
            raise ValueError("chunk_frames must be positive")
        mel_b = as_batch(mel, C.N_MELS, "mel").to(self.device())
        if mel_b.shape[0] != 1:
            raise ValueError("vocode_stream takes a single mel (batch size 1)")
        roll_b = self._prepare_roll(roll, mel_b)

        def fetch(a: int, b: int) -> tuple[torch.Tensor, torch.Tensor | None]:
            return mel_b[0, :, a:b], None if roll_b is None else roll_b[0, :, a:b]

        yield from self.stream_frames(fetch, 0, mel_b.shape[2], chunk_frames)

    def stream_frames(
        self,
        fetch: Callable[[int, int], tuple[torch.Tensor, torch.Tensor | None]],
        lo: int,
        hi: int,
        chunk_frames: int = STREAM_CHUNK,
        release: Callable[[int], None] | None = None,
    ) -> Iterator[np.ndarray]:
        """The engine of :meth:`vocode_stream`, for a mel that is itself produced piecewise.

        Parameters
        ----------
        fetch:
            ``fetch(a, b)`` returns frames ``[a, b)`` (``lo <= a < b <= hi``) as
            ``(Tensor[N_MELS x (b-a)], Tensor[ROLL_CHANNELS x (b-a)] or None)``. Requests
            move forward: ``a`` never falls below the last value passed to ``release``.
        lo, hi:
            The frames to synthesize (``lo`` is treated as the start of the signal).
        chunk_frames:
            Frames of audio per yielded array (the last may be shorter).
        release:
            Called with the first frame that later requests can still need.

        Yields
        ------
        float32[128 * chunk] arrays whose concatenation is :meth:`vocode` of frames
        ``[lo, hi)``.
        """
        hop = C.HOP_LENGTH
        # Spectrum frames on each side of a chunk that reach its samples: the overlap-add,
        # plus what the refinement spreads; the network needs ``net`` more frames around them.
        refined = self.config.refine_iterations
        pad = self.config.n_fft // (2 * hop) + context_frames(refined)
        net = self.config.receptive_field - pad
        block = chunk_frames * max(1, STREAM_NETWORK_FRAMES // chunk_frames)
        # The partials' phase and the held ceiling look back over the frames a key stays held.
        hold = max(0 if part is None else part.hold for part in (self.partials, self.held))
        carry = None  # running phase sum before ``first``
        ceiling: tuple[int, torch.Tensor] | None = None  # held ceiling from frame s, per frame
        with torch.inference_mode():
            for block_start in range(lo, hi, block):
                block_end = min(hi, block_start + block)
                first, stop = max(lo, block_start - pad), min(hi, block_end + pad)
                a, b = max(lo, first - net), min(hi, stop + net)
                early = max(lo, a - hold)
                mel, roll = fetch(early, b)
                mel_b = mel[None, :, a - early :].to(self.device())
                if roll is not None and self.uses_roll:
                    roll_all = roll[None].to(mel_b)
                    roll_b = roll_all[:, :, a - early :]
                else:
                    roll_all = roll_b = None
                notes = roll_all  # to the end of what was fetched: the ceiling looks ahead
                # The head is per frame: it needs no network context.
                x = self.features(mel_b, roll_b)[:, first - a : stop - a]
                target = mel_b[:, :, first - a : stop - a]
                log_mag, offset, delta = self.head.frame_outputs(x, target)
                if roll_all is not None:
                    roll_all = roll_all[:, :, : stop - early]
                partials = self.note_partials(roll_all, offset)
                next_first = max(lo, block_end - pad)
                index = next_first - 1 - first if next_first > lo else None
                phase, carry = self.head.phase(offset, delta, carry, index, partials)
                if release is not None:
                    release(next_first - net - hold)
                for start in range(block_start, block_end, chunk_frames):
                    end = min(block_end, start + chunk_frames)
                    c0, c1 = max(lo, start - pad), min(hi, end + pad)
                    frames = slice(c0 - first, c1 - first)
                    # The refinement drops the context frames it no longer needs.
                    context = (c0 > lo, c1 < hi)
                    spec = self._spectrum(
                        log_mag[:, frames], phase[:, frames], target[..., frames], refined, context
                    )
                    s0 = c0 + context[0] * context_frames(refined)
                    if self.held is not None and notes is not None:
                        state = None if ceiling is None else ceiling[1][:, s0 - 1 - ceiling[0]]
                        spec, held = self.keep_held_down(spec, notes, s0 - early, state)
                        ceiling = (s0, held)
                    audio = self.head.istft(spec)[0]
                    y = audio[(start - s0) * hop : (end - s0) * hop]
                    yield np.ascontiguousarray(y.float().cpu().numpy())


_DEFAULT_LOSSES: dict[tuple[str, float], nn.Module] = {}


def training_losses(
    model: FastVocoder, batch: Mapping[str, torch.Tensor], loss_fn: nn.Module | None = None
) -> dict[str, torch.Tensor]:
    """All loss terms of one batch (``"loss"`` is the total to minimize).

    Parameters
    ----------
    batch:
        ``"mel"`` float32[B x N_MELS x T], ``"audio"`` float32[B x 128*T] (sample ``128 s``
        centres frame ``s``) and, optionally, ``"roll"`` float32[B x ROLL_CHANNELS x T].
        In training mode each example's roll is hidden with probability
        ``config.roll_dropout``.
    loss_fn:
        Defaults to :class:`~mel2mel.vocoders.losses.FastVocoderLoss` with default weights and
        the config's ``phase_weight``.
    """
    device = next(model.parameters()).device
    if loss_fn is None:
        key = (str(device), model.config.phase_weight)
        if key not in _DEFAULT_LOSSES:
            _DEFAULT_LOSSES[key] = FastVocoderLoss(phase_weight=model.config.phase_weight)
            _DEFAULT_LOSSES[key].to(device)
        loss_fn = _DEFAULT_LOSSES[key]
    mel = batch["mel"].to(device)
    audio = batch["audio"].to(device)
    roll = batch.get("roll")
    if roll is not None and model.uses_roll:
        roll = roll.to(device)
        if model.training and model.config.roll_dropout > 0:
            keep = torch.rand(roll.shape[0], 1, 1, device=device) >= model.config.roll_dropout
            roll = roll * keep
    spectrum = model.refined_spectrum(mel, roll, model.config.train_refine_iterations)
    audio_hat = model.head.istft(spectrum)
    return loss_fn(audio_hat, audio[:, : audio_hat.shape[1]], spectrum)


def training_step(model: FastVocoder, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Scalar training loss of one batch, ready for ``backward()`` (see :func:`training_losses`)."""
    return training_losses(model, batch)["loss"]
