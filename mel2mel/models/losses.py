"""The three spectrogram losses compared in the Mel2Mel paper.

The model always predicts the natural-log mel magnitude ``x``; the losses differ in the domain
where the squared error is taken:

``abs``
    MSE on the linear magnitude, ``mean((exp(x) - exp(y))**2)``. Dominated by the loudest
    bins; quiet detail barely counts. The prediction is clamped to at most ``ABS_MAX_LOG``
    before ``exp`` so an early, wild prediction cannot overflow.
``log-abs``
    MSE on the log magnitude, ``mean((x - y)**2)``. Every decibel counts the same, including
    differences between two kinds of near-silence.
``tanh-log-abs``
    MSE after squashing the log magnitude, ``mean((s(x) - s(y))**2)`` with
    ``s(v) = tanh((v - TANH_OFFSET) / TANH_SCALE)``. The paper's best loss.

Frame level
-----------
:func:`level_loss` is an optional extra term (``train.level_weight``), not one of the paper's
losses: the mean absolute difference between the frame power of the prediction and of the
truth, in nepers of magnitude. A loss on log magnitudes settles on a geometric mean, which in
power lies below what the note plays wherever the truth varies (attacks, beating), and most
below at the loudest velocities; the frame power is what a listener hears as level and what the
velocity-ramp check of docs/MODELS.md measures.

Spectral slope
--------------
:func:`slope_loss` is another optional term (``train.slope_weight``): the mean absolute
difference between the frequency slopes of the prediction and of the truth (each frame's
differences between neighbouring mel bins). A squared error on log magnitudes is minimized by
the conditional mean, which flattens the harmonic peaks and valleys wherever their exact height
is uncertain; those peaks are what a transcriber hears as pitch (docs/MODELS.md, "What the
transcriber and the classifier miss", where the term was tried and moved neither the peaks nor
the transcription). It is blind to level: adding a constant to a frame changes no slope.

Rises
-----
:func:`flux_loss` (``train.flux_weight``): the mean absolute difference between how much each
bin rises from one frame to the next in the prediction and in the truth (falls count as 0).
A held note's partials do not rise when another note is struck; a model that cannot place a
new note's energy exactly raises a band around it instead, and a transcriber hears the held
notes there struck again (docs/MODELS.md, "what the renders' extra notes are": 90 % of the
model's notes 1-2 semitones off a struck one are a note still sounding).

Variation
---------
:func:`variation_loss` (``train.variation_weight``): the mean absolute difference between how
much each bin moves over a crop in the prediction and in the truth: per bin, the mean absolute
change from frame to frame at lags of 1, 2, 4 and 8 frames, and from each bin to the next.
It asks for as much movement as the truth has, not for the same movements at the same times:
where the truth's fluctuations are unpredictable (tremolo, beating, noise), a squared or
absolute error settles on a smooth mean, and an instrument classifier, which reads the spread of
its features over time (the mean size of the MFCCs' frame-to-frame change, the spectral
contrast), hears a smooth render as another instrument (docs/SPACE100.md, stop 33).

Bin balance
-----------
:func:`bin_weights` (``train.bin_balance``, ``log-abs`` only) weighs each mel bin's squared
error by the inverse of the bin's variance for the instrument, raised to a power. The paper's
analysis scores a model by the Pearson r of every bin, which is blind to how far a bin swings;
the squared error is not, and a bin that lies a fraction of a neper above the floor when a
note sounds (the high bins of a decaying instrument) costs it almost nothing whether it is
right or not.

Squashing constants
-------------------
The data lie in ``[log(1e-5), ~3] = [-11.5, ~3]`` (see :mod:`mel2mel.constants`), with most
musical energy between -8 and 2. We centre the tanh on the middle of that range,
``TANH_OFFSET = -4.25`` (the midpoint of -11.5 and 3), and use ``TANH_SCALE = 4``, so the
floor maps to ``tanh(-1.81) = -0.95`` and the loudest frames to ``tanh(1.81) = 0.95``: the
region where the music lives keeps a nearly linear slope (1/4 at the centre, above 1/8 over
[-7.8, -0.7]) while errors deep in the silence floor or in rare clipping peaks saturate.
Both constants can be changed through the training config.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from mel2mel import constants as C

LOSSES = ("abs", "log-abs", "tanh-log-abs")
TANH_OFFSET = -4.25
TANH_SCALE = 4.0
ABS_MAX_LOG = 10.0  # exp(10) ~ 2.2e4, far above any real mel magnitude (exp(3) ~ 20)


def squash(
    log_mel: torch.Tensor, offset: float = TANH_OFFSET, scale: float = TANH_SCALE
) -> torch.Tensor:
    """``tanh((log_mel - offset) / scale)``, elementwise; any shape."""
    return torch.tanh((log_mel - offset) / scale)


def abs_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE on linear magnitudes: Tensor[B x M x T] log-mels -> scalar."""
    return torch.mean((torch.exp(pred.clamp_max(ABS_MAX_LOG)) - torch.exp(target)) ** 2)


