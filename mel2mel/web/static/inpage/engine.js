// The in-page synthesizer: MIDI notes -> roll -> mel (acoustic model, texture post-net, note
// beats, channel volume) -> audio (fast vocoder network + dsp.js), with onnxruntime-web.
//
// Engine.load(base) reads base/manifest.json (written by `mel2mel export onnx`) and opens the
// graphs. engine.mel() is the exact whole-piece mel (what Synthesizer.mel gives for pieces up
// to 32 s); engine.render() streams audio in blocks as it is made: the acoustic model on
// windows of growing length (250, 500, 1000, then 2000 frames, 250 frames of context a side,
// 16-frame log-domain cross-fades, as mel2mel.synthesis.streams does), the texture on chunks
// with its receptive field as context, the vocoder on blocks of 125, 250, 500, then 1000 frames
// with the context that makes the blocks join exactly (FastVocoder.stream_frames).

import { NoteRoll, logGain, roundHalfEven, timeToFrame, FRAME_RATE } from "./midi.js";
import { applyBeats, beatTables } from "./beats.js";
import { applyContrast } from "./contrast.js";
import { BINS, FRAMES_PER_ITERATION, HOP, N_MELS, istft, melTables, partialPhase, refine, runningPhase, textureNoise } from "./dsp.js";

export const TAIL_FRAMES = 125, PREROLL_FRAMES = 32;
const LOG_SILENCE = Math.log(1e-5);
// Roll context on each side of a core: 500 frames for the first (its latency is the first
// audio's), 1000 for the others; with 250, a pedalled piece rendered from its middle was off
// by 0.8 dB in the first second and 0.2 dB after it (docs/WEB.md).
const ACOUSTIC_CORES = [250, 500, 1000, 2000], ACOUSTIC_CONTEXT = [500, 1000], CROSSFADE = 16;
const VOCODER_BLOCKS = [125, 250, 500, 1000];

const vendorBase = new URL("../vendor/ort/", import.meta.url).href;

// onnxruntime-web's threads per engine: ``threads`` (at most the cores, and 1 unless the page
// is cross-origin isolated: its threads need SharedArrayBuffer). The page runs two engines in
// two workers, one thread each by default: on the 2-core VM a second ORT thread made previews
// 1.5x and renders 1.4x slower (benchmarks/bench_inpage.py --page-threads 2, docs/WEB.md).
export const DEFAULT_THREADS = 1;

// ``wasmBinary``: the bytes of ort-wasm-simd-threaded.wasm when the caller has them (the page
// fetches them once for its two workers, which would otherwise download 15 MB each).
export async function loadOrt(base = vendorBase, threads = DEFAULT_THREADS, wasmBinary = null) {
  const ort = await import(`${base}ort.wasm.min.mjs`);
  ort.env.wasm.wasmPaths = base;
  if (wasmBinary) ort.env.wasm.wasmBinary = wasmBinary;
  const most = self.crossOriginIsolated ? Math.max(1, navigator.hardwareConcurrency || 1) : 1;
  ort.env.wasm.numThreads = Math.max(1, Math.min(threads || DEFAULT_THREADS, most));
  ort.env.wasm.simd = true;
  return ort;
}

// Copy frames [a, b) of a channel-major [C x total] array into a new [C x (b - a)] one.
export function slice(data, channels, total, a, b) {
  const n = b - a, out = new Float32Array(channels * n);
  for (let c = 0; c < channels; c++) out.set(data.subarray(c * total + a, c * total + b), c * n);
  return out;
}

export class Engine {
  // ``acousticOnly``: open only the acoustic graph (enough for previews).
  // ``files``: {file name: ArrayBuffer} of graphs the caller has already fetched.
  static async load(base, { ortBase, acousticOnly = false, threads = DEFAULT_THREADS, wasmBinary = null, files = {} } = {}) {
    const ort = await loadOrt(ortBase, threads, wasmBinary);
    const url = (f) => new URL(f, base).href;
    const manifest = await (await fetch(url("manifest.json"))).json();
    if (manifest.kind !== "mel2mel-onnx") throw new Error(`${url("manifest.json")} is not a mel2mel ONNX manifest`);
    const opts = { executionProviders: ["wasm"], graphOptimizationLevel: "all" };
    const open = async (f) => ort.InferenceSession.create(files[f] ? new Uint8Array(files[f]) : url(f), opts);
    const [acoustic, texture, vocoder] = await Promise.all([
      open(manifest.acoustic.file),
      manifest.texture && !acousticOnly ? open(manifest.texture.file) : null,
      acousticOnly ? null : open(manifest.vocoder.file),
    ]);
    return new Engine(ort, manifest, { acoustic, texture, vocoder }, url);
  }

