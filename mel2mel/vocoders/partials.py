"""The phase advance of the notes' partials, from the piano roll.

An 80-band mel keeps a spectrum's envelope but not where, within a band, its partials lie; the
fast vocoder's network guesses each STFT bin's phase advance per hop (its instantaneous
frequency) from the mel, and a guess off by a fraction of a bin turns a partial into a beating
pair or a blur that a transcriber no longer hears as a note (docs/VOCODERS.md, "Partials from
the notes"). The roll says which keys sound; their partials' frequencies follow from equal
temperament. :class:`PartialPhase` gives, for every bin within ``width`` bins of a partial of a
key that sounds (or sounded at most ``hold`` frames ago: release tails and pedalled notes keep
ringing), that partial's phase advance per hop; other bins keep the network's.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mel2mel import constants as C

PARTIAL_WIDTH: float = 1.5  # bins on each side of a partial that take its frequency
PARTIAL_HOLD: int = 60  # frames a key keeps its partials after its note ends (0.48 s)


def key_frequencies() -> torch.Tensor:
    """Fundamental frequency in Hz of each of the 88 keys (A4 = 440 Hz, equal temperament),
    Tensor[N_KEYS] float64."""
    midi = torch.arange(C.MIDI_MIN, C.MIDI_MIN + C.N_KEYS, dtype=torch.float64)
    return 440.0 * 2.0 ** ((midi - 69.0) / 12.0)


def nearest_partials(n_fft: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each key and each STFT bin of ``n_fft``-point frames, the key's harmonic nearest the
    bin's centre: ``(frequency Hz, harmonic number, distance in bins)``, each
    Tensor[N_KEYS x F] float64; the distance is ``inf`` where that harmonic lies past Nyquist
    (it does not exist)."""
    bin_hz = C.SAMPLE_RATE / n_fft
    freq = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * bin_hz  # [F]
    rank = torch.clamp(torch.round(freq[None] / key_frequencies()[:, None]), min=1.0)
    nearest = rank * key_frequencies()[:, None]  # [K x F], Hz
    distance = torch.where(
        nearest < C.SAMPLE_RATE / 2, (nearest - freq[None]).abs() / bin_hz, math.inf
    )
    return nearest, rank, distance


def held_keys(roll: torch.Tensor, hold: int) -> torch.Tensor:
    """Keys that sound or sounded within ``hold`` frames: Tensor[B x ROLL x T] -> bool
    Tensor[B x N_KEYS x T] (frames before the roll count as silent)."""
    on = (roll[:, : C.N_KEYS] > 0).to(torch.int32)
    if hold == 0:
        return on > 0
    count = torch.cumsum(on, dim=2)
    before = torch.nn.functional.pad(count, (hold + 1, 0))[..., : count.shape[2]]
    return count - before > 0


class PartialPhase(nn.Module):
    """Per-bin phase advance of the sounding notes' nearest partials.

    Parameters
    ----------
    n_fft:
        The synthesis STFT's frame size (``n_fft // 2 + 1`` bins, hop ``C.HOP_LENGTH``).
    width:
        A bin takes a partial's frequency when that partial lies within ``width`` bins of the
        bin's centre.
    hold:
        Frames after a key's last sounding frame during which its partials still count.
    """

    SETS_PER_PASS = 64  # key sets per [sets x held keys x bins] pass

    def __init__(self, n_fft: int, width: float = PARTIAL_WIDTH, hold: int = PARTIAL_HOLD) -> None:
        super().__init__()
        if width <= 0 or hold < 0:
            raise ValueError("width must be > 0 and hold >= 0")
        self.width, self.hold = width, hold
        nearest, _, distance = nearest_partials(n_fft)
        distance = torch.where(distance <= width, distance, math.inf)
        advance = 2 * math.pi * nearest * C.HOP_LENGTH / C.SAMPLE_RATE  # radians per hop
        advance = torch.remainder(advance, 2 * math.pi)
        self.register_buffer("distance", distance.float(), persistent=False)
        self.register_buffer("advance", advance.float(), persistent=False)

    def held(self, roll: torch.Tensor) -> torch.Tensor:
        """:func:`held_keys` with this instance's ``hold``."""
        return held_keys(roll, self.hold)

    def forward(self, roll: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Phase advances of the partials near each bin.

        Parameters
        ----------
        roll: Tensor[B x ROLL_CHANNELS x T]

        Returns
        -------
        ``(advance Tensor[B x T x F], near bool Tensor[B x T x F])``: the nearest held
        partial's phase advance per hop in radians, wrapped to [0, 2 pi), where ``near``
        (0 elsewhere).
        """
        held = self.held(roll).transpose(1, 2)  # [B x T x K]
        b, t, _ = held.shape
        f = self.distance.shape[1]
        flat = held.reshape(b * t, -1)
        keys = torch.nonzero(flat.any(0)).flatten()
        if keys.numel() == 0:
            zeros = torch.zeros(b, t, f, device=roll.device)
            return zeros, zeros.bool()
        # Frames hold few distinct sets of keys: find each set's nearest partials once.
        sets, inverse = torch.unique(flat[:, keys], dim=0, return_inverse=True)
        # Each set's held keys, ascending, padded to the largest set: [sets x M]
        count = sets.sum(1)
        order = torch.argsort(sets.to(torch.int8), dim=1, descending=True, stable=True)
        order = keys[order[:, : int(count.max())]]
        valid = torch.arange(order.shape[1], device=roll.device) < count[:, None]
        best = torch.empty(sets.shape[0], f, device=roll.device)
        which = torch.empty(sets.shape[0], f, dtype=torch.long, device=roll.device)
        for i in range(0, sets.shape[0], self.SETS_PER_PASS):  # [sets x M x F] in slices
            part = slice(i, i + self.SETS_PER_PASS)
            d = torch.where(valid[part, :, None], self.distance[order[part]], math.inf)
            torch.min(d, dim=1, out=(best[part], which[part]))  # the first (lowest key) on ties
        found = torch.isfinite(best)
        key = order.gather(1, which)  # [sets x F]
        phase = torch.where(found, self.advance.gather(0, key), 0.0)
        return phase[inverse].view(b, t, f), found[inverse].view(b, t, f)
