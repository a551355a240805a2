// Shared by the app page and the listening-test page: element lookup and the one fetch helper.
"use strict";

const $ = (id) => document.getElementById(id);

// fetch() that turns an error answer into an Error carrying the server's {"error": ...} line,
// the status and Retry-After (seconds); returns the Response.
async function api(path, options = {}) {
  // The static site (`mel2mel export site`) has no server: its answers are files.
  const site = window.M2M_SITE, file = site && { "/api/info": "info.json", "/api/map": "map.json", "/api/space": "space.json" }[path];
  if (site && !file) throw Object.assign(new Error(`no server on a static site (${path})`), { status: 404 });
  const resp = await fetch(file ? `${site.data}${file}` : path, options);
  if (!resp.ok) {
    let msg = `${resp.status} ${resp.statusText}`;
    try { msg = (await resp.json()).error || msg; } catch (e) { /* not JSON */ }
    const err = new Error(msg);
    err.status = resp.status;
    err.retryAfter = Number(resp.headers.get("Retry-After") || 0);
    throw err;
  }
  return resp;
}

// api() for JSON answers.
async function apiJson(path, options = {}) {
  return (await api(path, options)).json();
}
