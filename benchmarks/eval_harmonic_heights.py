"""How much of FluidSynth's harmonic detail can the combs explain, with heights or without?

An upper bound for ``AcousticConfig.harmonic_heights``, measured before training it: each
instrument plays every key from A0 to C8 alone (``eval_note_detail.py``'s isolated notes,
velocity 80, the 0.5 s after each onset), and FluidSynth's log-mel is split into its smooth
part and its detail (:func:`~mel2mel.models.harmonic.detail_operator`). Given the smooth part
exactly, how close does ``smooth + gain * comb detail`` come to FluidSynth's bin-to-bin
differences (``eval_note_detail.py``'s ``detail r``)? Per instrument, fitted by Adam on the
even keys and judged on the odd ones:

* ``none``: the smooth part alone;
* ``fixed``: the ``1 / k`` comb with a gain per mel bin (what ``harmonic_detail`` can do);
* ``heights``: the same with a log height per harmonic group (``harmonic_heights``).

The fitted heights are printed in dB relative to the ``1 / k`` comb, and with ``--model`` (an
acoustic export with ``harmonic_heights``) beside those its training learned.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/eval_harmonic_heights.py [--instrument NAME ...] \\
        [--model EXPORT]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import mido
import numpy as np
import torch
from eval_note_detail import START, STEP, WINDOW, isolated_notes

from mel2mel import constants as C
from mel2mel.audio import log_mel
from mel2mel.data.fluidsynth import RenderSettings, check_soundfont, force_program, render_midi
from mel2mel.evaluation.acoustic import load_model
from mel2mel.models.harmonic import COMB_FLOOR, detail_operator, group_combs, harmonic_combs

PITCHES = list(range(C.MIDI_MIN, C.MIDI_MAX + 1))
DB = C.DB_PER_NEPER  # a log amplitude in nepers -> dB


def note_mels(name: str, settings: RenderSettings, tmp: str) -> torch.Tensor:
    """FluidSynth's log-mel of every isolated note of ``PITCHES``: float64[N x N_MELS x W]."""
    path = Path(tmp) / "notes.mid"
    isolated_notes(PITCHES, 80).save(path)
    forced, _ = force_program(mido.MidiFile(path), C.PAPER_INSTRUMENTS[name])
    mel = torch.from_numpy(log_mel(render_midi(forced, settings, work_dir=tmp))).double()
    starts = [round((START + k * STEP) * C.FRAME_RATE) for k in range(len(PITCHES))]
    return torch.stack([mel[:, a + WINDOW[0] : a + WINDOW[1]] for a in starts])


def fit(notes: torch.Tensor, heights: bool, steps: int = 400) -> tuple[torch.Tensor, ...]:
    """Gain (and heights) fitted on the even keys: the modelled log-mels of all notes and the
    heights (nepers, float64[G])."""
    operator = detail_operator().double()
    whole, groups = harmonic_combs().double(), group_combs().double()  # 88 x [G x] N_MELS
    truth = torch.einsum("ij,njw->niw", operator, notes)
    smooth = notes - truth
    gain = torch.full((C.N_MELS,), 0.2, dtype=torch.float64, requires_grad=True)
    height = torch.zeros(groups.shape[1], dtype=torch.float64, requires_grad=heights)
    params = [gain, height] if heights else [gain]
    opt = torch.optim.Adam(params, lr=0.05)

    def modelled_detail() -> torch.Tensor:  # N x N_MELS, as HarmonicDetail mixes the tones
        tones = whole + torch.einsum("g,kgm->km", height.exp() - 1.0, groups)
        return torch.log((tones / COMB_FLOOR).clamp_min(1.0)) @ operator.t()

    for _ in range(steps):
        err = gain[None, :, None] * modelled_detail()[:, :, None] - truth
        loss = err[::2].square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return smooth + gain[None, :, None] * modelled_detail()[:, :, None], height.detach()


def detail_r(truth: torch.Tensor, model: torch.Tensor) -> np.ndarray:
    """Per note: r of the two mels' differences between neighbouring bins."""
    dt, dm = torch.diff(truth, dim=1), torch.diff(model, dim=1)
    with np.errstate(invalid="ignore", divide="ignore"):  # a silent note's r is NaN
        return np.array(
            [np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(dt, dm, strict=True)]
        )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--instrument", action="append", help="paper instrument (repeatable)")
    ap.add_argument("--model", help="acoustic export whose learned heights to print beside")
    args = ap.parse_args(argv)
    model = None if args.model is None else load_model(args.model)
    if model is not None and (model.harmonic is None or model.harmonic.heights is None):
        ap.error(f"{args.model} has no harmonic heights")
    torch.set_num_threads(1)
    settings = RenderSettings(str(check_soundfont(None)))
    names = args.instrument or list(C.PAPER_INSTRUMENTS)
    pitch = np.array(PITCHES)
    judged = np.arange(len(PITCHES)) % 2 == 1
    bands = {"below C3": judged & (pitch < 48), "C3-B5": judged & (pitch >= 48) & (pitch < 84)}
    totals: dict[str, list[list[float]]] = {}
    print(f"{'instrument':18s} detail r (odd keys), below C3 / C3-B5: none | fixed | heights")
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            notes = note_mels(name, settings, tmp)
            smooth = notes - torch.einsum("ij,njw->niw", detail_operator().double(), notes)
            (fixed, _), (shaped, height) = fit(notes, False), fit(notes, True)
            cells = []
            for label, mels in (("none", smooth), ("fixed", fixed), ("heights", shaped)):
                r = detail_r(notes, mels)
                row = [float(np.nanmean(r[mask])) for mask in bands.values()]
                totals.setdefault(label, []).append(row)
                cells.append(f"{row[0]:.3f} / {row[1]:.3f}")
            print(f"{name:18s} {' | '.join(cells)}", flush=True)
            print(f"{'':18s} heights (dB), fitted: {np.round(DB * height.numpy(), 1)}")
            if model is not None:
                with torch.no_grad():
                    emb = model.embed(model.instrument_index(name))
                    learned = model.harmonic.scaled_heights(emb)[0].double().numpy()
                print(f"{'':18s} heights (dB), learned: {np.round(DB * learned, 1)}")
    means = " | ".join(
        f"{label} {np.mean(rows, 0)[0]:.3f} / {np.mean(rows, 0)[1]:.3f}"
        for label, rows in totals.items()
    )
    print(f"{'mean':18s} {means}")


if __name__ == "__main__":
    main()
