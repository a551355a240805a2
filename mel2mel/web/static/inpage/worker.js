// A Web Worker holding an in-page Engine, so that the page's main thread stays free while
// the models run (ui.js starts two: one for hover previews, one for renders, so a preview
// never waits behind a render's blocks).
//
// Messages in: {id, type: "load", base, acousticOnly, threads, wasm, files} | {id, type: "preview", x, y} |
// {id, type: "piece", buffer} | {id, type: "render", embedding, space, start, end, reference} |
// {type: "stop"}. Out: {id, ok: true, ...result} or {id, ok: false, error}; a render also
// sends {id, type: "block", audio} (Float32Array, transferred) as each block is made.

import { Engine, REFERENCE_TAIL_FRAMES, referencePassage } from "./engine.js";
import { NoteRoll, readNotes } from "./midi.js";

const PREVIEW_RANGE = [-11.5, 2.5], MAX_NOTES_SHOWN = 20000;
let eng = null, reference = null, piece = null, current = null;

async function load(msg) {
  eng = await Engine.load(msg.base, {
    acousticOnly: msg.acousticOnly, threads: msg.threads, wasmBinary: msg.wasm, files: msg.files || {},
  });
  const ref = referencePassage(), frames = ref.numFrames() + REFERENCE_TAIL_FRAMES;
  reference = { roll: new NoteRoll(ref.notes, frames).window(0, frames), frames };
  await eng.acoustic(reference.roll, frames, [0, 0]);  // warm-up: the first run is slow
  return {
    threads: eng.ort.env.wasm.numThreads, space100: Boolean(eng.manifest.space100),
    embeddings: eng.manifest.space100 ? eng.manifest.space100.embeddings.length : 0,
  };
}

// The predicted mel of the reference passage at (x, y), as /api/preview gives it.
async function preview(msg) {
  const t0 = performance.now(), { roll, frames } = reference;
  const mel = await eng.acoustic(roll, frames, [msg.x, msg.y]);
  const [lo, hi] = PREVIEW_RANGE, data = new Uint8Array(mel.length);
  for (let i = 0; i < mel.length; i++) data[i] = Math.min(255, Math.max(0, Math.floor(((mel[i] - lo) / (hi - lo)) * 255 + 0.5)));
  return [{ data, bins: 80, frames, ms: performance.now() - t0 }, [data.buffer]];
}

// Read a MIDI file; the summary app.js shows (as POST /api/uploads).
function readPiece(msg) {
  piece = null;
  const seq = readNotes(msg.buffer), shown = seq.notes.slice(0, MAX_NOTES_SHOWN);
  piece = seq;
  return {
    duration: seq.duration, num_notes: seq.notes.length, notes_shown: shown.length,
    dropped_out_of_range: seq.droppedOutOfRange, dropped_drums: seq.droppedDrums,
    notes: { pitch: shown.map((n) => n.pitch), start: shown.map((n) => n.start), end: shown.map((n) => n.end), velocity: shown.map((n) => n.velocity) },
  };
}

async function render(msg) {
  current = msg.id;
  const seq = msg.reference ? referencePassage() : piece;
  if (!seq) throw new Error("no piece has been read in the page");
  const opts = { start: msg.start, end: msg.end, embedding: msg.embedding };
  if (msg.space != null) {
    opts.session = await eng.space100();
    opts.embedding = eng.manifest.space100.embeddings[msg.space];
  }
  for await (const block of eng.render(seq, opts)) {
    if (current !== msg.id) return { stopped: true };
    const audio = Float32Array.from(block.audio);
    self.postMessage({ id: msg.id, type: "block", audio }, [audio.buffer]);
  }
  return { stopped: false };
}

self.onmessage = async ({ data: msg }) => {
  if (msg.type === "stop") { current = null; return; }
  try {
    let result, transfer = [];
    if (msg.type === "load") result = await load(msg);
    else if (msg.type === "preview") [result, transfer] = await preview(msg);
    else if (msg.type === "piece") result = readPiece(msg);
    else if (msg.type === "render") result = await render(msg);
    else throw new Error(`unknown message ${msg.type}`);
    self.postMessage({ id: msg.id, ok: true, ...result }, transfer);
  } catch (err) {
    self.postMessage({ id: msg.id, ok: false, error: String((err && err.message) || err) });
  }
};
