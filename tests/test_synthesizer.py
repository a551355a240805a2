"""The public Synthesizer: loading, rendering lengths, timbres, tracks, streaming, vocoders."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import mido
import numpy as np
import pytest
import torch
from conftest import piano_trumpet_model

from mel2mel import constants as C
from mel2mel import pretrained
from mel2mel import synthesizer as S
from mel2mel.errors import UserError
from mel2mel.midi import MidiError, piano_roll, read_notes
from mel2mel.models import save_pretrained
from mel2mel.synthesis import streams
from mel2mel.synthesis.notes import NoteRoll
from mel2mel.synthesizer import Synthesizer
from mel2mel.vocoders.fast import FastVocoder, FastVocoderConfig
from mel2mel.vocoders.griffinlim import GriffinLim

pytestmark = pytest.mark.usefixtures("single_thread")

TAIL = round(S.TAIL_SECONDS * C.FRAME_RATE)


def quick_gl() -> GriffinLim:
    return GriffinLim(n_iter=4, nnls_iterations=2)


@pytest.fixture(scope="module")
def synth() -> Synthesizer:
    return Synthesizer(piano_trumpet_model(), quick_gl())


@pytest.fixture(scope="module")
def chunky() -> Synthesizer:
    """Small windows, so that a few seconds already take several chunks and batches."""
    return Synthesizer(
        piano_trumpet_model(), quick_gl(), chunk_frames=120, context_frames=60, crossfade_frames=8,
        batch_windows=2,
    )  # fmt: skip


def two_tracks(path, seconds: float = 4.0):
    """Type-1 file: tempo track 0, a melody in track 1 (channel 0), chords in track 2 (ch 1)."""
    rng = np.random.default_rng(1)
    midi = mido.MidiFile(type=1, ticks_per_beat=480)  # 120 bpm: 960 ticks per second
    midi.tracks.append(mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=500_000)]))
    for ch, (low, high, n) in enumerate([(72, 84, 16), (48, 60, 8)]):
        events = []
        step = seconds / n
        for i in range(n):
            for pitch in rng.integers(low, high, size=1 + ch * 2):
                on, off = round(i * step * 960), round((i + 0.9) * step * 960)
                events.append(
                    (on, mido.Message("note_on", channel=ch, note=int(pitch), velocity=90))
                )
                events.append((off, mido.Message("note_off", channel=ch, note=int(pitch))))
        events.sort(key=lambda e: (e[0], e[1].type == "note_on"))
        track, last = mido.MidiTrack(), 0
        for tick, msg in events:
            track.append(msg.copy(time=tick - last))
            last = tick
        midi.tracks.append(track)
    midi.save(path)
    return path


@pytest.fixture(scope="module")
def song(tmp_path_factory):
    return two_tracks(tmp_path_factory.mktemp("midi") / "song.mid")


def test_note_roll_windows_equal_the_whole_roll(song):
    seq = read_notes(song)
    total = seq.num_frames() + TAIL
    roll, full = NoteRoll(seq.notes, total), piano_roll(seq.notes, total)
    for lo, hi in [(0, total), (0, 1), (37, 301), (total - 40, total)]:
        np.testing.assert_array_equal(roll.window(lo, hi), full[:, lo:hi])


def test_render_length_and_dtype(synth, song):
    frames = read_notes(song).num_frames()
    audio = synth.render(song, "trumpet")
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert len(audio) == C.HOP_LENGTH * (frames + TAIL)
    assert np.isfinite(audio).all() and np.abs(audio).max() > 0
    assert len(synth.render(song, "trumpet", tail=0)) == C.HOP_LENGTH * frames


def test_a_clip_is_the_same_stretch_of_the_whole(synth, song):
    """A clip's mel is that stretch of the whole piece's mel, and its audio is the vocoder's
    for that mel with the pre-roll before it (Griffin-Lim's phases depend on where vocoding
    starts, so the whole render's samples are not a reference for a clip's)."""
    clip = synth.render(song, "trumpet", start=1.0, duration="0.512")  # frames 125 .. 188
    assert len(clip) == 64 * C.HOP_LENGTH
    mel = synth.mel(song, "trumpet")
    clip_mel = synth.mel(song, "trumpet", start=1.0, duration="0.512")
    np.testing.assert_allclose(clip_mel, mel[:, 125:189], rtol=0, atol=1e-4)
    lo, pre = 125 - S.PREROLL_FRAMES, S.PREROLL_FRAMES * C.HOP_LENGTH
    expected = np.asarray(synth.vocoder.vocode_long(mel[:, lo:189]))[pre:]
    peak = np.abs(expected).max()
    assert peak > 1e-3  # there is sound in this stretch
    np.testing.assert_allclose(clip, expected, rtol=0, atol=1e-3 * peak)


def test_range_errors(synth, song):
    with pytest.raises(UserError, match="past the end"):
        synth.render(song, start=60)
    with pytest.raises(UserError, match="duration"):
        synth.render(song, duration=0)


def test_mel_is_the_exact_forward_for_a_short_piece(synth, song):
    seq = read_notes(song)
    roll = torch.from_numpy(piano_roll(seq.notes, seq.num_frames() + TAIL))[None]
    mel = synth.mel(song, "trumpet")
    with torch.no_grad():
        expected = synth.acoustic(roll, instrument=1)[0].numpy()
    assert mel.shape == expected.shape and mel.dtype == np.float32
    np.testing.assert_allclose(mel, expected, atol=1e-5)
    assert np.abs(mel - synth.mel(song, "piano")).max() > 1e-3  # the timbre matters


def test_chunked_mel_stays_close_to_the_exact_forward(chunky, synth, song):
    chunked, exact = chunky.mel(song, "trumpet"), synth.mel(song, "trumpet")
    assert chunked.shape == exact.shape and chunked.shape[1] > 4 * chunky.chunk_frames
    np.testing.assert_allclose(chunked, exact, atol=1e-3)


def test_stream_concatenates_to_render(chunky, song, monkeypatch):
    monkeypatch.setattr(streams, "VOCODER_CHUNK_FRAMES", 100)
    chunks = list(chunky.stream(song, "piano", tracks={2: "trumpet"}))
    assert len(chunks) > 5 and all(c.dtype == np.float32 for c in chunks)
    assert {len(c) for c in chunks[:-1]} == {100 * C.HOP_LENGTH}
    np.testing.assert_array_equal(
        np.concatenate(chunks), chunky.render(song, "piano", tracks={2: "trumpet"})
    )


def test_streamed_vocoders_match_their_own_streaming(synth, song, monkeypatch):
    """Fed piece by piece (several vocoder chunks), Griffin-Lim equals its vocode_stream of the
    whole mel and the fast vocoder its one-pass output, also from a start offset."""
    monkeypatch.setattr(streams, "VOCODER_CHUNK_FRAMES", 100)
    seq = read_notes(song)
    mel = synth.mel(song, "trumpet")  # one window: the exact mel
    roll = piano_roll(seq.notes, mel.shape[1])
    assert mel.shape[1] > 5 * streams.VOCODER_CHUNK_FRAMES
    gl = synth.render(song, "trumpet")
    np.testing.assert_allclose(gl, synth.vocoder.vocode_long(mel, chunk_frames=100), atol=1e-6)
    torch.manual_seed(0)
    fast = FastVocoder(FastVocoderConfig.debug()).eval()
    audio = synth.render(song, "trumpet", vocoder=fast)
    np.testing.assert_allclose(audio, fast.vocode(mel, roll).numpy(), atol=1e-5)
    # From frame 150: vocoded from frame 150 - PREROLL_FRAMES, the pre-roll dropped.
    lo, hop = 150 - S.PREROLL_FRAMES, C.HOP_LENGTH
    part = synth.render(song, "trumpet", vocoder=fast, start=150 / C.FRAME_RATE)
    expected = fast.vocode(mel[:, lo:], roll[:, lo:]).numpy()[S.PREROLL_FRAMES * hop :]
    np.testing.assert_allclose(part, expected, atol=1e-5)


def test_per_track_rendering_differs(synth, song):
    single = synth.render(song, "piano")
    per_track = synth.render(song, "piano", tracks={2: "trumpet"})
    assert per_track.shape == single.shape
    assert np.abs(per_track - single).max() > 1e-3
    with pytest.raises(UserError, match=r"track 5 has no notes; tracks with notes: 1 \(16"):
        synth.render(song, tracks={5: "trumpet"})
    with pytest.raises(UserError, match="unknown instrument 'tuba'"):
        synth.render(song, tracks={1: "tuba"})
    with pytest.raises(UserError, match=r"track '²' has no notes"):  # "²".isdigit() is true
        synth.render(song, tracks={"²": "trumpet"})
    with pytest.raises(UserError, match="unknown instrument '²'"):
        synth.render(song, "²")


def test_channels_are_parts_of_a_single_track_file(synth, tmp_path, midi_writer):
    path = midi_writer(tmp_path / "one.mid", [(60, 0.0, 0.5, 90), (64, 0.2, 0.5, 90)], channel=3)
    with pytest.raises(UserError, match=r"channel 0 has no notes; channels with notes: 3"):
        synth.render(path, tracks={0: "trumpet"})
    assert len(synth.render(path, tracks={3: "trumpet"})) > 0


def test_morph_and_mix(synth, song):
    mel = synth.mel(song, "piano@0s,trumpet@3s")
    piano, trumpet = synth.mel(song, "piano"), synth.mel(song, "trumpet")
    assert np.abs(mel - piano).max() > 1e-3 and np.abs(mel - trumpet).max() > 1e-3
    # Trumpet from the second frame on: away from the start, the trumpet's mel.
    soon = synth.mel(song, "piano@0s,trumpet@0.008s")
    np.testing.assert_allclose(soon[:, 50:], trumpet[:, 50:], atol=1e-3)
    same = synth.mel(song, synth.timbres.table[1].tolist())
    np.testing.assert_allclose(same, trumpet, atol=1e-5)
    half = synth.mel(song, "piano=1,trumpet=1")
    assert np.abs(half - piano).max() > 1e-3 and np.abs(half - trumpet).max() > 1e-3


def test_instruments(synth):
    infos = synth.instruments()
    assert [(i.name, i.program) for i in infos] == [("Grand Piano", 0), ("Trumpet", 56)]
    assert infos[0].aliases[0] == "piano" and len(infos[1].embedding) == 2
    np.testing.assert_allclose(infos[1].embedding, synth.timbres.table[1])


def test_midi_errors(synth, tmp_path, midi_writer):
    drums = midi_writer(tmp_path / "drums.mid", [(38, 0.0, 0.2, 100)], channel=9)
    with pytest.raises(MidiError, match="only drum notes"):
        synth.render(drums)
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"MThd\x00\x00\x00\x06\x00\x01garbage")
    with pytest.raises(MidiError, match="not a readable MIDI file"):
        synth.render(bad)
    wide = midi_writer(tmp_path / "wide.mid", [(60, 0.0, 0.3, 90), (10, 0.0, 0.3, 90)])
    with pytest.warns(UserWarning, match="dropped 1 note"):
        synth.render(wide)


def test_from_pretrained_export(tmp_path, song, monkeypatch):
    (tmp_path / "export").mkdir()
    save_pretrained(piano_trumpet_model(), tmp_path / "export")
    synth = Synthesizer.from_pretrained(tmp_path / "export", vocoder=quick_gl())
    assert [i.name for i in synth.timbres.instruments] == ["Grand Piano", "Trumpet"]
    assert Synthesizer.from_pretrained(tmp_path / "export" / "acoustic.json", vocoder="griffinlim")
    with pytest.raises(UserError, match="no exported acoustic model"):
        Synthesizer.from_pretrained(tmp_path / "nothing")
    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", tmp_path / "none")
    with pytest.raises(UserError, match="no pretrained acoustic model is installed"):
        Synthesizer.from_pretrained()


def test_shipped_models_by_name(tmp_path, monkeypatch):
    """--model paper: the model trained with the paper's loss, shipped beside the default; a
    file or folder of that name in the working directory still wins."""
    from mel2mel.models import export

    weights, desc = export.export_paths("paper")
    assert desc == pretrained.PRETRAINED_DIR / "acoustic_paper.json" and weights.is_file()
    paper = Synthesizer.from_pretrained("paper", vocoder="griffinlim", timbre_library=False)
    default = Synthesizer.from_pretrained(vocoder="griffinlim", timbre_library=False)
    assert json.loads(desc.read_text())["metadata"]["loss"] == "tanh-log-abs"
    assert [i.name for i in paper.instruments()] == [i.name for i in default.instruments()]
    assert not np.allclose(paper.timbres.table, default.timbres.table)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "paper").mkdir()
    assert export.export_paths("paper")[1] == Path("paper") / "acoustic.json"


def test_auto_vocoder(tmp_path, monkeypatch):
    """'auto' takes an exported fast vocoder next to the model, else warns once and uses
    Griffin-Lim; a missing named vocoder is a clear error."""
    from mel2mel.models import export

    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", tmp_path / "shipped")
    monkeypatch.setattr(S, "_warned_griffinlim", False)
    (tmp_path / "export").mkdir()
    save_pretrained(piano_trumpet_model(), tmp_path / "export")
    with pytest.warns(UserWarning, match="Griffin-Lim"):
        synth = Synthesizer.from_pretrained(tmp_path / "export")
    assert synth.vocoder.kind == "griffinlim"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Synthesizer.from_pretrained(tmp_path / "export")  # warned once only
    with pytest.raises(UserError, match="no pretrained wavenet vocoder"):
        synth.load_vocoder("wavenet")
    with pytest.raises(UserError, match="unknown vocoder"):
        synth.load_vocoder("magic")
    fast = FastVocoder(FastVocoderConfig.debug())
    export.save_vocoder(fast, tmp_path / "export" / "fast_vocoder")
    assert Synthesizer.from_pretrained(tmp_path / "export").vocoder.kind == "fast"


def test_imports_no_training_or_data_code():
    code = (
        "import sys, mel2mel; assert 'torch' not in sys.modules; "
        "from mel2mel import Synthesizer; "
        "bad = [m for m in sys.modules if m.startswith(('mel2mel.train', 'mel2mel.data'))]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