def log_abs_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE on log magnitudes: Tensor[B x M x T] log-mels -> scalar."""
    return torch.mean((pred - target) ** 2)


def tanh_log_abs_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    offset: float = TANH_OFFSET,
    scale: float = TANH_SCALE,
) -> torch.Tensor:
    """MSE on tanh-squashed log magnitudes: Tensor[B x M x T] log-mels -> scalar."""
    return torch.mean((squash(pred, offset, scale) - squash(target, offset, scale)) ** 2)


def dead_band_floor(
    pred: torch.Tensor, margin: float, floor: float = C.LOG_SILENCE
) -> torch.Tensor:
    """``pred`` (log-mel, any shape) as inference plays it, for the loss: floored at ``floor``
    (the analysis floor, :func:`mel2mel.audio.floor_log_mel`), except that a value more than
    ``margin`` (nepers) below it counts as ``margin`` higher than it is. The gradient passes
    unchanged (straight-through), so the band ``[floor - margin, floor]`` is free for a bin
    whose target is the floor, a bin under the band is pulled back up to it, and a bin whose
    target is above the floor is pulled up from anywhere. With ``margin = inf`` this is the
    plain straight-through floor, which leaves bins below the floor free to drift without
    bound (docs/MODELS.md, "Output floor")."""
    value = torch.where(pred < floor - margin, pred + margin, pred.clamp_min(floor))
    return value.detach() + (pred - pred.detach())


def frame_level(log_mel: torch.Tensor) -> torch.Tensor:
    """Tensor[B x M x T] natural-log mel -> Tensor[B x T]: log of each frame's summed power,
    halved (so it is in nepers of magnitude, like the mel)."""
    return 0.5 * torch.logsumexp(2.0 * log_mel, dim=1)


def level_loss(
    pred: torch.Tensor, target: torch.Tensor, frames: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean absolute frame-level error (nepers): Tensor[B x M x T] log-mels -> scalar; over the
    frames selected by ``frames`` (bool Tensor[B x T]) only, when given (0 if none is), or
    weighted by it (float Tensor[B x T] of weights >= 0: the weighted mean)."""
    err = torch.abs(frame_level(pred) - frame_level(target))
    if frames is None:
        return torch.mean(err)
    weights = frames.to(err.dtype)
    return (err * weights).sum() / weights.sum().clamp_min(1e-12)


def slope_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error of the frequency slopes (nepers per mel bin): Tensor[B x M x T]
    log-mels -> scalar. ``slope[b, m, t] = x[b, m + 1, t] - x[b, m, t]``."""
    return torch.mean(torch.abs(torch.diff(pred, dim=1) - torch.diff(target, dim=1)))


def flux_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error of the rises (nepers per frame): Tensor[B x M x T] log-mels ->
    scalar. ``rise[b, m, t] = max(x[b, m, t + 1] - x[b, m, t], 0)``."""
    rises = [torch.relu(torch.diff(x, dim=2)) for x in (pred, target)]
    return torch.mean(torch.abs(rises[0] - rises[1]))


