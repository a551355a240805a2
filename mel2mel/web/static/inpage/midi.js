// MIDI -> notes -> piano roll in the page: a port of mel2mel/midi.py (read_notes, piano_roll,
// log_gain) with the same rules, checked against it by tests/inpage/test_inpage_engine.py.
//
// The Standard MIDI File reader is ours (a few dozen lines: header, tracks, running status,
// meta and sysex events), so that the page needs no MIDI library and reads exactly the events
// mido reads. Times are float64 and computed in the same order as numpy does, so frames agree.

export const MIDI_MIN = 21, MIDI_MAX = 108, N_KEYS = 88, ROLL_CHANNELS = 176;
export const FRAME_RATE = 125;
const DRUM_CHANNEL = 9, SUSTAIN_CC = 64, ALL_SOUND_OFF_CC = 120, RESET_CC = 121;
const ALL_NOTES_OFF_CC = 123, VOLUME_CC = 7, EXPRESSION_CC = 11;
const DEFAULT_VOLUME = 100, DEFAULT_EXPRESSION = 127, RELEASE_SECONDS = 0.5;

export class MidiError extends Error {
  constructor(message) { super(message); this.name = "MidiError"; }
}

export function timeToFrame(seconds) { return Math.floor(seconds * FRAME_RATE + 0.5); }

