// The page's hook for in-page synthesis (docs/WEB.md, "In the page"): the "synthesis" choice,
// the hover preview, the upload read in the page, and renders played through the page's
// StreamPlayer (app.js) as they are made. The models run in two Web Workers (worker.js): one
// for previews, one for renders. app.js asks window.m2mInpage whether it is `active`;
// otherwise everything goes to the server as before. On the static site (window.M2M_SITE)
// there is no server: the page is the only path.

const SITE = window.M2M_SITE || null;
const SAMPLE_RATE = 16000, SPACE_CLIP_SECONDS = 4;
const byId = (id) => document.getElementById(id);

const inpage = {
  wasm: typeof WebAssembly === "object" && typeof WebAssembly.instantiate === "function",
  active: false, ready: false, error: null, info: null, hasPiece: false,
  previews: 0, previewMs: [], renders: [], current: null,
};
window.m2mInpage = inpage;

function say(text) { const el = byId("synthesis-note"); if (el) el.textContent = text; }

// A worker behind promises: call(msg, transfer, onBlock) resolves with its answer.
function startWorker() {
  const worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
  const pending = new Map();
  let next = 1;
  worker.onmessage = ({ data: m }) => {
    const p = pending.get(m.id);
    if (!p) return;
    if (m.type === "block") { p.onBlock(m.audio); return; }
    pending.delete(m.id);
    if (m.ok) p.resolve(m); else p.reject(new Error(m.error));
  };
  worker.onerror = (e) => {
    for (const p of pending.values()) p.reject(new Error(e.message || "the in-page worker failed"));
    pending.clear();
  };
  const call = (msg, transfer = [], onBlock = null) => new Promise((resolve, reject) => {
    const id = next++;
    pending.set(id, { resolve, reject, onBlock });
    worker.postMessage({ ...msg, id }, transfer);
  });
  return { worker, call, stop: () => worker.postMessage({ type: "stop" }) };
}

async function fetchInfo() {
  const resp = await fetch(SITE ? new URL(`${SITE.data}info.json`, location.href) : "/api/info");
  return resp.ok ? resp.json() : {};
}

async function modelsBase() {
  const base = new URL(SITE ? SITE.models : "/onnx/", location.href).href;
  for (let attempt = 0; ; attempt++) {  // the server builds its ONNX files on first use
    const resp = await fetch(`${base}manifest.json`, { method: "HEAD" });
    if (resp.ok) return base;
    if (resp.status !== 503 || attempt > 120) throw new Error(`the in-page models are unavailable (${resp.status})`);
    say("preparing the in-page models…");
    await new Promise((r) => setTimeout(r, 1000 * Number(resp.headers.get("Retry-After") || 1)));
  }
}

function setActive() {
  const sel = byId("synthesis");
  inpage.active = inpage.ready && (!sel || sel.value === "page");
  const threads = inpage.info ? inpage.info.threads : 1;
  say(inpage.active ? `synthesis in the page (onnxruntime-web in 2 workers, ${threads} thread${threads > 1 ? "s" : ""} each)` : "");
}

function disablePage(why) {
  const sel = byId("synthesis");
  if (sel) { sel.value = "server"; sel.querySelector("option[value=page]").disabled = true; }
  say(why);
}

async function init() {
  const sel = byId("synthesis");
  if (SITE && sel) sel.querySelector("option[value=server]").disabled = true;
  if (!inpage.wasm) { disablePage("WebAssembly is missing: synthesis runs on the server"); return; }
  if (sel) sel.addEventListener("change", setActive);
  try {
    const info = await fetchInfo();
    if (!SITE && info.inpage && !info.inpage.available) throw new Error(info.inpage.reason || "not available");
    const base = await modelsBase();
    inpage.previewer = startWorker();
    inpage.renderer = startWorker();
    // onnxruntime-web threads per worker: ?ort-threads=N (default 1, see engine.js)
    const threads = Number(new URLSearchParams(location.search).get("ort-threads")) || null;
    // what both workers need, fetched once: onnxruntime-web's 15 MB of WebAssembly and the
    // acoustic graph
    const bytes = async (u) => { const r = await fetch(u); if (!r.ok) throw new Error(`${u}: ${r.status}`); return r.arrayBuffer(); };
    const manifest = await (await fetch(`${base}manifest.json`)).json();
    const [wasm, acoustic] = await Promise.all([
      bytes(new URL("../vendor/ort/ort-wasm-simd-threaded.wasm", import.meta.url)),
      bytes(new URL(manifest.acoustic.file, base)),
    ]);
    const wasm2 = wasm.slice(0), acoustic2 = acoustic.slice(0), name = manifest.acoustic.file;
    const [a] = await Promise.all([
      inpage.previewer.call({ type: "load", base, acousticOnly: true, threads, wasm: wasm2,
        files: { [name]: acoustic2 } }, [wasm2, acoustic2]),
      inpage.renderer.call({ type: "load", base, acousticOnly: false, threads, wasm,
        files: { [name]: acoustic } }, [wasm, acoustic]),
    ]);
    inpage.info = a;
    inpage.ready = true;
  } catch (err) {
    inpage.error = String(err.message || err);
    disablePage(`in-page synthesis unavailable (${inpage.error}); using the server`);
    return;
  }
  setActive();
}

// The predicted mel of the reference passage at (x, y): {data: Uint8Array[80 x F], bins, frames}.
inpage.preview = async (x, y) => {
  const r = await inpage.previewer.call({ type: "preview", x, y });
  inpage.previews += 1;
  inpage.previewMs.push(r.ms);
  return r;
};

// The server's limits (/api/info, or the static site's info.json), which the page keeps too.
const limits = () => (window.m2m.state.info && window.m2m.state.info.limits) || {};

