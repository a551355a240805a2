"""Timbre specifications: names, aliases, programs, coordinates, mixes and morphs."""

from __future__ import annotations

import numpy as np
import pytest

from mel2mel import constants as C
from mel2mel.errors import UserError
from mel2mel.models import Instrument
from mel2mel.models.acoustic import UnknownInstrumentError
from mel2mel.timbre.space import TimbreSpace
from mel2mel.timbre.spec import (
    Morph,
    Timbre,
    parse_mix,
    parse_time,
    parse_track_specs,
)

PAPER = [Instrument(name, program) for name, program in C.PAPER_INSTRUMENTS.items()]
NAMES = list(C.PAPER_INSTRUMENTS)


@pytest.fixture
def space() -> TimbreSpace:
    # Row k sits at (k, -2k): every instrument has distinct, easy coordinates.
    table = np.array([[k, -2.0 * k] for k in range(len(PAPER))], dtype=np.float32)
    return TimbreSpace(PAPER, table)


def vec(space: TimbreSpace, name: str) -> np.ndarray:
    return space.table[NAMES.index(name)]


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("Grand Piano", "Grand Piano"),
        ("grand piano", "Grand Piano"),
        ("GRAND-PIANO", "Grand Piano"),
        ("piano", "Grand Piano"),
        ("trumpet", "Trumpet"),
        ("organ", "Church Organ"),
        ("guitar", "Acoustic Guitar"),
        ("harp", "Orchestral Harp"),
        ("strings", "String Ensemble"),
        ("pizzicato", "Pizzicato Strings"),
        ("vibraphone", "Vibraphone"),
        ("Vibes", "Vibraphone"),
        ("lead", "Synth Lead"),
        ("square", "Synth Lead"),
        ("electric piano", "Electric Piano"),
        ("Rhodes", "Electric Piano"),
        # General MIDI program names of trained programs
        ("Acoustic Grand Piano", "Grand Piano"),
        ("Lead 1 (square)", "Synth Lead"),
        ("acoustic guitar (nylon)", "Acoustic Guitar"),
        ("String Ensemble 1", "String Ensemble"),
        # 0-based program numbers
        (56, "Trumpet"),
        ("56", "Trumpet"),
        (" 11 ", "Vibraphone"),
    ],
)
def test_names_aliases_programs(space, query, name):
    assert space.index(query) == NAMES.index(name)
    timbre = space.resolve(query)
    assert timbre.is_static and timbre.label == name
    np.testing.assert_array_equal(timbre.vector(), vec(space, name))


@pytest.mark.parametrize("query", ["tuba", "Tuba", 57, "57", "bright acoustic piano"])
def test_unknown_instruments_list_valid_names_and_aliases(space, query):
    with pytest.raises(UnknownInstrumentError) as info:
        space.resolve(query)
    msg = str(info.value)
    assert isinstance(info.value, UserError) and "\n" not in msg
    assert "Grand Piano (0)" in msg and "Trumpet (56)" in msg and "Synth Lead (80)" in msg
    assert "aliases:" in msg and "vibes" in msg and "rhodes" in msg
    if str(query).strip().lower() in ("tuba", "57"):
        assert "is not a trained instrument" in msg


def test_aliases_only_for_trained_programs():
    space = TimbreSpace([Instrument("Trumpet", 56), Instrument("Mystery")], np.eye(2))
    assert space.index("trumpet") == 0 and space.index("mystery") == 1
    with pytest.raises(UnknownInstrumentError, match="valid: Trumpet \\(56\\), Mystery"):
        space.index("piano")  # an alias of program 0, which this model lacks
    assert space.describe()[0].aliases == ("trumpet",) and space.describe()[1].aliases == ()


def test_default_is_the_first_instrument(space):
    t = space.resolve(None)
    assert t.label == "Grand Piano"
    np.testing.assert_array_equal(t.vector(), space.table[0])


@pytest.mark.parametrize("spec", ["0.5,-1.25", "0.5 -1.25", "[0.5, -1.25]", [0.5, -1.25]])
def test_coordinates(space, spec):
    t = space.resolve(spec)
    np.testing.assert_array_equal(t.vector(), np.array([0.5, -1.25], dtype=np.float32))
    assert t.vector().dtype == np.float32


def test_coordinates_from_arrays(space):
    np.testing.assert_array_equal(space.resolve(np.array([1.0, 2.0])).vector(), [1.0, 2.0])
    for bad in ("0.5", "1,2,3", [1.0, 2.0, 3.0], np.zeros((2, 2)), "1,nan"):
        with pytest.raises(UserError):
            space.resolve(bad)
    with pytest.raises(UserError, match="expected 2 finite numbers"):
        space.resolve("1,2,3")