#: Variances below this (0.05 neper squared) count as this in :func:`bin_weights`: a bin that
#: never leaves the floor has none, and would otherwise take all the weight.
MIN_BIN_VARIANCE = 0.05**2


VARIATION_LAGS: tuple[int, ...] = (1, 2, 4, 8)  # frames


def variation(x: torch.Tensor, lags: tuple[int, ...] = VARIATION_LAGS) -> torch.Tensor:
    """How much each bin of a log-mel moves: Tensor[B x M x T] -> Tensor[B x M x (L + 1)], the
    mean absolute change over ``T`` at each lag ``< T`` (``L`` of them), then the mean absolute
    difference to the next bin up (the last bin has none: 0)."""
    moves = [(x[..., lag:] - x[..., :-lag]).abs().mean(-1) for lag in lags if lag < x.shape[-1]]
    across = torch.nn.functional.pad(torch.diff(x, dim=1).abs().mean(-1), (0, 1))
    return torch.stack([*moves, across], dim=-1)


def variation_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error of :func:`variation` (nepers): Tensor[B x M x T] log-mels -> scalar.
    Blind to when a bin moves, and to its level."""
    return torch.mean(torch.abs(variation(pred) - variation(target)))


def bin_weights(variances: torch.Tensor, balance: float) -> torch.Tensor:
    """Per-bin loss weights ``(mean_b v_b / v_b) ** balance`` from per-bin variances
    Tensor[N x M] (one row per instrument), each row normalized to a mean of 1; a row with
    NaN (an instrument without data) weighs its bins alike. ``balance = 0`` gives ones."""
    var = variances.clamp_min(MIN_BIN_VARIANCE)
    weights = (var.mean(dim=1, keepdim=True) / var) ** balance
    weights = weights / weights.mean(dim=1, keepdim=True)
    return torch.where(torch.isnan(weights), torch.ones_like(weights), weights)


def reweighted(
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    pred: torch.Tensor,
    target: torch.Tensor,
    frames: torch.Tensor,
    weight: float,
) -> torch.Tensor:
    """``loss`` (a mean of elementwise terms) with the selected frames weighted ``weight`` and
    the others 1, normalized by the total weight.

    ``pred``, ``target``: Tensor[B x M x T]; ``frames``: bool Tensor[B x T].
    """
    n, chosen = frames.numel(), int(frames.sum())
    whole = loss(pred, target)
    if chosen == 0 or weight == 1.0:
        return whole
    part = loss(pred.transpose(1, 2)[frames], target.transpose(1, 2)[frames])  # chosen x M
    return (n * whole + (weight - 1.0) * chosen * part) / (n + (weight - 1.0) * chosen)


LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def get_loss(
    name: str, *, tanh_offset: float = TANH_OFFSET, tanh_scale: float = TANH_SCALE
) -> LossFn:
    """The loss function called ``name`` (one of :data:`LOSSES`).

    Parameters
    ----------
    name:
        ``abs``, ``log-abs`` or ``tanh-log-abs``.
    tanh_offset, tanh_scale:
        Squashing constants, used by ``tanh-log-abs`` only.

    Returns
    -------
    ``loss(pred, target) -> scalar`` on natural-log mels, both Tensor[B x M x T].
    """
    if name == "abs":
        return abs_loss
    if name == "log-abs":
        return log_abs_loss
    if name == "tanh-log-abs":
        if tanh_scale <= 0:
            raise ValueError("tanh_scale must be positive")

        def loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return tanh_log_abs_loss(pred, target, tanh_offset, tanh_scale)

        return loss
    raise ValueError(f"unknown loss {name!r}; choose from {', '.join(LOSSES)}")
