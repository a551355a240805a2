"""Detail gains: the spectral peaks and valleys a squared-error model flattens, put back.

Mel2Mel regresses each mel bin on the notes, so wherever it is unsure exactly how deep a valley
between two partials is, it predicts a shallower one. Measured on the performance set, the
cross-bin detail of its mel (a log-mel minus its moving average over :data:`DETAIL_WIDTH` bins)
is 10-45 % smaller than FluidSynth's above 1 kHz, and the instrument classifier hears it: the
spectral contrast of the rendered audio (peak minus valley per octave band) is 4-5 dB below
FluidSynth's there for the vibraphone, while the fast vocoder on FluidSynth's own mel keeps it
(docs/MODELS.md, "Detail gains"). This is the over-smoothing of statistical speech synthesis,
and the remedy is the classic one, global-variance compensation (Toda & Tokuda, 2007): scale
the prediction's detail so that its spread matches the truth's::

    detail = mel - moving_average_over_bins(mel)                  (B x N_MELS x T)
    sharp  = mel + strength * (gain(embedding) - 1) * detail
    out    = sharp - level(sharp) + level(mel)      level: a frame's mel power, in log units;
                                                   floored at the analysis floor

``gain`` is one factor per instrument and mel bin, measured on the training split by
:func:`mel2mel.evaluation.detail_gains.fit_detail_gains` as the ratio of the mean absolute
detail of the truth to that of the model's prediction over sounding frames (never below 1: the
model is not made smoother), and blended between instruments like the texture strengths
(Shepard's interpolation over the embedding, :func:`~mel2mel.models.blend.shepard_blend`), so
mixes, coordinates and learned timbres get their neighbours' gains. An instrument whose
recognition the gains cost on the valid split can be given a lower strength (``strengths``,
``mel2mel train gains --strength``), as the texture post-net's are. It acts frame by frame,
so chunked and streamed renders equal whole ones. The gains are stored in the acoustic export's
JSON (``"detail_gains"``) because they belong to those weights.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from mel2mel.audio import floor_log_mel
from mel2mel.models.blend import freeze_anchored, shepard_blend

DETAIL_WIDTH = 5  # bins of the moving average the detail is measured against
GAIN_RANGE = (1.0, 2.5)  # fitted gains are clipped to this range


def cross_bin_detail(mel: torch.Tensor, width: int = DETAIL_WIDTH) -> torch.Tensor:
    """Tensor[B x M x T] log-mel -> its detail across bins, Tensor[B x M x T]: each bin minus
    the mean of the ``width`` bins centred on it (edges repeated); 0 for a spectrum that is
    flat or a straight line across bins."""
    b, m, t = mel.shape
    x = mel.transpose(1, 2).reshape(b * t, 1, m)
    half = width // 2
    average = F.avg_pool1d(F.pad(x, (half, half), mode="replicate"), width, stride=1)
    return (x - average).reshape(b, t, m).transpose(1, 2)


@dataclass(frozen=True)
class DetailGains:
    """Gains on the cross-bin detail, one per mel bin for each instrument of a model.

    Parameters
    ----------
    names:
        The instruments (the acoustic model's, in its table's order).
    embeddings:
        Their embeddings (the table's rows when fitted), N rows of E floats: the anchors
        of :func:`shepard_blend`.
    gains:
        N rows of N_MELS factors >= 1 (1: the model's detail as it is), as fitted.
    width:
        Bins of the moving average the detail was measured against.
    strengths:
        One per instrument, chosen on the valid split: an instrument's gains act as ``1 +
        strength * (gain - 1)`` (0: its mel as the model draws it). Empty: 1 for every one.
    """

    names: tuple[str, ...]
    embeddings: tuple[tuple[float, ...], ...]
    gains: tuple[tuple[float, ...], ...]
    width: int = DETAIL_WIDTH
    strengths: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        freeze_anchored(self, "DetailGains", rows=("gains",))
        n = len(self.names)
        if len({len(g) for g in self.gains}) != 1:
            raise ValueError("DetailGains: rows of different sizes")
        if min(min(g) for g in self.gains) < 0:
            raise ValueError("DetailGains: gains must be >= 0")
        if self.width < 3 or self.width % 2 == 0:
            raise ValueError(f"DetailGains: width must be odd and >= 3, got {self.width}")
        object.__setattr__(self, "strengths", tuple(float(x) for x in self.strengths))
        if self.strengths and (len(self.strengths) != n or min(self.strengths) < 0):
            raise ValueError("DetailGains: one strength >= 0 per instrument, or none")

    @functools.cached_property
    def _tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The anchors and the gains at each instrument's strength as float64 tensors, made
        once (every window reads them)."""
        gains = torch.tensor(self.gains, dtype=torch.float64)
        if self.strengths:
            gains = 1.0 + torch.tensor(self.strengths, dtype=torch.float64)[:, None] * (gains - 1)
        return torch.tensor(self.embeddings, dtype=torch.float64), gains

    def with_strengths(self, strengths: tuple[float, ...]) -> DetailGains:
        """The same gains with a strength per instrument (in :attr:`names` order)."""
        return dataclasses.replace(self, strengths=tuple(strengths))

    def at(self, embedding: torch.Tensor) -> torch.Tensor:
        """Gains (at each instrument's strength) at ``embedding`` Tensor[B x E] (-> Tensor[B x
        N_MELS x 1]) or Tensor[B x E x T] (-> Tensor[B x N_MELS x T])."""
        return shepard_blend(embedding, *self._tables)

    def apply(
        self, mel: torch.Tensor, embedding: torch.Tensor, strength: float = 1.0
    ) -> torch.Tensor:
        """``mel`` Tensor[B x N_MELS x T] with its cross-bin detail scaled by the gains at
        ``embedding`` (Tensor[B x E] or Tensor[B x E x T]), then shifted in each frame so that
        the frame's mel power stays what it was; ``strength`` 0 returns ``mel``, 1 the gains
        at each instrument's own strength. Floored at the analysis floor."""
        if strength == 0:
            return mel
        gain = self.at(embedding).to(mel.dtype)
        sharp = mel + strength * (gain - 1.0) * cross_bin_detail(mel, self.width)
        # each frame keeps its power: the gains reshape the spectrum, not the dynamics
        shift = torch.logsumexp(2 * sharp, dim=1, keepdim=True) - torch.logsumexp(
            2 * mel, dim=1, keepdim=True
        )
        return floor_log_mel(sharp - shift / 2)

    def to_dict(self) -> dict[str, Any]:
        """``{"width", "instruments": [{"name", "embedding", "gains"[, "strength"]}]}``, as the
        acoustic export's JSON stores them (gains rounded to 4 decimals; the fitted gains, each
        instrument's strength beside them when it has one)."""
        rows = []
        for k, (n, e, gs) in enumerate(zip(self.names, self.embeddings, self.gains, strict=True)):
            rows.append({"name": n, "embedding": list(e), "gains": [round(g, 4) for g in gs]})
            if self.strengths:
                rows[-1]["strength"] = self.strengths[k]
        return {"width": self.width, "instruments": rows}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> DetailGains:
        rows = doc["instruments"]
        return cls(
            tuple(r["name"] for r in rows),
            tuple(r["embedding"] for r in rows),
            tuple(r["gains"] for r in rows),
            int(doc.get("width", DETAIL_WIDTH)),
            tuple(r.get("strength", 1.0) for r in rows)
            if any("strength" in r for r in rows)
            else (),
        )
