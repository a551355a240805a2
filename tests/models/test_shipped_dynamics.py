"""The shipped acoustic model against FluidSynth on what chorales never had: dynamics.

A chord struck at velocities 10, 20, ..., 120, 127 should come out monotonic in loudness and
within 2 dB of FluidSynth's own level at every step, for each of the paper's ten instruments.
That is issue 13's target: a strict expected failure for the instruments the shipped model
misses (a model that meets it turns the marker red; list it in ``MEETS_TARGET``); what the
shipped model does achieve is a regression bound. A channel volume (CC7) must scale the level
as FluidSynth does.
"""

from __future__ import annotations

from pathlib import Path

import mido
import numpy as np
import pytest
from conftest import SOUNDFONT, requires_fluidsynth

from mel2mel import Synthesizer
from mel2mel import constants as C
from mel2mel.audio import log_mel
from mel2mel.constants import DB_PER_NEPER
from mel2mel.data.fluidsynth import RenderSettings, force_program, render_midi

VELOCITIES = (10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120, 127)
CHORD = (48, 55, 60, 64)
STEP, HOLD = 1.5, 1.0  # seconds between strikes, seconds held


def level_db(mel: np.ndarray, k: int) -> float:
    """Mean mel power (dB) over the k-th chord, from its onset to 0.2 s after its release."""
    a = round((0.2 + k * STEP) * C.FRAME_RATE)
    b = a + round((HOLD + 0.2) * C.FRAME_RATE)
    return float(10 * np.log10(np.exp(2 * mel[:, a:b].astype(np.float64)).sum(0).mean()))


@pytest.fixture(scope="module")
def ramp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from conftest import write_midi

    notes = [(p, 0.2 + k * STEP, HOLD, v) for k, v in enumerate(VELOCITIES) for p in CHORD]
    return write_midi(tmp_path_factory.mktemp("ramp") / "ramp.mid", notes)


@pytest.fixture(scope="module")
def synth() -> Synthesizer:
    return Synthesizer.from_pretrained(vocoder="griffinlim", timbre_library=False)


def strike_levels(
    midi: Path, synth: Synthesizer, name: str, work: Path, count: int
) -> tuple[np.ndarray, np.ndarray]:
    """Levels (dB) of the first ``count`` strikes (every ``STEP`` s from 0.2 s) in FluidSynth's
    render of ``midi`` and in the model's mel, for ``name``."""
    forced, _ = force_program(mido.MidiFile(midi), C.PAPER_INSTRUMENTS[name])
    true = log_mel(render_midi(forced, RenderSettings(str(SOUNDFONT)), work_dir=work))
    pred = synth.mel(midi, timbre=name, texture=0)
    want = np.array([level_db(true, k) for k in range(count)])
    got = np.array([level_db(pred, k) for k in range(count)])
    return want, got


def ramp_levels(ramp: Path, synth: Synthesizer, name: str, work: Path) -> tuple[np.ndarray, ...]:
    """Per-strike levels (dB) of FluidSynth's render and of the model's mel, for ``name``."""
    want, got = strike_levels(ramp, synth, name, work, len(VELOCITIES))
    assert np.all(np.diff(want) > 0)  # the reference itself gets louder
    return want, got


@requires_fluidsynth
@pytest.mark.parametrize("name", list(C.PAPER_INSTRUMENTS))
def test_velocity_ramp_stays_near_fluidsynth(ramp, synth, name, tmp_path):
    # What the shipped model achieves (docs/MODELS.md): every step within 4.2 dB of FluidSynth
    # (the chorale-only model before it was 18-43 dB too quiet below velocity 40).
    want, got = ramp_levels(ramp, synth, name, tmp_path)
    err = got - want
    assert np.abs(err).max() <= 4.5, f"level error per step (dB): {np.round(err, 1)}"
    assert got[-1] - got[0] > 0.5 * (want[-1] - want[0])  # follows most of the dynamic range


# The instruments the shipped model gets right
MEETS_TARGET = (
    "Grand Piano", "Electric Piano", "Vibraphone", "Acoustic Guitar", "Pizzicato Strings",
    "String Ensemble", "Synth Lead",
)  # fmt: skip
NOT_YET = pytest.mark.xfail(
    strict=True,
    reason="issue 13's target, not met yet by the shipped model: monotonic and within 2 dB "
    "at every step (worst steps 2.3-4.2 dB for the others, docs/MODELS.md)",
)


@requires_fluidsynth
@pytest.mark.parametrize(
    "name",
    [n if n in MEETS_TARGET else pytest.param(n, marks=NOT_YET) for n in C.PAPER_INSTRUMENTS],
)
def test_velocity_ramp_follows_fluidsynth(ramp, synth, name, tmp_path):
    want, got = ramp_levels(ramp, synth, name, tmp_path)
    assert np.all(np.diff(got) > 0), f"not monotonic: {np.round(got, 1)}"
    err = got - want
    assert np.abs(err).max() <= 2.0, f"level error per step (dB): {np.round(err, 1)}"


@requires_fluidsynth
def test_channel_volume_scales_the_predicted_level(synth, tmp_path):
    from conftest import write_midi

    chord = [(p, 0.1, 1.5, 80) for p in CHORD]
    cc = [(0.0, mido.Message("control_change", control=7, value=50))]
    plain = synth.mel(write_midi(tmp_path / "a.mid", chord), timbre="trumpet", texture=0)
    quiet = synth.mel(write_midi(tmp_path / "b.mid", chord, extra=cc), timbre="trumpet", texture=0)
    loud = plain > plain.max() - 3  # within 26 dB of the peak: far above the floor
    gain_db = (quiet - plain)[loud].mean() * DB_PER_NEPER
    assert gain_db == pytest.approx(40 * np.log10(0.5), abs=0.01)


SOFT_VELOCITY, SOFT_PITCHES = 16, (36, 48, 60, 72, 84, 96)
SOFT_MEAN_BOUND, SOFT_FAR_BOUND = 4.5, 0.25  # dB; share of notes more than 6 dB off


@requires_fluidsynth
def test_a_soft_note_alone_is_heard(synth, tmp_path):
    # One note at a time at velocity 16, C2 to C7: the model's level against FluidSynth's.
    # Before the solo lines of docs/DATA.md the shipped model played many of them far too
    # quiet (7.5 dB off on average, nearly silent at C6 and C7); stage 22 3.8 dB, stage 23
    # 3.3 dB, 20 % of the notes more than 6 dB off: the regression bound (docs/MODELS.md).
    from conftest import write_midi

    notes = [(p, 0.2 + k * STEP, HOLD, SOFT_VELOCITY) for k, p in enumerate(SOFT_PITCHES)]
    midi = write_midi(tmp_path / "soft.mid", notes)
    errors = {}
    for name in C.PAPER_INSTRUMENTS:
        want, got = strike_levels(midi, synth, name, tmp_path, len(SOFT_PITCHES))
        assert want.min() > -78  # FluidSynth plays each note above the floor (-81 dB)
        errors[name] = got - want
    err = np.abs(np.array(list(errors.values())))
    table = {n: np.round(e, 1).tolist() for n, e in errors.items()}
    assert err.mean() <= SOFT_MEAN_BOUND, f"level error per note (dB): {table}"
    assert np.mean(err > 6) <= SOFT_FAR_BOUND, f"level error per note (dB): {table}"