// Python's round(): halves to even (round(62.5) == 62), where Math.round gives 63.
export function roundHalfEven(x) {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

// Parse the bytes of a Standard MIDI File: {type, ticksPerBeat, tracks: [[{tick, order, kind,
// channel, a, b}]]} with kind one of "on", "off", "cc", "program", "tempo", "other".
export function parseMidi(buffer) {
  const d = new Uint8Array(buffer);
  let p = 0;
  const need = (n) => { if (p + n > d.length) throw new MidiError("not a readable MIDI file (truncated)"); };
  const u32 = () => { need(4); const v = ((d[p] << 24) >>> 0) + (d[p + 1] << 16) + (d[p + 2] << 8) + d[p + 3]; p += 4; return v; };
  const u16 = () => { need(2); const v = (d[p] << 8) | d[p + 1]; p += 2; return v; };
  const tag = () => { need(4); const s = String.fromCharCode(...d.subarray(p, p + 4)); p += 4; return s; };
  const vlq = (end) => {
    let v = 0;
    for (let i = 0; i < 4; i++) {
      if (p >= end) throw new MidiError("not a readable MIDI file (truncated event)");
      const c = d[p++];
      v = v * 128 + (c & 0x7f);
      if (!(c & 0x80)) return v;
    }
    throw new MidiError("not a readable MIDI file (bad variable-length number)");
  };
  if (d.length < 4 || tag() !== "MThd") throw new MidiError("not a MIDI file (no MThd header)");
  const hlen = u32(), type = u16(), ntracks = u16(), division = u16();
  p += hlen - 6;
  if (division & 0x8000) throw new MidiError("MIDI file uses SMPTE time division, which is not supported");
  const tracks = [];
  while (tracks.length < ntracks && p + 8 <= d.length) {
    const name = tag(), len = u32(), end = p + len;
    if (name !== "MTrk") { p = end; continue; }
    if (end > d.length) throw new MidiError("not a readable MIDI file (truncated track)");
    const events = [];
    let tick = 0, running = 0, order = 0;
    while (p < end) {
      tick += vlq(end);
      let status = d[p];
      if (status & 0x80) p++; else if (running) status = running;
      else throw new MidiError("not a readable MIDI file (data byte without status)");
      const ev = { tick, order: order++, kind: "other", channel: status & 15, a: 0, b: 0 };
      if (status === 0xff) {
        need(1);
        const metaType = d[p++], mlen = vlq(end);
        if (metaType === 0x51 && mlen >= 3) {
          ev.kind = "tempo";
          ev.a = (d[p] << 16) | (d[p + 1] << 8) | d[p + 2];
        }
        p += mlen;
        if (metaType === 0x2f) { events.push(ev); break; }
      } else if (status === 0xf0 || status === 0xf7) {
        p += vlq(end);
      } else if (status >= 0xf0) {
        throw new MidiError(`not a readable MIDI file (unexpected status 0x${status.toString(16)})`);
      } else {
        running = status;
        const hi = status & 0xf0, nbytes = hi === 0xc0 || hi === 0xd0 ? 1 : 2;
        if (p + nbytes > end) throw new MidiError("not a readable MIDI file (truncated event)");
        ev.a = d[p]; ev.b = nbytes === 2 ? d[p + 1] : 0;
        if (ev.a > 127 || ev.b > 127) throw new MidiError("not a readable MIDI file (data byte over 127)");
        p += nbytes;
        ev.kind = { 0x80: "off", 0x90: "on", 0xb0: "cc", 0xc0: "program" }[hi] || "other";
      }
      events.push(ev);
    }
    p = end;
    tracks.push(events);
  }
  return { type, ticksPerBeat: division, tracks };
}

function tempoMap(midi) {
  const changes = new Map([[0, 500000]]);
  for (const track of midi.tracks) {
    for (const ev of track) {
      if (ev.kind !== "tempo") continue;
      if (ev.a <= 0) throw new MidiError(`tempo of 0 microseconds per beat at tick ${ev.tick}`);
      changes.set(ev.tick, ev.a);
    }
  }
  const ticks = [...changes.keys()].sort((x, y) => x - y);
  const spt = ticks.map((t) => (changes.get(t) * 1e-6) / midi.ticksPerBeat);
  const secs = [0];
  for (let i = 1; i < ticks.length; i++) secs.push(secs[i - 1] + (ticks[i] - ticks[i - 1]) * spt[i - 1]);
  const at = (tick) => {
    let lo = 0, hi = ticks.length;  // searchsorted(ticks, tick, "right") - 1
    while (lo < hi) { const m = (lo + hi) >> 1; if (ticks[m] <= tick) lo = m + 1; else hi = m; }
    const k = lo - 1;
    return secs[k] + (tick - ticks[k]) * spt[k];
  };
  return at;
}

// mel2mel.midi.read_notes: {notes: [{pitch, start, end, velocity, channel, track, program}],
// duration, droppedOutOfRange, droppedDrums, volume: Map(channel -> [[time, gain]])}.
export function readNotes(buffer) {
  const midi = buffer.tracks ? buffer : parseMidi(buffer);
  if (midi.type === 2) throw new MidiError("type-2 MIDI files (independent sequences) are not supported");
  const at = tempoMap(midi);
  const events = [];
  let lastTick = 0;
  midi.tracks.forEach((track, ti) => {
    for (const ev of track) if (ev.kind === "on" || ev.kind === "off" || ev.kind === "cc" || ev.kind === "program") events.push([ti, ev]);
    lastTick = Math.max(lastTick, track.length ? track[track.length - 1].tick : 0);
  });
  events.sort((x, y) => x[1].tick - y[1].tick || x[0] - y[0] || x[1].order - y[1].order);
  const notes = [], active = new Map(), held = new Map(), pedal = new Map(), program = new Map();
  const cc7 = new Map(), cc11 = new Map(), volume = new Map();
  let droppedRange = 0, droppedDrums = 0, endTime = at(lastTick);
  const setGain = (ch, t) => {
    const v = cc7.has(ch) ? cc7.get(ch) : DEFAULT_VOLUME, e = cc11.has(ch) ? cc11.get(ch) : DEFAULT_EXPRESSION;
    const gain = ((v / DEFAULT_VOLUME) * e / DEFAULT_EXPRESSION) ** 2;
    if (!volume.has(ch)) volume.set(ch, [[0, 1]]);
    const pts = volume.get(ch);
    if (pts[pts.length - 1][0] === t) pts.pop();
    pts.push([t, gain]);
  };
  const close = (ch, key, t) => {
    const k = ch * 128 + key, [start, vel, trk, prog] = active.get(k);
    active.delete(k);
    if (held.has(ch)) held.get(ch).delete(key);
    notes.push({ pitch: key, start, end: t, velocity: vel, channel: ch, track: trk, program: prog });
  };
  const releasePedal = (ch, t) => {
    for (const key of [...(held.get(ch) || [])].sort((x, y) => x - y)) close(ch, key, t);
  };
  for (const [trk, ev] of events) {
    const t = at(ev.tick), ch = ev.channel;
    endTime = Math.max(endTime, t);
    if (ev.kind === "program") program.set(ch, ev.a);
    else if (ev.kind === "cc") {
      if (ev.a === SUSTAIN_CC) {
        const down = ev.b >= 64;
        if (pedal.get(ch) && !down) releasePedal(ch, t);
        pedal.set(ch, down);
      } else if (ev.a === ALL_SOUND_OFF_CC || ev.a === ALL_NOTES_OFF_CC) {
        for (const k of [...active.keys()]) if (Math.floor(k / 128) === ch) close(ch, k % 128, t);
      } else if (ev.a === VOLUME_CC || ev.a === EXPRESSION_CC) {
        (ev.a === VOLUME_CC ? cc7 : cc11).set(ch, ev.b);
        setGain(ch, t);
      } else if (ev.a === RESET_CC) {
        if (cc11.has(ch)) { cc11.set(ch, DEFAULT_EXPRESSION); setGain(ch, t); }
        if (pedal.get(ch)) releasePedal(ch, t);
        pedal.set(ch, false);
      }
    } else if (ev.kind === "on" && ev.b > 0) {
      if (ch === DRUM_CHANNEL) { droppedDrums++; continue; }
      if (ev.a < MIDI_MIN || ev.a > MIDI_MAX) { droppedRange++; continue; }
      if (active.has(ch * 128 + ev.a)) close(ch, ev.a, t);
      active.set(ch * 128 + ev.a, [t, ev.b, trk, program.has(ch) ? program.get(ch) : 0]);
    } else {
      if (!active.has(ch * 128 + ev.a)) continue;
      if (pedal.get(ch)) { if (!held.has(ch)) held.set(ch, new Set()); held.get(ch).add(ev.a); }
      else close(ch, ev.a, t);
    }
  }
  for (const k of [...active.keys()]) close(Math.floor(k / 128), k % 128, endTime);
  notes.sort((x, y) => x.start - y.start || x.pitch - y.pitch);
  if (!notes.length) {
    throw new MidiError(`MIDI file has ${droppedDrums ? "only drum notes" : "no playable notes"} in the piano range A0..C8`);
  }
  const channels = new Set(notes.map((n) => n.channel));
  for (const [ch, pts] of [...volume]) if (!channels.has(ch) || pts.every(([, g]) => g === 1)) volume.delete(ch);
  return {
    notes, duration: notes.reduce((m, n) => Math.max(m, n.end), -Infinity), droppedOutOfRange: droppedRange,
    droppedDrums, volume, numFrames() { return timeToFrame(this.duration) + 1; },
  };
}

// mel2mel.synthesis.notes.NoteRoll: any window of the roll without building it whole.
export class NoteRoll {
  constructor(notes, numFrames) {
    const ordered = [...notes].sort((x, y) => x.start - y.start);
    this.numFrames = numFrames;
    this.items = [];
    for (const n of ordered) {
      const on = timeToFrame(n.start);
      if (on >= numFrames) continue;
      const off = Math.min(Math.max(timeToFrame(n.end), on + 1), numFrames);
      this.items.push([on, off, n.pitch - MIDI_MIN, Math.fround(n.velocity / 127)]);
    }
    this.longest = this.items.reduce((m, [on, off]) => Math.max(m, off - on), 0);
  }

  // Frames lo .. hi-1 as Float32Array[176 * (hi - lo)], channel-major.
  window(lo, hi) {
    const w = hi - lo, roll = new Float32Array(ROLL_CHANNELS * w), items = this.items;
    let i = 0, j = items.length;  // the first note that can reach lo: on >= lo - longest
    while (i < j) { const m = (i + j) >> 1; if (items[m][0] < lo - this.longest) i = m + 1; else j = m; }
    for (; i < items.length; i++) {
      const [on, off, k, v] = items[i];
      if (on >= hi) break;
      if (off <= lo) continue;
      for (let f = Math.max(on, lo); f < Math.min(off, hi); f++) roll[k * w + f - lo] = v;
      if (on >= lo) roll[(N_KEYS + k) * w + on - lo] = v;
    }
    return roll;
  }
}

// mel2mel.midi.log_gain: Float32Array[numFrames] of the CC7/CC11 gain, or null.
export function logGain(notes, volume, numFrames) {
  const chans = [...new Set(notes.map((n) => n.channel))].filter((c) => volume.has(c)).sort((x, y) => x - y);
  if (!chans.length) return null;
  const rows = chans.length + 1, weights = new Float64Array(rows * numFrames);
  const release = roundHalfEven(RELEASE_SECONDS * FRAME_RATE);
  for (const n of notes) {
    const i = chans.indexOf(n.channel), row = i < 0 ? chans.length : i;
    const on = Math.min(timeToFrame(n.start), numFrames);
    const off = Math.min(Math.max(timeToFrame(n.end), on + 1) + release, numFrames);
    const w = (n.velocity / 127.0) ** 4;
    for (let f = on; f < off; f++) weights[row * numFrames + f] += w;
  }
  const power = new Float64Array(rows * numFrames).fill(1);
  chans.forEach((ch, i) => {
    const pts = volume.get(ch);
    let k = 0;
    for (let f = 0; f < numFrames; f++) {
      const t = f / FRAME_RATE;
      while (k + 1 < pts.length && pts[k + 1][0] <= t) k++;
      const idx = pts[0][0] <= t ? k : 0;
      power[i * numFrames + f] = pts[idx][1] ** 2;
    }
  });
  let mean0 = 0;
  for (let r = 0; r < rows; r++) mean0 += power[r * numFrames];
  mean0 /= rows;
  const out = new Float32Array(numFrames);
  let last = -1, lastMean = 0;
  for (let f = 0; f < numFrames; f++) {
    let total = 0, acc = 0;
    for (let r = 0; r < rows; r++) { total += weights[r * numFrames + f]; acc += weights[r * numFrames + f] * power[r * numFrames + f]; }
    if (total > 0) { last = f; lastMean = acc / total; }
    const mean = last >= 0 ? lastMean : mean0;
    out[f] = 0.5 * Math.log(Math.max(mean, 1e-12));
  }
  return out;
}
