"""Feature-wise linear modulation (FiLM, Perez et al. 2018) from an instrument embedding.

``h = gamma(e) * h + beta(e)`` with ``gamma`` and ``beta`` affine in the embedding ``e``. Here
``gamma(e) = 1 + W_g e + b_g`` and ``beta(e) = W_b e + b_b`` with all four zero at
initialization, so a fresh layer is exactly the identity and training starts from the
unconditioned network (STYLE principle 6). This parametrization spans the same functions as
the paper's plain linear ``gamma``; only the starting point differs.

The embedding may be one vector per sequence, ``(B, E)``, or one per frame, ``(B, E, T)``,
which lets a caller morph the timbre over time.
"""

from __future__ import annotations

import torch
from torch import nn


class FiLM(nn.Module):
    """Condition ``channels`` feature maps on an ``embedding_dim``-dimensional embedding.

    Parameters
    ----------
    embedding_dim:
        Size E of the conditioning vector.
    channels:
        Number C of modulated channels.
    """

    def __init__(self, embedding_dim: int, channels: int) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.channels = channels
        self.gamma = nn.Linear(embedding_dim, channels)  # predicts gamma - 1
        self.beta = nn.Linear(embedding_dim, channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Zero every weight and bias: gamma = 1, beta = 0, i.e. the identity."""
        for layer in (self.gamma, self.beta):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def coefficients(self, embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale and shift for ``embedding``.

        Parameters
        ----------
        embedding: Tensor[B x E] or Tensor[B x E x T]

        Returns
        -------
        (gamma, beta): each Tensor[B x C x 1] or Tensor[B x C x T], ready to broadcast.
        """
        if embedding.dim() == 2:
            return (1.0 + self.gamma(embedding)).unsqueeze(-1), self.beta(embedding).unsqueeze(-1)
        if embedding.dim() == 3:
            e = embedding.transpose(1, 2)  # B x T x E
            gamma = (1.0 + self.gamma(e)).transpose(1, 2)
            return gamma, self.beta(e).transpose(1, 2)
        raise ValueError(
            f"FiLM embedding must be (B, E) or (B, E, T), got {tuple(embedding.shape)}"
        )

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        """Modulate ``x``.

        Parameters
        ----------
        x: Tensor[B x C x T]
            Feature maps.
        embedding: Tensor[B x E] or Tensor[B x E x T]
            Conditioning, per sequence or per frame.

        Returns
        -------
        Tensor[B x C x T]
        """
        gamma, beta = self.coefficients(embedding)
        return torch.addcmul(beta, gamma, x)

    def extra_repr(self) -> str:
        return f"embedding_dim={self.embedding_dim}, channels={self.channels}"
