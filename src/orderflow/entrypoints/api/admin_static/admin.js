// The back office: one page, one view per #route. Every text from data is set with
// textContent (the h() helper below): no markup is ever parsed from data.
"use strict";

const state = { me: null, feed: null, timer: null };

// --- Small helpers -------------------------------------------------------------------
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function money(minor, currency) {
  if (minor === null || minor === undefined) return "–";
  return (minor / 100).toFixed(2) + " " + (currency || "");
}

function when(iso) {
  if (!iso) return "–";
  const d = new Date(typeof iso === "number" ? iso * 1000 : iso);
  return d.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 1) return Math.round(seconds * 1000) + " ms";
  if (seconds < 120) return seconds.toFixed(1) + " s";
  if (seconds < 7200) return Math.round(seconds / 60) + " min";
  if (seconds < 172800) return (seconds / 3600).toFixed(1) + " h";
  return (seconds / 86400).toFixed(1) + " d";
}

function table(headers, rows, opts) {
  const head = h("tr", {}, headers.map((t) => h("th", { scope: "col", class: /^(total|amount|qty|ready|consumers|retrying|deferred|spent|connections|attempts|unit|orders)/.test(t) ? "num" : null }, t)));
  const body = rows.length ? rows : [h("tr", {}, h("td", { colspan: headers.length, class: "empty" }, (opts && opts.empty) || "nothing here"))];
  return h("div", { class: "scroll" }, h("table", { id: opts && opts.id }, h("thead", {}, head), h("tbody", {}, body)));
}

function td(text, cls) { return h("td", { class: cls }, text); }

function statusBadge(status) { return h("span", { class: "status s-" + status }, status); }

function orderLink(id, text) { return h("a", { href: "#/orders/" + id, class: "mono" }, text || id.slice(0, 8)); }

function toast(text, bad) {
  const t = document.getElementById("toast");
  t.textContent = text;
  t.className = "toast show" + (bad ? " bad" : "");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.className = "toast"; }, 5000);
}

async function api(path, options) {
  const opts = Object.assign({ credentials: "same-origin", headers: {} }, options || {});
  if (opts.body !== undefined) {
    opts.method = opts.method || "POST";
    opts.headers["content-type"] = "application/json";
    opts.body = JSON.stringify(opts.body);
  }
  if (opts.method && opts.method !== "GET") opts.headers["x-csrf-token"] = state.me ? state.me.csrf : "";
  const r = await fetch(path, opts);
  if (r.status === 401) { location.href = "/admin/login"; throw new Error("logged out"); }
  let body = null;
  try { body = await r.json(); } catch (_) { /* empty */ }
  if (!r.ok) throw new Error((body && body.detail) || ("request failed: " + r.status));
  return body;
}

// A confirmation dialog with optional fields; resolves to the fields' values or null.
function confirmAction(title, text, fields) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-error").textContent = "";
  const box = document.getElementById("confirm-fields");
  box.replaceChildren(...(fields || []).map((f) => h("label", {}, f.label,
    h("input", { name: f.name, value: f.value || "", required: f.required, placeholder: f.placeholder || "" }))));
  return new Promise((resolve) => {
    const done = (value) => { dialog.close(); resolve(value); };
    document.getElementById("confirm-cancel").onclick = () => done(null);
    dialog.oncancel = () => resolve(null);
    document.getElementById("confirm-form").onsubmit = (e) => {
      e.preventDefault();
      const values = {};
      for (const input of box.querySelectorAll("input")) values[input.name] = input.value.trim();
      done(values);
    };
    dialog.showModal();
    const first = box.querySelector("input") || document.getElementById("confirm-ok");
    first.focus();
  });
}

// --- Views -----------------------------------------------------------------------------
function stopLive() {
  if (state.feed) { state.feed.close(); state.feed = null; }
  if (state.timer) { clearInterval(state.timer); state.timer = null; }
  const live = document.getElementById("live");
  live.textContent = "";
  live.className = "badge hidden";
}

function setLive(on, text) {
  const live = document.getElementById("live");
  live.textContent = text || (on ? "live" : "reconnecting…");
  live.className = "badge" + (on ? " live" : "");
}