  constructor(ort, manifest, sessions, url) {
    this.ort = ort; this.manifest = manifest; this.sessions = sessions; this.url = url;
    this.tables = melTables(manifest.signal);
    this.beatTables = beatTables(this.tables);
    this.busy = Promise.resolve();
  }

  // Runs of the graphs, one at a time (onnxruntime-web sessions are not re-entrant).
  async run(session, feeds) {
    const go = this.busy.then(() => session.run(feeds));
    this.busy = go.catch(() => {});
    return go;
  }

  tensor(data, dims) { return new this.ort.Tensor("float32", data, dims); }

  // roll: Float32Array [176 x T], embedding: number[] -> Float32Array [80 x T] log-mel. The
  // graph takes only the channels that play (onnx_export.AcousticGraph).
  async acoustic(roll, t, embedding, session = this.sessions.acoustic) {
    const active = [];
    for (let c = 0; c < 176; c++) {
      for (let f = c * t; f < (c + 1) * t; f++) if (roll[f] !== 0) { active.push(c); break; }
    }
    if (!active.length) active.push(0);
    const sub = new Float32Array(active.length * t);
    active.forEach((c, i) => sub.set(roll.subarray(c * t, (c + 1) * t), i * t));
    const out = await this.run(session, {
      roll: this.tensor(sub, [1, active.length, t]),
      channels: new this.ort.Tensor("int64", BigInt64Array.from(active, (c) => BigInt(c)), [active.length]),
      embedding: this.tensor(Float32Array.from(embedding), [1, embedding.length]),
    });
    return out.mel.data;
  }

  async space100() {
    if (!this.manifest.space100) throw new Error("no 100-instrument model in this export");
    if (!this.sessions.space100) {
      this.sessions.space100 = await this.ort.InferenceSession.create(this.url(this.manifest.space100.file), { executionProviders: ["wasm"] });
    }
    return this.sessions.space100;
  }

  // mel: Float32Array [80 x T] -> with texture (strength 0: unchanged).
  async texture(mel, t, embedding, noise, strength) {
    if (!this.sessions.texture || !strength) return mel;
    const z = this.manifest.texture.noise_channels;
    const out = await this.run(this.sessions.texture, {
      mel: this.tensor(mel, [1, N_MELS, t]), embedding: this.tensor(Float32Array.from(embedding), [1, embedding.length]),
      noise: this.tensor(noise, [1, z, t]), strength: this.tensor(Float32Array.of(strength), [1]),
    });
    return out.mel_out.data;
  }

  // The vocoder network: mel [80 x T], roll [176 x T] -> {magnitude, offset, step} [T x 513].
  async vocoderFrames(mel, roll, t) {
    const out = await this.run(this.sessions.vocoder, { mel: this.tensor(mel, [1, N_MELS, t]), roll: this.tensor(roll, [1, 176, t]) });
    return { magnitude: out.magnitude.data, offset: out.offset.data, step: out.step.data };
  }

  // The note beats of the default model, or of the 100-instrument one (``space``), or null.
  beats(space = false) { return (space ? this.manifest.space100?.beats : this.manifest.beats) || null; }

  // Frames [a, b) of a mel with the note beats (NoteBeats.apply), or the mel itself.
  withBeats(mel, a, b, notes, embedding, seed, space = false) {
    const beats = this.beats(space);
    return beats ? applyBeats(mel, a, b, notes, embedding, beats, this.beatTables, { seed }) : mel;
  }

  // A window's acoustic mel with the note contrast of the default model, or of the
  // 100-instrument one (``space``), when it has one (NoteContrast.apply), else the mel itself.
  withContrast(mel, roll, t, embedding, space = false) {
    const contrast = space ? this.manifest.space100?.contrast : this.manifest.contrast;
    return contrast ? applyContrast(mel, roll, t, embedding, contrast) : mel;
  }

  defaultStrength() { return this.manifest.texture ? this.manifest.texture.default_strength : 0; }

