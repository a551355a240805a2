"""The shared validators of :mod:`mel2mel.validate`, against the inputs of issue 18."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from mel2mel import constants as C
from mel2mel import validate
from mel2mel.errors import UserError, one_line
from mel2mel.timbre.spec import parse_time


def test_numbers_are_finite_and_in_range():
    assert validate.number("2.5", "x", 0, 3) == 2.5
    for bad in ("nan", "inf", "-inf", "1e309", "3.1", "²", None, [1]):
        with pytest.raises(UserError, match="x: "):
            validate.number(bad, "x", 0, 3)
    assert validate.integer("12", "n", 0, 20) == 12 and validate.integer(-3, "n", -5, 5) == -3
    for bad in ("²", "1.0", "0x10", "", True, "99999999999999999999999"):
        with pytest.raises(UserError, match="n: "):
            validate.integer(bad, "n", 0, 2**40)


def test_program_numbers_are_ascii_digits():
    assert "²".isdigit()  # why str.isdigit is not enough
    assert validate.program_number(" 56 ") == 56
    for text in ("²", "٣", "5²", "-1", "1.0", ""):
        assert validate.program_number(text) is None


def test_threads_seeds_and_times():
    assert validate.threads(1) == 1 and validate.threads(os.cpu_count()) == os.cpu_count()
    for bad in (0, os.cpu_count() + 1, 100_000):
        with pytest.raises(UserError, match="--threads"):
            validate.threads(bad)
    assert validate.seed(2**32 - 1) == 2**32 - 1
    with pytest.raises(UserError, match="--seed"):
        validate.seed(2**32)
    assert parse_time("1:30") == 90.0 and parse_time("86400") == 86400.0
    for bad in ("1e308", "86401", "1:1e308", "1e12", "²", "nan"):
        with pytest.raises(UserError, match="bad time"):
            parse_time(bad)


def test_coordinate_box_is_the_instruments_box_plus_a_quarter():
    table = np.array([[0.0, 0.0], [4.0, 1.0]])
    lo, hi = validate.coordinate_box(table)
    np.testing.assert_allclose(lo, [-1.0, -1.0])
    np.testing.assert_allclose(hi, [5.0, 2.0])
    assert validate.within_box([5.0, -1.0], (lo, hi), "p").dtype == np.float32
    for bad in ([5.01, 0.0], [0.0, 2.01], [np.nan, 0.0], [1e308, 1e308], [0.0]):
        with pytest.raises(UserError, match="outside the timbre space"):
            validate.within_box(bad, (lo, hi), "p")


def test_json_depth_is_bounded_before_parsing():
    validate.json_depth(json.dumps({"a": [[{"b": "[[[[[[[[[["}]]}).encode())
    validate.json_depth(b"[" * 32 + b"]" * 32)
    with pytest.raises(UserError, match="nested more than 32"):
        validate.json_depth(b"[" * 33 + b"]" * 33)
    with pytest.raises(UserError):
        validate.json_depth(b"[" * 2000 + b"]" * 2000)  # json.loads: RecursionError
    validate.json_depth(b'["\\"' + b"[" * 100 + b'"]')  # brackets in a string, after \"


def test_content_disposition_carries_any_name_in_latin1():
    value = validate.content_disposition('mel2mel_日本語 a"b.wav')
    value.encode("latin-1")  # an HTTP header must be Latin-1
    assert 'filename="mel2mel_____a_b.wav"' in value
    assert "filename*=UTF-8''mel2mel_%E6%97%A5%E6%9C%AC%E8%AA%9E%20a%22b.wav" in value


def test_npy_header_is_checked_against_the_file(tmp_path):
    path = tmp_path / "m.npy"
    np.save(path, np.zeros((80, 10), np.float32))
    assert validate.npy_header(path) == ((80, 10), np.dtype("float32"))
    path.write_bytes(path.read_bytes().replace(b"(80, 10)", b"(80, 10000000000000)", 1))
    with pytest.raises(UserError, match="more than the file holds"):
        validate.npy_header(path)
    path.write_bytes(b"\x93NUMPY")
    with pytest.raises(UserError, match=r"not a \.npy array"):
        validate.npy_header(path)


def test_audio_check_refuses_nan_dc_and_full_scale_noise():
    t = np.arange(C.SAMPLE_RATE, dtype=np.float32) / C.SAMPLE_RATE
    music = (0.05 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    check = validate.AudioCheck()
    for part in np.array_split(music, 37):  # short chunks are pooled
        check.check(part)
    check.finish()
    assert check.peak == pytest.approx(0.05, rel=1e-3)
    validate.AudioCheck().check(music[:100] + 0.05)  # a short one-sided tail is fine
    cases = [
        (np.where(t < 0.5, music, np.nan).astype(np.float32), "NaN"),
        (np.full(C.SAMPLE_RATE, -1.0, np.float32), "DC offset"),
        (music + 0.2, "DC offset"),
        (np.sign(music), "full-scale"),
    ]
    for audio, word in cases:
        with pytest.raises(UserError, match=word):
            check = validate.AudioCheck()
            check.check(audio)
            check.finish()


def test_mel_check_and_one_line_messages():
    validate.check_mel(np.full((80, 3), 2.5, np.float32))
    with pytest.raises(UserError, match="NaN"):
        validate.check_mel(np.full((80, 3), np.nan, np.float32))
    with pytest.raises(UserError, match="far above full scale"):
        validate.check_mel(np.full((80, 3), 100.0, np.float32))
    assert one_line(ValueError("x: not readable (EOFError: )")) == "x: not readable (EOFError)"
    assert one_line(EOFError()) == "EOFError"
    assert one_line(ValueError("two\nlines")) == "two lines"
