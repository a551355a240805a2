// Note contrast, drawn into the acoustic model's mel: mel2mel.models.contrast
// (NoteContrast.apply), written again for the page and checked against it in tests/inpage.
// ``contrast`` is the manifest's: {anticipation, reach, alone, held, roles, partials: [[key,
// group, bin]], instruments: [{embedding, table, strength?}]}.
const LOG_FLOOR = Math.log(1e-5), N_KEYS = 88, N_MELS = 80, NONE = -1e6;

// The correction of every role at ``embedding``: Shepard's blend of each instrument's table at
// its strength (mel2mel.models.blend), and a last entry 0 for the bins of no role.
export function contrastAt(contrast, embedding) {
  const out = new Float64Array(contrast.roles + 1);
  let sw = 0;
  for (const r of contrast.instruments) {
    let d = 0;
    for (let i = 0; i < embedding.length; i++) d += (embedding[i] - r.embedding[i]) ** 2;
    const w = 1 / (d + 1e-12), s = r.strength ?? 1;
    sw += w;
    for (let k = 0; k < contrast.roles; k++) out[k] += w * s * r.table[k];
  }
  for (let k = 0; k < contrast.roles; k++) out[k] /= sw;
  return out;
}

// For each frame, its offset from the nearest onset within -anticipation..reach frames (the
// earlier one on a tie), or NONE: contrast.py strike_offsets for one row of onsets.
function strikeOffsets(isOnset, t, anticipation, reach) {
  const order = [0];
  for (let d = 1; d <= reach; d++) order.push(...(d <= anticipation ? [d, -d] : [d]));
  const out = new Float64Array(t).fill(NONE);
  for (let f = 0; f < t; f++) {
    for (const o of order) {
      const g = f - o;
      if (g >= 0 && g < t && isOnset(g)) { out[f] = o; break; }
    }
  }
  return out;
}

// roll: Float32Array [176 x t] (channel-major) -> Int32Array [80 x t] of roles, ``roles`` for
// a bin of no struck or held note (contrast.py bin_roles).
export function binRoles(roll, t, contrast) {
  const A = contrast.anticipation, R = contrast.reach, offsets = A + R + 1, scale = contrast.roles;
  const never = (R + 2) * scale;
  const anyOnset = (f) => { for (let k = 0; k < N_KEYS; k++) if (roll[(N_KEYS + k) * t + f] > 0) return true; return false; };
  const any = strikeOffsets(anyOnset, t, A, R);
  const when = Int32Array.from(any, (o) => (o === NONE ? offsets : o + A));
  // the strike offsets of every key that plays, and whether a frame holds a key not struck
  const keyOffsets = new Map(), anyHeld = new Uint8Array(t);
  for (let key = 0; key < N_KEYS; key++) {
    let plays = false;
    for (let f = 0; f < t && !plays; f++) plays = roll[key * t + f] > 0 || roll[(N_KEYS + key) * t + f] > 0;
    if (!plays) continue;
    const off = strikeOffsets((g) => roll[(N_KEYS + key) * t + g] > 0, t, A, R);
    keyOffsets.set(key, off);
    for (let f = 0; f < t; f++) if (off[f] === NONE && roll[key * t + f] > 0) anyHeld[f] = 1;
  }
  const best = new Int32Array(N_MELS * t).fill(never);
  for (const [key, group, bin] of contrast.partials) {
    const off = keyOffsets.get(key);
    if (!off) continue;
    for (let f = 0; f < t; f++) {
      const o = off[f];
      let code = never;
      if (o !== NONE) code = Math.abs(o) * scale + (anyHeld[f] ? 0 : contrast.alone) + group * offsets + o + A;
      else if (roll[key * t + f] > 0) code = (R + 1) * scale + contrast.held + when[f];
      if (code < best[bin * t + f]) best[bin * t + f] = code;
    }
  }
  return best.map((c) => (c < never ? c % scale : contrast.roles));
}

// mel: Float32Array [80 x t] predicted from roll [176 x t] -> a new array with each bin
// corrected by its role's value at ``embedding`` times ``strength``, floored.
export function applyContrast(mel, roll, t, embedding, contrast, strength = 1) {
  if (!strength) return mel;
  const values = contrastAt(contrast, embedding).map((v) => Math.fround(strength * Math.fround(v)));
  const roles = binRoles(roll, t, contrast), out = new Float32Array(mel.length);
  for (let i = 0; i < out.length; i++) out[i] = Math.max(Math.fround(mel[i] + values[roles[i]]), LOG_FLOOR);
  return out;
}
