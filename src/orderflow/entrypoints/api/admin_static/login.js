// The login page: fetch a login CSRF token (double submit), then exchange the key for a session.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("login");
  const error = document.getElementById("error");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    const token = await fetch("/admin/api/login-token", { credentials: "same-origin" });
    const { csrf } = await token.json();
    const r = await fetch("/admin/login", {
      method: "POST",
      credentials: "same-origin",
      headers: { "content-type": "application/json", "x-csrf-token": csrf },
      body: JSON.stringify({ api_key: document.getElementById("api_key").value }),
    });
    if (r.status === 204) { location.href = "/admin"; return; }
    let detail = "login failed (" + r.status + ")";
    try { detail = (await r.json()).detail || detail; } catch (_) { /* not JSON */ }
    error.textContent = detail;
  });
});
