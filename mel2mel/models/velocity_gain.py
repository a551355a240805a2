"""Velocity gain: the sounding notes' level, added to the log-mel past the LSTM.

FluidSynth plays a softer strike of a note mostly as the same sound turned down: the
SoundFont's velocity-to-attenuation curve scales the whole voice (from velocity 40 to 10 about
20 dB for most of the ten instruments). The network has to draw that through its LSTM, and
draws soft notes alone too quiet, their partials too low and the bins between them too high;
drawn at velocity 40 and turned down by FluidSynth's own gain, the same notes come out far
closer (docs/MODELS.md, "Stop 29"; ``benchmarks/eval_velocity_lift.py``). This module gives
the network that gain as a path of its own:

* a frame's **level** is ``0.5 ln(sum_k x_k^2)`` over the sounding keys ``k`` of the roll
  (``x = velocity / 127``: 0 for one key at velocity 127, ``ln(v / 127)`` for one at ``v``,
  ``+ 0.5 ln n`` for ``n`` keys alike), less :data:`REFERENCE_LEVEL` (one key at velocity
  64); it holds its last value through silences and release tails, and is 0 before the
  first note;
* the **gain** is that level times a per-bin slope affine in the instrument embedding
  (``E x 80 + 80`` parameters, times :data:`SLOPE_SCALE`; zero at initialization, so an
  extended model first plays exactly as its source), added to the log-mel.

A slope ``s`` moves an instrument's bin by ``s`` nepers per neper of level. FluidSynth's
velocity 40 -> 10 (about 20 dB, 2.3 nepers, for a level change of ``ln 4 = 1.39``) is a slope
of about 1.7; the network learns one per bin and instrument. The fast path folds nothing here
(the gain is added to its output), the timbre sweep runs such a model whole, and the in-page
ONNX graph does not support it yet.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mel2mel import constants as C

REFERENCE_LEVEL = math.log(64 / 127)  # one key at velocity 64: the level that adds nothing
# The slope is SLOPE_SCALE times the affine map: Adam moves a parameter by about the learning
# rate per step, and a fine-tune at 3e-4 for 1,250 steps would otherwise reach a slope of 0.3
# at most, where FluidSynth's is about 1.7 (as the harmonic detail's GAIN_SCALE).
SLOPE_SCALE = 10.0


def key_level(roll: torch.Tensor) -> torch.Tensor:
    """The level of every frame, Tensor[B x 176 x T] roll (velocity / 127) -> Tensor[B x T].

    ``0.5 ln(sum_k x_k^2) - REFERENCE_LEVEL`` over the sounding rows where a key sounds; a
    silent frame repeats the level of the last frame with sound, and frames before the first
    sound are 0.
    """
    keys = roll[:, : C.N_KEYS].float()
    power = keys.square().sum(1)  # B x T
    sounding = power > 0
    level = 0.5 * torch.log(power.clamp_min(1e-12)) - REFERENCE_LEVEL
    frames = torch.arange(power.shape[-1], device=roll.device).expand_as(power)
    last, _ = torch.cummax(torch.where(sounding, frames, torch.full_like(frames, -1)), dim=-1)
    held = level.gather(-1, last.clamp_min(0))
    return torch.where(last >= 0, held, torch.zeros_like(held)).to(roll.dtype)


class VelocityGain(nn.Module):
    """``slope(embedding) * key_level(roll)``, added to the log-mel.

    Parameters
    ----------
    embedding_dim:
        Size E of the instrument embedding.
    n_mels:
        Mel bins M.
    """

    def __init__(self, embedding_dim: int, n_mels: int = C.N_MELS) -> None:
        super().__init__()
        self.slope = nn.Linear(embedding_dim, n_mels)
        nn.init.zeros_(self.slope.weight)
        nn.init.zeros_(self.slope.bias)

    def forward(self, roll: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        """Tensor[B x 176 x T] roll, Tensor[B x E] or Tensor[B x E x T] embedding ->
        Tensor[B x M x T] gain (nepers)."""
        if embedding.dim() == 2:
            slope = self.slope(embedding)[:, :, None]  # B x M x 1
        else:
            slope = self.slope(embedding.transpose(1, 2)).transpose(1, 2)  # B x M x T
        return SLOPE_SCALE * slope * key_level(roll).to(slope.dtype)[:, None, :]