  // The exact whole-piece log-mel of a read piece (midi.js readNotes), Float32Array [80 x T]
  // with T = piece frames + 1 s of tail: what Synthesizer.mel gives for up to 32 s.
  async mel(seq, embedding, { strength = this.defaultStrength(), seed = 0, tail = TAIL_FRAMES } = {}) {
    const total = seq.numFrames() + tail, notes = new NoteRoll(seq.notes, total), roll = notes.window(0, total);
    let mel = this.withContrast(await this.acoustic(roll, total, embedding), roll, total, embedding);
    if (strength && this.sessions.texture) {
      const noise = textureNoise(seed, 0, total, this.manifest.texture.noise_channels, this.manifest.signal.noise_block);
      mel = await this.texture(mel, total, embedding, noise, strength);
    }
    mel = this.withBeats(mel, 0, total, notes, embedding, seed);
    const gain = logGain(seq.notes, seq.volume, total);
    if (gain) for (let c = 0; c < N_MELS; c++) for (let f = 0; f < total; f++) mel[c * total + f] = Math.max(mel[c * total + f] + gain[f], LOG_SILENCE);
    return { mel, roll, frames: total };
  }

  // Vocode frames [lo, hi) of a mel produced piecewise. ``need(f)`` resolves when frames < f
  // of ``src.mel`` ([80 x total], channel-major) are final; the roll is ``src.roll`` ([176 x
  // total]) or made by ``src.rollWindow(a, b)``. Yields Float32Array
  // audio blocks (HOP samples a frame) whose concatenation is FastVocoder.vocode of [lo, hi).
  async *vocode(src, lo, hi, need, blocks = VOCODER_BLOCKS) {
    const v = this.manifest.vocoder, iters = v.refine_iterations, step = v.refine_step;
    const pad = 4 + iters * FRAMES_PER_ITERATION, net = v.network_context, total = src.total;
    const hold = v.partials ? v.partials.hold : 0;  // the partials look back while keys are held
    let carry = null, k = 0;
    for (let bs = lo; bs < hi; k++) {
      const be = Math.min(hi, bs + blocks[Math.min(k, blocks.length - 1)]);
      const first = Math.max(lo, bs - pad), stop = Math.min(hi, be + pad);
      const a = Math.max(lo, first - net), b = Math.min(hi, stop + net), early = Math.max(lo, a - hold);
      await need(b);
      const held = src.rollWindow ? src.rollWindow(early, b) : slice(src.roll, 176, total, early, b);
      const roll = early === a ? held : slice(held, 176, b - early, a - early, b - early);
      const t = b - a, frames = await this.vocoderFrames(slice(src.mel, N_MELS, total, a, b), roll, t);
      const n = stop - first, o = (first - a) * BINS;
      const nextFirst = Math.max(lo, be - pad), index = nextFirst > lo ? nextFirst - 1 - first : -1;
      let offset = frames.offset.subarray(o, o + n * BINS), advance = frames.step.subarray(o, o + n * BINS);
      if (v.partials) {
        offset = Float32Array.from(offset); advance = Float32Array.from(advance);
        partialPhase(held, b - early, early, first, n, advance, offset, v.partials);
      }
      const ph = runningPhase(offset, advance, n, carry, index);
      carry = ph.carry;
      const mag = frames.magnitude.subarray(o, o + n * BINS), re = new Float64Array(n * BINS), im = new Float64Array(n * BINS);
      for (let i = 0; i < n * BINS; i++) { re[i] = mag[i] * Math.cos(ph.phase[i]); im[i] = mag[i] * Math.sin(ph.phase[i]); }
      const target = new Float32Array(n * N_MELS);  // frames-major
      for (let c = 0; c < N_MELS; c++) for (let f = 0; f < n; f++) target[f * N_MELS + c] = src.mel[c * total + first + f];
      const context = [first > lo, stop < hi];
      const spec = refine({ re, im, mag }, target, n, iters, step, this.tables, context);
      const audio = istft(spec.re, spec.im, spec.t), s0 = first + (context[0] ? iters * FRAMES_PER_ITERATION : 0);
      yield Float32Array.from(audio.subarray((bs - s0) * HOP, (be - s0) * HOP));
      bs = be;
    }
  }

