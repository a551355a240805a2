// The signal processing of the fast vocoder that ONNX does not express, written once here and
// checked against mel2mel/vocoders/refine.py and fast_layers.py by tests/inpage/test_inpage_engine.py:
// the running phase (float64, carried from block to block) with the notes' partials, the
// mel-matching refinement (one inverse STFT + STFT per iteration, the re-analysed phase with a
// magnitude re-fitted to the target mel), the inverse STFT (Hann window, hop 128, frame i
// centred on sample 128 i), and the texture post-net's noise. Spectra are frames-major:
// [T x 513] re and im arrays.

import { roundHalfEven } from "./midi.js";

export const N_FFT = 1024, HOP = 128, BINS = 513, N_MELS = 80, LOG_FLOOR = 1e-5;
const SAMPLE_RATE = 16000, MIDI_MIN = 21, N_KEYS = 88;
const R = N_FFT / HOP, START = N_FFT / (2 * HOP);  // 8 blocks a frame, frame i starts at block i
const MAX_LOG_GAIN = 4.0, MIN_MAGNITUDE = 1e-12, TWO_PI = 2 * Math.PI;
export const FRAMES_PER_ITERATION = 2 * START;

// ---- FFT: radix-2 complex, two real signals at once ----------------------------------------
const LOG_N = Math.log2(N_FFT);
const REV = new Uint16Array(N_FFT), COS = new Float64Array(N_FFT / 2), SIN = new Float64Array(N_FFT / 2);
for (let i = 0; i < N_FFT; i++) {
  let r = 0;
  for (let b = 0; b < LOG_N; b++) r |= ((i >> b) & 1) << (LOG_N - 1 - b);
  REV[i] = r;
}
for (let i = 0; i < N_FFT / 2; i++) { COS[i] = Math.cos((TWO_PI * i) / N_FFT); SIN[i] = -Math.sin((TWO_PI * i) / N_FFT); }
export const WINDOW = new Float64Array(N_FFT);  // periodic Hann, as torch.hann_window
for (let i = 0; i < N_FFT; i++) WINDOW[i] = 0.5 - 0.5 * Math.cos((TWO_PI * i) / N_FFT);

// In-place forward (sign -1) or unnormalized inverse (sign +1) complex FFT of size N_FFT.
function fft(re, im, inverse) {
  for (let i = 0; i < N_FFT; i++) {
    const j = REV[i];
    if (j > i) { let t = re[i]; re[i] = re[j]; re[j] = t; t = im[i]; im[i] = im[j]; im[j] = t; }
  }
  const s = inverse ? -1 : 1;
  for (let size = 2; size <= N_FFT; size *= 2) {
    const half = size / 2, step = N_FFT / size;
    for (let i = 0; i < N_FFT; i += size) {
      for (let k = 0; k < half; k++) {
        const wr = COS[k * step], wi = s * SIN[k * step], a = i + k, b = a + half;
        const tr = re[b] * wr - im[b] * wi, ti = re[b] * wi + im[b] * wr;
        re[b] = re[a] - tr; im[b] = im[a] - ti; re[a] += tr; im[a] += ti;
      }
    }
  }
}

const fre = new Float64Array(N_FFT), fim = new Float64Array(N_FFT);

// rfft of two real frames x, y (Float64Array[N_FFT]) into (xr, xi) at offset o and (yr, yi)
// at offset o + BINS (the next frame).
function rfft2(x, y, xr, xi, o) {
  fre.set(x); if (y) fim.set(y); else fim.fill(0);
  fft(fre, fim, false);
  for (let k = 0; k < BINS; k++) {
    const j = (N_FFT - k) % N_FFT;
    xr[o + k] = 0.5 * (fre[k] + fre[j]); xi[o + k] = 0.5 * (fim[k] - fim[j]);
    if (y) { xr[o + BINS + k] = 0.5 * (fim[k] + fim[j]); xi[o + BINS + k] = -0.5 * (fre[k] - fre[j]); }
  }
}