function overview(view) {
  const tiles = h("section", { class: "tiles" });
  const statuses = h("section", {});
  const recent = h("section", {});
  view.replaceChildren(h("h2", {}, "Overview"), tiles, statuses, recent);
  const tile = (label, value, href) => h(href ? "a" : "div", { class: "tile", href },
    h("span", { class: "label" }, label), h("span", { class: "value" }, value));
  const render = (s) => {
    if (s.error) { setLive(false, "database: " + s.error); return; }
    tiles.replaceChildren(
      tile("placed in the last minute", s.placed_last_minute),
      tile("outbox backlog", s.outbox_backlog, "#/health"),
      tile("dead letters waiting", s.dead_letters === null ? "unknown" : s.dead_letters, "#/dead-letters"),
      tile("overdue orders", s.overdue, "#/overdue"),
      tile("as of", new Date(s.at).toLocaleTimeString()));
    statuses.replaceChildren(h("h3", {}, "Orders by status, last " + s.window_minutes + " minutes"),
      table(["status", "orders"], Object.entries(s.orders_by_status).sort().map(([st, n]) =>
        h("tr", {}, td(statusBadge(st)), td(n, "num")))));
    recent.replaceChildren(h("h3", {}, "Latest orders"),
      table(["order", "status", "total", "placed", "last change"], s.recent_orders.map((o) =>
        h("tr", { "data-order": o.id }, td(orderLink(o.id)), td(statusBadge(o.status)),
          td(money(o.total, o.currency), "num"), td(when(o.created_at)), td(when(o.updated_at)))), { id: "recent" }));
  };
  api("/admin/api/snapshot").then(render).catch((e) => toast(e.message, true));
  state.feed = new EventSource("/admin/stream");
  state.feed.onopen = () => setLive(true);
  state.feed.onmessage = (e) => render(JSON.parse(e.data));
  state.feed.addEventListener("logout", () => { stopLive(); location.href = "/admin/login"; });
  state.feed.onerror = () => setLive(false);
}

const STATUSES = ["", "created", "awaiting_payment", "payment_pending", "paid", "reserved", "prepared", "shipped", "delivered", "cancelled"];

function orders(view, params) {
  const field = (name, label, type, extra) => h("label", {}, label,
    h("input", Object.assign({ name, type: type || "text", value: params.get(name) || "" }, extra || {})));
  const status = h("select", { name: "status" }, STATUSES.map((s) =>
    h("option", { value: s, selected: params.get("status") === s }, s || "any")));
  const form = h("form", { class: "filters", id: "order-search", role: "search" },
    field("email", "Customer email"), field("id_prefix", "Order id starts with"),
    h("label", {}, "Status", status),
    field("created_from", "Placed from", "date"), field("created_to", "Placed before", "date"),
    field("total_min", "Total at least (minor units)", "number", { min: 0 }),
    field("total_max", "Total at most (minor units)", "number", { min: 0 }),
    h("button", { type: "submit", class: "primary" }, "Search"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const q = new URLSearchParams();
    for (const [k, v] of new FormData(form).entries()) if (v) q.set(k, v);
    location.hash = "#/orders?" + q.toString();
  });
  const results = h("section", { id: "results" });
  view.replaceChildren(h("h2", {}, "Orders"), form, results);
  const query = new URLSearchParams();
  for (const [k, v] of params.entries()) {
    if (!v) continue;
    query.set(k, (k === "created_from" || k === "created_to") ? new Date(v).toISOString() : v);
  }
  const rows = [];
  const load = (cursor) => {
    if (cursor) query.set("cursor", cursor);
    api("/admin/api/orders?" + query.toString()).then((page) => {
      for (const o of page.items) {
        rows.push(h("tr", { "data-order": o.id }, td(orderLink(o.id)), td(o.email), td(statusBadge(o.status)),
          td(o.overdue_since ? h("span", { class: "warn" }, "overdue") : ""),
          td(money(o.total, o.currency), "num"), td(when(o.created_at)), td(when(o.updated_at))));
      }
      const more = page.next_cursor ? h("button", { type: "button", onclick: () => load(page.next_cursor) }, "Next page") : null;
      results.replaceChildren(table(["order", "customer", "status", "SLA", "total", "placed", "last change"], rows,
        { id: "orders", empty: "no order matches" }), more);
    }).catch((e) => toast(e.message, true));
  };
  load(null);
}

