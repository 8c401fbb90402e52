// The admin pages. Everything shown is set with textContent: no markup from data.
"use strict";

function money(minor, currency) {
  return (minor / 100).toFixed(2) + " " + currency;
}

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
}

function render(s) {
  if (s.error) { document.getElementById("live").textContent = "database: " + s.error; return; }
  document.getElementById("placed").textContent = s.placed_last_minute;
  document.getElementById("backlog").textContent = s.outbox_backlog;
  const dead = document.getElementById("dead");
  dead.textContent = s.dead_letters === null ? "unknown" : s.dead_letters;
  dead.title = "orderflow dead-letters list | replay | discard";
  document.getElementById("at").textContent = new Date(s.at).toLocaleTimeString();
  document.getElementById("window").textContent = s.window_minutes;
  const statuses = document.querySelector("#statuses tbody");
  statuses.replaceChildren();
  for (const [status, n] of Object.entries(s.orders_by_status).sort()) {
    const tr = document.createElement("tr");
    cell(tr, status); cell(tr, n, "num");
    statuses.appendChild(tr);
  }
  const recent = document.querySelector("#recent tbody");
  recent.replaceChildren();
  for (const o of s.recent_orders) {
    const tr = document.createElement("tr");
    cell(tr, o.id.slice(0, 8));
    cell(tr, o.status);
    cell(tr, money(o.total, o.currency), "num");
    cell(tr, new Date(o.created_at).toLocaleTimeString());
    cell(tr, new Date(o.updated_at).toLocaleTimeString());
    recent.appendChild(tr);
  }
}

function dashboard() {
  const live = document.getElementById("live");
  fetch("/admin/api/snapshot", { credentials: "same-origin" }).then((r) => {
    if (r.status === 401) { location.href = "/admin/login"; return null; }
    return r.json();
  }).then((s) => { if (s) render(s); });
  const feed = new EventSource("/admin/stream");
  feed.onopen = () => { live.textContent = "live"; live.className = "badge live"; };
  feed.onmessage = (e) => render(JSON.parse(e.data));
  feed.addEventListener("logout", () => { feed.close(); location.href = "/admin/login"; });
  feed.onerror = () => { live.textContent = "reconnecting…"; live.className = "badge"; };
  document.getElementById("logout").addEventListener("click", async () => {
    feed.close();
    await fetch("/admin/logout", { method: "POST", credentials: "same-origin" });
    location.href = "/admin/login";
  });
}

function login() {
  const form = document.getElementById("login");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const error = document.getElementById("error");
    error.textContent = "";
    const r = await fetch("/admin/login", {
      method: "POST",
      credentials: "same-origin",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ api_key: document.getElementById("api_key").value }),
    });
    if (r.status === 204) { location.href = "/admin"; return; }
    let detail = "login failed (" + r.status + ")";
    try { detail = (await r.json()).detail || detail; } catch (_) { /* not JSON */ }
    error.textContent = detail;
  });
}

document.addEventListener("DOMContentLoaded", () => {
  if (document.body.dataset.page === "dashboard") dashboard(); else login();
});