// irfft (torch.fft.irfft, n = N_FFT: imaginary parts of DC and Nyquist ignored) of the spectra
// at offsets ox, oy of (re, im) into x, y (y may be null).
function irfft2(re, im, ox, oy, x, y) {
  for (let k = 0; k < BINS; k++) {
    let ar = re[ox + k], ai = k === 0 || k === BINS - 1 ? 0 : im[ox + k];
    let br = 0, bi = 0;
    if (y) { br = re[oy + k]; bi = k === 0 || k === BINS - 1 ? 0 : im[oy + k]; }
    fre[k] = ar - bi; fim[k] = ai + br;  // X + iY
    if (k > 0 && k < BINS - 1) { fre[N_FFT - k] = ar + bi; fim[N_FFT - k] = -ai + br; }  // conj(X) + i conj(Y)
  }
  fft(fre, fim, true);
  for (let i = 0; i < N_FFT; i++) { x[i] = fre[i] / N_FFT; if (y) y[i] = fim[i] / N_FFT; }
}

// ---- inverse STFT and re-analysis ----------------------------------------------------------
const envelopes = new Map();
// 1 / (sum of squared windows) at the hop*T samples of a centred synthesis of T frames.
function inverseEnvelope(t) {
  if (envelopes.has(t)) return envelopes.get(t);
  const env = new Float64Array(t * HOP);
  for (let b = START; b < START + t; b++) {
    for (let s = Math.max(0, b - R + 1); s <= Math.min(t - 1, b); s++) {
      const w0 = (b - s) * HOP;
      for (let j = 0; j < HOP; j++) env[(b - START) * HOP + j] += WINDOW[w0 + j] ** 2;
    }
  }
  for (let i = 0; i < env.length; i++) env[i] = 1 / Math.max(env[i], 1e-8);
  if (envelopes.size > 16) envelopes.delete(envelopes.keys().next().value);
  envelopes.set(t, env);
  return env;
}

// Inverse STFT of T frames (re, im: [T x BINS]) -> Float64Array[T * HOP].
const xa = new Float64Array(N_FFT), xb = new Float64Array(N_FFT);
export function istft(re, im, t) {
  const sig = new Float64Array((t + R - 1) * HOP);
  for (let s = 0; s < t; s += 2) {
    const two = s + 1 < t;
    irfft2(re, im, s * BINS, (s + 1) * BINS, xa, two ? xb : null);
    for (let i = 0; i < N_FFT; i++) sig[s * HOP + i] += xa[i] * WINDOW[i];
    if (two) for (let i = 0; i < N_FFT; i++) sig[(s + 1) * HOP + i] += xb[i] * WINDOW[i];
  }
  const env = inverseEnvelope(t), out = new Float64Array(t * HOP);
  for (let i = 0; i < t * HOP; i++) out[i] = sig[START * HOP + i] * env[i];
  return out;
}

// ---- the mel filterbank and its spread -----------------------------------------------------
// tables.mel_bands: [{lo, w}] for each band (manifest "signal"); returns {bands, spread}.
export function melTables(signal) {
  const bands = signal.mel_bands.map((b) => ({ lo: b.lo, w: Float64Array.from(b.w) }));
  const colSum = new Float64Array(BINS);
  for (const b of bands) for (let i = 0; i < b.w.length; i++) colSum[b.lo + i] += b.w[i];
  const spread = bands.map((b) => ({ lo: b.lo, w: b.w.map((v, i) => v / Math.max(colSum[b.lo + i], 1e-8)) }));
  return { bands, spread };
}

