"""Held notes stay down when others are struck: a ceiling on the held partials' level.

A struck or plucked note's partials only decay once its attack is over. The acoustic model's
mel does not always keep to that: where a new note starts next to a held one, it raises a band
around the new note (it cannot place the new energy exactly), the vocoder spreads that rise over
every STFT bin of the band, and the held note's partials rise with it. A transcriber hears such a
rise as the held note struck again, or as a note a semitone off. The roll says which keys are
held and when each is struck, so the vocoder can keep the held notes' low partials from rising
(``FastVocoderConfig.held_partials``, off by default: FluidSynth's own held partials rise too,
and the ceiling moves the sound away from it; docs/VOCODERS.md, "Held notes kept down"):

* a bin is *capped* in a frame when it lies within ``width`` bins of one of the first
  ``harmonics`` harmonics of a held key (sounding, or released at most ``hold`` frames before)
  that was not struck within ``own`` frames of it, and not within ``own_width`` bins of any
  harmonic of a key that was;
* a capped bin's magnitude may not exceed its running minimum since the bin was last uncapped,
  which may grow by ``rise_db`` per frame within ``own`` frames of any onset and by
  ``release_db`` per frame elsewhere (so that a held note's level, once the strikes are over,
  comes back slowly where the mel has it; ``None``: no ceiling there);
* frames within ``transient`` frames of any onset are free: the broadband attack of a new note
  sounds in every bin, held partials included, and passes; the minimum does not learn from them.

The ceiling is a running minimum of the log-magnitude over segments, computed with one
``cummin``; a streamed caller passes the ceiling of the frame before its first
(:meth:`HeldPartials.forward`'s ``state``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mel2mel import constants as C
from mel2mel.vocoders.partials import PARTIAL_HOLD, PARTIAL_WIDTH, held_keys, nearest_partials

HELD_HARMONICS: int = 3  # the harmonics of a held key that are capped
OWN_WIDTH: float = 2.5  # bins around a struck key's harmonics that it owns
OWN_FRAMES: tuple[int, int] = (4, 30)  # frames before / after its onset that a key owns them
TRANSIENT_FRAMES: tuple[int, int] = (4, 6)  # frames before / after any onset that are free
RELEASE_DB: float | None = 0.25  # growth of the ceiling per frame away from the strikes
_SEGMENT: float = 1e3  # log-magnitude offset between segments (far beyond any log range)


def harmonic_bins(n_fft: int, width: float, harmonics: int | None) -> torch.Tensor:
    """Float Tensor[N_KEYS x F] (0 / 1): the bins within ``width`` bins of one of each key's
    first ``harmonics`` harmonics (all below Nyquist when ``None``)."""
    _, rank, distance = nearest_partials(n_fft)
    near = distance <= width
    if harmonics is not None:
        near &= rank <= harmonics
    return near.float()


def around_onsets(onsets: torch.Tensor, before: int, after: int) -> torch.Tensor:
    """bool Tensor[B x K x T]: frames from ``before`` frames before to ``after`` after a
    ``True`` of ``onsets`` (bool Tensor[B x K x T])."""
    count = torch.cumsum(onsets.to(torch.int32), dim=2)  # onsets up to each frame
    t = onsets.shape[2]
    # padded[j] = count[j - after - 1]: 0 before the roll, the last count after it
    head = count.new_zeros(*count.shape[:2], after + 1)
    padded = torch.cat([head, count, count[..., -1:].expand(-1, -1, before)], dim=2)
    return padded[..., after + 1 + before :] - padded[..., :t] > 0


class HeldPartials(nn.Module):
    """The ceiling on held partials (module docstring) for a vocoder's STFT magnitude.

    Parameters
    ----------
    n_fft:
        The STFT's frame size (``n_fft // 2 + 1`` bins, hop ``C.HOP_LENGTH``).
    harmonics, width, own_width, own, transient, hold, rise_db, release_db:
        As in the module docstring.
    """

    def __init__(
        self,
        n_fft: int,
        harmonics: int = HELD_HARMONICS,
        width: float = PARTIAL_WIDTH,
        own_width: float = OWN_WIDTH,
        own: tuple[int, int] = OWN_FRAMES,
        transient: tuple[int, int] = TRANSIENT_FRAMES,
        hold: int = PARTIAL_HOLD,
        rise_db: float = 0.0,
        release_db: float | None = RELEASE_DB,
    ) -> None:
        super().__init__()
        if harmonics < 1 or width <= 0 or own_width <= 0 or hold < 0:
            raise ValueError("harmonics must be >= 1, widths > 0 and hold >= 0")
        if rise_db < 0 or (release_db is not None and release_db < 0):
            raise ValueError("rise_db and release_db must be >= 0")
        if min(*own, *transient) < 0:
            raise ValueError("frame windows must be >= 0")
        self.own, self.transient, self.hold = own, transient, hold
        self.rise = rise_db / 20 * math.log(10)  # nats per frame
        self.release = None if release_db is None else release_db / 20 * math.log(10)
        self.register_buffer("held_bins", harmonic_bins(n_fft, width, harmonics), persistent=False)
        self.register_buffer("own_bins", harmonic_bins(n_fft, own_width, None), persistent=False)

    @property
    def lookahead(self) -> int:
        """Frames after a frame whose onsets change its ceiling."""
        return max(self.own[0], self.transient[0])

    def masks(self, roll: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(capped bool Tensor[B x T x F], free bool Tensor[B x T x 1], growth Tensor[B x T
        x 1] float64)`` for a roll Tensor[B x ROLL_CHANNELS x T] (frames outside it count as
        silent): the capped bins, the transient frames and the ceiling's growth per frame."""
        onsets = roll[:, C.N_KEYS :] > 0
        held = held_keys(roll, self.hold)
        struck = around_onsets(onsets, *self.own)
        old = (held & ~struck).transpose(1, 2).float()  # [B x T x K]
        capped = (old @ self.held_bins > 0) & ~(struck.transpose(1, 2).float() @ self.own_bins > 0)
        anywhere = onsets.any(1, keepdim=True)
        free = around_onsets(anywhere, *self.transient).transpose(1, 2)
        striking = around_onsets(anywhere, *self.own).transpose(1, 2)
        if self.release is None:
            capped &= striking
        growth = torch.where(striking, self.rise, self.release or 0.0).double()
        return capped, free, growth

    def forward(
        self,
        magnitude: torch.Tensor,
        roll: torch.Tensor,
        first: int = 0,
        state: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cap ``magnitude``.

        Parameters
        ----------
        magnitude: Tensor[B x T x F]
            STFT magnitude, frames-major.
        roll: Tensor[B x ROLL_CHANNELS x T']
            The notes; ``magnitude``'s frame ``t`` is the roll's frame ``first + t``. The roll
            should reach ``hold`` frames before and :attr:`lookahead` frames after the
            magnitude's frames (frames it lacks count as silent).
        state: Tensor[B x F] float64, optional
            The ceiling of the frame before the first (the second output's frame of a call
            before), when the magnitude continues an earlier one.

        Returns
        -------
        ``(capped magnitude Tensor[B x T x F], ceiling Tensor[B x T x F] float64)``: the
        log-magnitude ceiling of each frame's bins (``inf`` where a segment has no level yet).
        """
        t = magnitude.shape[1]
        roll = torch.nn.functional.pad(roll, (0, max(0, first + t - roll.shape[2])))
        capped, free, growth = (m[:, first : first + t] for m in self.masks(roll))
        # An uncapped bin's ceiling is its own level (a segment starts there).
        ceiling = magnitude.clamp_min(1e-30).log().double()
        # Only the bins that are capped somewhere need the running minimum.
        used = capped.any(1).any(0)
        bins = torch.nonzero(used).flatten()
        if bins.numel() == 0:
            return magnitude, ceiling
        capped, part = capped[..., bins], magnitude[..., bins]
        log_mag = part.double().clamp_min(1e-30).log()
        if state is not None:  # the frame before: a segment start holding the carried ceiling
            capped, free, growth = (torch.cat([torch.zeros_like(m[:, :1]), m], 1)
                                    for m in (capped, free, growth))  # fmt: skip
            log_mag = torch.cat([state[:, None, bins], log_mag], 1)
        grown = torch.cumsum(growth, dim=1)  # the ceiling's growth since the first frame
        # Segments start at every uncapped frame; the free frames of a segment do not count.
        segment = torch.cumsum((~capped).to(torch.float64), dim=1) * _SEGMENT
        value = torch.where(capped & free, math.inf, log_mag - grown) - segment
        running = torch.cummin(value, dim=1).values + segment + grown
        lower = capped & ~free & (running < log_mag)
        if state is not None:
            lower, running = lower[:, 1:], running[:, 1:]
        ceiling[..., bins] = running
        out = magnitude.clone()
        out[..., bins] = torch.where(lower, running.exp().to(part.dtype), part)
        return out, ceiling