// Read a MIDI file in the page; returns the summary app.js shows (as POST /api/uploads).
// Rejects with a one-line message (the reader's, or the limit's, worded as the server's) for a
// file that cannot be used.
inpage.upload = async (file) => {
  inpage.hasPiece = false;
  await inpage.loading;
  if (!inpage.ready) throw new Error(`in-page synthesis is unavailable (${inpage.error})`);
  const lim = limits();
  if (lim.max_upload_bytes && file.size > lim.max_upload_bytes) {
    throw new Error(`file too big: ${file.size} bytes, the limit is ${lim.max_upload_bytes}`);
  }
  const buffer = await file.arrayBuffer();
  const r = await inpage.renderer.call({ type: "piece", buffer }, [buffer]);
  if (lim.max_piece_seconds && r.duration > lim.max_piece_seconds) {
    throw new Error(`piece too long: ${Math.round(r.duration)} s, the limit is ${Math.round(lim.max_piece_seconds)} s`);
  }
  inpage.hasPiece = true;
  return { ...r, id: null, ok: undefined, name: file.name };
};

function wavBlob(chunks) {
  const n = chunks.reduce((s, c) => s + c.length, 0), buf = new ArrayBuffer(44 + 2 * n), v = new DataView(buf);
  const text = (o, s) => { for (let i = 0; i < s.length; i++) v.setUint8(o + i, s.charCodeAt(i)); };
  text(0, "RIFF"); v.setUint32(4, 36 + 2 * n, true); text(8, "WAVEfmt "); v.setUint32(16, 16, true);
  v.setUint16(20, 1, true); v.setUint16(22, 1, true); v.setUint32(24, SAMPLE_RATE, true);
  v.setUint32(28, 2 * SAMPLE_RATE, true); v.setUint16(32, 2, true); v.setUint16(34, 16, true);
  text(36, "data"); v.setUint32(40, 2 * n, true);
  let o = 44;
  for (const c of chunks) for (let i = 0; i < c.length; i++, o += 2) v.setInt16(o, c[i], true);
  return new Blob([buf], { type: "audio/wav" });
}

// Whether the page renders ``body`` itself: in-page synthesis is chosen and ready, the piece
// was read in the page too (unless the body asks for the reference passage), and the
// 100-instrument model is there when the body needs it.
inpage.canRender = (body) => inpage.active && (!window.m2m.state.upload || inpage.hasPiece || Boolean(body.reference))
  && (body.space_index == null || inpage.info.space100);

// Render and play (body as for POST /api/render: x, y or space_index; start, end, label; and,
// in the page only, `reference`: the reference passage even when a piece is loaded).
inpage.render = async (body, what, clickAt) => {
  const m2m = window.m2m, player = m2m.player, token = {}, lim = limits(), up = m2m.state.upload;
  if (up && !body.reference && body.space_index == null && lim.max_render_seconds) {  // as the server
    const seconds = Math.min(body.end == null ? up.duration : body.end, up.duration) - (body.start || 0);
    if (seconds > lim.max_render_seconds) {
      window.setStatus(`error: the range is ${Math.round(seconds)} s; renders are limited to ${Math.round(lim.max_render_seconds)} s: choose a shorter range`, true);
      return;
    }
  }
  inpage.current = token;
  inpage.renderer.stop();  // a render still running ends at its next block
  player.stop();
  player.clickAt = clickAt;
  player.ctx = player.ctx || new AudioContext();
  if (player.ctx.state !== "running") await player.ctx.resume();
  player.state = "buffering";
  const msg = { type: "render", reference: Boolean(body.reference) || !m2m.state.upload, start: body.start || 0, end: body.end == null ? null : body.end };
  if (body.space_index != null) {
    msg.space = body.space_index;
    msg.end = msg.start + SPACE_CLIP_SECONDS;
  } else {
    msg.embedding = [body.x, body.y];
  }
  const record = { what, clickAt, firstBlockAt: 0, firstAudioAt: 0, doneAt: 0, seconds: 0, peak: 0, sumSquares: 0 };
  inpage.renders.push(record);
  const pcm = [];
  const onBlock = (a) => {
    if (inpage.current !== token || player.clickAt !== clickAt) {  // stopped or replaced
      if (inpage.current === token) inpage.renderer.stop();
      return;
    }
    const q = new Int16Array(a.length);
    for (let i = 0; i < a.length; i++) {
      q[i] = Math.max(-32768, Math.min(32767, Math.round(a[i] * 32767)));
      record.peak = Math.max(record.peak, Math.abs(a[i]));
      record.sumSquares += a[i] * a[i];
    }
    pcm.push(q);
    player.schedule(q, SAMPLE_RATE);
    if (!record.firstBlockAt) {  // when its first sample sounds
      record.firstBlockAt = performance.now();
      const startsAt = player.nextTime - a.length / SAMPLE_RATE;
      record.firstAudioAt = record.firstBlockAt + Math.max(0, startsAt - player.ctx.currentTime) * 1000;
    }
    record.seconds += a.length / SAMPLE_RATE;
  };
  window.setStatus(`${what} in the page`);
  try {
    await inpage.renderer.call(msg, [], onBlock);
  } catch (err) {
    if (inpage.current === token) window.setStatus(`error: ${err.message || err}`, true);
    return;
  }
  if (inpage.current !== token || player.clickAt !== clickAt) return;
  record.doneAt = performance.now();
  player.done = true;
  if (!player.sources.length) player.state = "finished";
  const link = byId("download");
  link.href = URL.createObjectURL(wavBlob(pcm));
  link.download = `mel2mel_${String(body.label || "render").replace(/[^A-Za-z0-9]+/g, "_").slice(0, 40)}.wav`;
  link.classList.remove("disabled");
};

inpage.loading = init();
