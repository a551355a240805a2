// Shared by the app page and the listening-test page: element lookup and the one fetch helper.
"use strict";

const $ = (id) => document.getElementById(id);

// fetch() that turns an error answer into an Error carrying the server's {"error": ...} line,
// the status and Retry-After (seconds); returns the Response.
async function api(path, options = {}) {
  const resp = await fetch(path, options);
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
