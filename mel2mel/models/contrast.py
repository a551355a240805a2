"""Note contrast: a strike's energy in the struck note's partials, not in the held ones'.

When a key is struck while others are held, Mel2Mel does not know exactly which mel bins the
new note's energy belongs in, and a squared-error model hedges: measured against FluidSynth on
the performance set, in the 0.2 s after an onset the bins of the struck note's partials come
out 1-3 dB too low and those of the notes still held 1.5-3 dB too high (the held notes rise
with the strike). A transcriber hears the held notes struck again, and misses some of the new
ones (docs/MODELS.md, "Note contrast"). The roll says which keys are struck and which held, so
the mean of that error can be measured and taken off, like the detail gains
(:mod:`mel2mel.models.sharpen`) take off the model's mean flattening of the spectrum.

Every bin of every frame gets a **role** from the roll (:func:`bin_roles`):

* ``struck`` (harmonic group ``g``, offset ``o``, alone or not): the bin holds harmonic ``h``
  (group 1, 2, 3-4 or 5-8) of a key struck ``o`` frames before (``-ANTICIPATION <= o <=
  REACH``; the analysis window is centred, so a strike shows ``ANTICIPATION`` frames early);
  of several such keys the one struck nearest in time decides. "Alone": no other key is held
  in that frame (a chord struck out of silence), where the model has no neighbour to confuse
  the new notes with, and errs otherwise;
* ``held`` (offset ``o`` of the nearest strike of any key, or none within reach): the bin
  holds a harmonic of a sounding key that is not struck, and of no struck one.

The correction is one value per role and instrument (log units), fitted as the mean of
FluidSynth's mel minus the model's over the cells of that role in the training split
(:func:`mel2mel.evaluation.note_contrast.fit_note_contrast`), blended between instruments by
Shepard's interpolation like the detail gains and texture strengths, each instrument at its
strength chosen on the valid split. Every other bin (the valleys between partials, whose depth
the detail gains set) is left as it is: corrected by its mean too, it lost the gains' contrast
and cost recognition (docs/MODELS.md, "Note contrast"). It reads only the roll around each
frame (``REACH`` frames back, ``ANTICIPATION`` ahead), so a window with that much context
gives the same frames as the whole piece. It is stored in the acoustic export's JSON
(``"note_contrast"``).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mel2mel import constants as C
from mel2mel.audio import floor_log_mel, mel_filterbank
from mel2mel.models.blend import freeze_anchored, shepard_blend

ANTICIPATION = 4  # frames before an onset at which its mel already rises (half the window)
REACH = 24  # frames after an onset that count as its strike (0.19 s)
HARMONIC_GROUPS = (1, 2, 3, 3, 4, 4, 4, 4)  # harmonic h = 1..8 -> its group
MAX_HARMONIC_HZ = 7800.0  # harmonics above this are left alone
OFFSETS = ANTICIPATION + REACH + 1  # offsets -ANTICIPATION..REACH
N_GROUPS = max(HARMONIC_GROUPS)
ALONE = N_GROUPS * OFFSETS  # first struck role of a frame where no other key is held
HELD = 2 * ALONE  # first held role; OFFSETS offsets, then "no strike within reach"
N_ROLES = HELD + OFFSETS + 1  # and bin_roles gives N_ROLES to a bin of neither: uncorrected
_NONE = -(10**6)  # "no onset within reach"


@functools.cache
def note_partials() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The partials the roles follow: ``(key, group, mel bin)``, three int64 Tensor[P]: for
    every key of the roll (0 = A0) and harmonic 1-8 below :data:`MAX_HARMONIC_HZ`, its harmonic
    group (0-based) and the mel bin whose filter weighs its frequency most."""
    filters = mel_filterbank()
    hz_per_bin = C.SAMPLE_RATE / C.N_FFT
    keys, groups, bins = [], [], []
    for key in range(C.N_KEYS):
        f0 = 440.0 * 2.0 ** ((key + C.MIDI_MIN - 69) / 12)
        for h, group in enumerate(HARMONIC_GROUPS, start=1):
            if h * f0 < MAX_HARMONIC_HZ:
                keys.append(key)
                groups.append(group - 1)
                bins.append(int(np.argmax(filters[:, round(h * f0 / hz_per_bin)])))
    return torch.tensor(keys), torch.tensor(groups), torch.tensor(bins)