def test_mix_weights_are_normalized(space):
    expected = 0.3 * vec(space, "Trumpet") + 0.7 * vec(space, "Vibraphone")
    for spec in (
        "trumpet=0.3,vibraphone=0.7",
        "Trumpet=3, vibes=7",
        {"trumpet": 0.3, "vibes": 0.7},
        {56: 3, 11: 7},
        "trumpet=0.3;vibes=0.7",
    ):
        t = space.resolve(spec)
        np.testing.assert_allclose(t.vector(), expected, rtol=1e-6, err_msg=str(spec))
    assert space.resolve("trumpet=1,vibes=3").label == "0.25 Trumpet + 0.75 Vibraphone"
    np.testing.assert_allclose(space.resolve("piano=2").vector(), space.table[0])


@pytest.mark.parametrize(
    "spec",
    ["trumpet=abc", "trumpet=0.5,vibes", "=0.5", "trumpet=0.5,,vibes=0.5", "trumpet=inf",
     "trumpet=1,trumpet=2"],
)  # fmt: skip
def test_bad_mix_strings(space, spec):
    with pytest.raises(UserError, match="mix"):
        space.resolve(spec)


@pytest.mark.parametrize("spec", ["trumpet=-0.5,vibes=1.5", "trumpet=0,vibes=0", {"organ": -1}])
def test_negative_or_zero_mix_weights(space, spec):
    with pytest.raises(UserError, match="weights must be >= 0 and not all zero"):
        space.resolve(spec)


def test_mix_with_unknown_name_lists_valid(space):
    with pytest.raises(UnknownInstrumentError, match=r"tuba.*valid: Grand Piano"):
        space.resolve("trumpet=0.5,tuba=0.5")
    assert parse_mix("a=1, b = 2") == {"a": 1.0, "b": 2.0}


def test_morph_interpolates_linearly_and_holds_at_the_ends(space):
    t = space.resolve("trumpet@1s,vibes@3s")
    assert not t.is_static and t.label == "Trumpet@1s -> Vibraphone@3s"
    a, b = vec(space, "Trumpet"), vec(space, "Vibraphone")
    frames = t.at_frames(0, 500)  # 0 .. 4 s
    assert frames.shape == (2, 500) and frames.dtype == np.float32
    times = np.arange(500) / C.FRAME_RATE
    w = np.clip((times - 1.0) / 2.0, 0.0, 1.0)
    np.testing.assert_allclose(frames.T, (1 - w)[:, None] * a + w[:, None] * b, atol=1e-6)
    np.testing.assert_array_equal(frames[:, :125].T, np.tile(a, (125, 1)))  # held before 1 s
    np.testing.assert_array_equal(frames[:, 375:].T, np.tile(b, (125, 1)))  # held after 3 s
    np.testing.assert_allclose(frames[:, 250], (a + b) / 2, atol=1e-6)  # halfway at 2 s
    # Any run of frames is the same slice of the path.
    np.testing.assert_array_equal(t.at_frames(200, 50), frames[:, 200:250])


def test_morph_keypoints_of_every_kind(space):
    t = space.resolve("0,0@0s,trumpet=0.5,vibes=0.5@2s;56@1:00")
    np.testing.assert_allclose(t.points[0], [0, 0])
    np.testing.assert_allclose(t.points[1], (vec(space, "Trumpet") + vec(space, "Vibraphone")) / 2)
    np.testing.assert_allclose(t.times, [0.0, 2.0, 60.0])
    jump = space.resolve(Morph((("piano", 1.0), ("organ", 1.0))))
    f = jump.at_frames(124, 2)  # frames at 0.992 s and 1.0 s: an instant change
    np.testing.assert_array_equal(f[:, 0], space.table[0])
    np.testing.assert_array_equal(f[:, 1], vec(space, "Church Organ"))


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("trumpet@2s,vibes@1s", "must not decrease"),
        ("trumpet@0s,vibes", "TIMBRE@TIME"),
        ("@3s", "no timbre"),
        ("trumpet@-1s", "bad time"),
        ("trumpet@soon", "bad time"),
    ],
)
def test_bad_morphs(space, spec, match):
    with pytest.raises(UserError, match=match):
        space.resolve(spec)


def test_static_timbre_at_frames(space):
    t = space.resolve("organ")
    np.testing.assert_array_equal(t.at_frames(10, 3), np.tile(vec(space, "Church Organ"), (3, 1)).T)
    assert space.resolve(t) is t
    with pytest.raises(UserError):
        space.resolve(Timbre(np.zeros((1, 3), np.float32), np.zeros(1), "3-D"))


def test_parse_time_and_tracks():
    assert parse_time("12") == parse_time("12s") == parse_time(12) == 12.0
    assert parse_time("1:30") == 90.0 and parse_time("250ms") == 0.25
    assert parse_track_specs(["1=trumpet", "2=trumpet=0.5,vibes=0.5"]) == {
        1: "trumpet",
        2: "trumpet=0.5,vibes=0.5",
    }
    for bad in (["x=trumpet"], ["1"], ["1="], ["1=a", "1=b"], ["-1=a"]):
        with pytest.raises(UserError):
            parse_track_specs(bad)
