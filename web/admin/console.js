// The operator console at /admin/ (PROTOCOL.md section 9). It reads only the public APIs:
// GET /api/stats and /metrics for the charts, /api/admin/users/ for the table, all with the
// service secret in `X-Service-Token`.
//
// The secret lives in `secret` below and nowhere else: not localStorage, not sessionStorage,
// not a cookie, so a reload or a closed tab forgets it and nothing on disk holds it.

import { ApiError, h, request, formatTime } from "/assets/common/api.js";
import { chart } from "/assets/admin/charts.js";

/** How often the figures are read. */
const POLL_MS = 2500;
const PAGE_SIZE = 10;
/** The users table is read again every this many polls (online, queues change). */
const USERS_EVERY = 4;

let secret = null;
let pollTimer = null;
let previous = null; // the last sample: { time, processed, buckets }
let charts = null;
let users = { page: 1, q: "" };
let polls = 0;

const $ = (id) => document.getElementById(id);

function api(path, options = {}) {
  return request(path, { ...options, headers: { "X-Service-Token": secret } });
}

/** `/metrics` as text (request() parses JSON; this is the OpenMetrics text format). */
async function metricsText() {
  let response;
  try {
    response = await fetch("/metrics", { headers: { "X-Service-Token": secret } });
  } catch {
    throw new ApiError(0, "network_error", "The server cannot be reached.");
  }
  if (!response.ok) throw new ApiError(response.status, "http_error", `HTTP ${response.status}`);
  return response.text();
}

// ---- signing in and out ----

function signInMessage(e) {
  if (!(e instanceof ApiError)) return "Signing in failed.";
  if (e.status === 401) return "Wrong service secret: the daemon refused it.";
  if (e.status === 404) {
    return "The service API is off on this daemon: set service.shared_secret in its config.";
  }
  if (e.status === 0) return "The server cannot be reached.";
  return `Signing in failed: ${e.detail}`;
}

async function signIn(event) {
  event.preventDefault();
  const input = $("secret");
  const error = $("signin-error");
  error.textContent = "";
  if (!input.value) {
    error.textContent = "Enter the service secret.";
    input.focus();
    return;
  }
  secret = input.value;
  $("signin-button").disabled = true;
  try {
    const stats = await api("/api/stats");
    input.value = "";
    showConsole(stats);
  } catch (e) {
    secret = null;
    error.textContent = signInMessage(e);
    input.setAttribute("aria-invalid", "true");
    input.select();
  } finally {
    $("signin-button").disabled = false;
  }
}

function signOut(message = "") {
  secret = null;
  clearTimeout(pollTimer);
  pollTimer = null;
  previous = null;
  charts = null;
  $("charts").replaceChildren();
  $("users-body").replaceChildren();
  $("console").hidden = true;
  $("account").hidden = true;
  $("signin").hidden = false;
  $("signin-error").textContent = message;
  setBanner("");
  $("secret").focus();
}

function setBanner(text) {
  $("banner").textContent = text;
  $("banner").hidden = !text;
}

function showConsole(stats) {
  $("signin").hidden = true;
  $("secret").removeAttribute("aria-invalid");
  $("console").hidden = false;
  $("account").hidden = false;
  users = { page: 1, q: "" };
  $("search").value = "";
  makeCharts(stats);
  record(stats, null);
  pollTimer = setTimeout(poll, POLL_MS);
  loadUsers();
  $("figures-title").focus();
}

// ---- the charts ----

const integer = (v) => Math.round(v).toLocaleString();
const rate = (v) => (v < 10 ? v.toFixed(1) : integer(v));
const millis = (v) => (v < 1 ? `${v.toFixed(2)} ms` : v < 100 ? `${v.toFixed(1)} ms` : `${integer(v)} ms`);

function makeCharts(stats) {
  const parent = $("charts");
  parent.replaceChildren();
  charts = {
    connections: chart(parent, {
      id: "chart-connections",
      title: "Connections",
      series: ["HTTP connections", "WebSockets"],
      format: integer,
      counts: true,
      note: "Open TCP connections (any kind) and open WebSockets.",
    }),
    rate: chart(parent, {
      id: "chart-rate",
      title: "Messages/s",
      series: ["messages/s"],
      format: rate,
      note: "Messages taken on to store per second, between two readings.",
    }),
    latency: chart(parent, {
      id: "chart-latency",
      title: "p99 delivery latency",
      series: ["p99"],
      format: millis,
      note:
        "From commit to the frame written to a recipient's socket, for the deliveries between " +
        "two readings (delivery_seconds in /metrics, bucket upper bound). Gaps: none delivered.",
    }),
    queues: chart(parent, {
      id: "chart-queues",
      title: "Queue depth",
      series: ["all queues", "longest queue"],
      format: integer,
      counts: true,
      note: "Messages waiting in users' delivery queues: in total, and the longest single queue.",
    }),
  };
  if (stats.webhooks && typeof stats.webhooks === "object") {
    charts.webhooks = chart(parent, {
      id: "chart-webhooks",
      title: "Webhook backlog",
      series: ["pending events"],
      format: integer,
      counts: true,
      note: "Events waiting to be sent to the host app.",
    });
  }
}

