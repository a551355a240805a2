// The beats of an instrument's detuned layers, drawn into the mel: mel2mel.models.beats
// (NoteBeats.apply), written again for the page and checked against it in tests/inpage.
import { N_FFT, N_MELS } from "./dsp.js";
import { roundHalfEven } from "./midi.js";

const SAMPLE_RATE = 16000, FRAME_RATE = 125, MIDI_MIN = 21, MAX_HARMONIC = 32;
const LOG_FLOOR = Math.log(1e-5), BIN_HZ = SAMPLE_RATE / N_FFT, TWO_PI = 2 * Math.PI;

// MurmurHash3's 32-bit finalizer (beats.py _fmix32).
function fmix32(x) {
  x ^= x >>> 16; x = Math.imul(x, 0x85ebca6b); x ^= x >>> 13; x = Math.imul(x, 0xc2b2ae35);
  return (x ^ (x >>> 16)) >>> 0;
}

// beats.py hashed_phases: the phase of harmonic h of a note, from the seed, key and onset.
function hashedPhase(seed, key, on, h) {
  const x = (Math.imul(seed, 0x9e3779b1) + Math.imul(key, 0x85ebca77) + Math.imul(on, 0xc2b2ae3d) + Math.imul(h, 0x27d4eb2f)) >>> 0;
  return fmix32(x) * (TWO_PI / 2 ** 32);
}

// The detune, depth and tremolo (Hz) at ``embedding`` (Shepard's blend, mel2mel.models.blend)
// and the phase table of the nearest instrument that has one (null: hashed phases).
export function beatsAt(beats, embedding) {
  const rows = beats.instruments;
  let sw = 0, detune = 0, depth = 0, tremolo = 0, best = null, bestD = Infinity;
  for (const r of rows) {
    let d = 0;
    for (let i = 0; i < embedding.length; i++) d += (embedding[i] - r.embedding[i]) ** 2;
    const w = 1 / (d + 1e-12);
    sw += w; detune += w * r.detune; depth += w * r.depth; tremolo += w * (r.tremolo ?? 0);
    if (r.phases && Math.sqrt(d) < bestD) { bestD = Math.sqrt(d); best = r.phases; }
  }
  return { detune: detune / sw, depth: depth / sw, tremolo: tremolo / sw, phases: best };
}

// mel: Float32Array [80 x (b - a)] (channel-major), frames a .. b-1 of a piece; notes: the
// piece's NoteRoll (midi.js). Returns a new array with the beats of the notes near [a, b).
export function applyBeats(mel, a, b, notes, embedding, beats, tables, { strength = 1, seed = 0 } = {}) {
  const { detune, depth, tremolo, phases } = beatsAt(beats, embedding);
  if (!strength || !(depth > 0)) return mel;
  const t = b - a, hold = beats.hold, attack = beats.attack;
  const total = new Float64Array(N_MELS * t), beating = new Float64Array(N_MELS * t);
  for (const [on, off, key, vel] of notes.items) {
    if (on >= b) break;
    const from = Math.max(a, on), to = Math.min(b, off + hold);
    if (to <= from) continue;
    const f0 = 440 * 2 ** ((key + MIDI_MIN - 69) / 12);
    for (let h = 1; h <= MAX_HARMONIC; h++) {
      const f = f0 * h, bin = roundHalfEven(f / BIN_HZ);
      if (!(bin < tables.bins - 1)) break;
      const power = ((vel * vel) / h) ** 2, phase = phases ? phases[key][h - 1] : hashedPhase(seed, key, on, h);
      const rate = (TWO_PI * (f * detune + tremolo)) / FRAME_RATE;  // beats, or a tremolo
      for (const band of tables.byBin[bin]) {
        const w = band.w * power, o = band.c * t;
        for (let fr = from; fr < to; fr++) {
          const d = depth * Math.min(1, (fr - on) / attack);  // grown from 0 at the onset
          const env = 1 + (2 * d * Math.cos(rate * (fr - on) + phase)) / (1 + d * d);
          total[o + fr - a] += w;
          beating[o + fr - a] += w * env;
        }
      }
    }
  }
  const out = Float32Array.from(mel);
  for (let i = 0; i < out.length; i++) {
    if (!(total[i] > 0)) continue;
    const change = 0.5 * strength * Math.log(Math.max(beating[i] / Math.max(total[i], 1e-30), 1e-6));
    out[i] = Math.max(Math.fround(mel[i] + Math.fround(change)), LOG_FLOOR);
  }
  return out;
}

// The mel bands that pass each STFT bin, from the signal tables' filterbank (melTables).
export function beatTables(melTables) {
  const byBin = Array.from({ length: N_FFT / 2 + 1 }, () => []);
  melTables.bands.forEach((band, c) => band.w.forEach((w, i) => { if (w > 0) byBin[band.lo + i].push({ c, w }); }));
  return { byBin, bins: N_FFT / 2 + 1 };
}
