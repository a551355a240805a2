// mel2mel web page: upload, piano roll, timbre map with mel previews, the 3-D space, and a
// streaming player (16-bit PCM fetched progressively and scheduled in an AudioContext).
"use strict";

const state = {
  info: null, map: null, space: null, upload: null, mapColor: "centroid",
  spaceColor: "centroid", point: null, jobId: null, previewKey: "",
};
// Exposed for the browser tests and the first-audio benchmark.
window.m2m = { state, player: null, previews: 0, errors: [] };

function setStatus(text, error = false) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", error);
  if (error) window.m2m.errors.push(text);
}

// ---- colour maps -------------------------------------------------------------------------
const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
const MAGMA = [[0, 0, 4], [81, 18, 124], [183, 55, 121], [252, 137, 97], [252, 253, 191]];
function colormap(stops, t) {
  t = Math.min(1, Math.max(0, t)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(t)), f = t - i;
  return stops[i].map((c, k) => Math.round(c + (stops[i + 1][k] - c) * f));
}

// ---- streaming player --------------------------------------------------------------------
class StreamPlayer {
  constructor() { this.ctx = null; this.reset(); }
  reset() {
    this.state = "idle"; this.sources = []; this.nextTime = 0; this.samples = 0;
    this.clickAt = 0; this.firstScheduledAt = 0; this.firstAudioAt = 0; this.done = false;
  }
  stop() {
    if (this.abort) this.abort.abort();
    for (const s of this.sources) { try { s.stop(); } catch (e) { /* not started */ } }
    this.reset();
  }
  async play(jobId, clickAt, sampleRate) {
    this.stop();
    this.clickAt = clickAt;
    this.ctx = this.ctx || new AudioContext();
    if (this.ctx.state !== "running") await this.ctx.resume();
    this.state = "buffering";
    const abort = new AbortController();
    this.abort = abort;
    const resp = await api(`/api/jobs/${jobId}/audio.pcm`, { signal: abort.signal });
    const reader = resp.body.getReader();
    let carry = new Uint8Array(0);
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      const bytes = new Uint8Array(carry.length + value.length);
      bytes.set(carry); bytes.set(value, carry.length);
      const even = bytes.length - (bytes.length % 2);
      carry = bytes.slice(even);
      if (even) this.schedule(new Int16Array(bytes.slice(0, even).buffer), sampleRate);
    }
    this.done = true;
    if (this.abort === abort) this.abort = null;
  }
  schedule(pcm, sampleRate) {
    const ctx = this.ctx, n = pcm.length;
    const buf = ctx.createBuffer(1, n, sampleRate);
    const data = buf.getChannelData(0);
    for (let i = 0; i < n; i++) data[i] = pcm[i] / 32768;
    const src = ctx.createBufferSource();
    src.buffer = buf;
    src.connect(ctx.destination);
    const late = this.nextTime < ctx.currentTime + 0.02;
    const t = late ? ctx.currentTime + 0.03 : this.nextTime;
    src.start(t);
    this.nextTime = t + n / sampleRate;
    this.sources.push(src);
    this.samples += n;
    src.onended = () => {
      this.sources = this.sources.filter((s) => s !== src);
      if (this.done && !this.sources.length) { this.state = "finished"; onPlayerFinished(); }
    };
    if (!this.firstScheduledAt) {
      this.firstScheduledAt = performance.now();
      const wait = Math.max(0, (t - ctx.currentTime) * 1000);
      setTimeout(() => {
        this.firstAudioAt = performance.now();
        this.state = "playing";
        setStatus(`${$("status").textContent.split(" | ")[0]} | playing (first audio after ` +
          `${Math.round(this.firstAudioAt - this.clickAt)} ms)`);
      }, wait);
    } else if (late && this.state === "playing") {
      this.underruns = (this.underruns || 0) + 1;
    }
  }
}
const player = new StreamPlayer();
window.m2m.player = player;

function onPlayerFinished() { setStatus(`${$("status").textContent.split(" | ")[0]} | finished`); }