  // Stream a piece: yields {audio: Float32Array, frame, total} blocks from ``start`` seconds to
  // ``end`` (default: the last note end + 1 s). options: embedding, strength, seed.
  // ``session``: another acoustic graph (the 100-instrument model), without texture.
  async *render(seq, { embedding, strength = this.defaultStrength(), seed = 0, start = 0, end = null, session = null } = {}) {
    if (session) strength = 0;
    const total = seq.numFrames() + TAIL_FRAMES;
    if (!(start >= 0) || (end != null && !(end > start))) {
      throw new RangeError(`bad range: from ${start} s to ${end} s (the end must be after the start)`);
    }
    if (timeToFrame(start) >= total - 1) {
      throw new RangeError(`start ${start} s is past the end (${(total / FRAME_RATE).toFixed(2)} s)`);
    }
    const first = timeToFrame(start);
    const stop = end == null ? total : Math.min(total, Math.max(first + 1, timeToFrame(end)));
    const lo = Math.max(0, first - PREROLL_FRAMES), hi = stop;
    const notes = new NoteRoll(seq.notes, total), gain = logGain(seq.notes, seq.volume, total);
    // 640 bytes a frame: 72 MB for 15 minutes
    const src = { total, mel: new Float32Array(N_MELS * total), rollWindow: (a, b) => notes.window(a, b) };
    const ac = new Float32Array(N_MELS * total);
    let acReady = lo, txReady = lo, tail = null, core = 0;
    const tex = this.sessions.texture && strength ? this.manifest.texture : null, ctx = tex ? tex.context_frames : 0;
    const beats = this.beats(!!session);
    const nextAcoustic = async () => {
      const ctx = ACOUSTIC_CONTEXT[Math.min(core, 1)];
      const s = acReady, e = Math.min(hi, s + ACOUSTIC_CORES[Math.min(core++, ACOUSTIC_CORES.length - 1)]);
      const outEnd = Math.min(hi, e + CROSSFADE);
      const w0 = Math.max(0, s - ctx), w1 = Math.min(total, outEnd + ctx), w = w1 - w0;
      const roll = notes.window(w0, w1);
      const mel = this.withContrast(await this.acoustic(roll, w, embedding, session || undefined), roll, w, embedding, !!session);
      const prev = tail, n = outEnd - e, next = n > 0 ? new Float32Array(N_MELS * n) : null;
      for (let c = 0; c < N_MELS; c++) {
        for (let f = s; f < outEnd; f++) {
          let v = mel[c * w + f - w0];
          if (prev && f - s < prev.n) {
            const x = (f - s + 1) / (prev.n + 1);  // linear cross-fade in the log domain
            v = prev.data[c * prev.n + f - s] * (1 - x) + v * x;
          }
          if (f < e) ac[c * total + f] = v;
          else next[c * n + f - e] = v;
        }
      }
      tail = next ? { n, data: next } : null;
      acReady = e;
    };
    const nextTexture = async () => {
      while (acReady < hi && acReady - ctx <= txReady) await nextAcoustic();
      const s = txReady, e = acReady >= hi ? hi : acReady - ctx;
      const a = Math.max(lo, s - ctx), b = Math.min(hi, e + ctx);
      let mel = slice(ac, N_MELS, total, a, b);
      if (tex) {
        const noise = textureNoise(seed, a, b, tex.noise_channels, this.manifest.signal.noise_block);
        mel = await this.texture(mel, b - a, embedding, noise, strength);
      }
      const beaten = beats ? this.withBeats(slice(mel, N_MELS, b - a, s - a, e - a), s, e, notes, embedding, seed, !!session) : null;
      for (let c = 0; c < N_MELS; c++) {
        for (let f = s; f < e; f++) {
          const v = (beaten ? beaten[c * (e - s) + f - s] : mel[c * (b - a) + f - a]) + (gain ? gain[f] : 0);
          src.mel[c * total + f] = tex || gain || beaten ? Math.max(v, LOG_SILENCE) : v;
        }
      }
      txReady = e;
    };
    const need = async (f) => { while (txReady < f) await nextTexture(); };
    let frame = lo;
    for await (const audio of this.vocode(src, lo, hi, need)) {
      const n = audio.length / HOP, skip = Math.max(0, first - frame);
      if (skip < n) yield { audio: audio.subarray(skip * HOP), frame: frame + skip, total: hi - first };
      frame += n;
    }
  }
}

// mel2mel.timbre.map.reference_passage: the fixed passage the timbre map plays (3.5 s + 0.5 s).
export function referencePassage() {
  const notes = [];
  const chords = [[48, 55, 64], [45, 57, 60], [41, 53, 57], [43, 55, 59]];
  chords.forEach((chord, k) => { for (const p of chord) notes.push({ pitch: p, start: 0.875 * k, end: 0.875 * k + 0.85, velocity: 70, channel: 0, track: 0 }); });
  const melody = [72, 76, 79, 76, 72, 69, 72, 77, 76, 74, 72, 71, 74, 67];
  melody.forEach((p, i) => notes.push({ pitch: p, start: 0.25 * i, end: 0.25 * i + 0.24, velocity: 96, channel: 0, track: 0 }));
  notes.sort((x, y) => x.start - y.start || x.pitch - y.pitch);
  const duration = Math.max(...notes.map((n) => n.end));
  return { notes, duration, volume: new Map(), numFrames() { return timeToFrame(duration) + 1; } };
}

export const REFERENCE_TAIL_FRAMES = roundHalfEven(0.5 * FRAME_RATE);  // 62, as Python
