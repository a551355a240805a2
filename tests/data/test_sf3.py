"""SF3 decompression: FluidSynth plays the cached SF2 copy exactly as it plays the SF3."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
from pathlib import Path

import mido
import numpy as np
import pytest
import soundfile
from conftest import SOUNDFONT, requires_fluidsynth, write_midi

from mel2mel.data import sf3
from mel2mel.data.fluidsynth import RenderSettings, force_program, render_midi

RATE = 16000


def chunk(cid: bytes, data: bytes) -> bytes:
    return cid + struct.pack("<I", len(data)) + data + b"\0" * (len(data) & 1)


def riff_list(kind: bytes, *chunks: bytes) -> bytes:
    return chunk(b"LIST", kind + b"".join(chunks))


def vorbis(pcm: np.ndarray) -> bytes:
    buf = io.BytesIO()
    soundfile.write(buf, pcm, RATE, format="OGG", subtype="VORBIS")
    return buf.getvalue()


def tiny_sf3(path: Path) -> list[np.ndarray]:
    """A one-preset SF3: a looped tone below middle C, a decaying unlooped one from C4 up.

    Returns the two samples' source PCM (before Vorbis coding).
    """
    t = np.arange(RATE) / RATE
    looped = (0.5 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)  # 80 periods: loops cleanly
    decaying = (0.6 * np.exp(-4 * t) * np.sin(2 * np.pi * 330 * t)).astype(np.float32)
    streams = [vorbis(looped), vorbis(decaying)]
    smpl = b"".join(streams)
    shdr = b""
    offset = 0
    for k, (data, loop) in enumerate(zip(streams, [(4000, 12000), (0, 0)], strict=True)):
        name = f"s{k}".encode().ljust(20, b"\0")
        # SF3: start/end are byte offsets of the Ogg stream, loops relative to the sample.
        shdr += struct.pack("<20s5I2B2H", name, offset, offset + len(data), *loop, RATE, 60 + 7 * k,
                            0, 0, 1 | sf3.VORBIS)  # fmt: skip
        offset += len(data)
    shdr += struct.pack("<20s5I2B2H", b"EOS".ljust(20, b"\0"), 0, 0, 0, 0, 0, 0, 0, 0, 0)
    gen = struct.Struct("<HH")
    igen = b"".join(
        gen.pack(op, amount)
        for op, amount in [
            (43, 0 | 59 << 8),
            (54, 1),
            (53, 0),
            (43, 60 | 127 << 8),
            (53, 1),
            (0, 0),
        ]
    )
    pdta = riff_list(
        b"pdta",
        chunk(b"phdr", struct.pack("<20s3H3I", b"tone".ljust(20, b"\0"), 0, 0, 0, 0, 0, 0)
              + struct.pack("<20s3H3I", b"EOP".ljust(20, b"\0"), 0, 0, 1, 0, 0, 0)),
        chunk(b"pbag", gen.pack(0, 0) + gen.pack(1, 0)),
        chunk(b"pmod", b"\0" * 10),
        chunk(b"pgen", gen.pack(41, 0) + gen.pack(0, 0)),
        chunk(b"inst", struct.pack("<20sH", b"tone".ljust(20, b"\0"), 0)
              + struct.pack("<20sH", b"EOI".ljust(20, b"\0"), 2)),
        chunk(b"ibag", gen.pack(0, 0) + gen.pack(3, 0) + gen.pack(5, 0)),
        chunk(b"imod", b"\0" * 10),
        chunk(b"igen", igen),
        chunk(b"shdr", shdr),
    )  # fmt: skip
    info = riff_list(b"INFO", chunk(b"ifil", gen.pack(3, 1)), chunk(b"isng", b"EMU8000\0"),
                     chunk(b"INAM", b"tiny\0\0"))  # fmt: skip
    body = b"sfbk" + info + riff_list(b"sdta", chunk(b"smpl", smpl)) + pdta
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return [looped, decaying]


def test_convert_writes_decoded_samples_with_absolute_loops(tmp_path):
    src = tiny_sf3(tmp_path / "tiny.sf3")
    assert sf3.is_sf3(tmp_path / "tiny.sf3")
    assert sf3.convert_sf3(tmp_path / "tiny.sf3", tmp_path / "tiny.sf2") == 2
    buf = (tmp_path / "tiny.sf2").read_bytes()
    assert not sf3.is_sf3(tmp_path / "tiny.sf2")
    assert struct.unpack_from("<I", buf, 4)[0] == len(buf) - 8
    lists = sf3._lists(buf)
    smpl = next((s, e) for c, s, e in sf3._chunks(buf, *sf3._shift(lists[b"sdta"])) if c == b"smpl")
    shdr = next(
        buf[s:e] for c, s, e in sf3._chunks(buf, *sf3._shift(lists[b"pdta"])) if c == b"shdr"
    )
    words = np.frombuffer(buf[smpl[0] : smpl[1]], "<i2")
    heads = [sf3.SHDR.unpack_from(shdr, k * sf3.SHDR_SIZE) for k in range(3)]
    assert heads[2][0].rstrip(b"\0") == b"EOS"
    (_, s0, e0, l0, l1, *_, kind0), (_, s1, e1, *_) = heads[:2]
    assert (s0, e0, l0, l1) == (0, RATE, 4000, 12000) and kind0 == 1  # Vorbis flag cleared
    assert (s1, e1) == (RATE + sf3.PAD_WORDS, 2 * RATE + sf3.PAD_WORDS)
    assert not words[e0 : e0 + sf3.PAD_WORDS].any() and len(words) == e1 + sf3.PAD_WORDS
    for pcm, (start, stop) in zip(src, [(s0, e0), (s1, e1)], strict=True):
        decoded = words[start:stop] / 32767.0  # lossy, but the same tone at the same place
        assert np.corrcoef(decoded, pcm)[0, 1] > 0.99 and np.abs(decoded - pcm).max() < 0.05


def render(midi_path: Path, soundfont: str, program: int, tmp_path: Path) -> np.ndarray:
    forced, _ = force_program(mido.MidiFile(midi_path), program)
    return render_midi(forced, RenderSettings(soundfont), work_dir=tmp_path)


def phrase(tmp_path: Path) -> Path:
    """Chords, a held pedal, loud and soft notes, a long release: loops and sample ends."""
    notes = [(48, 0.0, 1.5, 100), (55, 0.0, 1.5, 60), (64, 0.5, 0.3, 20), (72, 0.9, 2.0, 127),
             (36, 1.6, 0.2, 90), (84, 2.0, 0.1, 40)]  # fmt: skip
    pedal = [(1.0, mido.Message("control_change", control=64, value=127)),
             (2.6, mido.Message("control_change", control=64, value=0))]  # fmt: skip
    return write_midi(tmp_path / "phrase.mid", notes, extra=pedal)


@requires_fluidsynth
def test_tiny_sf3_plays_the_same_from_its_decompressed_copy(tmp_path, monkeypatch):
    monkeypatch.setenv("MEL2MEL_CACHE", str(tmp_path / "cache"))
    tiny_sf3(tmp_path / "tiny.sf3")
    copy = sf3.playable_soundfont(str(tmp_path / "tiny.sf3"))
    assert copy.endswith(".sf2") and Path(copy).parent == tmp_path / "cache" / "soundfonts"
    monkeypatch.setenv("MEL2MEL_SF3_CACHE", "0")
    assert sf3.playable_soundfont(str(tmp_path / "tiny.sf3")) == str(tmp_path / "tiny.sf3")
    midi = phrase(tmp_path)
    direct = render(midi, str(tmp_path / "tiny.sf3"), 0, tmp_path)
    cached = render(midi, copy, 0, tmp_path)
    assert np.abs(direct).max() > 0.05  # it plays
    # Equal but where the unlooped tone runs out of samples while still loud (1 % of full
    # scale): FluidSynth then reads on into the 46 zero words an SF2 puts after each sample.
    # MuseScore's samples end quietly (the test below).
    same = direct == cached
    assert same.mean() > 0.99 and np.abs(direct - cached).max() < 1e-4


@requires_fluidsynth
@pytest.mark.parametrize("program", [0, 19, 56])  # piano, organ, trumpet
def test_musescore_general_plays_the_same_from_its_decompressed_copy(
    tmp_path, monkeypatch, program
):
    copy = sf3.playable_soundfont(str(SOUNDFONT))
    assert copy != str(SOUNDFONT) and Path(copy).stat().st_size > SOUNDFONT.stat().st_size
    monkeypatch.setenv("MEL2MEL_SF3_CACHE", "0")
    midi = phrase(tmp_path)
    direct = render(midi, str(SOUNDFONT), program, tmp_path)
    assert np.abs(direct).max() > 0.01
    np.testing.assert_array_equal(direct, render(midi, copy, program, tmp_path))


def test_decoding_ignores_the_callers_flush_to_zero_mode(tmp_path, monkeypatch):
    """torch, loaded here by the tests, can leave the CPU flushing denormals to zero, which
    moves a few decoded samples by one step: the copy is made in a fresh process."""
    monkeypatch.setenv("MEL2MEL_CACHE", str(tmp_path / "cache"))
    tiny_sf3(tmp_path / "tiny.sf3")
    fresh = sf3.playable_soundfont(str(tmp_path / "tiny.sf3"))
    assert Path(fresh).read_bytes() == sf3_in_a_fresh_process(tmp_path)


def sf3_in_a_fresh_process(tmp_path: Path) -> bytes:
    out = tmp_path / "fresh.sf2"
    code = "import sys; from mel2mel.data.sf3 import convert_sf3; convert_sf3(*sys.argv[1:])"
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "tiny.sf3"), str(out)], check=True)
    return out.read_bytes()


def test_sf2_and_unwritable_cache_fall_back_to_the_file_itself(tmp_path, monkeypatch, caplog):
    tiny_sf3(tmp_path / "tiny.sf3")
    sf3.convert_sf3(tmp_path / "tiny.sf3", tmp_path / "tiny.sf2")
    assert sf3.playable_soundfont(str(tmp_path / "tiny.sf2")) == str(tmp_path / "tiny.sf2")
    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv("MEL2MEL_CACHE", str(tmp_path / "not-a-folder"))
    assert sf3.playable_soundfont(str(tmp_path / "tiny.sf3")) == str(tmp_path / "tiny.sf3")
    assert "could not decompress" in caplog.text
