"""How organized a timbre space is (mel2mel.timbre.organization), the SoundFont behind each
instrument (mel2mel.timbre.samples) and ``mel2mel evaluate space``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import requires_fluidsynth

from mel2mel.cli import main
from mel2mel.data.instrument_sets import SOUNDFONTS, space100_spec
from mel2mel.errors import UserError
from mel2mel.instruments import Instrument
from mel2mel.models.acoustic import Mel2Mel
from mel2mel.models.config import AcousticConfig
from mel2mel.models.export import save_pretrained
from mel2mel.timbre import organization as O
from mel2mel.timbre.samples import SoundFontSamples, reference_midi, soundfont_for

pytestmark = pytest.mark.usefixtures("single_thread")


def _families_table(spread: float, seed: int = 0) -> tuple[np.ndarray, list[int], list[str]]:
    """4 GM families x 3 SoundFonts x 2 programs; family centres far apart, members ``spread``
    around them; the same program sits nearer its twins than its family."""
    rng = np.random.default_rng(seed)
    x, programs, fonts = [], [], []
    for family in range(4):
        centre = rng.standard_normal(6) * 10
        for p in range(2):
            offset = rng.standard_normal(6) * spread
            for font in ("a", "b", "c"):
                x.append(centre + offset + rng.standard_normal(6) * spread * 0.1)
                programs.append(family * 8 + p)
                fonts.append(font)
    return np.array(x), programs, fonts


def test_gm_families():
    assert len(O.GM_FAMILIES) == 16
    assert O.GM_FAMILIES[O.gm_family(0)] == "Piano"
    assert O.GM_FAMILIES[O.gm_family(56)] == "Brass"
    assert O.GM_FAMILIES[O.gm_family(73)] == "Pipe"
    with pytest.raises(ValueError):
        O.gm_family(128)


def test_organized_table_scores_high_and_random_table_near_chance():
    x, programs, fonts = _families_table(spread=1.0)
    good = O.neighbour_measures(x, programs, fonts)
    assert good["same_program"] == 1.0 and good["same_family"] == 1.0
    assert good["family_at_k"] == 1.0  # the 5 nearest of 6 family members are all kin
    assert good["same_soundfont"] == 0.0  # twins are in other SoundFonts
    chance = O.random_neighbour_rates(programs, fonts)
    assert chance["same_family"] == pytest.approx(5 / 23)
    assert chance["same_program"] == pytest.approx(2 / 23)
    rng = np.random.default_rng(1)
    draws = [
        O.neighbour_measures(rng.standard_normal(x.shape), programs, fonts)["same_family"]
        for _ in range(300)
    ]
    assert abs(np.mean(draws) - chance["same_family"]) < 0.03


def test_loo_direction_finds_a_planted_direction_and_not_noise():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((100, 10))
    direction = rng.standard_normal(10)
    planted = x @ direction + 0.3 * rng.standard_normal(100)
    assert O.loo_direction_rho(x, planted) > 0.9
    assert O.loo_direction_rho(x, rng.standard_normal(100)) < 0.3  # noise: about 0 or below
    d = O.direction_measures(x, {"f": x[:, 0] * 5 + 0.01 * rng.standard_normal(100)})
    assert d["f"]["loo_direction_rho"] > 0.95
    assert len(d["f"]["pc_abs_rho"]) == 3


def test_organization_report_against_chance():
    x, programs, fonts = _families_table(spread=1.0)
    feature = x[:, 0]
    report = O.organization_report(
        x, programs, fonts, {"centroid_hz": feature}, positions=x[:, :3], draws=20
    )
    assert report["instruments"] == 24 and report["families"] == 4
    emb, chance = report["embedding"], report["chance"]["random_table"]
    assert emb["neighbours"]["same_family"] > chance["same_family"]["p95"]
    assert emb["directions"]["centroid_hz"]["loo_direction_rho"] > 0.95
    assert chance["centroid_hz_loo_direction_rho"]["mean"] < 0.5
    assert report["tsne"]["neighbours"]["same_family"] >= 0.5
    assert len(report["nearest"]) == 24 and all(r["same_family"] for r in report["nearest"])


@requires_fluidsynth
def test_soundfont_samples_render_once_and_cache(tmp_path):
    name, program, key = next(s for s in space100_spec() if s[2] == "timgm6mb")
    inst = Instrument(name, program)
    assert soundfont_for(inst) == SOUNDFONTS[key].path
    assert soundfont_for(Instrument("Trumpet", 56)) == SOUNDFONTS["musescore"].path
    samples = SoundFontSamples(tmp_path)
    audio = samples.render(inst, reference_midi())
    assert audio.dtype == np.float32 and 3.5 * 16000 < len(audio) < 8 * 16000
    assert 0.005 < np.abs(audio).max() < 1.0
    files = list(tmp_path.glob("*.npy"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    again = samples.render(inst, reference_midi())
    np.testing.assert_array_equal(again, audio)
    assert files[0].stat().st_mtime_ns == stamp  # read back, not rendered again
    other = samples.render(
        Instrument(space100_spec()[-1][0], space100_spec()[-1][1]), reference_midi()
    )
    assert len(list(tmp_path.glob("*.npy"))) == 2 and not np.array_equal(other[:1000], audio[:1000])
    with pytest.raises(UserError, match="cannot read the MIDI"):
        samples.render(inst, b"MThd\x00\x00\x00\x06garbage")
    with pytest.raises(UserError, match="no General MIDI program"):
        samples.render(Instrument("nameless"), reference_midi())
    missing = Instrument("Odd", 0, str(tmp_path / "missing.sf2"))
    with pytest.raises(UserError, match="SoundFont not found"):
        samples.render(missing, reference_midi())


@requires_fluidsynth
def test_evaluate_space_cli(tmp_path, capsys):
    spec = [s for s in space100_spec() if s[2] == "timgm6mb"][:6]
    torch.manual_seed(0)
    model = Mel2Mel(
        AcousticConfig.preset("debug", n_instruments=6, embedding_dim=10),
        [Instrument(n, p) for n, p, _ in spec],
    )
    save_pretrained(model, tmp_path / "m" / "acoustic")
    out = tmp_path / "report"
    args = ["evaluate", "space", "--model", str(tmp_path / "m" / "acoustic"), "-o", str(out)]
    args += ["--draws", "5", "--cache", str(tmp_path / "cache"), "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "nearest neighbour same_family" in printed and "LOO direction rho" in printed
    report = json.loads((out / "organization.json").read_text())
    assert report["features_from"] == "soundfont" and report["instruments"] == 6
    rows = report["nearest"]
    assert [r["name"] for r in rows] == [n for n, _, _ in spec]
    assert all(r["soundfont"] == "TimGM6mb.sf2" and r["centroid_hz"] > 100 for r in rows)
    # the sound's own grouping, as a reference: one SoundFont here, so every neighbour shares it
    sound = report["soundfont_audio"]["neighbours"]
    assert sound["same_soundfont"] == 1.0 and 0 <= sound["same_family"] <= 1
    assert "SoundFont audio" in printed
    assert main(args) == 2  # the report exists: refused without --force
    assert "pass -f to overwrite" in capsys.readouterr().err