function section(title, ...content) { return h("section", { class: "card" }, h("h3", {}, title), ...content); }

async function act(orderId, action, title, text, fields, toBody) {
  const values = await confirmAction(title, text, fields);
  if (values === null) return;
  try {
    const body = Object.assign({ confirm: true }, toBody ? toBody(values) : {});
    const result = await api("/admin/api/orders/" + orderId + "/" + action, { body });
    toast(title + ": done" + (result.status ? " (now " + result.status + ")" : ""));
  } catch (e) { toast(title + " failed: " + e.message, true); }
  route();
}

function orderPage(view, id) {
  const draw = (d) => {
    const o = d.order;
    const may = state.me.may;
    const buttons = [];
    const button = (label, onclick, admin) => {
      if (admin ? may.admin_actions : may.staff_actions) buttons.push(h("button", { type: "button", onclick }, label));
    };
    if (o.status === "reserved") button("Prepare…", () => act(id, "prepare", "Prepare order", "The warehouse packed the order."), false);
    if (o.status === "prepared") button("Ship…", () => act(id, "ship", "Ship order", "The carrier picked the parcel up.",
      [{ name: "carrier", label: "Carrier", required: true, value: "DHL" }, { name: "tracking_number", label: "Tracking number (blank: generated)" }],
      (v) => ({ carrier: v.carrier, tracking_number: v.tracking_number || null })), false);
    if (o.status === "shipped") button("Deliver…", () => act(id, "deliver", "Deliver order", "The carrier confirmed delivery."), false);
    if (["created", "awaiting_payment", "payment_pending", "paid", "reserved", "prepared"].includes(o.status)) {
      button("Cancel and refund…", () => act(id, "cancel", "Cancel order", "Cancel this order; a captured payment is refunded and reserved stock released.",
        [{ name: "reason", label: "Reason", required: true, value: "admin" }], (v) => ({ reason: v.reason })), true);
    }
    if (o.status === "awaiting_payment") button("Pay again…", () => act(id, "pay", "Pay again", "Start a payment with another method.",
      [{ name: "payment_token", label: "Payment token", required: true, value: "pm_approve" }], (v) => ({ payment_token: v.payment_token })), true);

    const stuck = d.stuck.length ? h("section", { class: "card stuck", id: "stuck", "aria-labelledby": "stuck-title" },
      h("h3", { id: "stuck-title" }, "Why it waits"),
      h("ul", {}, d.stuck.map((r) => h("li", { "data-code": r.code }, h("strong", {}, r.code.replace(/_/g, " ")), ": ", r.text,
        r.since ? h("span", { class: "muted" }, " (since " + when(r.since) + ")") : null))),
      d.stuck.some((r) => r.remedy) && may.admin_actions ? h("button", { type: "button", class: "primary", onclick: async () => {
        const ok = await confirmAction("Re-drive order", "Republish its unapplied events and replay its dead letters. Safe to repeat: handlers drop what they already applied.");
        if (ok === null) return;
        try {
          const r = await api("/admin/api/orders/" + id + "/redrive", { body: {} });
          toast("Re-drive: " + (r.done.map((x) => x.remedy + " " + x.result).join(", ") || "nothing to do"));
        } catch (e) { toast("Re-drive failed: " + e.message, true); }
        route();
      } }, "Re-drive…") : null) : null;

    const lines = table(["sku", "name", "unit price", "qty", "total"], o.lines.map((l) =>
      h("tr", {}, td(l.sku, "mono"), td(l.name), td(money(l.unit_price, o.currency), "num"), td(l.quantity, "num"), td(money(l.line_total, o.currency), "num"))));
    const totals = h("dl", { class: "totals" },
      h("dt", {}, "subtotal"), h("dd", {}, money(o.subtotal, o.currency)),
      h("dt", {}, "discount"), h("dd", {}, money(o.discount, o.currency)),
      h("dt", {}, "tax"), h("dd", {}, money(o.tax, o.currency)),
      h("dt", {}, "total"), h("dd", { class: "strong" }, money(o.total, o.currency)));
    const timeline = table(["event", "at", "by", "status after", "time in step"], d.timeline.map((t) =>
      h("tr", { "data-event": t.event }, td(t.event, "mono"), td(when(t.at)), td(t.actor), td(statusBadge(t.status)),
        td(duration(t.spent_s) + (t.ongoing ? " so far" : ""), "num"))), { id: "timeline" });
    const actions = table(["at", "by", "action", "detail"], d.actions.map((a) =>
      h("tr", {}, td(when(a.at)), td(a.actor, "mono"), td(a.action), td(JSON.stringify(a.detail), "mono small")) ), { id: "actions", empty: "no back-office action yet" });
    const payments = table(["attempt", "status", "amount", "gateway reference", "at"], d.payments.map((p) =>
      h("tr", {}, td(p.attempt, "num"), td(p.status), td(money(p.amount, p.currency), "num"), td(p.gateway_reference || "–", "mono"), td(when(p.created_at)))), { id: "payments", empty: "no payment" });
    const transactions = table(["kind", "amount", "gateway reference", "detail", "at"], d.transactions.map((t) =>
      h("tr", { "data-kind": t.kind }, td(t.kind), td(money(t.amount, t.currency), "num"), td(t.gateway_reference || "–", "mono"), td(t.detail), td(when(t.created_at)))), { id: "transactions", empty: "no transaction" });
    const stock = table(["sku", "kind", "qty", "at"], d.stock_movements.map((m) =>
      h("tr", {}, td(m.sku, "mono"), td(m.kind), td(m.quantity, "num"), td(when(m.created_at)))), { empty: "no stock movement" });
    const notes = table(["to", "channel", "subject", "at", "sent"], d.notifications.map((n) =>
      h("tr", {}, td(n.recipient), td(n.channel), td(n.subject), td(when(n.created_at)), td(when(n.sent_at)))), { empty: "no notification" });

    view.replaceChildren(
      h("h2", {}, "Order ", h("span", { class: "mono" }, o.id), " ", statusBadge(o.status)),
      h("p", { class: "muted" }, "Customer ", h("span", { id: "customer-email" }, d.customer.email || "?"),
        " · placed " + when(o.created_at) + " · last change " + when(o.updated_at) + (o.cancel_reason ? " · cancelled: " + o.cancel_reason : "")),
      buttons.length ? h("div", { class: "actions", role: "toolbar", "aria-label": "order actions" }, buttons) : null,
      stuck,
      h("div", { class: "grid" }, section("Lines", lines, totals), section("Payments", payments, h("h4", {}, "Gateway transactions"), transactions)),
      section("Timeline", timeline),
      h("div", { class: "grid" }, section("Stock movements", stock), section("Notifications", notes)),
      section("Back-office actions", actions));
    return o.status;
  };
  let shown = "";
  const load = () => api("/admin/api/orders/" + id).then((d) => {
    // Redraw only when something changed, so that focus and scrolling stay where they are.
    const key = JSON.stringify([d.order, d.stuck.map((r) => r.code), d.actions.length, d.payments, d.transactions.length,
      d.timeline.length, d.notifications.length, d.stock_movements.length]);
    if (key !== shown) { shown = key; draw(d); }
    if (["delivered", "cancelled"].includes(d.order.status)) setLive(false, "final");
    else setLive(true, "live");
  }).catch((e) => { toast(e.message, true); stopLive(); });
  load();
  // Follow the order while it moves, without reloading; pause while a dialog is open.
  state.timer = setInterval(() => { if (!document.getElementById("confirm").open) load(); }, 1500);
}