// ---- refinement (mel2mel.vocoders.refine.MelMatching) --------------------------------------
// spec: {re, im, mag} [T x BINS] (mag: the network's magnitude), target: Float32Array [T x 80]
// (frames-major). Returns the refined {re, im, t}, context frames dropped as in Python.
export function refine(spec, target, t, iterations, step, tables, context = [false, false]) {
  let { re, im, mag } = spec;
  let tgt = target, off = 0;  // frames dropped at the start so far
  const drop0 = context[0] ? FRAMES_PER_ITERATION : 0, drop1 = context[1] ? FRAMES_PER_ITERATION : 0;
  for (let it = 0; it < iterations; it++) {
    const signal = istft(re, im, t);
    const rr = new Float64Array(t * BINS), ri = new Float64Array(t * BINS);
    analyze(signal, t, rr, ri);
    const keep0 = drop0, keep1 = t - drop1, nt = keep1 - keep0;
    const nre = new Float64Array(nt * BINS), nim = new Float64Array(nt * BINS), nmag = new Float64Array(nt * BINS);
    const rm = new Float64Array(BINS), gain = new Float64Array(N_MELS), spreadGain = new Float64Array(BINS);
    for (let f = keep0; f < keep1; f++) {
      const o = f * BINS;
      for (let k = 0; k < BINS; k++) rm[k] = Math.sqrt(rr[o + k] ** 2 + ri[o + k] ** 2);
      for (let m = 0; m < N_MELS; m++) {
        const b = tables.bands[m];
        let acc = 0;
        for (let i = 0; i < b.w.length; i++) acc += rm[b.lo + i] * b.w[i];
        const actual = Math.log(Math.max(acc, LOG_FLOOR));
        gain[m] = Math.min(MAX_LOG_GAIN, Math.max(-MAX_LOG_GAIN, step * (tgt[(f + off) * N_MELS + m] - actual)));
      }
      spreadGain.fill(0);
      for (let m = 0; m < N_MELS; m++) {
        const b = tables.spread[m];
        for (let i = 0; i < b.w.length; i++) spreadGain[b.lo + i] += gain[m] * b.w[i];
      }
      const p = (f - keep0) * BINS;
      for (let k = 0; k < BINS; k++) {
        const m2 = mag[o + k] * Math.exp(spreadGain[k]);
        const ratio = m2 / Math.max(rm[k], MIN_MAGNITUDE);
        nmag[p + k] = m2; nre[p + k] = rr[o + k] * ratio; nim[p + k] = ri[o + k] * ratio;
      }
    }
    re = nre; im = nim; mag = nmag; off += keep0; t = nt;
  }
  return { re, im, t };
}

// analyze(): the STFT that istft inverts, written for two frames per complex FFT.
const ya = new Float64Array(N_FFT), yb = new Float64Array(N_FFT);
export function analyze(signal, t, re, im) {
  const padded = new Float64Array((t + R - 1) * HOP);
  padded.set(signal, START * HOP);
  for (let s = 0; s < t; s += 2) {
    const two = s + 1 < t;
    for (let i = 0; i < N_FFT; i++) ya[i] = padded[s * HOP + i] * WINDOW[i];
    if (two) for (let i = 0; i < N_FFT; i++) yb[i] = padded[(s + 1) * HOP + i] * WINDOW[i];
    rfft2(ya, two ? yb : null, re, im, s * BINS);
  }
}

// ---- running phase -------------------------------------------------------------------------
// phase[t] = (carry + sum of step[first..t]) mod 2 pi + offset[t], float64; returns the phase
// (Float64Array [T x BINS]) and the running sum through frame ``carryIndex`` (or null).
export function runningPhase(offset, step, t, carry, carryIndex) {
  const run = carry ? Float64Array.from(carry) : new Float64Array(BINS);
  const phase = new Float64Array(t * BINS);
  let out = null;
  for (let f = 0; f < t; f++) {
    const o = f * BINS;
    for (let k = 0; k < BINS; k++) {
      let v = run[k] + step[o + k];
      v -= TWO_PI * Math.floor(v / TWO_PI);
      run[k] = v;
      phase[o + k] = v + offset[o + k];
    }
    if (f === carryIndex) out = Float64Array.from(run);
  }
  return { phase, carry: out };
}