/** The cumulative `delivery_seconds` buckets of a `/metrics` text: [[upper bound, count]]. */
function deliveryBuckets(text) {
  const buckets = [];
  const line = /^[a-z_]*delivery_seconds_bucket\{le="([^"]+)"\}\s+([0-9.e+]+)/gm;
  for (const m of text.matchAll(line)) {
    buckets.push([m[1] === "+Inf" ? Infinity : Number(m[1]), Number(m[2])]);
  }
  return buckets.sort((a, b) => a[0] - b[0]);
}

/** The p99 (ms) of the deliveries between two bucket readings; null when there were none. */
function p99Between(before, now) {
  if (!before || before.length !== now.length || now.length === 0) return null;
  const delta = now.map(([le, count], i) => [le, count - before[i][1]]);
  const total = delta[delta.length - 1][1];
  if (total <= 0) return null;
  const finite = delta.filter(([le]) => Number.isFinite(le));
  const hit = delta.find(([, count]) => count >= 0.99 * total);
  const le = hit && Number.isFinite(hit[0]) ? hit[0] : finite[finite.length - 1][0];
  return le * 1000;
}

function record(stats, metrics) {
  const now = Date.now() / 1000;
  const processed = stats.messages_processed;
  const buckets = metrics === null ? null : deliveryBuckets(metrics);
  charts.connections.push(now, [stats.connections, stats.websockets]);
  charts.rate.push(
    now,
    [previous ? Math.max(0, (processed - previous.processed) / (now - previous.time)) : null],
  );
  charts.latency.push(now, [buckets ? p99Between(previous && previous.buckets, buckets) : null]);
  charts.queues.push(now, [stats.queues.pending_total, stats.queues.max_user_pending]);
  if (charts.webhooks && stats.webhooks) {
    charts.webhooks.push(now, [stats.webhooks.webhook_pending ?? null]);
    const oldest = stats.webhooks.webhook_oldest_pending_seconds;
    const dropped = stats.webhooks.webhook_dropped;
    if (oldest !== undefined) {
      charts.webhooks.note(
        `Events waiting to be sent to the host app. Oldest waiting ${integer(oldest)} s; ` +
          `dropped ${integer(dropped ?? 0)}; failed attempts ${integer(stats.webhooks.webhook_failures ?? 0)}.`,
      );
    }
  }
  previous = { time: now, processed, buckets };
  const seconds = stats.uptime_seconds;
  $("status").textContent =
    `Indaba ${stats.version} · up ${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min · ` +
    `${integer(stats.users_online)} online · updated ${new Date().toLocaleTimeString()}`;
}

async function poll() {
  if (!secret) return;
  const mine = secret;
  try {
    const [stats, metrics] = await Promise.all([
      api("/api/stats"),
      metricsText().catch((e) => {
        if (e instanceof ApiError && e.status === 401) throw e;
        return null; // /metrics unavailable: the latency chart shows gaps and says why
      }),
    ]);
    if (secret !== mine) return;
    if (metrics === null) {
      charts.latency.note("Not available: /metrics could not be read with this secret.");
    }
    record(stats, metrics);
    setBanner("");
    // Not while the operator is on a row or deciding: a redrawn row would take their focus.
    polls += 1;
    const busy = $("users-table").contains(document.activeElement) || $("confirm").open;
    if (polls % USERS_EVERY === 0 && !busy) loadUsers();
  } catch (e) {
    if (secret !== mine) return;
    if (e instanceof ApiError && e.status === 401) {
      signOut("The daemon no longer accepts this secret. Sign in again.");
      return;
    }
    setBanner("Cannot read the figures; trying again…");
  }
  pollTimer = setTimeout(poll, POLL_MS);
}

// ---- the users table ----

async function loadUsers() {
  const error = $("users-error");
  const params = new URLSearchParams({ page: String(users.page), page_size: String(PAGE_SIZE) });
  if (users.q) params.set("q", users.q);
  try {
    const answer = await api(`/api/admin/users/?${params}`);
    error.textContent = "";
    renderUsers(answer);
  } catch (e) {
    if (e instanceof ApiError && e.status === 404 && users.page > 1) {
      users.page = 1; // the last page emptied (an erasure): back to the first
      loadUsers();
      return;
    }
    if (e instanceof ApiError && e.status === 401) {
      signOut("The daemon no longer accepts this secret. Sign in again.");
      return;
    }
    error.textContent = `Cannot list users: ${e.message}`;
  }
}

