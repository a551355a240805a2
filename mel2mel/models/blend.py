"""Values given at instruments' embeddings, interpolated anywhere in the timbre space.

The texture strengths (:class:`~mel2mel.models.texture.InstrumentStrengths`) and the detail
gains (:class:`~mel2mel.models.sharpen.DetailGains`) are chosen per instrument; a mix, a
coordinate or a learned timbre gets a blend of its neighbours' values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

BLEND_EPS = 1e-12  # squared embedding distance added before inverting


def shepard_blend(
    embedding: torch.Tensor, anchors: torch.Tensor, values: torch.Tensor
) -> torch.Tensor:
    """Values defined at anchor embeddings, interpolated at ``embedding``.

    Each anchor weighs ``1 / (|e - a|^2 + eps)`` (Shepard's interpolation): an anchor's own
    embedding gets its own value, points between anchors a smooth mix, flat near each one.

    Parameters
    ----------
    embedding: Tensor[B x E] or Tensor[B x E x T]
    anchors: Tensor[N x E]
    values: Tensor[N x D]

    Returns
    -------
    Tensor[B x D x 1] or Tensor[B x D x T], in the embedding's dtype.
    """
    e = embedding if embedding.dim() == 3 else embedding[..., None]  # B x E x T
    a = anchors.to(e)
    w = 1.0 / ((e[:, None] - a[None, :, :, None]).pow(2).sum(dim=2) + BLEND_EPS)  # B x N x T
    w = w / w.sum(dim=1, keepdim=True)
    return torch.einsum("bnt,nd->bdt", w, values.to(e))


def values_by_instrument(
    count: int, index_of: Callable[[str], int], default: float, chosen: dict[str, float]
) -> tuple[float, ...]:
    """One value per row of a model's instrument table (``count`` rows): ``chosen``'s, keyed
    by anything ``index_of`` resolves (:meth:`Mel2Mel.instrument_index`: a name or a GM
    program; it raises for a key the model lacks, listing the valid ones), else ``default``."""
    values = [float(default)] * count
    for key, value in chosen.items():
        values[index_of(key)] = float(value)
    return tuple(values)


def freeze_anchored(
    obj: Any, what: str, *, rows: tuple[str, ...] = (), values: tuple[str, ...] = ()
) -> None:
    """Normalize a frozen dataclass of per-instrument values in place: ``names`` to strings,
    ``embeddings`` and each field of ``rows`` to tuples of float rows, each field of ``values``
    (one number per instrument) to a tuple of floats; and check that there is one embedding and
    one row or value per name and that the embeddings have one size (``what`` names the class
    in the error). Shared by the detail gains, the note contrast and the note beats."""
    object.__setattr__(obj, "names", tuple(str(n) for n in obj.names))
    for field in ("embeddings", *rows):
        object.__setattr__(
            obj, field, tuple(tuple(float(x) for x in r) for r in getattr(obj, field))
        )
    for field in values:
        object.__setattr__(obj, field, tuple(float(x) for x in getattr(obj, field)))
    n = len(obj.names)
    for field in ("embeddings", *rows, *values):
        if n == 0 or len(getattr(obj, field)) != n:
            raise ValueError(f"{what} needs as many {field} as names")
    if len({len(e) for e in obj.embeddings}) != 1:
        raise ValueError(f"{what}: embeddings of different sizes")