function overdue(view) {
  api("/admin/api/overdue").then((d) => {
    view.replaceChildren(h("h2", {}, "Overdue orders (oldest first)"),
      h("p", { class: "muted" }, "Deadlines per status: " + Object.entries(d.deadlines_s).map(([s, v]) => s + " " + duration(v)).join(" · ")),
      table(["order", "status", "in it since", "due at", "total"], d.items.map((o) =>
        h("tr", { "data-order": o.order_id }, td(orderLink(o.order_id)), td(statusBadge(o.status)), td(when(o.since)), td(when(o.due_at)), td(money(o.total, o.currency), "num"))),
      { id: "overdue", empty: "no order is overdue" }));
  }).catch((e) => toast(e.message, true));
}

function stuckOrders(view) {
  api("/admin/api/stuck").then((d) => {
    const may = state.me.may.admin_actions;
    view.replaceChildren(h("h2", {}, "Stuck orders (oldest first)"),
      h("p", { class: "muted" }, "Orders waiting on the machinery (an event unpublished, published but applied by no handler, dead-lettered) or past their SLA. Open one to see every reason; re-drive fixes what is safe to fix."),
      table(["order", "status", "reason", "since", ""], d.items.map((r) =>
        h("tr", { "data-order": r.order_id, "data-code": r.code }, td(orderLink(r.order_id)), td(r.status ? statusBadge(r.status) : "–"),
          td(h("span", {}, h("strong", {}, r.code.replace(/_/g, " ")), ": ", r.text)), td(when(r.since)),
          td(may && r.code !== "overdue" ? h("button", { type: "button", onclick: async () => {
            if (await confirmAction("Re-drive order", "Republish its unapplied events and replay its dead letters. Safe to repeat.") === null) return;
            try {
              const done = await api("/admin/api/orders/" + r.order_id + "/redrive", { body: {} });
              toast("Re-drive: " + (done.done.map((x) => x.remedy + " " + x.result).join(", ") || "nothing to do"));
            } catch (e) { toast("Re-drive failed: " + e.message, true); }
            route();
          } }, "Re-drive…") : ""))), { id: "stuck-orders", empty: "no order is stuck" }));
  }).catch((e) => toast(e.message, true));
}

