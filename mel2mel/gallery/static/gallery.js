// The gallery page: rows from the inline JSON, filters by instrument and track.
"use strict";
const G = JSON.parse(document.getElementById("gallery-data").textContent);
const key = (track, inst, cfg) => [track, inst, cfg].join("\u0000");
const byKey = new Map(G.clips.map(c => [key(c.track, c.instrument, c.config), c]));
const titles = new Map(G.tracks.map(t => [t.id, t.title]));
function fill(select, values, label) {
  for (const v of values) {
    const o = document.createElement("option"); o.value = v; o.textContent = label(v);
    select.appendChild(o);
  }
}
fill(document.getElementById("instrument"), G.instruments, v => v);
fill(document.getElementById("track"), G.tracks.map(t => t.id), v => titles.get(v));
function render() {
  const inst = document.getElementById("instrument").value;
  const track = document.getElementById("track").value;
  const body = document.querySelector("#gallery tbody");
  body.textContent = "";
  let rows = 0;
  for (const t of G.tracks) {
    if (track && t.id !== track) continue;
    for (const name of G.instruments) {
      if (inst && name !== inst) continue;
      const tr = document.createElement("tr");
      const first = document.createElement("td"); first.className = "row";
      first.append(t.title, document.createElement("br"), name);
      tr.appendChild(first);
      for (const cfg of G.configs) {
        const td = document.createElement("td");
        const clip = byKey.get(key(t.id, name, cfg));
        if (clip) {
          const a = document.createElement("audio");
          a.controls = true; a.preload = "none"; a.src = clip.audio;
          a.dataset.config = cfg;
          const img = document.createElement("img");
          img.loading = "lazy"; img.src = clip.mel; img.alt = "mel of " + cfg;
          td.append(a, img);
        }
        tr.appendChild(td);
      }
      body.appendChild(tr); rows++;
    }
  }
  document.getElementById("count").textContent = rows + " rows";
}
for (const id of ["instrument", "track"]) {
  document.getElementById(id).addEventListener("change", render);
}
document.addEventListener("play", e => {  // one clip at a time
  for (const a of document.querySelectorAll("audio")) if (a !== e.target) a.pause();
}, true);
render();
window.galleryReady = true;
