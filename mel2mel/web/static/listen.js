// mel2mel listening test: consent, training, rated trials, thanks. The server knows the
// session; the page only knows opaque clip ids, and keeps the listener's token in
// localStorage so that a reload goes on where the listener stopped.
"use strict";

const TOKEN_KEY = "mel2mel-listen-token";
const EXAMPLES = {
  best: ["best", "Example of the best quality you will hear in this test."],
  worst: ["worst", "Example of the worst quality you will hear in this test."],
};
// The page's state, exposed for the browser tests (they wait on it, never on time).
const state = {
  view: "loading", token: null, session: null, index: 0, heard: false, listened: 0,
  submitting: false, answered: 0, errors: [],
};
window.listen = state;

function setStatus(text, error = false) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", error);
  if (error) state.errors.push(text);
}

function show(view) {
  for (const el of document.querySelectorAll(".view")) el.hidden = el.id !== `view-${view}`;
  state.view = view;
}

function trials() { return state.session.trials; }
function testCount() { return trials().filter((t) => t.phase === "test").length; }

// ---- start -------------------------------------------------------------------------------
async function loadSession() {
  try {
    state.session = await apiJson(`/api/listeners/${encodeURIComponent(state.token)}`);
  } catch (err) {
    if (err.status === 403) {  // an unknown token (a new database): start afresh
      localStorage.removeItem(TOKEN_KEY);
      state.token = null;
      show("consent");
      return;
    }
    throw err;
  }
  const answers = state.session.answers;
  state.answered = Object.keys(answers).length;
  if (state.session.title) $("title").textContent = state.session.title;
  const next = trials().findIndex((t) => !(t.id in answers));
  goTo(next < 0 ? trials().length : next);
}

async function start() {
  const headphones = document.querySelector("input[name=headphones]:checked");
  const body = { consent: true };
  if (headphones) body.headphones = headphones.value === "yes";
  if ($("expertise").value) body.expertise = $("expertise").value;
  $("start").disabled = true;
  try {
    const made = await apiJson("/api/listeners", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    state.token = made.token;
    localStorage.setItem(TOKEN_KEY, made.token);
    setStatus("");
    await loadSession();
  } catch (err) {
    setStatus(`Could not start: ${err.message}`, true);
    $("start").disabled = !$("agree").checked;
  }
}

// ---- trials ------------------------------------------------------------------------------
function goTo(index) {
  const list = trials();
  state.index = index;
  if (index >= list.length) {
    $("audio").removeAttribute("src");
    show("thanks");
    return;
  }
  const firstTest = list.findIndex((t) => t.phase === "test");
  if (index === firstTest && index > 0 && state.view !== "interlude") {
    $("n-test").textContent = String(testCount());
    show("interlude");
    return;
  }
  showTrial(list[index]);
}

function showTrial(trial) {
  const list = trials();
  const inPhase = list.filter((t) => t.phase === trial.phase);
  const position = inPhase.indexOf(trial) + 1;
  $("phase-name").textContent = trial.phase === "training" ? "Training" : "Clip";
  $("progress").textContent = `${position} / ${inPhase.length}`;
  const example = EXAMPLES[trial.example];
  const note = trial.phase === "training" ? "Practice: this rating is not counted." : "";
  $("example").className = `example ${example ? example[0] : ""}`;
  $("example").textContent = example ? example[1] : note;
  for (const input of document.querySelectorAll("input[name=score]")) input.checked = false;
  state.heard = false;
  state.listened = 0;
  const audio = $("audio");
  audio.src = `/api/listeners/${encodeURIComponent(state.token)}/clips/${trial.id}`;
  $("play").textContent = "Play";
  $("listen-state").textContent = "Play the clip to the end, then rate it.";
  show("trial");
  updateNext();
}

function selectedScore() {
  const input = document.querySelector("input[name=score]:checked");
  return input ? Number(input.value) : null;
}

function updateNext() {
  $("next").disabled = !(state.heard && selectedScore() !== null && !state.submitting);
}

function heard() {
  if (state.heard) return;
  state.heard = true;
  $("listen-state").textContent = "Now rate it (you may play it again).";
  updateNext();
}

async function next() {
  const trial = trials()[state.index];
  const score = selectedScore();
  if (!trial || score === null || !state.heard) return;
  state.submitting = true;
  updateNext();
  try {
    const path = `/api/listeners/${encodeURIComponent(state.token)}/ratings/${trial.id}`;
    const done = await apiJson(path, {
      method: "PUT", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ score }),
    });
    state.session.answers[trial.id] = score;
    state.answered = done.answered;
    setStatus("");
    $("audio").pause();
    goTo(state.index + 1);
  } catch (err) {
    setStatus(`Your answer was not saved (${err.message}); please try again.`, true);
  } finally {
    state.submitting = false;
    updateNext();
  }
}

// ---- wiring ------------------------------------------------------------------------------
function wire() {
  $("agree").addEventListener("change", () => { $("start").disabled = !$("agree").checked; });
  $("start").addEventListener("click", start);
  $("begin").addEventListener("click", () => showTrial(trials()[state.index]));
  $("next").addEventListener("click", next);
  for (const input of document.querySelectorAll("input[name=score]")) {
    input.addEventListener("change", updateNext);
  }
  const audio = $("audio");
  $("play").addEventListener("click", () => {
    if (audio.paused) {
      if (audio.ended) audio.currentTime = 0;
      audio.play().catch((err) => setStatus(`The clip does not play: ${err.message}`, true));
    } else {
      audio.pause();
    }
  });
  audio.addEventListener("play", () => { $("play").textContent = "Pause"; });
  audio.addEventListener("pause", () => { $("play").textContent = "Play"; });
  audio.addEventListener("ended", () => { $("play").textContent = "Play again"; heard(); });
  audio.addEventListener("timeupdate", () => {
    state.listened = Math.max(state.listened, audio.currentTime);
    if (state.session && state.listened >= state.session.min_listen_s) heard();
  });
  audio.addEventListener("error", () => {
    if (audio.getAttribute("src")) setStatus("The clip could not be loaded.", true);
  });
}

async function init() {
  wire();
  state.token = localStorage.getItem(TOKEN_KEY);
  try {
    if (state.token) await loadSession();
    else show("consent");
  } catch (err) {
    setStatus(`The test could not be loaded: ${err.message}`, true);
  }
}

init();
