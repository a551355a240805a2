"""The in-page path in chromium against Python, on the shipped models and real MIDI.

* ``midi.js`` gives the same notes, roll and channel-volume gain as :mod:`mel2mel.midi` (exactly)
  on the test cases of :mod:`.cases` (a performance with pedal and CC7/CC11, a type-0 file,
  overlapping notes, ...), and the same one-line errors for bad files;
* the page's mel of ``examples/example.mid`` equals ``Synthesizer.mel`` within 0.005 dB mean,
  0.1 dB max (measured 0.0016 / 0.0094 dB: the float16 weights; the synth lead on the performed
  case 0.0020 / 0.076 dB, the same without its note beats), with and without texture (the
  page's noise fed to torch), and the synth lead's note beats with it (``beats.js``);
* ``contrast.js`` gives the same roles as :func:`mel2mel.models.contrast.bin_roles` on the
  performance with pedal, and the same corrections within 1e-4;
* the page's vocoder (ONNX network + ``dsp.js``) on Python's mel of the whole example (27.5 s)
  against ``FastVocoder.vocode``: waveform SNR > 15 dB (measured 19 dB: the float16 weights'
  phase drift over 27 s; 69 dB with float32 weights, tested below on 4 s), log-mel of the audio
  within 0.2 dB (measured 0.08), and its blocks join exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mel2mel import constants as C
from mel2mel.audio import log_mel
from mel2mel.midi import log_gain, piano_roll, read_notes
from mel2mel.models.beats import NoteBeats
from mel2mel.synthesis.notes import NoteRoll
from mel2mel.synthesizer import Synthesizer

from .cases import cases
from .conftest import b64, floats

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def synth() -> Synthesizer:
    return Synthesizer.from_pretrained(vocoder="fast")


READ = """async (name) => {
  const seq = M.readNotes(await (await fetch('/midi/' + name)).arrayBuffer());
  const T = seq.numFrames() + 125, g = M.logGain(seq.notes, seq.volume, T);
  return {T, roll: b64(new M.NoteRoll(seq.notes, T).window(0, T)), gain: g && b64(g),
          notes: seq.notes.map(n => [n.pitch, n.start, n.end, n.velocity, n.channel, n.track]),
          drums: seq.droppedDrums, range: seq.droppedOutOfRange};
}"""


@pytest.mark.parametrize("name", list(cases()))
def test_roll_and_gain_equal_python(engine_page, name: str) -> None:
    got = engine_page.evaluate(READ, name)
    seq = read_notes(cases()[name], warn=False)
    total = seq.num_frames() + 125
    assert got["T"] == total
    assert got["notes"] == [[n.pitch, n.start, n.end, n.velocity, n.channel, n.track]
                            for n in seq.notes]  # fmt: skip
    assert (got["drums"], got["range"]) == (seq.dropped_drums, seq.dropped_out_of_range)
    roll = floats(got["roll"]).reshape(C.ROLL_CHANNELS, total)
    assert np.array_equal(roll, piano_roll(seq.notes, total))
    gain = log_gain(seq.notes, seq.volume, total)
    assert (got["gain"] is None) == (gain is None)
    if gain is not None:
        assert name == "performed.mid" and np.abs(gain).max() > 0.1
        np.testing.assert_allclose(floats(got["gain"]), gain, atol=1e-6)


@pytest.mark.parametrize(
    "data, message",
    [(b"not midi at all", "not a MIDI file"), (b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01",
      "truncated"), (None, "only drum notes")],
)  # fmt: skip
def test_bad_files_give_one_line_errors(engine_page, data, message: str) -> None:
    if data is None:  # a file of drums only
        import mido

        from .cases import _bytes, _track

        midi = mido.MidiFile(type=0)
        drum = [(0, mido.Message("note_on", channel=9, note=36, velocity=99)),
                (90, mido.Message("note_off", channel=9, note=36))]  # fmt: skip
        midi.tracks.append(_track(drum))
        data = _bytes(midi)
    err = engine_page.evaluate(
        """async (s) => { try { M.readNotes(Uint8Array.from(atob(s), c => c.charCodeAt(0)));
        return null; } catch (e) { return [e.name, e instanceof M.MidiError, e.message]; } }""",
        __import__("base64").b64encode(data).decode(),
    )
    assert err is not None and err[1] and message in err[2], err


MEL = """async ([name, emb, strength]) => {
  const seq = M.readNotes(await (await fetch('/midi/' + name)).arrayBuffer());
  const out = await eng.mel(seq, emb, {strength, seed: 5});
  return {mel: b64(out.mel), frames: out.frames, noise: b64(D.textureNoise(5, 0, out.frames, 16))};
}"""


@pytest.mark.parametrize(
    "name, timbre",
    [("example.mid", "trumpet"), ("performed.mid", "organ"), ("performed.mid", "synth lead")],
)
def test_mel_equals_python(engine_page, synth: Synthesizer, name: str, timbre: str) -> None:
    data, emb = cases()[name], [float(v) for v in synth.timbre(timbre).vector()]
    ref = synth.mel(data, timbre=timbre, texture=0)
    got = engine_page.evaluate(MEL, [name, emb, 0])
    mel = floats(got["mel"]).reshape(C.N_MELS, got["frames"])
    err = np.abs(mel - ref) * C.DB_PER_NEPER
    assert mel.shape == ref.shape and err.mean() < 0.005 and err.max() < 0.1, err.max()

    strength = synth.texture_strength
    got = engine_page.evaluate(MEL, [name, emb, strength])
    noise = torch.from_numpy(floats(got["noise"]).reshape(1, 16, -1).copy())
    assert abs(float(noise.mean())) < 0.05 and abs(float(noise.std()) - 1) < 0.05
    seq = read_notes(data, warn=False)
    total = got["frames"]
    roll, gain = piano_roll(seq.notes, total), log_gain(seq.notes, seq.volume, total)
    with torch.no_grad():  # acoustic model, its gains, texture with the page's noise, the gain
        raw = synth.acoustic(torch.from_numpy(roll)[None], embedding=torch.tensor([emb]))
        raw = synth.acoustic.sharpen(raw, torch.tensor([emb]))
        raw = synth.acoustic.contrast(raw, torch.tensor([emb]), torch.from_numpy(roll)[None])
        tex = synth.texture(raw, torch.tensor([emb]), noise, strength)[0]
        if synth.acoustic.note_beats is not None:  # the note beats (the synth lead's)
            near = NoteRoll(seq.notes, total).notes_near(0, total, synth.acoustic.note_beats.hold)
            tex = synth.acoustic.note_beats.apply(tex, near, 0, torch.tensor(emb), seed=5)
    ref = tex.numpy() if gain is None else np.maximum(tex.numpy() + gain, C.LOG_SILENCE)
    mel = floats(got["mel"]).reshape(C.N_MELS, got["frames"])
    err = np.abs(mel - ref) * C.DB_PER_NEPER
    assert np.median(err) < 0.005 and err.mean() < 0.02, (err.mean(), err.max())


BEATS = """async ([name, beats, emb, seed]) => {
  const B = await import('/static/inpage/beats.js');
  const seq = M.readNotes(await (await fetch('/midi/' + name)).arrayBuffer());
  const T = seq.numFrames() + 125, notes = new M.NoteRoll(seq.notes, T);
  const mel = new Float32Array(80 * T).fill(-5), tables = B.beatTables(eng.tables);
  const parts = [[0, 200], [200, 333], [333, T]].map(([a, b]) =>
    B.applyBeats(mel.subarray(80 * a, 80 * b), a, b, notes, emb, beats, tables, {seed}));
  return {whole: b64(B.applyBeats(mel, 0, T, notes, emb, beats, tables, {seed})), T,
          parts: parts.map(b64)};
}"""


def test_beats_equal_python_with_hashed_phases(engine_page) -> None:
    """beats.js against NoteBeats.apply for a table without measured phases (the page hashes
    them as Python does), whole and in windows."""
    beats = NoteBeats(
        ("a", "b"), ((0.0, 0.0), (2.0, 0.0)), (0.0017, 0.0), (0.8, 0.3), tremolo=(0.0, 4.2)
    )  # "b" pulses (a tremolo): the blend has some of both
    emb = [0.5, 0.2]
    got = engine_page.evaluate(BEATS, ["performed.mid", beats.to_dict(), emb, 7])
    seq = read_notes(cases()["performed.mid"], warn=False)
    total = got["T"]
    notes = NoteRoll(seq.notes, total)
    mel = torch.full((C.N_MELS, total), -5.0)
    ref = beats.apply(mel, notes.notes_near(0, total, beats.hold), 0, torch.tensor(emb), seed=7)
    whole = floats(got["whole"]).reshape(C.N_MELS, total)
    assert np.abs(whole - ref.numpy()).max() < 1e-4
    assert np.abs(whole + 5).max() > 0.5  # it beats
    for (a, b), part in zip([(0, 200), (200, 333), (333, total)], got["parts"], strict=True):
        want = beats.apply(
            mel[:, a:b], notes.notes_near(a, b, beats.hold), a, torch.tensor(emb), seed=7
        )
        assert np.abs(floats(part).reshape(C.N_MELS, b - a) - want.numpy()).max() < 1e-4


CONTRAST = """async ([name, contrast, emb]) => {
  const K = await import('/static/inpage/contrast.js');
  const seq = M.readNotes(await (await fetch('/midi/' + name)).arrayBuffer());
  const T = seq.numFrames() + 125, roll = new M.NoteRoll(seq.notes, T).window(0, T);
  const mel = new Float32Array(80 * T).fill(-5);
  return {T, roles: b64(Float32Array.from(K.binRoles(roll, T, contrast))),
          mel: b64(K.applyContrast(mel, roll, T, emb, contrast, 0.5))};
}"""


def test_contrast_equals_python(engine_page) -> None:
    """contrast.js against NoteContrast.apply: the same roles on a performance with pedal, the
    same blended, strength-scaled values."""
    from mel2mel.models.contrast import N_ROLES, NoteContrast, bin_roles

    rng = np.random.default_rng(3)
    table = rng.normal(0, 0.3, (2, N_ROLES))
    contrast = NoteContrast(("a", "b"), ((0.0, 0.0), (2.0, 0.0)), tuple(map(tuple, table)),
                            (1.0, 0.7))  # fmt: skip
    emb = [0.5, 0.2]
    got = engine_page.evaluate(CONTRAST, ["performed.mid", contrast.to_page_dict(), emb])
    seq = read_notes(cases()["performed.mid"], warn=False)
    total = got["T"]
    roll = torch.from_numpy(piano_roll(seq.notes, total))[None]
    roles = bin_roles(roll)[0].numpy()
    assert np.array_equal(floats(got["roles"]).reshape(C.N_MELS, total), roles)
    assert len(np.unique(roles)) > 50  # struck, held and untouched bins at many offsets
    mel = torch.full((1, C.N_MELS, total), -5.0)
    want = contrast.apply(mel, torch.tensor([emb]), roll, 0.5)[0].numpy()
    assert np.abs(floats(got["mel"]).reshape(C.N_MELS, total) - want).max() < 1e-4  # float32


VOCODE = """async ([mel, roll, total, blocks]) => {
  const e = eng, src = {total, mel: unb64(mel), roll: unb64(roll)}, parts = [];
  for await (const a of e.vocode(src, 0, total, async () => {}, blocks)) parts.push(a);
  const y = new Float32Array(parts.reduce((s, a) => s + a.length, 0));
  let o = 0; for (const a of parts) { y.set(a, o); o += a.length; }
  return b64(y);
}"""


def snr(ref: np.ndarray, y: np.ndarray) -> float:
    return float(10 * np.log10((ref**2).sum() / ((ref - y) ** 2).sum()))


def test_vocoder_equals_python(engine_page, synth: Synthesizer) -> None:
    data = cases()["example.mid"]
    mel = synth.mel(data, timbre="trumpet")
    roll = piano_roll(read_notes(data).notes, mel.shape[1])
    ref = synth.load_vocoder("fast").vocode(mel, roll).numpy()
    args = [b64(mel), b64(roll), mel.shape[1]]
    y = floats(engine_page.evaluate(VOCODE, [*args, [125, 250, 500, 1000]]))
    assert y.shape == ref.shape and np.abs(y).max() > 0.01
    err = np.abs(log_mel(y) - log_mel(ref)).mean() * C.DB_PER_NEPER
    print(f"page vocoder: SNR {snr(ref, y):.1f} dB, log-mel {err:.4f} dB")
    assert snr(ref, y) > 15.0
    assert err < 0.2, err
    whole = floats(engine_page.evaluate(VOCODE, [*args, [10**6]]))
    np.testing.assert_allclose(whole, y, atol=1e-5)  # blocks join exactly


def test_dsp_is_exact_with_float32_weights(engine_page, synth: Synthesizer) -> None:
    """With float32 weights only the JavaScript arithmetic differs from Python's."""
    from mel2mel.models.onnx_export import vocoder_onnx

    data = cases()["example.mid"]
    mel = synth.mel(data, timbre="trumpet")[:, :500]
    roll = piano_roll(read_notes(data).notes, 500)
    ref = synth.load_vocoder("fast").vocode(mel, roll).numpy()
    engine_page.evaluate(
        """async (b) => { const bytes = Uint8Array.from(atob(b), c => c.charCodeAt(0));
        eng.sessions.vocoder32 = await eng.ort.InferenceSession.create(bytes); }""",
        __import__("base64")
        .b64encode(vocoder_onnx(synth.load_vocoder("fast"), half=False))
        .decode(),
    )
    got = engine_page.evaluate(
        """async ([mel, roll, total]) => { const keep = eng.sessions.vocoder;
        eng.sessions.vocoder = eng.sessions.vocoder32;
        try { const src = {total, mel: unb64(mel), roll: unb64(roll)}, parts = [];
          for await (const a of eng.vocode(src, 0, total, async () => {})) parts.push(...a);
          return b64(Float32Array.from(parts)); } finally { eng.sessions.vocoder = keep; } }""",
        [b64(mel), b64(roll), 500],
    )
    print(f"page vocoder, float32 weights: SNR {snr(ref, floats(got)):.1f} dB")
    assert snr(ref, floats(got)) > 55.0


