"""A nonlinear readout beside Mel2Mel's linear output layer (a variation, not the paper's).

The paper reads the log-mel out of the modulated LSTM states with one 1x1 convolution, so every
output bin is a *linear* function of the state. A frame's log-mel is not linear in its notes
(the log of a sum of partials), and FiLM can only scale and shift a state per instrument, so
the instrument-specific shape of each note's spectrum (the height of every partial, the comb
of a low note's harmonics 1-3 bins apart) has to be drawn by one shared linear map. This
module adds a small per-frame MLP, conditioned on the embedding, to that map::

    modulated LSTM states (B, 2H, T)
      -> Conv1d 1x1, 2H -> D -> FiLM(embedding) -> ReLU
      -> Conv1d 1x1, D -> N_MELS, zero-initialized       (B, N_MELS, T), added to the output

Zero-initialized last layer: a model extended with it plays exactly as its source until
training moves it (``train.init_from`` leaves it fresh). Per frame, so windows, folding and
chunked inference stay exact. Measured (docs/MODELS.md, "Stage 14"): 0.03-0.07 dB closer to
FluidSynth on every held-out set than the same cycle without it; the low notes' harmonic
detail and the transcription and recognition checks did not move.
"""

from __future__ import annotations

import torch
from torch import nn

from mel2mel.models.film import FiLM


class ReadoutHead(nn.Module):
    """Residual per-frame MLP from the LSTM's modulated states to log-mel bins.

    Parameters
    ----------
    embedding_dim:
        Size E of the instrument embedding.
    features:
        Channels of the states it reads (``2 * lstm_hidden``).
    channels:
        Hidden width D.
    n_mels:
        Output bins.
    """

    def __init__(self, embedding_dim: int, features: int, channels: int, n_mels: int) -> None:
        super().__init__()
        self.hidden = nn.Conv1d(features, channels, 1)
        self.film = FiLM(embedding_dim, channels)
        self.out = nn.Conv1d(channels, n_mels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, h: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        """Tensor[B x 2H x T] modulated states, Tensor[B x E (x T)] -> Tensor[B x N_MELS x T],
        the correction added to the linear output (natural-log units)."""
        return self.out(torch.relu(self.film(self.hidden(h), embedding)))