function deadLetters(view, params) {
  const field = (name, label, type) => h("label", {}, label, h("input", { name, type: type || "text", value: params.get(name) || "" }));
  const form = h("form", { class: "filters", id: "letter-filter" },
    field("handler", "Handler"), field("reason", "Reason contains"), field("event_type", "Event type"),
    field("min_age_s", "Failed at least (s) ago", "number"), field("max_age_s", "Failed at most (s) ago", "number"),
    h("button", { type: "submit", class: "primary" }, "Filter"));
  const filter = {};
  for (const [k, v] of params.entries()) if (v) filter[k] = (k.endsWith("_s") ? Number(v) : v);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const q = new URLSearchParams();
    for (const [k, v] of new FormData(form).entries()) if (v) q.set(k, v);
    location.hash = "#/dead-letters?" + q.toString();
  });
  const list = h("section", { id: "letters" });
  const bulk = h("div", { class: "actions" });
  view.replaceChildren(h("h2", {}, "Dead letters"), form, bulk, list);
  const run = async (action, body) => api("/admin/api/dead-letters/" + action, { body });
  const query = new URLSearchParams(params);
  api("/admin/api/dead-letters?" + query.toString()).then((d) => {
    const may = state.me.may.admin_actions;
    list.replaceChildren(h("p", { class: "muted", id: "letter-count" }, d.count + " dead letter(s) match"),
      table(["event", "handler", "reason", "attempts", "first failure", "last failure", "order", "payload", ""], d.items.map((l) =>
        h("tr", { "data-message": l.message_id }, td(l.event_type, "mono"), td(l.handler || "?"), td(l.error, "small"), td(l.attempt, "num"),
          td(when(l.first_failed_at)), td(when(l.failed_at)), td(l.order_id ? orderLink(l.order_id) : "–"),
          td(h("details", {}, h("summary", {}, "payload"), h("pre", {}, JSON.stringify(l.payload, null, 2))))
          , td(may ? h("span", { class: "row-actions" },
            h("button", { type: "button", onclick: async () => {
              if (await confirmAction("Replay dead letter", "Send " + l.event_type + " back to " + l.handler + ".") === null) return;
              try { const r = await run("replay", { ids: [l.message_id], filter: { handler: l.handler } }); toast("replayed " + r.count); } catch (e) { toast(e.message, true); }
              route();
            } }, "Replay"),
            h("button", { type: "button", onclick: async () => {
              const v = await confirmAction("Discard dead letter", "Delete it for good.", [{ name: "reason", label: "Reason", required: true }]);
              if (v === null) return;
              try { const r = await run("discard", { ids: [l.message_id], filter: { handler: l.handler }, reason: v.reason }); toast("discarded " + r.count); } catch (e) { toast(e.message, true); }
              route();
            } }, "Discard")) : ""))), { id: "dead-letters", empty: "no dead letter matches" }));
    if (may && d.count) {
      bulk.replaceChildren(h("button", { type: "button", class: "primary", id: "replay-matching", onclick: async () => {
        try {
          const dry = await run("replay", { filter, dry_run: true });
          const first = dry.first.map((l) => l.event_type + " (" + (l.handler || "?") + ")").join(", ");
          const ok = await confirmAction("Replay " + dry.count + " dead letter(s)",
            "Dry run: " + dry.count + " would be replayed; first: " + first + ". Replay them now?");
          if (ok === null) return;
          const r = await run("replay", { filter });
          toast("replayed " + r.count);
        } catch (e) { toast(e.message, true); }
        route();
      } }, "Replay all matching… (dry run first)"));
    }
  }).catch((e) => toast(e.message, true));
}