RENDER = """async ([name, emb, strength, start, end]) => {
  const seq = M.readNotes(await (await fetch('/midi/' + name)).arrayBuffer()), parts = [];
  const opts = {embedding: emb, strength, start, end};
  for await (const b of eng.render(seq, opts)) parts.push(b.audio);
  const y = new Float32Array(parts.reduce((s, a) => s + a.length, 0));
  let o = 0; for (const a of parts) { y.set(a, o); o += a.length; }
  return b64(y);
}"""


@pytest.mark.parametrize(
    "start, end, limit, timbre",
    [(0.0, None, 0.1, "church organ"), (5.0, 12.0, 0.4, "church organ"),
     (5.0, 12.0, 0.4, "synth lead")],  # the synth lead with its note beats
)  # fmt: skip
def test_streamed_render_matches_python(
    engine_page, synth: Synthesizer, start, end, limit, timbre: str
):
    """The streamed render (acoustic windows of 250-2000 frames with 500-1000 of context,
    blocks of the vocoder; from ``start`` with the vocoder's pre-roll) against
    ``Synthesizer.render``, both without texture (the page's noise is its own): the mean
    log-mel error of the two audios, measured 0.037 dB from the start; 0.30 dB from 5 s, where
    the first window's mel differs by 0.3 dB and so the vocoder's running phase from then on
    (the same sound with other phases)."""
    name = "performed.mid"
    duration = None if end is None else end - start
    ref = synth.render(cases()[name], timbre=timbre, texture=0, start=start, duration=duration)
    emb = [float(v) for v in synth.timbre(timbre).vector()]
    y = floats(engine_page.evaluate(RENDER, [name, emb, 0, start, end]))
    assert y.shape == ref.shape
    err = np.abs(log_mel(y) - log_mel(ref)) * C.DB_PER_NEPER
    print(f"render: log-mel error mean {err.mean():.3f} dB, p99 {np.percentile(err, 99):.2f} dB")
    assert err.mean() < limit, err.mean()


@pytest.mark.parametrize(
    "start, end, message",
    [(40.0, None, "start 40 s is past the end (19.61 s)"), (5.0, 4.0, "bad range"),
     (-1.0, None, "bad range")],
)  # fmt: skip
def test_bad_ranges_are_refused(engine_page, start, end, message: str) -> None:
    err = engine_page.evaluate(
        """async ([start, end]) => {
        const seq = M.readNotes(await (await fetch('/midi/performed.mid')).arrayBuffer());
        try { for await (const b of eng.render(seq, {embedding: [0, 0], start, end})) break;
          return null; } catch (e) { return e.message; } }""",
        [start, end],
    )
    assert err is not None and message in err, err
