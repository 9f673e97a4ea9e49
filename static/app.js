// The records console: one small form per API route, no dependencies.
// Every URL is relative, so the page works behind any prefix the server is mounted at.
"use strict";

const $ = (sel) => document.querySelector(sel);

// Sends one request, shows the method, URL, status and JSON body, and returns the parsed body
// (or undefined when the request failed or the body was not JSON).
async function call(method, url, body) {
  const init = { method, headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  $("#request").textContent = `${method} ${url}`;
  const status = $("#status");
  status.textContent = "…";
  status.className = "status";
  try {
    const res = await fetch(url, init);
    const text = await res.text();
    let parsed;
    try { parsed = text === "" ? undefined : JSON.parse(text); } catch (_) { parsed = undefined; }
    status.textContent = `${res.status} ${res.statusText}`;
    status.className = `status ${res.ok ? "ok" : "err"}`;
    $("#body").textContent = parsed === undefined ? text : JSON.stringify(parsed, null, 2);
    return res.ok ? parsed : undefined;
  } catch (err) {
    status.textContent = "network error";
    status.className = "status err";
    $("#body").textContent = String(err);
    return undefined;
  }
}

const q = (params) =>
  Object.entries(params)
    .filter(([, v]) => v !== undefined && v !== "")
    .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`)
    .join("&");

const field = (form, name) => form.elements[name].value.trim();

function on(id, handler) {
  $(id).addEventListener("submit", (ev) => {
    ev.preventDefault();
    handler(ev.currentTarget);
  });
}

on("#by-id", (f) => call("GET", `user/${encodeURIComponent(field(f, "id"))}`));
on("#by-email", (f) => call("GET", `user?${q({ email: field(f, "email") })}`));
on("#upsert", (f) =>
  call("POST", `user?${q({ email: field(f, "email") })}`, { text: f.elements.text.value }));
on("#delete", (f) => call("DELETE", `user?${q({ email: field(f, "email") })}`));

// Browsing. `pages` holds the query of every page shown since the last offset search, so
// "previous" can step back; "next" asks for the page after the last email shown (keyset).
const browse = $("#browse");
let pages = [];
let lastEmail = null;

async function showPage(query) {
  const rows = await call("GET", `users?${q(query)}`);
  const tbody = $("#rows tbody");
  tbody.replaceChildren();
  if (!Array.isArray(rows)) return false;
  for (const [email, text] of rows) {
    const tr = document.createElement("tr");
    const e = document.createElement("td");
    const t = document.createElement("td");
    e.textContent = email;
    t.textContent = text === null ? "null" : text;
    if (text === null) t.className = "null";
    tr.append(e, t);
    tr.title = "click to copy the email into the forms above";
    tr.addEventListener("click", () => {
      document.querySelectorAll('input[name="email"]').forEach((i) => { i.value = email; });
    });
    tbody.append(tr);
  }
  lastEmail = rows.length ? rows[rows.length - 1][0] : null;
  $("#next").disabled = lastEmail === null;
  return true;
}

function updatePrev() {
  $("#prev").disabled = pages.length < 2;
}

on("#browse", async (f) => {
  const query = { limit: field(f, "limit"), offset: field(f, "offset") };
  pages = (await showPage(query)) ? [query] : [];
  updatePrev();
});

$("#next").addEventListener("click", async () => {
  if (lastEmail === null) return;
  const query = { after: lastEmail, limit: field(browse, "limit") };
  if (await showPage(query)) pages.push(query);
  updatePrev();
});

$("#prev").addEventListener("click", async () => {
  if (pages.length < 2) return;
  pages.pop();
  await showPage(pages[pages.length - 1]);
  updatePrev();
});

$("#prev").disabled = true;
$("#next").disabled = true;