// This API process's 5xx share over the last minute (since it started, on the first look).
function errorTile(e) {
  const recent = e.window_s >= 1;
  const requests = recent ? e.requests : e.since_start.requests;
  const errors = recent ? e.errors : e.since_start.errors;
  const rate = requests ? (100 * errors / requests).toFixed(2) + " %" : "no request";
  return h("div", { class: "tile" }, h("span", { class: "label" }, "API 5xx, " + (recent ? "last " + duration(e.window_s) : "since start")),
    h("span", { class: "value small" }, rate + " (" + errors + " of " + requests + ")"));
}

function health(view) {
  const load = () => api("/admin/api/health").then((d) => {
    view.replaceChildren(h("h2", {}, "System health"),
      h("section", { class: "tiles" },
        h("div", { class: "tile" }, h("span", { class: "label" }, "broker"), h("span", { class: "value small" }, d.broker)),
        h("div", { class: "tile" }, h("span", { class: "label" }, "outbox backlog"), h("span", { class: "value" }, d.outbox.backlog)),
        h("div", { class: "tile" }, h("span", { class: "label" }, "oldest unpublished"), h("span", { class: "value small" }, duration(d.outbox.age_s))),
        h("a", { class: "tile", href: "#/dead-letters" }, h("span", { class: "label" }, "dead letters"), h("span", { class: "value" }, d.dead_letters === null ? "unknown" : d.dead_letters)),
        errorTile(d.errors)),
      section("Queues", table(["handler", "queue", "ready", "retrying", "deferred", "consumers"], d.queues.map((q) =>
        h("tr", { class: q.declared && q.consumers === 0 ? "warn-row" : null }, td(q.handler), td(q.queue, "mono small"),
          td(q.declared ? q.ready : "not declared", "num"), td(q.retrying, "num"), td(q.deferred, "num"), td(q.declared ? q.consumers : "–", "num"))), { id: "queues" })),
      section("Processes seen alive (database connections)", table(["process", "instance", "connections", "since", "last active"], d.processes.map((p) =>
        h("tr", {}, td(p.process), td(p.instance, "mono"), td(p.connections, "num"), td(when(p.since)), td(when(p.last_active)))), { id: "processes", empty: "no process connected" })));
  }).catch((e) => toast(e.message, true));
  load();
  state.timer = setInterval(load, 3000);
  setLive(true, "every 3 s");
}

// --- Router ----------------------------------------------------------------------------
function route() {
  stopLive();
  const view = document.getElementById("view");
  const [path, query] = (location.hash.replace(/^#/, "") || "/").split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean);
  const section = parts[0] || "overview";
  for (const a of document.querySelectorAll("nav a")) {
    if (a.dataset.nav === section) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  if (section === "orders" && parts[1]) orderPage(view, parts[1]);
  else if (section === "orders") orders(view, params);
  else if (section === "overdue") overdue(view);
  else if (section === "stuck") stuckOrders(view);
  else if (section === "dead-letters") deadLetters(view, params);
  else if (section === "health") health(view);
  else overview(view);
}

document.addEventListener("DOMContentLoaded", async () => {
  try { state.me = await api("/admin/api/me"); } catch (_) { return; }
  document.getElementById("who").textContent = state.me.role + " · " + state.me.key_prefix;
  document.getElementById("logout").addEventListener("click", async () => {
    stopLive();
    await api("/admin/logout", { method: "POST" }).catch(() => null);
    location.href = "/admin/login";
  });
  window.addEventListener("hashchange", () => { route(); document.getElementById("view").focus(); });
  route();
});
