"""The dataset builder: layout, splits, resuming, repair, shards, bad input, the music21 corpus."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
from pathlib import Path

import mido
import numpy as np
import pytest
import torch
from conftest import SOUNDFONT, TINY_INSTRUMENTS, requires_fluidsynth

import mel2mel
from mel2mel import constants as C
from mel2mel.audio import LogMel, log_mel
from mel2mel.cli import main
from mel2mel.data import corpus, fluidsynth
from mel2mel.data.build import build_dataset
from mel2mel.errors import UserError
from mel2mel.midi import midi_to_roll


def manifest_of(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text())


def all_files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


# -- fast unit tests --------------------------------------------------------------------------


def test_instruments_by_name_or_number():
    paper = corpus.resolve_instruments(None)
    assert [(i.name, i.program) for i in paper] == list(C.PAPER_INSTRUMENTS.items())
    assert paper[9].slug == "synth-lead"
    got = corpus.resolve_instruments("grand piano, 56,Lead 2 (sawtooth), violin")
    assert [(i.name, i.program, i.slug) for i in got] == [
        ("Grand Piano", 0, "grand-piano"),
        ("Trumpet", 56, "trumpet"),
        ("Lead 2 (sawtooth)", 81, "lead-2-sawtooth"),
        ("Violin", 40, "violin"),
    ]
    assert corpus.resolve_instruments("Acoustic Grand Piano")[0].name == "Grand Piano"
    with pytest.raises(UserError, match="unknown instrument 'kazoo'; valid: Grand Piano, "):
        corpus.resolve_instruments("kazoo")
    with pytest.raises(UserError, match="listed twice"):
        corpus.resolve_instruments("0,Grand Piano")
    with pytest.raises(UserError, match="out of range"):
        corpus.resolve_instruments("128")
    with pytest.raises(UserError, match="unknown instrument '²'"):  # not int("²")
        corpus.resolve_instruments("²")


def test_ids_splits_and_shards_are_stable():
    assert corpus.slugify("Chopin/Op 10 No.1 (É)") == "chopin-op_10_no_1"
    assert corpus.music21_id("beethoven/opus18no1/movement2.mxl") == "beethoven-opus18no1-movement2"
    # Regression values: a change here would move pieces between splits and shards.
    assert [corpus.split_of(p) for p in ("canon", "scale", "alpha")] == ["train", "valid", "test"]
    assert [corpus.shard_of(p, 2) for p in ("canon", "scale")] == [0, 1]
    ids = [f"piece{i}" for i in range(2000)]
    share = {s: sum(corpus.split_of(i) == s for i in ids) / len(ids) for s in corpus.SPLITS}
    assert share["train"] == pytest.approx(0.8, abs=0.03)
    assert share["valid"] == pytest.approx(0.1, abs=0.02)
    assert corpus.parse_shard(" 1/4") == (1, 4)
    for bad in ("4/4", "1", "a/b", "-1/2"):
        with pytest.raises(UserError, match="--shard"):
            corpus.parse_shard(bad)


def test_curated_corpus_list():
    pieces = corpus.music21_pieces()
    assert len(pieces) >= 100
    assert len({p.id for p in pieces}) == len(pieces)
    assert all(re.fullmatch(r"[a-z0-9_-]+", p.id) for p in pieces)
    splits = [p.split for p in pieces]
    assert all(splits.count(s) >= 10 for s in corpus.SPLITS)


def test_chunked_log_mel_equals_log_mel():
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(64_000)).astype(np.float32)
    audio[:5000] = 0  # silence at the edge, where the zero padding matters
    full = LogMel()(torch.from_numpy(audio)).numpy()
    chunked = log_mel(audio, chunk_frames=37)
    assert chunked.shape == full.shape == (C.N_MELS, C.num_frames(len(audio)))
    np.testing.assert_allclose(chunked, full, atol=2e-4)


# -- building ---------------------------------------------------------------------------------


@requires_fluidsynth
def test_tiny_build_layout_and_split(tiny_dataset, tiny_inputs):
    m = manifest_of(tiny_dataset)
    assert (m["format"], m["sample_rate"], m["hop_length"], m["n_mels"]) == (1, 16000, 128, 80)
    assert m["soundfont"] == str(SOUNDFONT)
    assert m["instruments"] == [
        {"name": "Grand Piano", "program": 0},
        {"name": "Trumpet", "program": 56},
    ]
    pieces = {p["id"]: p for p in m["pieces"]}
    assert set(pieces) == {"canon", "scale"}
    assert pieces["canon"]["split"] == "train" and pieces["scale"]["split"] == "valid"
    assert pieces["canon"]["source"] == str((tiny_inputs / "canon.mid").resolve())
    assert m["versions"]["mel2mel"] == [mel2mel.__version__]  # what made the pieces
    assert m["versions"]["numpy"] == [np.__version__]
    broken = str((tiny_inputs / "broken.mid").resolve())
    assert [s["source"] for s in m["skipped"]] == [broken]
    assert "not a readable MIDI file" in m["skipped"][0]["reason"]

    assert [it["id"] for it in m["items"]] == [
        "canon/grand-piano",
        "canon/trumpet",
        "scale/grand-piano",
        "scale/trumpet",
    ]
    for piece in pieces.values():
        roll = np.load(tiny_dataset / "rolls" / f"{piece['id']}.npy")
        assert roll.dtype == np.uint8 and roll.shape == (176, piece["frames"])
        expected = midi_to_roll(tiny_inputs / f"{piece['id']}.mid")
        np.testing.assert_array_equal(roll, np.round(expected * 127).astype(np.uint8))
    for it in m["items"]:
        assert it["split"] == pieces[it["piece"]]["split"]  # split by piece
        assert it["instrument"] == (0 if it["id"].endswith("grand-piano") else 1)
        base = tiny_dataset / "items" / it["id"]
        audio = np.load(f"{base}.audio.npy")
        mel = np.load(f"{base}.mel.npy")
        assert audio.dtype == np.int16 and audio.shape == (it["samples"],)
        assert mel.dtype == np.float16 and mel.shape == (80, it["samples"] // 128 + 1)
        assert it["frames"] == mel.shape[1] >= pieces[it["piece"]]["frames"]
        assert it["clipped"] == 0 and 0.01 < it["peak"] < 1
        assert abs(np.abs(audio).max() - it["peak"] * 32767) <= 1
        sidecar = json.loads(Path(f"{base}.json").read_text())
        assert sidecar["render"]["soundfont"] == str(SOUNDFONT) and sidecar["id"] == it["id"]
    first = tiny_dataset / "items" / "canon" / "trumpet"
    audio = np.load(f"{first}.audio.npy").astype(np.float32) / 32767
    np.testing.assert_allclose(np.load(f"{first}.mel.npy"), log_mel(audio), atol=0.01)
    assert not [p for p in tiny_dataset.rglob(".*") if ".tmp-" in p.name]


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    return dst


@requires_fluidsynth
def test_rerun_skips_finished_items(tiny_dataset, tiny_inputs, tmp_path):
    out = _copy(tiny_dataset, tmp_path)
    items = {k: v for k, v in all_files(out).items() if k.startswith("items")}
    report = build_dataset(
        out, midi_dir=tiny_inputs, instruments=TINY_INSTRUMENTS, workers=2, progress=False
    )
    assert report.items_built == 0 and report.items_finished_before == 4
    assert {k: v for k, v in all_files(out).items() if k.startswith("items")} == items
    assert manifest_of(out)["items"] == manifest_of(tiny_dataset)["items"]
    assert any("skipped" in line and "broken.mid" in line for line in report.summary())


@requires_fluidsynth
def test_rerun_repairs_missing_and_partial_items(tiny_dataset, tiny_inputs, tmp_path):
    out = _copy(tiny_dataset, tmp_path)
    (out / "items" / "canon" / "trumpet.mel.npy").unlink()
    (out / "items" / "scale" / "grand-piano.audio.npy").write_bytes(b"\x93NUMPY truncated")
    leftover = out / "items" / "scale" / ".grand-piano.mel.npy.tmp-0123456789ab"
    leftover.write_bytes(b"partial")
    report = build_dataset(
        out, midi_dir=tiny_inputs, instruments=TINY_INSTRUMENTS, workers=2, progress=False
    )
    assert report.items_built == 2 and report.items_finished_before == 2
    assert report.temp_files_removed == 1 and not leftover.exists()
    assert manifest_of(out)["items"] == manifest_of(tiny_dataset)["items"]
    for name in ("canon/trumpet.mel.npy", "scale/grand-piano.audio.npy"):
        new, old = np.load(out / "items" / name), np.load(tiny_dataset / "items" / name)
        np.testing.assert_array_equal(new, old)  # FluidSynth is deterministic


@requires_fluidsynth
def test_other_render_settings_are_refused(tiny_dataset, tiny_inputs, tmp_path, capsys):
    out = _copy(tiny_dataset, tmp_path)
    args = ["data", "build", "--output", str(out), "--midi-dir", str(tiny_inputs)]
    assert main([*args, "--instruments", TINY_INSTRUMENTS, "--no-reverb"]) == 2
    assert "rendered with other settings" in capsys.readouterr().err


@requires_fluidsynth
def test_shards_cover_every_item_once_and_merge(tiny_dataset, tiny_inputs, tmp_path, capsys):
    ids = []
    for i in (0, 1):
        args = ["data", "build", "--output", str(tmp_path / f"s{i}"), "--shard", f"{i}/2"]
        args += [
            "--midi-dir",
            str(tiny_inputs),
            "--instruments",
            TINY_INSTRUMENTS,
            "--workers",
            "2",
        ]
        assert main([*args, "--no-progress"]) == 0
        ids += [it["id"] for it in manifest_of(tmp_path / f"s{i}")["items"]]
    expected = [it["id"] for it in manifest_of(tiny_dataset)["items"]]
    assert sorted(ids) == expected  # every item exactly once
    shutil.copytree(tmp_path / "s1", tmp_path / "s0", dirs_exist_ok=True)  # merge the folders
    capsys.readouterr()
    assert main(["data", "index", str(tmp_path / "s0")]) == 0
    assert "2 piece(s), 4 item(s): train 2 / valid 2 / test 0" in capsys.readouterr().out
    merged = manifest_of(tmp_path / "s0")
    assert merged["items"] == manifest_of(tiny_dataset)["items"]
    assert merged["pieces"] == manifest_of(tiny_dataset)["pieces"]


# -- bad input --------------------------------------------------------------------------------


def _empty_midi(path: Path) -> Path:
    midi = mido.MidiFile()
    midi.tracks.append(mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=500_000)]))
    midi.save(path)
    return path


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("text-file", "no MIDI files"),
        ("not-midi", "no usable input: .*not a readable MIDI file"),
        ("empty-midi", "no usable input: .*no playable notes"),
        ("no-soundfont", "SoundFont not found: /nonexistent/x.sf2$"),
        ("unwritable", "cannot create output folder"),
        ("instrument", "unknown instrument 'kazoo'; valid: Grand Piano, Electric Piano"),
        ("shard", "--shard must look like i/N"),
        ("missing-dir", "--midi-dir not found"),
    ],
)
def test_bad_input_is_one_line_and_leaves_nothing(case, message, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    out = tmp_path / "out"
    extra: list[str] = []
    if case == "text-file":
        (src / "notes.txt").write_text("hello")
    elif case == "not-midi":
        (src / "song.mid").write_text("this is not MIDI")
    elif case == "empty-midi":
        _empty_midi(src / "empty.mid")
    else:
        _empty_midi(src / "empty.mid")
        extra = {
            "no-soundfont": ["--soundfont", "/nonexistent/x.sf2"],
            "instrument": ["--instruments", "Grand Piano,kazoo"],
            "shard": ["--shard", "2/2"],
            "missing-dir": ["--midi-dir", str(tmp_path / "nope")],
        }.get(case, [])
        if case == "unwritable":
            (tmp_path / "file").write_text("x")
            out = tmp_path / "file" / "out"
    args = ["data", "build", "--output", str(out), "--midi-dir", str(src), *extra]
    assert main([*args, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mel2mel: error: ")
    assert re.search(message, err.strip()), err
    assert not out.exists()


def test_missing_programs_name_the_debian_packages(tmp_path, monkeypatch, capsys):
    _empty_midi(tmp_path / "a.mid")
    args = ["data", "build", "--output", str(tmp_path / "out"), "--midi-dir", str(tmp_path)]
    monkeypatch.setattr(fluidsynth, "DEFAULT_SOUNDFONT", tmp_path / "missing.sf3")
    assert main(args) == 2
    assert "apt install musescore-general-soundfont" in capsys.readouterr().err
    fluidsynth.find_fluidsynth.cache_clear()
    monkeypatch.setenv("PATH", str(tmp_path))
    try:
        assert main(args) == 2
        assert "apt install fluidsynth" in capsys.readouterr().err
    finally:
        fluidsynth.find_fluidsynth.cache_clear()
    assert not (tmp_path / "out").exists()


def test_index_needs_a_dataset(tmp_path, capsys):
    assert main(["data", "index", str(tmp_path)]) == 2
    assert "not a mel2mel dataset folder" in capsys.readouterr().err


# -- the music21 corpus -----------------------------------------------------------------------


def test_convert_a_curated_chorale():
    pytest.importorskip("music21")
    from mel2mel.midi import read_notes

    seq = read_notes(corpus.convert_music21("bach/bwv1.6"))
    assert len({n.pitch for n in seq.notes}) > 10 and 20 < seq.duration < 120
    assert max(len({n.pitch for n in seq.notes if n.start <= t < n.end}) for t in (1, 5, 9)) >= 3


@requires_fluidsynth
def test_default_corpus_build_caches_the_conversion(tmp_path):
    pytest.importorskip("music21")
    out = tmp_path / "out"
    # scores only (the derived pieces are tested in test_perform.py)
    scores_only = {"variants": 0, "textures": 0, "strikes": 0, "solos": 0}
    report = build_dataset(out, instruments="Vibraphone", limit=1, progress=False, **scores_only)
    assert report.items_built == 1 and report.pieces_prepared == 1
    m = manifest_of(out)
    assert m["pieces"][0]["source"] == "music21:bach/bwv1.6"
    assert m["versions"]["music21"] == [importlib.metadata.version("music21")]
    assert m["items"][0]["id"] == "bach-bwv1_6/vibraphone"
    assert (out / "sources" / "bach-bwv1_6.mid").is_file()
    (out / "items" / "bach-bwv1_6" / "vibraphone.json").unlink()
    again = build_dataset(out, instruments="Vibraphone", limit=1, progress=False, **scores_only)
    assert again.items_built == 1 and again.pieces_prepared == 0  # roll and MIDI reused


@pytest.mark.slow
def test_every_curated_piece_converts():
    pytest.importorskip("music21")
    from concurrent.futures import ProcessPoolExecutor

    from mel2mel.midi import read_notes

    names = list(corpus.CURATED_PIECES)
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        data = list(pool.map(corpus.convert_music21, names))
    seconds = [read_notes(d, warn=False).duration for d in data]
    assert min(seconds) > 10 and sum(seconds) > 2 * 3600


# -- instruments per piece --------------------------------------------------------------------


def test_instruments_per_piece_are_dealt_evenly_per_split():
    from mel2mel.data.build import assign_instruments
    from mel2mel.instruments import Instrument

    insts = [Instrument(f"inst {i}", i) for i in range(10)]
    pieces = [corpus.Piece(f"piece-{k:03d}", f"test:{k}") for k in range(60)]
    sizes = {s: sum(p.split == s for p in pieces) for s in ("train", "valid", "test")}
    assert min(sizes.values()) >= 3
    got = assign_instruments(pieces, insts, 3, seed=0)
    assert set(got) == {p.id for p in pieces}
    for split, n in sizes.items():
        counts = {i.name: 0 for i in insts}
        for p in pieces:
            if p.split == split:
                chosen = got[p.id]
                assert len(chosen) == len({i.name for i in chosen}) == 3  # no repeats
                for i in chosen:
                    counts[i.name] += 1
        assert max(counts.values()) - min(counts.values()) <= 1, (split, counts)
        assert sum(counts.values()) == 3 * n
    assert assign_instruments(pieces, insts, 3, seed=0) == got  # reproducible
    assert assign_instruments(pieces, insts, 3, seed=1) != got  # and seeded
    assert all(len(v) == 10 for v in assign_instruments(pieces, insts, 10, seed=0).values())
    for bad in (0, 11):
        with pytest.raises(UserError, match=r"--instruments-per-piece must be in 1\.\.10"):
            assign_instruments(pieces, insts, bad, seed=0)


@requires_fluidsynth
def test_build_with_instruments_per_piece(tiny_inputs, tmp_path, capsys):
    out = tmp_path / "data"
    args = ["data", "build", "-o", str(out), "--midi-dir", str(tiny_inputs)]
    args += ["--instruments", "Grand Piano,Trumpet,Flute", "--workers", "2", "--no-progress"]
    assert main([*args, "--instruments-per-piece", "1"]) == 0
    printed = capsys.readouterr().out
    assert "built 2 item(s) (3 piece(s) x 1 of 3 instrument(s)" in printed  # one is corrupt
    items = manifest_of(out)["items"]
    assert len(items) == 2 and len({it["piece"] for it in items}) == 2
    # Asking for every instrument later adds the missing items and keeps the others.
    before = {
        it["id"]: (out / "items" / f"{it['id']}.audio.npy").stat().st_mtime_ns for it in items
    }
    assert main(args) == 0
    after = manifest_of(out)["items"]
    assert len(after) == 6
    for item_id, mtime in before.items():
        assert (out / "items" / f"{item_id}.audio.npy").stat().st_mtime_ns == mtime