// ---- the notes' partials (mel2mel/vocoders/partials.py) -----------------------------------
// Frames [first, first + n) of a roll window [176 x w] (channel-major) that starts at frame
// ``early``: each bin within ``width`` bins of a partial of a key that sounds, or sounded
// within ``hold`` frames, advances by that partial's phase per hop, with no offset. ``step``
// and ``offset`` ([n x BINS], frames-major) are changed in place.
export function partialPhase(roll, w, early, first, n, step, offset, { width, hold }) {
  const last = new Float64Array(N_KEYS).fill(-Infinity);
  let held = null, near = null, advance = null;
  for (let f = early; f < first + n; f++) {
    for (let k = 0; k < N_KEYS; k++) if (roll[k * w + f - early] > 0) last[k] = f;
    if (f < first) continue;
    const keys = [];
    for (let k = 0; k < N_KEYS; k++) if (f - last[k] <= hold) keys.push(k);
    if (keys.join() !== held) { held = keys.join(); ({ near, advance } = nearestPartials(keys, width)); }
    const o = (f - first) * BINS;
    for (let b = 0; b < BINS; b++) if (near[b]) { step[o + b] = advance[b]; offset[o + b] = 0; }
  }
}

// For each bin, the nearest partial (harmonic below Nyquist) of ``keys`` within ``width`` bins:
// whether there is one and its phase advance per hop, wrapped to [0, 2 pi).
function nearestPartials(keys, width) {
  const near = new Uint8Array(BINS), advance = new Float64Array(BINS), best = new Float64Array(BINS).fill(Infinity);
  const binHz = SAMPLE_RATE / N_FFT;
  for (const k of keys) {  // ascending, as Python's: on a tie the lower key wins
    const f0 = 440 * 2 ** ((k + MIDI_MIN - 69) / 12);
    for (let b = 0; b < BINS; b++) {
      const fh = Math.max(1, roundHalfEven((b * binHz) / f0)) * f0, d = Math.fround(Math.abs(fh - b * binHz) / binHz);
      if (fh < SAMPLE_RATE / 2 && d <= width && d < best[b]) {
        const a = (TWO_PI * fh * HOP) / SAMPLE_RATE;
        best[b] = d; near[b] = 1; advance[b] = a - TWO_PI * Math.floor(a / TWO_PI);
      }
    }
  }
  return { near, advance };
}

// ---- texture noise -------------------------------------------------------------------------
// Standard normal noise of frames [lo, hi), Float32Array [channels x (hi - lo)]: frames in
// blocks of ``block``, block b drawn from a generator seeded by (seed, b), so the noise of a
// frame does not depend on the chunking (as mel2mel.models.texture.texture_noise; a different
// generator, so not the same numbers as torch's).
function mulberry32(a) {
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const noiseBlocks = new Map();
function noiseBlock(seed, b, channels, block) {
  const key = `${seed}:${b}:${channels}:${block}`;
  if (noiseBlocks.has(key)) return noiseBlocks.get(key);
  const rand = mulberry32((Math.imul(seed, 1000003) + b) | 0), out = new Float32Array(channels * block);
  for (let i = 0; i < out.length; i += 2) {  // Box-Muller
    const u = 1 - rand(), v = rand(), r = Math.sqrt(-2 * Math.log(u));
    out[i] = r * Math.cos(TWO_PI * v);
    if (i + 1 < out.length) out[i + 1] = r * Math.sin(TWO_PI * v);
  }
  if (noiseBlocks.size > 64) noiseBlocks.delete(noiseBlocks.keys().next().value);
  noiseBlocks.set(key, out);
  return out;
}
export function textureNoise(seed, lo, hi, channels, block = 512) {
  const n = hi - lo, out = new Float32Array(channels * n);
  for (let f = lo; f < hi; f++) {
    const b = Math.floor(f / block), data = noiseBlock(seed, b, channels, block), j = f - b * block;
    for (let c = 0; c < channels; c++) out[c * n + f - lo] = data[c * block + j];
  }
  return out;
}