def strike_offsets(onsets: torch.Tensor) -> torch.Tensor:
    """Bool Tensor[B x K x T] onsets -> int64 Tensor[B x K x T]: for each frame, ``t`` minus
    the frame of the nearest onset within ``-ANTICIPATION..REACH`` frames of it (the earlier
    one on a tie), or ``_NONE``."""
    t = onsets.shape[-1]
    frames = torch.arange(t, device=onsets.device).expand_as(onsets)
    far = torch.full_like(frames, 10**9)  # farther than any onset could be
    last = torch.cummax(torch.where(onsets, frames, -far), dim=-1).values  # latest at or before
    ahead = torch.where(onsets, frames, far).flip(-1).cummin(dim=-1).values.flip(-1)  # at or after
    back, forth = frames - last, ahead - frames  # both >= 0
    use_back = (back <= REACH) & ((back <= forth) | (forth > ANTICIPATION))
    use_forth = ~use_back & (forth <= ANTICIPATION)
    return torch.where(use_back, back, torch.where(use_forth, -forth, _NONE))


def bin_roles(roll: torch.Tensor) -> torch.Tensor:
    """The role of every bin and frame (module docstring), Tensor[B x 176 x T] roll ->
    int64 Tensor[B x N_MELS x T] of ``0..N_ROLES``, where ``N_ROLES`` is a bin of no struck
    or held note."""
    b, _, t = roll.shape
    sounding, onsets = roll[:, : C.N_KEYS] > 0, roll[:, C.N_KEYS :] > 0
    any_offset = strike_offsets(onsets.any(1, keepdim=True))[:, 0]  # B x T
    when = torch.where(any_offset == _NONE, OFFSETS, any_offset + ANTICIPATION)  # B x T
    never = (REACH + 2) * N_ROLES
    best = torch.full((b, C.N_MELS, t), never, dtype=torch.long, device=roll.device)
    keys, groups, bins = (x.to(roll.device) for x in note_partials())
    playing = (sounding | onsets).any(2).any(0)  # over the batch and the frames
    used = playing[keys]  # only the partials of keys that play somewhere in the batch
    if used.any():
        keys, groups, bins = keys[used], groups[used], bins[used]
        active = torch.unique(keys)  # sorted
        key_offset = strike_offsets(onsets[:, active])  # B x K' x T
        any_held = (sounding[:, active] & (key_offset == _NONE)).any(1, keepdim=True)  # B x 1 x T
        offset = key_offset[:, torch.searchsorted(active, keys)]
        struck = offset != _NONE  # B x P x T
        held = sounding[:, keys] & ~struck
        # one code per partial: nearness (struck nearest first, then held) and role, so that
        # the smallest code over a bin's partials is its role
        role = groups[None, :, None] * OFFSETS + offset + ANTICIPATION
        role = torch.where(any_held, role, ALONE + role)
        struck_code = offset.abs() * N_ROLES + role
        held_code = (REACH + 1) * N_ROLES + HELD + when[:, None]
        code = torch.where(struck, struck_code, torch.where(held, held_code, never))
        best = best.scatter_reduce(1, bins[None, :, None].expand_as(code), code, reduce="amin")
    return torch.where(best < never, best % N_ROLES, N_ROLES)


