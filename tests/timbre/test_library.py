"""The user timbre library: entries, names, fingerprints, and resolving names when rendering."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import piano_trumpet_model

from mel2mel.cli import main
from mel2mel.errors import UserError
from mel2mel.models import load_acoustic, save_pretrained
from mel2mel.models.acoustic import UnknownInstrumentError
from mel2mel.models.export import model_fingerprint
from mel2mel.synthesizer import Synthesizer
from mel2mel.timbre.library import TimbreLibrary, UserTimbre, default_root
from mel2mel.timbre.space import TimbreSpace
from mel2mel.vocoders.griffinlim import GriffinLim

pytestmark = pytest.mark.usefixtures("single_thread")

NOTES = [(60, 0.0, 0.5, 90), (64, 0.25, 0.5, 80), (48, 0.0, 0.75, 70)]


@pytest.fixture
def library(tmp_path) -> TimbreLibrary:
    return TimbreLibrary(tmp_path / "timbres")


def entry(name: str, model: str, vector=(0.5, -0.25)) -> UserTimbre:
    return UserTimbre(name, tuple(vector), model, source={"audio": "x.wav"}, mel_error_db=4.2)


def test_save_list_get_remove(library):
    assert library.list() == []
    path = library.save(entry("My Cello", "sha256:a"))
    assert path.name == "my-cello.json" and path.parent == library.root
    data = json.loads(path.read_text())
    assert data["format"] == 1 and data["name"] == "My Cello" and data["vector"] == [0.5, -0.25]
    assert data["model"] == "sha256:a" and data["created"] and data["mel_error_db"] == 4.2
    library.save(entry("flute", "sha256:b", (1.0, 2.0)))
    assert [e.name for e in library.list()] == ["flute", "My Cello"]
    assert [e.name for e in library.list(model="sha256:a")] == ["My Cello"]
    assert library.get("my_cello").vector == (0.5, -0.25)  # names compare folded
    with pytest.raises(UserError, match="exists; pass -f"):
        library.save(entry("my-cello", "sha256:a", (9.0, 9.0)))
    library.save(entry("my-cello", "sha256:a", (9.0, 9.0)), overwrite=True)
    assert library.get("My Cello").vector == (9.0, 9.0)
    assert library.remove("MY CELLO").name == "my-cello"
    assert [e.name for e in library.list()] == ["flute"]
    with pytest.raises(UserError, match="no user timbre named"):
        library.remove("my-cello")
    assert not [p for p in library.root.iterdir() if p.name.startswith(".")]  # atomic writes


@pytest.mark.parametrize(
    "name", ["", "  ", "a/b", "../up", "..", ".hidden", "x,y", "a=0.5", "cello@2s", "12", "1e5",
             "0.5 -1", "a\\b", "x" * 65, "-lead"],
)  # fmt: skip
def test_bad_names_are_refused(library, name):
    with pytest.raises(UserError, match="bad timbre name"):
        library.save(entry(name, "sha256:a"))
    assert library.find(name) is None


def test_unreadable_entries_are_skipped_with_a_warning(library):
    library.save(entry("good", "sha256:a"))
    (library.root / "broken.json").write_text("{not json")
    with pytest.warns(UserWarning, match="unreadable user timbre"):
        assert [e.name for e in library.list()] == ["good"]


def test_default_root(monkeypatch, tmp_path):
    monkeypatch.setenv("MEL2MEL_HOME", str(tmp_path / "home"))
    assert default_root() == tmp_path / "home" / "timbres"
    assert TimbreLibrary().root == tmp_path / "home" / "timbres"
    monkeypatch.delenv("MEL2MEL_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_root() == tmp_path / "xdg" / "mel2mel" / "timbres"


def test_fingerprint_follows_the_weights(tmp_path):
    model = piano_trumpet_model()
    save_pretrained(model, tmp_path / "m")
    assert model_fingerprint(load_acoustic(tmp_path / "m")) == model_fingerprint(model)
    assert model_fingerprint(piano_trumpet_model(seed=1)) != model_fingerprint(model)


def test_space_resolves_user_timbres_in_names_mixes_and_morphs(library):
    model = piano_trumpet_model()
    library.save(entry("my-cello", model_fingerprint(model), (1.0, 0.9)))
    space = TimbreSpace.from_model(model, library=library)
    table = space.table
    t = space.resolve("My Cello")
    np.testing.assert_allclose(t.vector(), [1.0, 0.9])
    assert t.label == "my-cello"
    mix = space.resolve("my-cello=0.5,trumpet=0.5").vector()
    np.testing.assert_allclose(mix, 0.5 * np.array([1.0, 0.9]) + 0.5 * table[1], rtol=1e-6)
    morph = space.resolve("piano@0s,my-cello@2s")
    np.testing.assert_allclose(morph.points, [table[0], [1.0, 0.9]])
    with pytest.raises(UnknownInstrumentError, match="in the timbre library: my-cello"):
        space.resolve("tuba")
    assert space.resolve("trumpet").label == "Trumpet"  # the model's names come first
    fp = model_fingerprint(model)
    plain = TimbreSpace(model.instruments, table, {"Bright": [0.0, 1.0]}, fingerprint=fp)
    assert plain.resolve("bright").label == "Bright"
    with_lib = plain.with_library(library)
    assert with_lib.resolve("bright").label == "Bright"
    assert with_lib.resolve("my-cello").label == "my-cello"
    unknown = TimbreSpace(model.instruments, table, library=library)  # no fingerprint
    with pytest.raises(UserError, match="fitted on another acoustic model"):
        unknown.resolve("my-cello")


def test_entries_of_another_model_are_refused(library):
    model = piano_trumpet_model()
    library.save(entry("old-cello", model_fingerprint(piano_trumpet_model(seed=1))))
    space = TimbreSpace.from_model(model, library=library)
    with pytest.raises(UserError, match="fitted on another acoustic model"):
        space.resolve("old-cello")
    with pytest.raises(UserError, match="fitted on another acoustic model"):
        space.resolve("old-cello=1,piano=1")


def test_synthesizer_and_render_resolve_a_library_name(tmp_path, midi_writer, monkeypatch, capsys):
    monkeypatch.setenv("MEL2MEL_HOME", str(tmp_path / "home"))
    model = piano_trumpet_model()
    folder = tmp_path / "model"
    save_pretrained(model, folder)
    TimbreLibrary().save(entry("my-cello", model_fingerprint(model), (1.0, -1.0)))
    song = midi_writer(tmp_path / "song.mid", NOTES)
    synth = Synthesizer(model, GriffinLim(n_iter=2, nnls_iterations=1))
    np.testing.assert_array_equal(synth.mel(song, "my-cello"), synth.mel(song, [1.0, -1.0]))
    off = Synthesizer(model, GriffinLim(n_iter=2, nnls_iterations=1), timbre_library=False)
    with pytest.raises(UserError, match="unknown instrument 'my-cello'"):
        off.mel(song, "my-cello")

    out = tmp_path / "song.wav"
    args = ["render", str(song), "-o", str(out), "--model", str(folder), "--vocoder",
            "griffinlim", "--quiet", "--duration", "0.5"]  # fmt: skip
    assert main([*args, "-i", "my-cello"]) == 0 and out.stat().st_size > 0
    assert main([*args, "-f", "--mix", "my-cello=0.3,trumpet=0.7"]) == 0
    capsys.readouterr()
    assert main([*args, "-f", "-i", "no-such-timbre"]) == 2
    assert "unknown instrument 'no-such-timbre'" in capsys.readouterr().err


def test_timbre_list_and_remove_commands(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEL2MEL_HOME", str(tmp_path / "home"))
    model = piano_trumpet_model()
    folder = tmp_path / "model"
    save_pretrained(model, folder)
    lib = TimbreLibrary()
    lib.save(entry("mine", model_fingerprint(model)))
    lib.save(entry("theirs", "sha256:0000"))
    assert main(["timbre", "list", "--model", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "mine" in out and "theirs" not in out and "4.20 dB" in out
    assert main(["timbre", "list", "--all"]) == 0
    assert "theirs" in capsys.readouterr().out
    assert main(["timbre", "remove", "mine"]) == 0
    assert main(["timbre", "remove", "mine"]) == 2
    assert "no user timbre named 'mine'" in capsys.readouterr().err
    assert main(["timbre", "remove", "a/b"]) == 2
    assert "bad timbre name" in capsys.readouterr().err
