"""The paper's vocoder: a WaveNet on 8-bit mu-law audio, locally conditioned on the log-mel.

Architecture (the default is sized like NVIDIA's nv-wavenet, which the authors used):

* the previous sample's mu-law class is embedded (a 256-entry table, i.e. a 1x1 causal
  convolution on the one-hot input) into ``residual_channels``;
* ``layers`` residual layers, dilations ``2 ** (l % dilation_cycle)``: a causal dilated
  convolution with two taps to ``gate_channels``, plus the layer's projection of the
  conditioning, then the gated activation ``tanh(a) * sigmoid(b)`` on the two halves; a 1x1
  convolution back to the residual stream (added to it) and one to the skip channels;
* the skip contributions of all layers are summed (one 1x1 convolution over the
  concatenated gates), then ReLU, 1x1, ReLU, 1x1 to 256 logits;
* the log-mel is upsampled x128 by transposed convolutions (strides 16 and 8), each stage
  centred so that frame ``i`` lands on sample ``i * HOP_LENGTH``; all layers' conditioning
  projections are one 1x1 convolution.

``forward(inputs, mel)`` is the teacher-forced pass: ``inputs[:, t]`` is the class of sample
``t - 1`` (:data:`~mel2mel.vocoders.mulaw.SILENCE_CLASS` before the first) and
``logits[:, :, t]`` is the distribution of sample ``t``. Generation lives in
:mod:`mel2mel.vocoders.wavenet_fast`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mel2mel import constants as C
from mel2mel.configs import config_from_dict
from mel2mel.vocoders import mulaw
from mel2mel.vocoders.base import ArrayLike, Vocoder, as_batch
from mel2mel.vocoders.wavenet_fast import generate, generate_batched, generate_stream

# Fixed affine map of the log-mel into roughly [-2, 3] before the first layer.


@dataclass(frozen=True)
class WaveNetConfig:
    """Sizes of a :class:`WaveNet`; saved with its weights."""

    layers: int = 20
    dilation_cycle: int = 10
    residual_channels: int = 64
    gate_channels: int = 128  # dilated-conv output: a tanh half and a sigmoid half
    skip_channels: int = 256
    output_channels: int = 256  # hidden width of the output head
    cond_channels: int = 80  # width of the upsampled conditioning
    upsample_strides: tuple[int, ...] = (16, 8)

    def __post_init__(self) -> None:
        if int(np.prod(self.upsample_strides)) != C.HOP_LENGTH:
            raise ValueError(f"upsample_strides must multiply to {C.HOP_LENGTH}")
        if self.gate_channels % 2:
            raise ValueError("gate_channels must be even")

    @classmethod
    def debug(cls) -> WaveNetConfig:
        """A tiny model for tests and smoke runs."""
        return cls(
            layers=6,
            dilation_cycle=3,
            residual_channels=16,
            gate_channels=32,
            skip_channels=32,
            output_channels=32,
            cond_channels=16,
        )

    @property
    def dilations(self) -> list[int]:
        return [2 ** (i % self.dilation_cycle) for i in range(self.layers)]

    @property
    def receptive_field(self) -> int:
        """Samples of past input a prediction can see (including the previous sample)."""
        return sum(self.dilations) + 1

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WaveNetConfig:
        values = dict(data)
        if "upsample_strides" in values:
            values["upsample_strides"] = tuple(values["upsample_strides"])
        return config_from_dict(cls, values)


class ConditionUpsampler(nn.Module):
    """Log-mel frames -> conditioning at the audio rate, by centred transposed convolutions.

    Each stage with stride ``s`` has a kernel of ``2 s`` taps and is cropped so that input
    step ``i`` covers outputs ``[i s - s, i s + s)``; an output sample therefore depends on
    at most :attr:`context_frames` frames on either side, which makes chunked conditioning
    exact.
    """

    def __init__(self, n_mels: int, channels: int, strides: tuple[int, ...]) -> None:
        super().__init__()
        self.strides = tuple(strides)
        convs = []
        for i, s in enumerate(self.strides):
            convs.append(nn.ConvTranspose1d(n_mels if i == 0 else channels, channels, 2 * s, s))
        self.convs = nn.ModuleList(convs)
        self.context_frames = 2

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """Tensor[B x N_MELS x T] (log) -> Tensor[B x channels x HOP_LENGTH*T]."""
        x = (mel - C.MEL_CENTER) / C.MEL_SCALE
        for i, (conv, s) in enumerate(zip(self.convs, self.strides, strict=True)):
            length = x.shape[-1] * s
            x = conv(x)[..., s : s + length]
            if i < len(self.convs) - 1:
                x = F.leaky_relu(x, 0.4)
        return x


class WaveNet(Vocoder):
    """Mu-law WaveNet conditioned on the log-mel (see the module docstring).

    Parameters
    ----------
    config:
        Sizes; :meth:`WaveNetConfig.debug` gives a tiny model.
    """

    kind: ClassVar[str] = "wavenet"

    def __init__(self, config: WaveNetConfig | None = None) -> None:
        super().__init__()
        cfg = config or WaveNetConfig()
        self.config = cfg
        r, g, h = cfg.residual_channels, cfg.gate_channels, cfg.gate_channels // 2
        self.embed = nn.Embedding(mulaw.NUM_CLASSES, r)
        self.upsample = ConditionUpsampler(C.N_MELS, cfg.cond_channels, cfg.upsample_strides)
        self.cond = nn.Conv1d(cfg.cond_channels, cfg.layers * g, 1)
        self.dilated = nn.ModuleList(nn.Conv1d(r, g, 2, dilation=d) for d in cfg.dilations)
        self.res = nn.ModuleList(nn.Conv1d(h, r, 1) for _ in range(cfg.layers - 1))
        self.skip = nn.Conv1d(cfg.layers * h, cfg.skip_channels, 1)
        self.out1 = nn.Conv1d(cfg.skip_channels, cfg.output_channels, 1)
        self.out2 = nn.Conv1d(cfg.output_channels, mulaw.NUM_CLASSES, 1)
        nn.init.normal_(self.embed.weight, std=1.0)
        # Small residual branches keep the 20-layer residual stream stable at initialization.
        for conv in self.res:
            nn.init.normal_(conv.weight, std=0.5 / (h**0.5 * cfg.layers**0.5))
            nn.init.zeros_(conv.bias)

    def conditioning(self, mel: torch.Tensor) -> torch.Tensor:
        """Upsampled conditioning features: Tensor[B x N_MELS x T] -> Tensor[B x C x 128*T]."""
        return self.upsample(mel)

    def forward(self, inputs: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits.

        Parameters
        ----------
        inputs: LongTensor[B x N]
            Mu-law class of the *previous* sample at every position, ``N <= 128 * T``.
        mel: Tensor[B x N_MELS x T]
            Log-mel; sample ``n`` is conditioned on the frames around ``n / HOP_LENGTH``.

        Returns
        -------
        Tensor[B x 256 x N]: ``logits[:, :, t]`` scores sample ``t``; causal in ``inputs``.
        """
        cfg = self.config
        n = inputs.shape[1]
        if n > mel.shape[-1] * C.HOP_LENGTH:
            raise ValueError(f"{n} samples need at least {-(-n // C.HOP_LENGTH)} mel frames")
        feats = self.conditioning(mel)[..., :n]
        g = cfg.gate_channels
        h = self.embed(inputs).transpose(1, 2)
        gates = []
        for layer, conv in enumerate(self.dilated):
            d = cfg.dilations[layer]
            w_c = self.cond.weight[layer * g : (layer + 1) * g]
            b_c = self.cond.bias[layer * g : (layer + 1) * g]
            z = conv(F.pad(h, (d, 0))) + F.conv1d(feats, w_c, b_c)
            a, b = z.chunk(2, dim=1)
            gate = torch.tanh(a) * torch.sigmoid(b)
            gates.append(gate)
            if layer < cfg.layers - 1:
                h = h + self.res[layer](gate)
        skip = self.skip(torch.cat(gates, dim=1))
        return self.out2(F.relu(self.out1(F.relu(skip))))

    def loss(self, audio: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the mu-law classes of ``audio``.

        Parameters
        ----------
        audio: Tensor[B x N]
            Waveform in [-1, 1], ``N <= 128 * T`` (sample ``s * 128`` centres frame ``s``).
        mel: Tensor[B x N_MELS x T]
        """
        targets = mulaw.quantize(audio)
        start = torch.full_like(targets[:, :1], mulaw.SILENCE_CLASS)
        inputs = torch.cat([start, targets[:, :-1]], dim=1)
        return F.cross_entropy(self(inputs, mel), targets)

    # --- the Vocoder interface -------------------------------------------------------------

    def _vocode(self, mel: torch.Tensor, roll: torch.Tensor | None) -> torch.Tensor:
        if mel.shape[0] == 1:
            return generate_batched(self, mel)[None]
        return generate(self, mel)

    def vocode_stream(
        self, mel: ArrayLike, chunk_frames: int = 25, roll: ArrayLike | None = None
    ) -> Iterator[np.ndarray]:
        """Sequential cached generation, yielding ``chunk_frames`` frames of audio at a time.

        The generator state carries across chunks, so the concatenated output is exactly
        what :func:`~mel2mel.vocoders.wavenet_fast.generate` gives for the whole mel with
        the same seed. Memory is bounded; speed is that of single-stream generation.
        """
        return generate_stream(self, as_batch(mel, C.N_MELS, "mel"), chunk_frames)


def training_step(model: WaveNet, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Loss of one batch for the shared training loop.

    Parameters
    ----------
    batch:
        ``"mel"`` float32[B x N_MELS x T] and ``"audio"`` float32[B x HOP_LENGTH*T]
        (``"roll"`` is ignored).

    Returns
    -------
    Scalar cross-entropy (nats per sample), ready for ``backward()``.
    """
    device = next(model.parameters()).device
    return model.loss(batch["audio"].to(device), batch["mel"].to(device))