function cell(label, ...content) {
  return h("td", { dataset: { label } }, ...content);
}

function renderUsers(answer) {
  const body = $("users-body");
  body.replaceChildren();
  for (const user of answer.results) {
    const name = user.username || `#${user.id}`;
    const state = user.disabled
      ? h("span", { class: "state-disabled" }, "Disabled")
      : user.online
        ? h("span", { class: "state-online" }, "Online")
        : "Offline";
    const toggle = user.disabled
      ? h("button", {
          type: "button",
          class: "btn btn-secondary btn-small",
          "aria-label": `Enable ${name}`,
          onclick: () => act(user, "enable"),
        }, "Enable")
      : h("button", {
          type: "button",
          class: "btn btn-secondary btn-small",
          "aria-label": `Disable ${name}`,
          onclick: () => act(user, "disable"),
        }, "Disable");
    const erase = h("button", {
      type: "button",
      class: "btn btn-danger btn-small",
      "aria-label": `Erase ${name}`,
      onclick: () => act(user, "erase"),
    }, "Erase");
    body.append(
      h("tr", { dataset: { userId: user.id, username: user.username || "" } },
        cell("ID", String(user.id)),
        cell("Username", name),
        cell("Name", user.display_name || ""),
        cell("Status", state),
        cell("Last seen", user.last_seen ? formatTime(user.last_seen) : "–"),
        cell("Queue", integer(user.queue_length)),
        cell("Conversations", integer(user.conversations)),
        h("td", { class: "actions" }, toggle, erase),
      ),
    );
  }
  if (answer.results.length === 0) {
    body.append(h("tr", {}, h("td", { colspan: 8 }, users.q ? `No user matches “${users.q}”.` : "No users yet.")));
  }
  const pages = Math.max(1, Math.ceil(answer.count / PAGE_SIZE));
  $("page-status").textContent = `Page ${users.page} of ${pages} · ${integer(answer.count)} users`;
  $("prev-page").disabled = !answer.previous;
  $("next-page").disabled = !answer.next;
}

const CONFIRM = {
  disable: (name) => ({
    title: `Disable ${name}?`,
    text: `${name}'s open sockets are closed at once and their tokens refused until you enable them again.`,
    button: "Disable",
  }),
  erase: (name) => ({
    title: `Erase ${name}?`,
    text:
      `${name}'s account, queue and profile are removed and the text of every message they sent ` +
      "is erased for good. This cannot be undone.",
    button: "Erase for good",
  }),
};

/** Asks in the dialog; resolves true when confirmed. Escape and Cancel say no. */
function confirmStep({ title, text, button }) {
  const dialog = $("confirm");
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  $("confirm-ok").textContent = button;
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
    $("confirm-cancel").focus();
  });
}

async function act(user, action) {
  const name = user.username || `#${user.id}`;
  if (CONFIRM[action] && !(await confirmStep(CONFIRM[action](name)))) return;
  const error = $("users-error");
  try {
    if (action === "erase") {
      await api(`/api/admin/users/${user.id}`, { method: "DELETE" });
    } else {
      await api(`/api/admin/users/${user.id}/${action}`, { method: "POST" });
    }
    const done = { disable: "disabled", enable: "enabled", erase: "erased" }[action];
    $("status").textContent = `${name} ${done}.`;
    error.textContent = "";
  } catch (e) {
    error.textContent = `Could not ${action} ${name}: ${e.message}`;
  }
  await loadUsers();
}

// ---- wiring ----

$("signin-form").addEventListener("submit", signIn);
$("sign-out").addEventListener("click", () => signOut(""));
$("search-form").addEventListener("submit", (e) => {
  e.preventDefault();
  users = { page: 1, q: $("search").value.trim() };
  loadUsers();
});
$("prev-page").addEventListener("click", () => {
  users.page = Math.max(1, users.page - 1);
  loadUsers();
});
$("next-page").addEventListener("click", () => {
  users.page += 1;
  loadUsers();
});
// Plain buttons rather than `<form method="dialog">`: the page's CSP has `form-action 'none'`.
$("confirm-cancel").addEventListener("click", () => $("confirm").close("cancel"));
$("confirm-ok").addEventListener("click", () => $("confirm").close("ok"));
$("figures-title").setAttribute("tabindex", "-1");
$("secret").focus();
