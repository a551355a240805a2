"""Instruments from chosen SoundFonts: named sets, instrument files, a two-SoundFont build."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import CANON, HAVE_FLUIDSYNTH, SMALL_SOUNDFONT, SOUNDFONT

from mel2mel.cli import main
from mel2mel.data import corpus
from mel2mel.data import instrument_sets as S
from mel2mel.errors import UserError

requires_two_soundfonts = pytest.mark.skipif(
    not HAVE_FLUIDSYNTH or not SOUNDFONT.is_file() or not SMALL_SOUNDFONT.is_file(),
    reason="needs fluidsynth, MuseScore General and TimGM6mb (Debian packages fluidsynth, "
    "musescore-general-soundfont, timgm6mb-soundfont)",
)


def test_space100_spec_is_100_distinct_melodic_instruments():
    spec = S.space100_spec()
    assert len(spec) == 100
    assert len({name for name, _, _ in spec}) == 100
    assert len({corpus.Instrument(n, p).slug for n, p, _ in spec}) == 100
    assert len({(p, sf) for _, p, sf in spec}) == 100
    assert {sf for _, _, sf in spec} == {"musescore", "fluidr3", "timgm6mb"}
    programs = {p for _, p, _ in spec}
    assert all(0 <= p <= 111 and p != 55 and not 96 <= p <= 103 for p in programs)
    assert {p // 8 for p in programs} >= set(range(12))  # every melodic GM family
    assert ("Trumpet (FluidR3)", 56, "fluidr3") not in spec  # a near-duplicate of MuseScore's
    assert ("Grand Piano (TimGM6mb)", 0, "timgm6mb") in spec
    assert S.display_name(80, "timgm6mb") == "Synth Lead (TimGM6mb)"
    assert S.display_name(81, "fluidr3") == "Lead 2 sawtooth (FluidR3)"


def test_named_sets_resolve_with_soundfont_paths():
    paper = corpus.resolve_instruments("paper10")
    assert paper == corpus.resolve_instruments(None)
    assert all(i.soundfont is None for i in paper)
    if not all(sf.path.is_file() for k, sf in S.SOUNDFONTS.items() if k in S.SPACE100):
        pytest.skip("needs the three SoundFonts of space100")
    space = corpus.resolve_instruments(" Space100 ")
    assert len(space) == 100 and space[0].name == "Grand Piano (MuseScore)"
    assert space[0].slug == "grand-piano-musescore"
    assert {Path(i.soundfont).name for i in space} == {
        "MuseScore_General.sf3",
        "FluidR3_GM.sf2",
        "TimGM6mb.sf2",
    }


def test_instruments_file(tmp_path):
    path = tmp_path / "set.json"
    entries = [
        {"program": 56, "soundfont": "timgm6mb"},
        {"name": "My Piano", "program": 0, "soundfont": str(SMALL_SOUNDFONT)},
        {"program": 40},
    ]
    path.write_text(json.dumps(entries))
    if not SMALL_SOUNDFONT.is_file():
        pytest.skip("needs TimGM6mb")
    got = S.instruments_from_file(path)
    assert [(i.name, i.program) for i in got] == [
        ("Trumpet (TimGM6mb)", 56),
        ("My Piano", 0),
        ("Violin", 40),
    ]
    assert got[0].soundfont == got[1].soundfont == str(SMALL_SOUNDFONT)
    assert got[2].soundfont is None
    for bad, message in [
        ({"soundfont": "timgm6mb"}, "needs an integer 'program'"),
        ({"program": 130}, "out of range"),
        ({"program": 1, "soundfont": 3}, "must be a key or a path"),
    ]:
        path.write_text(json.dumps([bad]))
        with pytest.raises(UserError, match=message):
            S.instruments_from_file(path)
    path.write_text(json.dumps([{"program": 1, "name": "A b"}, {"program": 2, "name": "a-b"}]))
    with pytest.raises(UserError, match="same file name 'a-b'"):
        S.instruments_from_file(path)
    with pytest.raises(UserError, match="unknown instrument set"):
        S.instrument_set("space1000")


def test_missing_soundfont_names_the_debian_package(tmp_path, monkeypatch, capsys):
    missing = S.SoundFont("gone", tmp_path / "Gone.sf2", "gone-soundfont", "Gone")
    monkeypatch.setitem(S.SOUNDFONTS, "gone", missing)
    with pytest.raises(UserError, match="'apt install gone-soundfont'"):
        S.soundfont_path("gone")
    with pytest.raises(UserError, match="'apt install gone-soundfont'"):
        S.soundfont_path(str(tmp_path / "Gone.sf2"))
    with pytest.raises(UserError, match="not a file, nor a known key"):
        S.soundfont_path(tmp_path / "other.sf2")
    path = tmp_path / "set.json"
    path.write_text(json.dumps([{"program": 0, "soundfont": "gone"}]))
    out = tmp_path / "data"
    assert main(["data", "build", "--output", str(out), "--instruments-file", str(path)]) == 2
    assert "apt install gone-soundfont" in capsys.readouterr().err
    assert not out.exists()


@requires_two_soundfonts
def test_build_with_two_soundfonts(tmp_path, midi_writer):
    from mel2mel.data.build import build_dataset
    from mel2mel.data.manifest import index_dataset

    (tmp_path / "midi").mkdir()
    midi = midi_writer(tmp_path / "midi" / "canon.mid", CANON)
    insts = [
        corpus.Instrument("Trumpet (MuseScore)", 56, str(SOUNDFONT)),
        corpus.Instrument("Trumpet (TimGM6mb)", 56, str(SMALL_SOUNDFONT)),
    ]
    out = tmp_path / "data"
    report = build_dataset(out, midi_dir=midi, instruments=insts, workers=1, progress=False)
    assert report.items_built == 2 and not report.failed
    m = json.loads((out / "manifest.json").read_text())
    assert m["instruments"] == [
        {"name": "Trumpet (MuseScore)", "program": 56, "soundfont": str(SOUNDFONT)},
        {"name": "Trumpet (TimGM6mb)", "program": 56, "soundfont": str(SMALL_SOUNDFONT)},
    ]
    assert m["soundfont"] is None and m["render"]["soundfont"] is None
    sidecars = [json.loads(p.read_text()) for p in sorted((out / "items" / "canon").glob("*.json"))]
    assert [s["render"]["soundfont"] for s in sidecars] == [str(SOUNDFONT), str(SMALL_SOUNDFONT)]
    a, b = (np.load(p) for p in sorted((out / "items" / "canon").glob("*.mel.npy")))
    n = min(a.shape[1], b.shape[1])  # release tails differ
    assert np.abs(a[:, :n].astype(np.float32) - b[:, :n]).mean() > 0.1  # two different trumpets
    again = build_dataset(out, midi_dir=midi, instruments=insts, workers=1, progress=False)
    assert again.items_built == 0 and again.items_finished_before == 2
    (out / "manifest.json").unlink()  # rebuilt from the sidecars alone
    assert index_dataset(out)["instruments"] == m["instruments"]
