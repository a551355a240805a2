"""The texture post-net: restores the frame-to-frame texture a squared-error model averages out.

Mel2Mel is trained to minimize a squared error, so where the notes do not determine the sound
(the beating between an organ's ranks, the chorus of a string ensemble, a synth's modulation)
it predicts the average: a steady tone. Measured on the test split, a mel bin of the organ
changes by 0.28 dB from one frame to the next in the prediction and by 0.89 dB in the truth,
and an independent instrument classifier hears such organ as a trumpet (docs/RENDERING.md).

This module adds that texture back the way a GAN post-filter does in speech synthesis (Kaneko
et al., "Generative adversarial network-based postfilter for statistical parametric speech
synthesis", ICASSP 2017): a small convolutional network takes the predicted log-mel, Gaussian
noise and the instrument embedding, and adds a residual::

    mel (B, 80, T), noise (B, Z, T)
      -> Conv1d k, 80 + Z -> C                       (replicate padding: chunk edges continue)
      -> residual blocks: LeakyReLU, dilated Conv1d k, FiLM(embedding), LeakyReLU, Conv1d 1x1
      -> LeakyReLU, Conv1d k, C -> 80, zero-initialized
      -> mel + strength * residual                   (B, 80, T) natural-log mel
      -> at most CEILING (6 dB) above the frame's loudest bin of mel (texture_ceiling)

It is trained adversarially against real mels (:mod:`mel2mel.train.config`); the output layer
starts at zero, so an untrained post-net is the identity (STYLE principle 6), and
``strength`` scales the texture at inference (0: the acoustic model's own mel). An export
carries the strength its evaluation chose (:attr:`TexturePostnet.default_strength`), and may
carry one per instrument (:class:`InstrumentStrengths`, blended over the timbre space), which
the residual includes: a synthesizer's strength then scales each instrument's own.

The noise is a function of the frame index and a seed (:func:`texture_noise`), so a piece
rendered in chunks gets the same texture as rendered whole, and a render is reproducible.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from mel2mel import constants as C
from mel2mel.configs import config_from_dict
from mel2mel.models.blend import shepard_blend
from mel2mel.models.film import FiLM
from mel2mel.models.harmonic import CombDetail

NOISE_BLOCK = 512  # frames of noise drawn from one seed (see texture_noise)
LEAK = 0.2
# The texture may lift a bin at most this far above the frame's loudest bin in the acoustic
# model's mel (natural-log units: 6 dB); see :func:`texture_ceiling`.
CEILING = 6.0 / C.DB_PER_NEPER


@dataclass(frozen=True)
class TextureConfig:
    """Architecture of the texture post-net.

    Parameters
    ----------
    embedding_dim:
        Size E of the instrument embedding (the acoustic model's).
    n_mels:
        Mel bins in and out.
    noise_channels:
        Channels Z of per-frame Gaussian noise, the source of the texture.
    channels:
        Width C of the hidden layers.
    kernel_size:
        Odd kernel of the input, dilated and output convolutions.
    dilations:
        One residual block per entry; the receptive field is
        ``1 + (kernel_size - 1) * (2 + sum(dilations))`` frames.
    note_detail:
        Also read the detail of the sounding notes' harmonic combs, computed from the piano
        roll (:class:`~mel2mel.models.harmonic.CombDetail`), through an input convolution of
        its own that starts at zero: the post-net then knows where the notes' partials fall
        across the mel bins and can draw their peaks and valleys, which a squared-error model
        leaves shallow (docs/TEXTURE.md, "Notes for the post-net").
    """

    embedding_dim: int = 2
    n_mels: int = C.N_MELS
    noise_channels: int = 16
    channels: int = 64
    kernel_size: int = 3
    dilations: tuple[int, ...] = field(default=(1, 2, 4, 8, 16, 1))
    note_detail: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "dilations", tuple(int(d) for d in self.dilations))
        for name in ("embedding_dim", "n_mels", "noise_channels", "channels"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TextureConfig.{name} must be >= 1")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError("TextureConfig.kernel_size must be odd and >= 1")
        if not self.dilations or min(self.dilations) < 1:
            raise ValueError("TextureConfig.dilations must be a non-empty list of ints >= 1")

    @property
    def context_frames(self) -> int:
        """Frames on each side that one output frame depends on (half the receptive field)."""
        return (self.kernel_size - 1) // 2 * (2 + sum(self.dilations))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["dilations"] = list(self.dilations)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TextureConfig:
        """Build from a dict, rejecting unknown keys."""
        return config_from_dict(cls, data)

    @classmethod
    def debug(cls, embedding_dim: int = 2) -> TextureConfig:
        """A tiny post-net for tests and smoke runs."""
        return cls(embedding_dim=embedding_dim, noise_channels=2, channels=8, dilations=(1, 2))


def texture_ceiling(mel: torch.Tensor, textured: torch.Tensor) -> torch.Tensor:
    """``textured`` held under the ceiling of each frame of ``mel`` and over the floor.

    The ceiling is the frame's loudest bin in the acoustic model's ``mel`` plus
    :data:`CEILING` (6 dB). The texture beats, chorus and modulation of the shipped post-net
    stay under it for the instruments whose texture is gentle (no bin more than 3 dB above its
    frame's loudest), but at the strengths chosen for the organ, the guitar and the piano it
    threw single-frame bursts up to 37, 21 and 17 dB above the frame's loudest bin (one organ
    frame in six had a bin over the 6 dB, and its audio clipped), and a user's strength of 4
    made full-scale noise (docs/TEXTURE.md, "A ceiling on the texture"). Per frame, so chunked
    renders agree.

    Parameters
    ----------
    mel: Tensor[B x n_mels x T]
        The acoustic model's natural-log mel.
    textured: Tensor[B x n_mels x T]
        The same with the texture added.

    Returns
    -------
    Tensor[B x n_mels x T]: ``textured`` clamped to ``[LOG_SILENCE, max over bins + CEILING]``.
    """
    return torch.minimum(textured, mel.amax(dim=-2, keepdim=True) + CEILING).clamp_min(
        C.LOG_SILENCE
    )


def texture_noise(seed: int, lo: int, hi: int, channels: int) -> torch.Tensor:
    """Noise of frames ``[lo, hi)``, ``float32 Tensor[channels x (hi - lo)]``.

    Frames are drawn in blocks of :data:`NOISE_BLOCK`, block ``b`` from a generator seeded
    by ``(seed, b)``, so the noise of a frame does not depend on how a piece is chunked.
    """
    parts = []
    for b in range(lo // NOISE_BLOCK, (hi - 1) // NOISE_BLOCK + 1):
        g = torch.Generator().manual_seed(int(seed) * 1_000_003 + b)
        parts.append(torch.randn(channels, NOISE_BLOCK, generator=g))
    start = lo - (lo // NOISE_BLOCK) * NOISE_BLOCK
    return torch.cat(parts, dim=1)[:, start : start + hi - lo]


@dataclass(frozen=True)
class InstrumentStrengths:
    """Texture strengths chosen per instrument, blended over the timbre space.

    Each instrument is an anchor: its embedding in the acoustic model and its strength. At an
    embedding ``e`` the strength is the anchors' mean weighted by inverse squared distance,
    ``1 / (|e - a|^2 + eps)`` (Shepard's interpolation,
    :func:`~mel2mel.models.blend.shepard_blend`): an instrument's own embedding gets its own
    strength (a neighbour at distance d weighs ``eps / d^2`` as much), points between
    instruments a smooth mix, flat near each instrument.

    Parameters
    ----------
    names:
        The instruments, for the export's JSON and messages.
    embeddings:
        Their embeddings, N rows of E floats.
    strengths:
        Their strengths, N floats >= 0.
    """

    names: tuple[str, ...]
    embeddings: tuple[tuple[float, ...], ...]
    strengths: tuple[float, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        object.__setattr__(
            self, "embeddings", tuple(tuple(float(x) for x in e) for e in self.embeddings)
        )
        object.__setattr__(self, "strengths", tuple(float(x) for x in self.strengths))
        n = len(self.names)
        if n == 0 or len(self.embeddings) != n or len(self.strengths) != n:
            raise ValueError("InstrumentStrengths needs as many embeddings and strengths as names")
        if len({len(e) for e in self.embeddings}) != 1:
            raise ValueError("InstrumentStrengths: embeddings of different sizes")
        if min(self.strengths) < 0:
            raise ValueError("InstrumentStrengths: strengths must be >= 0")

    def at(self, embedding: torch.Tensor) -> torch.Tensor:
        """Strengths at ``embedding`` Tensor[B x E] (-> Tensor[B x 1 x 1]) or Tensor[B x E x T]
        (-> Tensor[B x 1 x T]), in its dtype."""
        anchors = torch.tensor(self.embeddings, dtype=torch.float64)  # N x E
        return shepard_blend(embedding, anchors, torch.tensor(self.strengths)[:, None])

    def to_list(self) -> list[dict[str, Any]]:
        """``[{"name", "embedding", "strength"}]``, as an export's JSON stores them."""
        return [
            {"name": n, "embedding": list(e), "strength": s}
            for n, e, s in zip(self.names, self.embeddings, self.strengths, strict=True)
        ]

    @classmethod
    def from_list(cls, rows: list[dict[str, Any]]) -> InstrumentStrengths:
        return cls(
            tuple(r["name"] for r in rows),
            tuple(r["embedding"] for r in rows),
            tuple(r["strength"] for r in rows),
        )


class _Block(nn.Module):
    def __init__(self, c: TextureConfig, dilation: int) -> None:
        super().__init__()
        pad = (c.kernel_size - 1) // 2 * dilation
        self.conv = nn.Conv1d(
            c.channels, c.channels, c.kernel_size, dilation=dilation, padding=pad,
            padding_mode="replicate",
        )  # fmt: skip
        self.film = FiLM(c.embedding_dim, c.channels)
        self.mix = nn.Conv1d(c.channels, c.channels, 1)

    def forward(self, h: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        y = self.film(self.conv(F.leaky_relu(h, LEAK)), embedding)
        return h + self.mix(F.leaky_relu(y, LEAK))


class TexturePostnet(nn.Module):
    """Predicted log-mel + noise + embedding (+ the notes' comb detail) -> log-mel with texture.

    Parameters
    ----------
    config:
        The architecture.
    """

    def __init__(self, config: TextureConfig) -> None:
        super().__init__()
        self.config = c = config
        pad = (c.kernel_size - 1) // 2
        self.input = nn.Conv1d(
            c.n_mels + c.noise_channels, c.channels, c.kernel_size, padding=pad,
            padding_mode="replicate",
        )  # fmt: skip
        self.notes = CombDetail() if c.note_detail else None
        self.note_input = None
        if c.note_detail:  # starts at zero: a post-net extended with it plays as before
            self.note_input = nn.Conv1d(
                c.n_mels, c.channels, c.kernel_size, padding=pad, padding_mode="replicate",
                bias=False,
            )  # fmt: skip
            nn.init.zeros_(self.note_input.weight)
        self.blocks = nn.ModuleList(_Block(c, d) for d in c.dilations)
        self.output = nn.Conv1d(
            c.channels, c.n_mels, c.kernel_size, padding=pad, padding_mode="replicate"
        )
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)
        self.metadata: dict[str, Any] = {}
        #: The strength a synthesizer uses unless told otherwise (chosen when exporting).
        self.default_strength = 1.0
        #: Strengths per instrument that scale the residual (chosen when exporting), or None.
        self.instrument_strengths: InstrumentStrengths | None = None

    @property
    def context_frames(self) -> int:
        return self.config.context_frames

    def render_key(self) -> str:
        """What, beside the state dict, decides what the post-net draws: its strengths per
        instrument and the ceiling (for the caches of renders that the benchmarks keep)."""
        return f"{self.instrument_strengths!r} ceiling {CEILING:g}"

    def residual(
        self,
        mel: torch.Tensor,
        embedding: torch.Tensor,
        noise: torch.Tensor,
        roll: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The texture alone, ``Tensor[B x n_mels x T]`` in natural-log units, scaled by the
        :attr:`instrument_strengths` at ``embedding`` when the post-net has them.

        Parameters
        ----------
        mel: Tensor[B x n_mels x T]
            Predicted natural-log mel.
        embedding: Tensor[B x E] or Tensor[B x E x T]
            Instrument embedding, per sequence or per frame.
        noise: Tensor[B x Z x T]
            Standard Gaussian noise (:func:`texture_noise`).
        roll: Tensor[B x ROLL_CHANNELS x T], optional
            The piano roll (velocity / 127) the mel was predicted from; needed by a post-net
            with ``note_detail``, ignored by others.
        """
        x = (mel - C.MEL_CENTER) / C.MEL_SCALE
        h = self.input(torch.cat([x, noise.to(x)], dim=1))
        if self.note_input is not None:
            h = h + self.note_input(self.note_detail(roll).to(x))
        for block in self.blocks:
            h = block(h, embedding)
        out = self.output(F.leaky_relu(h, LEAK)) * C.MEL_SCALE
        if self.instrument_strengths is not None:
            out = out * self.instrument_strengths.at(embedding)
        return out

    def note_detail(self, roll: torch.Tensor | None) -> torch.Tensor:
        """The notes' comb detail that a ``note_detail`` post-net reads, Tensor[B x N_MELS x
        T] (raises ValueError without the roll)."""
        if self.notes is None:
            raise ValueError("this post-net does not read the notes (note_detail is off)")
        if roll is None:
            raise ValueError("this texture post-net reads the notes: pass the piano roll")
        return self.notes(roll)

    def forward(
        self,
        mel: torch.Tensor,
        embedding: torch.Tensor,
        noise: torch.Tensor,
        strength: float = 1.0,
        roll: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Add texture to a predicted log-mel.

        Parameters
        ----------
        mel, embedding, noise, roll:
            As in :meth:`residual`.
        strength:
            Scale of the added texture (0 returns ``mel``).

        Returns
        -------
        Tensor[B x n_mels x T], floored at the log of ``LOG_FLOOR`` and held under each
        frame's ceiling (:func:`texture_ceiling`).
        """
        if strength == 0:
            return mel
        return texture_ceiling(mel, mel + strength * self.residual(mel, embedding, noise, roll))