async function startRender(body, what) {
  const clickAt = performance.now();
  player.stop();
  if (state.jobId) {  // free its worker before asking for another render
    await fetch(`/api/jobs/${state.jobId}`, { method: "DELETE" }).catch(() => {});
  }
  $("download").classList.add("disabled");
  if (window.m2mInpage && window.m2mInpage.canRender(body)) {  // static/inpage/ui.js
    state.jobId = null;
    return window.m2mInpage.render(body, what, clickAt);
  }
  body.vocoder = $("vocoder").value;
  if (state.upload) body.upload_id = state.upload.id;
  setStatus(`rendering ${what}…`);
  let job;
  for (let attempt = 0; ; attempt++) {
    try {
      const resp = await api("/api/render", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      job = await resp.json();
      break;
    } catch (err) {
      if (err.status === 503 && attempt < 5) {
        setStatus(`server busy, retrying in ${err.retryAfter || 2} s…`);
        await new Promise((r) => setTimeout(r, 1000 * (err.retryAfter || 2)));
        continue;
      }
      setStatus(`error: ${err.message}`, true);
      return;
    }
  }
  state.jobId = job.id;
  setStatus(`${what} with ${job.vocoder} (${job.seconds_total.toFixed(1)} s)`);
  try {
    await player.play(job.id, clickAt, job.sample_rate);
  } catch (err) {
    if (err.name !== "AbortError") setStatus(`error: ${err.message}`, true);
    return;
  }
  if (state.jobId !== job.id) return;
  const final = await (await api(`/api/jobs/${job.id}`)).json();
  if (final.state === "done") {
    const link = $("download");
    link.href = `/api/jobs/${job.id}/audio.wav`;
    link.classList.remove("disabled");
  } else if (final.state === "failed") {
    setStatus(`error: ${final.error}`, true);
  }
}

// ---- upload and piano roll ---------------------------------------------------------------
async function uploadFile(file) {
  setStatus(`uploading ${file.name}…`);
  const inpage = window.m2mInpage;  // static/inpage/ui.js: also read in the page
  try {
    if (window.M2M_SITE) {
      state.upload = await inpage.upload(file);
    } else {
      const resp = await api(`/api/uploads?name=${encodeURIComponent(file.name)}`, {
        method: "POST", body: file, headers: { "Content-Type": "audio/midi" },
      });
      state.upload = await resp.json();
      if (inpage && inpage.ready) await inpage.upload(file).catch(() => {});
    }
  } catch (err) {
    setStatus(`error: ${err.message}`, true);
    return;
  }
  const u = state.upload;
  let text = `${u.name}: ${u.duration.toFixed(1)} s, ${u.num_notes} notes`;
  if (u.dropped_drums) text += `, ${u.dropped_drums} drum notes left out`;
  if (u.dropped_out_of_range) text += `, ${u.dropped_out_of_range} notes outside A0..C8 left out`;
  if (u.notes_shown < u.num_notes) text += ` (first ${u.notes_shown} shown)`;
  $("piece-info").textContent = text;
  $("start").value = 0;
  $("end").value = (u.duration + 1).toFixed(1);
  drawRoll();
  setStatus("ready: click the timbre map to play the piece");
}

function drawRoll() {
  const cv = $("roll"), g = cv.getContext("2d");
  g.fillStyle = "#11161c";
  g.fillRect(0, 0, cv.width, cv.height);
  const u = state.upload;
  if (!u) return;
  const span = u.duration + 1, W = cv.width, H = cv.height;
  const n = u.notes, lo = 21, hi = 108, rowH = H / (hi - lo + 1);
  for (let i = 0; i < n.pitch.length; i++) {
    const v = n.velocity[i] / 127;
    g.fillStyle = `rgba(${Math.round(120 + 135 * v)}, ${Math.round(200 * v)}, 90, 0.9)`;
    const x = (n.start[i] / span) * W, w = Math.max(1, ((n.end[i] - n.start[i]) / span) * W);
    g.fillRect(x, H - (n.pitch[i] - lo + 1) * rowH, w, Math.max(1, rowH));
  }
  const a = Number($("start").value) || 0, b = Number($("end").value) || span;
  g.fillStyle = "rgba(80, 140, 255, 0.22)";
  g.fillRect((a / span) * W, 0, ((b - a) / span) * W, H);
}

function setupRollSelection() {
  const cv = $("roll");
  let from = null;
  const time = (e) => {
    const r = cv.getBoundingClientRect();
    return Math.max(0, ((e.clientX - r.left) / r.width) * (state.upload.duration + 1));
  };
  cv.addEventListener("mousedown", (e) => { if (state.upload) from = time(e); });
  window.addEventListener("mousemove", (e) => {
    if (from === null) return;
    const t = time(e);
    $("start").value = Math.min(from, t).toFixed(2);
    $("end").value = Math.max(from, t).toFixed(2);
    drawRoll();
  });
  window.addEventListener("mouseup", () => { from = null; });
  for (const id of ["start", "end"]) $(id).addEventListener("change", drawRoll);
}

function setupDrop() {
  const drop = $("drop");
  $("file").addEventListener("change", (e) => { if (e.target.files[0]) uploadFile(e.target.files[0]); });
  for (const name of ["dragenter", "dragover"]) {
    document.addEventListener(name, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const name of ["dragleave", "drop"]) {
    document.addEventListener(name, () => drop.classList.remove("over"));
  }
  document.addEventListener("drop", (e) => {
    e.preventDefault();
    const file = e.dataTransfer && e.dataTransfer.files[0];
    if (file) uploadFile(file);
  });
}

// ---- the 2-D timbre map ------------------------------------------------------------------
const MAP_PAD = 8;
function mapGeometry() {
  const m = state.map, cv = $("map");
  const x0 = m.xs[0], x1 = m.xs[m.xs.length - 1], y0 = m.ys[0], y1 = m.ys[m.ys.length - 1];
  const size = cv.width - 2 * MAP_PAD;
  return {
    toPx: (x, y) => [MAP_PAD + ((x - x0) / (x1 - x0)) * size, MAP_PAD + ((y1 - y) / (y1 - y0)) * size],
    toXY: (px, py) => [x0 + ((px - MAP_PAD) / size) * (x1 - x0), y1 - ((py - MAP_PAD) / size) * (y1 - y0)],
  };
}

function drawMap() {
  const m = state.map, cv = $("map"), g = cv.getContext("2d");
  if (!m) return;
  const grid = state.mapColor === "centroid" ? m.centroid_hz : m.energy_db;
  const flat = grid.flat(), lo = Math.min(...flat), hi = Math.max(...flat);
  const nx = m.xs.length, ny = m.ys.length;
  const off = document.createElement("canvas");
  off.width = nx; off.height = ny;
  const img = off.getContext("2d").createImageData(nx, ny);
  for (let j = 0; j < ny; j++) {
    for (let i = 0; i < nx; i++) {
      const [r, gg, b] = colormap(VIRIDIS, (grid[j][i] - lo) / (hi - lo || 1));
      const k = ((ny - 1 - j) * nx + i) * 4;  // row 0 of the image is the top (largest y)
      img.data.set([r, gg, b, 255], k);
    }
  }
  off.getContext("2d").putImageData(img, 0, 0);
  g.clearRect(0, 0, cv.width, cv.height);
  g.imageSmoothingEnabled = true;
  g.drawImage(off, MAP_PAD, MAP_PAD, cv.width - 2 * MAP_PAD, cv.height - 2 * MAP_PAD);
  const unit = state.mapColor === "centroid" ? "Hz" : "dB";
  $("map-legend").textContent = `dark ${lo.toFixed(0)} ${unit} … bright ${hi.toFixed(0)} ${unit}`;
  const geo = mapGeometry();
  g.font = "13px system-ui, sans-serif";
  const marker = (x, y, label, shape) => {
    const [px, py] = geo.toPx(x, y);
    g.beginPath();
    if (shape === "diamond") {
      g.moveTo(px, py - 7); g.lineTo(px + 7, py); g.lineTo(px, py + 7); g.lineTo(px - 7, py);
      g.closePath();
    } else {
      g.arc(px, py, 6, 0, 2 * Math.PI);
    }
    g.fillStyle = shape === "diamond" ? "#ff8c1a" : "#fff";
    g.strokeStyle = "#000";
    g.lineWidth = 1.5;
    g.fill(); g.stroke();
    g.lineWidth = 3; g.strokeStyle = "rgba(0,0,0,0.7)"; g.fillStyle = "#fff";
    g.strokeText(label, px + 9, py + 4); g.fillText(label, px + 9, py + 4);
  };
  for (const inst of m.instruments) marker(inst.x, inst.y, inst.name, "circle");
  for (const t of m.user_timbres) marker(t.x, t.y, t.name, "diamond");
  if (state.point) {
    const [px, py] = geo.toPx(...state.point);
    g.strokeStyle = "#ff2d55"; g.lineWidth = 2;
    g.beginPath(); g.arc(px, py, 10, 0, 2 * Math.PI); g.stroke();
  }
}

function nearestMarker(x, y, px, py) {
  const geo = mapGeometry();
  const all = [...state.map.instruments, ...state.map.user_timbres];
  for (const t of all) {
    const [mx, my] = geo.toPx(t.x, t.y);
    if (Math.hypot(mx - px, my - py) <= 9) return t;
  }
  return null;
}

function eventPoint(e) {
  const cv = $("map"), r = cv.getBoundingClientRect();
  const px = ((e.clientX - r.left) / r.width) * cv.width;
  const py = ((e.clientY - r.top) / r.height) * cv.height;
  const [x, y] = mapGeometry().toXY(px, py);
  return { x, y, px, py };
}

let previewBusy = false, previewNext = null;
async function requestPreview(x, y) {
  if (previewBusy) { previewNext = [x, y]; return; }
  previewBusy = true;
  try {
    if (window.m2mInpage && window.m2mInpage.active) {  // computed in the page
      const p = await window.m2mInpage.preview(x, y);
      drawPreview(p.data, p.bins, p.frames);
    } else {
      const resp = await api(`/api/preview?x=${x.toFixed(3)}&y=${y.toFixed(3)}`);
      const bins = Number(resp.headers.get("X-Mel-Bins")), frames = Number(resp.headers.get("X-Mel-Frames"));
      drawPreview(new Uint8Array(await resp.arrayBuffer()), bins, frames);
    }
    $("preview-at").textContent = `(${x.toFixed(2)}, ${y.toFixed(2)})`;
    state.previewKey = `${x.toFixed(3)},${y.toFixed(3)}`;
    window.m2m.previews += 1;
  } catch (err) {
    $("preview-at").textContent = `unavailable: ${err.message}`;
  } finally {
    previewBusy = false;
    if (previewNext) { const p = previewNext; previewNext = null; requestPreview(...p); }
  }
}

function drawPreview(data, bins, frames) {
  const cv = $("preview"), off = document.createElement("canvas");
  off.width = frames; off.height = bins;
  const octx = off.getContext("2d"), img = octx.createImageData(frames, bins);
  for (let b = 0; b < bins; b++) {
    for (let f = 0; f < frames; f++) {
      const [r, g, bl] = colormap(MAGMA, data[b * frames + f] / 255);
      img.data.set([r, g, bl, 255], ((bins - 1 - b) * frames + f) * 4);
    }
  }
  octx.putImageData(img, 0, 0);
  const g = cv.getContext("2d");
  g.imageSmoothingEnabled = false;
  g.drawImage(off, 0, 0, cv.width, cv.height);
}

function setupMap() {
  const cv = $("map");
  cv.addEventListener("mousemove", (e) => {
    if (!state.map) return;
    const p = eventPoint(e);
    requestPreview(p.x, p.y);
  });
  cv.addEventListener("click", (e) => {
    if (!state.map) return;
    const p = eventPoint(e);
    const hit = nearestMarker(p.x, p.y, p.px, p.py);
    const [x, y] = hit ? [hit.x, hit.y] : [p.x, p.y];
    state.point = [x, y];
    drawMap();
    const label = hit ? hit.name : `(${x.toFixed(2)}, ${y.toFixed(2)})`;
    const body = { x, y, label };
    if (state.upload) {
      body.start = Number($("start").value) || 0;
      const end = Number($("end").value);
      if (end > body.start) body.end = end;
    }
    startRender(body, state.upload ? `${state.upload.name} at ${label}` : `reference at ${label}`);
  });
  for (const r of document.querySelectorAll("input[name=mapcolor]")) {
    r.addEventListener("change", () => { state.mapColor = r.value; drawMap(); });
  }
}

async function loadMap() {
  for (;;) {
    try {
      state.map = await (await api("/api/map")).json();
      drawMap();
      setStatus(state.upload ? "ready" : "ready: upload a MIDI file, or click the map to hear the reference passage");
      return;
    } catch (err) {
      if (err.status !== 503) { setStatus(`error: ${err.message}`, true); return; }
      setStatus("computing the timbre map…");
      await new Promise((r) => setTimeout(r, 1000 * (err.retryAfter || 2)));
    }
  }
}

// ---- the 3-D space of 100 instruments ----------------------------------------------------
// 16 General MIDI families (programs 0-7, 8-15, ...), one colour each
const FAMILY_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
  "#bcbd22", "#17becf", "#393b79", "#ad494a", "#637939", "#843c39", "#7b4173", "#3182bd"];

function spaceTrace(inst, indices, marker, name) {
  return {
    type: "scatter3d", mode: "markers", name, customdata: indices,
    x: indices.map((k) => inst[k].position[0]), y: indices.map((k) => inst[k].position[1]),
    z: indices.map((k) => inst[k].position[2]),
    text: indices.map((k) => `${inst[k].name}${inst[k].family ? ` · ${inst[k].family}` : ""}`),
    hovertemplate: "%{text}<extra></extra>", marker,
  };
}

function drawSpace() {
  const s = state.space;
  if (!s || !s.available || !window.Plotly) return;
  const inst = s.instruments, all = inst.map((_, k) => k);
  let traces;
  if (state.spaceColor === "family") {  // one trace per family: plotly's legend names them
    const families = s.families || [];
    traces = families.map((name, f) => {
      const members = all.filter((k) => inst[k].family === name);
      return members.length ? spaceTrace(inst, members, { size: 6, color: FAMILY_COLORS[f % 16] }, name) : null;
    }).filter(Boolean);
  } else {
    const key = state.spaceColor === "centroid" ? "color_centroid" : "color_energy";
    const value = state.spaceColor === "centroid" ? "centroid_hz" : "energy_db";
    const colors = inst.map((i) => i[key] || null);
    const marker = colors.every((c) => c)
      ? { size: 6, color: colors }
      : { size: 6, color: inst.map((i) => i[value]), colorscale: "Viridis" };
    traces = [spaceTrace(inst, all, marker, "instruments")];
  }
  const layout = {
    margin: { l: 0, r: 0, t: 0, b: 0 }, showlegend: state.spaceColor === "family",
    legend: { itemclick: "toggle", font: { size: 11 } }, uirevision: "space",
    scene: { dragmode: "turntable", xaxis: { title: "" }, yaxis: { title: "" }, zaxis: { title: "" } },
  };
  const div = $("space");
  Plotly.react(div, traces, layout, { displaylogo: false, responsive: true });
  if (!div.dataset.bound) {
    div.dataset.bound = "1";
    const index = (ev) => (ev.points.length ? ev.points[0].customdata : null);
    div.on("plotly_click", (ev) => { const k = index(ev); if (k !== null) playSpace(k); });
    div.on("plotly_hover", (ev) => { window.m2m.spaceHover = index(ev); });
    div.on("plotly_unhover", () => { window.m2m.spaceHover = null; });
    div.on("plotly_relayout", () => { window.m2m.spaceMoves = (window.m2m.spaceMoves || 0) + 1; });
  }
}

// The static site's SoundFont samples are clips of the reference passage rendered at export
// (`mel2mel export site`): no FluidSynth renders the upload there.
const siteClips = () => Boolean(window.M2M_SITE && state.space.soundfont_samples && state.space.soundfont_reference_only);

// The model plays dot `index`: the upload's segment (if any), or the reference passage
// (always, with `reference`: the passage of the static site's SoundFont clips).
function playSpace(index, reference = false) {
  const inst = state.space.instruments[index];
  const body = { space_index: index, label: inst.name };
  if (reference) body.reference = true;
  else if (state.upload) body.start = Number($("start").value) || 0;
  state.spaceIndex = index;
  $("space-compare").hidden = false;
  $("space-compare-label").textContent = `${inst.name}${inst.soundfont ? ` (${inst.soundfont})` : ""}:`;
  $("space-sample-msg").textContent = "";
  if (siteClips()) {
    $("space-soundfont").disabled = !inst.sample_soundfont;
    if (!inst.sample_soundfont) $("space-sample-msg").textContent = "no SoundFont sample of this instrument (its SoundFont was missing at export)";
  }
  startRender(body, `${inst.name} (100-instrument model${reference ? ", reference passage" : ""})`);
}

// The static site's clip of the dot's SoundFont playing the reference passage.
async function playSiteClip(index) {
  const inst = state.space.instruments[index], msg = $("space-sample-msg"), audio = $("space-sample");
  if (!inst.sample_soundfont) return;
  if (audio.src.startsWith("blob:")) URL.revokeObjectURL(audio.src);
  audio.src = `${window.M2M_SITE.data}${inst.sample_soundfont}`;
  try {
    await audio.play();
    msg.textContent = "playing the SoundFont on the reference passage (rendered with FluidSynth at export)";
    window.m2m.soundfontPlays = (window.m2m.soundfontPlays || 0) + 1;
  } catch (err) {
    msg.textContent = `SoundFont sample unavailable: ${err.message}`;
  }
}

// The SoundFont behind the dot, played by FluidSynth on the server: the same passage or
// segment as the model's clip, so the two can be compared.
async function playSoundFont() {
  const index = state.spaceIndex, msg = $("space-sample-msg");
  if (index === undefined) return;
  if (siteClips()) { await playSiteClip(index); return; }
  const params = new URLSearchParams();
  if (state.upload) { params.set("upload_id", state.upload.id); params.set("start", String(Number($("start").value) || 0)); }
  msg.textContent = "rendering with FluidSynth…";
  try {
    const blob = await (await api(`/api/space/${index}/soundfont.wav?${params}`)).blob();
    const audio = $("space-sample");
    if (audio.src) URL.revokeObjectURL(audio.src);
    audio.src = URL.createObjectURL(blob);
    await audio.play();
    msg.textContent = `playing the SoundFont (${(blob.size / 32000).toFixed(1)} s)`;
    window.m2m.soundfontPlays = (window.m2m.soundfontPlays || 0) + 1;
  } catch (err) {
    msg.textContent = `SoundFont sample unavailable: ${err.message}`;
  }
}

async function loadSpace() {
  try {
    state.space = await (await api("/api/space")).json();
  } catch (err) {
    $("space-msg").textContent = `unavailable: ${err.message}`;
    return;
  }
  const s = state.space;
  if (!s.available) {
    $("space-msg").textContent = `Not available: ${s.reason}. The rest of the page works without it.`;
    $("space").style.display = "none";
    return;
  }
  if (!window.Plotly) {
    $("space-msg").textContent = "plotly.js is missing (pip install 'mel2mel[web]'); use the list.";
  } else {
    $("space-msg").textContent = "Drag to rotate, scroll to zoom, click a dot to hear that instrument.";
  }
  const sel = $("space-select");
  sel.add(new Option("an instrument…", ""));
  s.instruments.forEach((i, k) => sel.add(new Option(i.name, String(k))));
  sel.addEventListener("change", () => { if (sel.value !== "") playSpace(Number(sel.value)); });
  for (const r of document.querySelectorAll("input[name=spacecolor]")) {
    r.addEventListener("change", () => { state.spaceColor = r.value; drawSpace(); });
  }
  $("space-model").addEventListener("click", () => { if (state.spaceIndex !== undefined) playSpace(state.spaceIndex); });
  if (s.soundfont_samples) {
    $("space-soundfont").addEventListener("click", playSoundFont);
    if (siteClips()) {  // the reference passage only: say so, and offer the model on it too
      $("space-soundfont").textContent = "SoundFont sample (reference passage)";
      $("space-soundfont").title = "The SoundFont behind this dot playing the reference passage, "
        + "rendered with FluidSynth when the site was exported: a static site cannot render your piece with FluidSynth.";
      const ref = $("space-model-reference");
      ref.hidden = false;
      ref.title = "The 100-instrument model playing the same reference passage, for a fair comparison.";
      ref.addEventListener("click", () => { if (state.spaceIndex !== undefined) playSpace(state.spaceIndex, true); });
    }
  } else {
    $("space-soundfont").disabled = true;
    $("space-sample-msg").textContent = window.M2M_SITE
      ? "SoundFont samples need mel2mel serve (a static site has no FluidSynth)."
      : "SoundFont samples need FluidSynth on the server (apt install fluidsynth).";
  }
  drawSpace();
}

// ---- start -------------------------------------------------------------------------------
async function main() {
  setupDrop();
  setupRollSelection();
  setupMap();
  $("stop").addEventListener("click", () => {
    if (state.jobId) fetch(`/api/jobs/${state.jobId}`, { method: "DELETE" }).catch(() => {});
    player.stop();
    setStatus("stopped");
  });
  try {
    state.info = await (await api("/api/info")).json();
  } catch (err) {
    setStatus(`error: ${err.message}`, true);
    return;
  }
  const labels = { fast: "fast (neural)", wavenet: "WaveNet (slow)", griffinlim: "Griffin-Lim" };
  for (const v of state.info.vocoders) $("vocoder").add(new Option(labels[v] || v, v));
  $("vocoder").value = state.info.default_vocoder;
  drawRoll();
  await Promise.all([loadMap(), loadSpace()]);
  window.m2m.ready = true;
}
main();