@dataclass(frozen=True)
class NoteContrast:
    """Corrections of the mel by bin role, one row of :data:`N_ROLES` values per instrument.

    Parameters
    ----------
    names:
        The instruments (the acoustic model's, in its table's order).
    embeddings:
        Their embeddings, N rows of E floats: the anchors of :func:`shepard_blend`.
    table:
        N rows of :data:`N_ROLES` corrections in log units (natural log of the magnitude),
        added to the bins of each role.
    strengths:
        One per instrument, chosen on the valid split (0: its mel as the model draws it).
        Empty: 1 for every one.
    """

    names: tuple[str, ...]
    embeddings: tuple[tuple[float, ...], ...]
    table: tuple[tuple[float, ...], ...]
    strengths: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        freeze_anchored(self, "NoteContrast", rows=("table",))
        n = len(self.names)
        if {len(r) for r in self.table} != {N_ROLES}:
            raise ValueError(f"NoteContrast: every table row needs {N_ROLES} values")
        object.__setattr__(self, "strengths", tuple(float(x) for x in self.strengths))
        if self.strengths and (len(self.strengths) != n or min(self.strengths) < 0):
            raise ValueError("NoteContrast: one strength >= 0 per instrument, or none")

    @functools.cached_property
    def _tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The anchors and the table at each instrument's strength, float64, made once."""
        table = torch.tensor(self.table, dtype=torch.float64)
        if self.strengths:
            table = torch.tensor(self.strengths, dtype=torch.float64)[:, None] * table
        return torch.tensor(self.embeddings, dtype=torch.float64), table

    def with_strengths(self, strengths: tuple[float, ...]) -> NoteContrast:
        """The same table with a strength per instrument (in :attr:`names` order)."""
        return dataclasses.replace(self, strengths=tuple(strengths))

    def apply(
        self, mel: torch.Tensor, embedding: torch.Tensor, roll: torch.Tensor, strength: float = 1.0
    ) -> torch.Tensor:
        """``mel`` Tensor[B x N_MELS x T] predicted from ``roll`` (Tensor[B x 176 x T'], cut or
        zero-padded to T) for ``embedding`` (Tensor[B x E] or Tensor[B x E x T]), each bin
        corrected by its role's value at the embedding times ``strength`` (0 returns ``mel``);
        floored at the analysis floor."""
        if strength == 0:
            return mel
        values = shepard_blend(embedding, *self._tables).to(mel.dtype)  # B x R x (1 or T)
        if not bool(values.any()):  # an instrument at strength 0: no roles to find
            return floor_log_mel(mel)
        t = mel.shape[-1]
        values = F.pad(values.expand(-1, -1, t), (0, 0, 0, 1))  # and "no role": 0
        roles = bin_roles(F.pad(roll[..., :t], (0, t - min(t, roll.shape[-1]))))
        return floor_log_mel(mel + strength * values.gather(1, roles))

    def to_dict(self) -> dict[str, Any]:
        """``{"anticipation", "reach", "instruments": [{"name", "embedding", "table"[,
        "strength"]}]}``, as the acoustic export's JSON stores them (4 decimals)."""
        rows = []
        for k, (n, e, t) in enumerate(zip(self.names, self.embeddings, self.table, strict=True)):
            rows.append({"name": n, "embedding": list(e), "table": [round(v, 4) for v in t]})
            if self.strengths:
                rows[-1]["strength"] = self.strengths[k]
        return {"anticipation": ANTICIPATION, "reach": REACH, "instruments": rows}

    def to_page_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` with what the in-page engine needs to find the roles itself
        (``static/inpage/contrast.js``): ``"alone"``, ``"held"``, ``"roles"`` (:data:`ALONE`,
        :data:`HELD`, :data:`N_ROLES`) and ``"partials"`` (``[[key, group, bin]]``,
        :func:`note_partials`)."""
        partials = torch.stack(note_partials(), 1).tolist()
        return {**self.to_dict(), "alone": ALONE, "held": HELD, "roles": N_ROLES,
                "partials": partials}  # fmt: skip

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> NoteContrast:
        if (doc.get("anticipation"), doc.get("reach")) != (ANTICIPATION, REACH):
            raise ValueError(
                f"note contrast fitted with anticipation/reach {doc.get('anticipation')}/"
                f"{doc.get('reach')}, this version reads {ANTICIPATION}/{REACH}: fit it again"
            )
        rows = doc["instruments"]
        return cls(
            tuple(r["name"] for r in rows),
            tuple(r["embedding"] for r in rows),
            tuple(r["table"] for r in rows),
            tuple(r.get("strength", 1.0) for r in rows)
            if any("strength" in r for r in rows)
            else (),
        )
