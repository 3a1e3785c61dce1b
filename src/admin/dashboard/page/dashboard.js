// cutover's dashboard: follows GET /api/v1/stream (server-sent events) and
// drives the release through the admin API, in a session opened at
// /ui/session. Every text from the proxy goes into the page as text, never
// as markup.
"use strict";

const CSRF_KEY = "cutover.csrf";
const SAMPLES = 60;
const POOLS = ["blue", "green"];

const state = {
  csrf: localStorage.getItem(CSRF_KEY),
  status: null,
  stats: new Map(), // "service/pool" -> samples, oldest first
  events: [],
  cards: new Map(), // service name -> card
  source: null,
};

const $ = (id) => document.getElementById(id);

// el("div", {class: "x", onclick: f}, child, "text", ...)
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else if (value !== null && value !== undefined && value !== false) node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

function text(node, value) {
  const s = String(value);
  if (node.textContent !== s) node.textContent = s;
}

const pct = (x) => (x * 100).toFixed(x > 0 && x < 0.1 ? 2 : 1) + "%";
const ms = (x) => (x >= 1000 ? (x / 1000).toFixed(2) + " s" : Math.round(x * 10) / 10 + " ms");
const secs = (x) => Math.max(0, Math.round(x / 1000)) + " s";
const rate = (x) => (x >= 100 ? Math.round(x) : x.toFixed(1)) + "/s";

function notice(message, bad) {
  const n = $("notice");
  n.hidden = !message;
  n.className = bad ? "notice bad" : "notice";
  text(n, message || "");
}

function connection(label, kind) {
  const c = $("conn");
  text(c, label);
  c.className = "conn " + (kind || "");
}

// ---------------------------------------------------------------- session

async function boot() {
  $("login-form").addEventListener("submit", login);
  $("signout").addEventListener("click", signOut);
  $("confirm-ok").addEventListener("click", () => confirmed && confirmed());
  let session;
  try {
    session = await (await fetch("/ui/session", { cache: "no-store" })).json();
  } catch (e) {
    connection("unreachable", "down");
    setTimeout(boot, 2000);
    return;
  }
  $("signout").hidden = !session.token_required;
  if (session.session && state.csrf) return follow();
  if (session.token_required) return askToken();
  try {
    await openSession({});
    follow();
  } catch (e) {
    notice("no dashboard session: " + e.message, true);
  }
}

async function openSession(body) {
  const resp = await fetch("/ui/session", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const answer = await resp.json().catch(() => ({}));
  if (!resp.ok) throw refusal(resp, answer);
  state.csrf = answer.csrf;
  localStorage.setItem(CSRF_KEY, answer.csrf);
}

function askToken() {
  if (state.source) state.source.close();
  state.source = null;
  connection("signed out", "down");
  $("login").hidden = false;
  $("token").focus();
}

async function login(event) {
  event.preventDefault();
  try {
    await openSession({ token: $("token").value });
  } catch (e) {
    text($("login-error"), e.message);
    return;
  }
  $("token").value = "";
  text($("login-error"), "");
  $("login").hidden = true;
  follow();
}

async function signOut() {
  await send("DELETE", "/ui/session").catch(() => {});
  localStorage.removeItem(CSRF_KEY);
  state.csrf = null;
  askToken();
}

// ---------------------------------------------------------------- the stream

function follow() {
  if (state.source) state.source.close();
  const source = new EventSource("/api/v1/stream");
  state.source = source;
  source.onopen = () => connection("live", "live");
  source.onerror = async () => {
    connection("reconnecting", "down");
    const session = await fetch("/ui/session").then((r) => r.json()).catch(() => null);
    if (session && !session.session && session.token_required) askToken();
  };
  source.addEventListener("status", (e) => {
    state.status = JSON.parse(e.data);
    render();
  });
  source.addEventListener("events", (e) => {
    state.events = JSON.parse(e.data);
    renderEvents();
  });
  source.addEventListener("event", (e) => {
    state.events.push(JSON.parse(e.data));
    if (state.events.length > 200) state.events.shift();
    renderEvents();
  });
  source.addEventListener("stats", (e) => {
    mergeStats(JSON.parse(e.data));
    renderCharts();
  });
}

function mergeStats(stats) {
  for (const svc of stats.services) {
    for (const [pool, ps] of Object.entries(svc.pools)) {
      const key = svc.name + "/" + pool;
      const kept = state.stats.get(key) || [];
      const last = kept.length ? kept[kept.length - 1].time_ms : 0;
      for (const s of ps.samples) if (s.time_ms > last) kept.push(s);
      state.stats.set(key, kept.slice(-SAMPLES));
    }
  }
}

// ---------------------------------------------------------------- changes

function refusal(resp, answer) {
  const e = (answer && answer.error) || {};
  const lines = [e.code || "HTTP " + resp.status, e.message || resp.statusText];
  const err = new Error(lines.filter(Boolean).join(": ") + (e.errors ? "\n" + e.errors.join("\n") : ""));
  err.code = e.code;
  return err;
}

async function send(method, path, body) {
  const headers = { "X-CSRF-Token": state.csrf || "" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const answer = await resp.json().catch(() => ({}));
  if (!resp.ok) throw refusal(resp, answer);
  return answer;
}

let confirmed = null;

// Asks before `run`; keeps the dialog open with the refusal when the
// proxy refuses.
function confirmThen(title, what, run) {
  const dialog = $("confirm");
  text($("confirm-title"), title);
  text($("confirm-text"), what);
  text($("confirm-error"), "");
  $("confirm-ok").disabled = false;
  confirmed = async () => {
    $("confirm-ok").disabled = true;
    try {
      const applied = await run();
      dialog.close();
      if (applied && applied.service) applyService(applied.service);
      notice(title + (applied && applied.changed === false ? ": nothing to change" : ": done, generation " + applied.generation));
    } catch (e) {
      text($("confirm-error"), "Refused: " + e.message);
      if (e.code === "unauthorized") askToken();
    } finally {
      $("confirm-ok").disabled = false;
    }
  };
  dialog.showModal();
}

function applyService(service) {
  if (!state.status) return;
  const i = state.status.services.findIndex((s) => s.name === service.name);
  if (i >= 0) state.status.services[i] = service;
  render();
}

function versionsOf(pool) {
  const v = new Set((pool ? pool.servers : []).map((s) => s.version).filter(Boolean));
  return [...v].join(", ");
}

function askSwitch(svc, card) {
  const to = svc.standby;
  const expect = card.expect.value.trim();
  const body = { to };
  if (expect) body.expect_version = expect;
  const inflight = svc.pools[svc.active] ? svc.pools[svc.active].inflight : 0;
  confirmThen(
    `Switch ${svc.name} to ${to}`,
    `Every new request of ${svc.name} goes to ${to}` + (versionsOf(svc.pools[to]) ? ` (${versionsOf(svc.pools[to])})` : "") +
      ` once the switch returns. The ${inflight} request(s) in flight on ${svc.active} finish there, up to the drain timeout. ` +
      `Refused unless ${to} is healthy` + (expect ? ` and reports version ${expect}.` : "."),
    () => send("POST", `/api/v1/services/${encodeURIComponent(svc.name)}/switch`, body),
  );
}

function askRollback(svc) {
  const back = svc.previous || svc.standby;
  confirmThen(
    `Roll ${svc.name} back to ${back}`,
    `Every new request of ${svc.name} goes back to ${back} at once; requests in flight on ${svc.active} finish there.`,
    () => send("POST", `/api/v1/services/${encodeURIComponent(svc.name)}/rollback`),
  );
}

function askWeight(svc, card) {
  const w = Number(card.weight.value);
  confirmThen(
    `Set ${svc.name}'s weight to ${w}%`,
    `${w}% of new requests of ${svc.name} go to the standby pool ${svc.standby}, ${100 - w}% to ${svc.active}. ` +
      `Sessions stay on the pool they started on.`,
    () => send("PUT", `/api/v1/services/${encodeURIComponent(svc.name)}/weights`, { standby: w }),
  );
}

function askCanary(svc, start) {
  const path = `/api/v1/services/${encodeURIComponent(svc.name)}/canary`;
  if (start) {
    confirmThen(
      `Start the canary of ${svc.name}`,
      `${svc.standby} takes the configured stages' weights in turn, each judged on its error rate and p99; ` +
        `after the last stage passes it becomes the active pool. A failing stage aborts (weight back to 0).`,
      () => send("POST", path, {}),
    );
  } else {
    confirmThen(
      `Abort the canary of ${svc.name}`,
      `The weight of ${svc.standby} goes back to 0: every new request goes to ${svc.active}.`,
      () => send("DELETE", path),
    );
  }
}

// ---------------------------------------------------------------- rendering

function render() {
  const status = state.status;
  if (!status) return;
  text($("generation"), "generation " + status.generation + (status.ready ? "" : " · not ready"));
  const seen = new Set();
  for (const svc of status.services) {
    seen.add(svc.name);
    let card = state.cards.get(svc.name);
    if (!card) {
      card = makeCard(svc.name);
      state.cards.set(svc.name, card);
      $("services").append(card.root);
    }
    updateCard(card, svc);
  }
  for (const [name, card] of state.cards) {
    if (!seen.has(name)) {
      card.root.remove();
      state.cards.delete(name);
    }
  }
  renderCharts();
}

function makeChart(title) {
  const value = el("span", { class: "value" }, "–");
  const canvas = el("canvas", { width: "300", height: "48" });
  return { root: el("div", { class: "chart" }, el("div", { class: "label" }, title, value), canvas), value, canvas };
}

function makePool(name) {
  const charts = { rps: makeChart("req/s"), errors: makeChart("errors"), p99: makeChart("p99") };
  const p = {
    name,
    head: el("span", { class: "muted" }),
    role: el("span", { class: "badge" }),
    servers: el("tbody"),
    charts,
  };
  p.root = el(
    "div",
    { class: "pool " + name, "data-pool": name },
    el("div", { class: "pool-head" }, el("strong", {}, name), p.role, p.head),
    el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "server"), el("th", {}, "state"), el("th", {}, "version"), el("th", {}, "in flight"))), p.servers),
    el("div", { class: "charts" }, charts.rps.root, charts.errors.root, charts.p99.root),
  );
  return p;
}

function makeCard(name) {
  const c = { name };
  c.active = el("span", { class: "badge active-pool" });
  c.weightText = el("span", { class: "muted weights-text" });
  c.meta = el("span", { class: "muted" });
  c.bar = el("div", { class: "weights" }, el("span", { class: "blue" }), el("span", { class: "green" }));
  c.canary = el("div", { class: "box canary", hidden: "" });
  c.watch = el("div", { class: "box watch", hidden: "" });
  c.deploy = el("div", { class: "box deploy", hidden: "" });
  c.pools = {};
  const pools = el("div", { class: "pools" });
  for (const p of POOLS) {
    c.pools[p] = makePool(p);
    pools.append(c.pools[p].root);
  }
  const svc = () => state.status.services.find((s) => s.name === name);
  c.expect = el("input", { type: "text", placeholder: "expected version", "data-field": "expect", size: "12", oninput: () => (c.expect.dataset.touched = "1") });
  c.weight = el("input", { type: "number", min: "0", max: "100", step: "1", value: "0", "data-field": "weight" });
  c.switchBtn = el("button", { type: "button", class: "primary", "data-action": "switch", onclick: () => askSwitch(svc(), c) });
  c.rollbackBtn = el("button", { type: "button", "data-action": "rollback", onclick: () => askRollback(svc()) }, "Roll back");
  c.weightBtn = el("button", { type: "button", "data-action": "weight", onclick: () => askWeight(svc(), c) }, "Set weight");
  c.canaryStart = el("button", { type: "button", "data-action": "canary-start", onclick: () => askCanary(svc(), true) }, "Start canary");
  c.canaryAbort = el("button", { type: "button", "data-action": "canary-abort", onclick: () => askCanary(svc(), false) }, "Abort canary");
  c.root = el(
    "section",
    { class: "service", "data-service": name },
    el("div", { class: "service-head" }, el("h2", {}, name), el("span", {}, "active ", c.active), c.weightText, c.meta),
    c.bar,
    c.canary,
    c.watch,
    c.deploy,
    pools,
    el(
      "div",
      { class: "controls" },
      el("span", { class: "group" }, c.switchBtn, c.expect),
      c.rollbackBtn,
      el("span", { class: "group" }, el("label", {}, "standby weight", c.weight, "%"), c.weightBtn),
      el("span", { class: "group" }, c.canaryStart, c.canaryAbort),
    ),
  );
  return c;
}

function updateCard(c, svc) {
  text(c.active, svc.active);
  c.active.className = "badge active-pool " + svc.active;
  const w = svc.weights || {};
  text(c.weightText, POOLS.map((p) => `${p} ${w[p] || 0}%`).join(" · "));
  c.bar.children[0].style.width = (w.blue || 0) + "%";
  c.bar.children[1].style.width = (w.green || 0) + "%";
  const last = svc.last_switch;
  text(c.meta, `generation ${svc.generation}` + (last ? ` · last switch ${clock(last.time)} ${last.from || "?"}→${last.to || "?"} (${last.reason}, ${last.actor})` : ""));
  for (const p of POOLS) updatePool(c.pools[p], svc, svc.pools[p]);
  updateCanary(c, svc);
  updateWatch(c, svc);
  updateDeploy(c, svc);
  text(c.switchBtn, `Switch to ${svc.standby}`);
  // A new standby pool: the expected version is its own again.
  if (c.standby !== svc.standby) delete c.expect.dataset.touched;
  c.standby = svc.standby;
  if (document.activeElement !== c.expect && !c.expect.dataset.touched) c.expect.value = versionsOf(svc.pools[svc.standby]).split(", ")[0] || "";
  c.rollbackBtn.disabled = !svc.previous;
  c.canaryStart.disabled = !!svc.canary;
  c.canaryAbort.disabled = !svc.canary;
  if (document.activeElement !== c.weight) c.weight.value = svc.weights[svc.standby] || 0;
}

function serverState(s) {
  if (s.state) return s.state;
  return s.healthy ? "healthy" : "unhealthy";
}

function updatePool(p, svc, pool) {
  p.root.hidden = !pool;
  if (!pool) return;
  const active = svc.active === p.name;
  p.root.classList.toggle("active", active);
  text(p.role, active ? "active" : "standby");
  p.role.className = "badge " + (active ? p.name : "");
  text(p.head, `${pool.healthy ? "healthy" : "no healthy server"} · in flight ${pool.inflight} · draining ${pool.draining}`);
  const rows = pool.servers.map((s) => {
    const st = serverState(s);
    const kind = st === "healthy" ? "ok" : st === "unhealthy" ? "bad" : "warn";
    return el(
      "tr",
      { title: s.last_error || "" },
      el("td", {}, s.container ? `${s.address} · ${s.container}` : s.address),
      el("td", {}, el("span", { class: "badge " + kind }, st)),
      el("td", { class: "version" }, s.version || "–"),
      el("td", {}, String(s.inflight || 0)),
    );
  });
  p.servers.replaceChildren(...rows);
}

function measure(label, value, limit, over, fmt) {
  return el("span", { class: "measure" + (over ? " over" : "") }, `${label} ${fmt(value)}` + (limit !== undefined ? ` (max ${fmt(limit)})` : ""));
}

function updateCanary(c, svc) {
  const k = svc.canary;
  c.canary.hidden = !k;
  if (!k) return;
  const held = Math.min(1, k.held_ms / Math.max(1, k.hold_ms));
  c.canary.replaceChildren(
    el("strong", {}, `Canary: stage ${k.stage + 1} of ${k.stages}, ${k.weight}% to ${svc.standby}`),
    el(
      "div",
      { class: "row" },
      el("span", {}, "held ", el("span", { class: "progress" }, el("span", { style: null })), ` ${secs(k.held_ms)} of ${secs(k.hold_ms)}`),
      measure("requests", k.requests, undefined, false, String),
      el("span", { class: "muted" }, `judged from ${k.min_requests}`),
      measure("error rate", k.error_rate, k.max_error_rate, k.error_rate > k.max_error_rate, pct),
      measure("p99", k.p99_ms, k.max_p99_ms, k.p99_ms > k.max_p99_ms, ms),
    ),
  );
  c.canary.querySelector(".progress span").style.width = held * 100 + "%";
}

function updateWatch(c, svc) {
  const w = svc.watch;
  c.watch.hidden = !w;
  if (!w) return;
  const j = w.judged;
  const row = el("div", { class: "row" }, el("span", {}, `${secs(w.remaining_ms)} left`));
  if (j) {
    row.append(
      measure("requests", j.requests, undefined, false, String),
      el("span", { class: "muted" }, `judged from ${j.min_requests}`),
      measure("error rate", j.error_rate, j.max_error_rate, j.error_rate > j.max_error_rate, pct),
      measure("p99", j.p99_ms, j.max_p99_ms, j.p99_ms > j.max_p99_ms, ms),
    );
  }
  c.watch.replaceChildren(el("strong", {}, `Automated rollback watches ${w.pool}`), row);
}

// Deploys (Docker) are shown as the proxy reports them, field by field.
function updateDeploy(c, svc) {
  const d = svc.deploy;
  c.deploy.hidden = !d;
  if (!d) return;
  const fields = Object.entries(d).filter(([, v]) => v !== null && typeof v !== "object");
  c.deploy.replaceChildren(
    el("strong", {}, "Deploy"),
    el("div", { class: "row" }, ...fields.map(([k, v]) => el("span", {}, `${k} ${v}`))),
  );
}

function draw(chart, values, color, fmt) {
  const canvas = chart.canvas;
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 300;
  const height = canvas.clientHeight || 48;
  if (canvas.width !== Math.round(width * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  const g = canvas.getContext("2d");
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.clearRect(0, 0, width, height);
  text(chart.value, values.length ? fmt(values[values.length - 1]) : "–");
  if (values.length < 2) return;
  const top = Math.max(...values) || 1;
  const x = (i) => (width * (i + SAMPLES - values.length)) / (SAMPLES - 1);
  const y = (v) => height - 3 - ((height - 8) * v) / top;
  g.beginPath();
  values.forEach((v, i) => (i ? g.lineTo(x(i), y(v)) : g.moveTo(x(i), y(v))));
  g.strokeStyle = color;
  g.lineWidth = 1.5;
  g.stroke();
  g.lineTo(x(values.length - 1), height);
  g.lineTo(x(0), height);
  g.globalAlpha = 0.12;
  g.fillStyle = color;
  g.fill();
  g.globalAlpha = 1;
}

function renderCharts() {
  const colors = { blue: "#2f6fde", green: "#1d9a55" };
  for (const [name, card] of state.cards) {
    for (const p of POOLS) {
      const samples = state.stats.get(name + "/" + p) || [];
      const charts = card.pools[p].charts;
      const color = colors[p];
      draw(charts.rps, samples.map((s) => s.rps), color, rate);
      draw(charts.errors, samples.map((s) => s.error_rate), "#c62828", pct);
      draw(charts.p99, samples.map((s) => s.p99_ms), color, ms);
    }
  }
}

function clock(time) {
  const d = new Date(time);
  return isNaN(d) ? time : d.toLocaleTimeString([], { hour12: false });
}

function detailText(detail) {
  if (!detail || typeof detail !== "object") return "";
  return Object.entries(detail)
    .map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`)
    .join(" ");
}

function renderEvents() {
  const items = state.events
    .slice()
    .reverse()
    .map((e) =>
      el(
        "li",
        { "data-reason": e.reason },
        el("span", {}, clock(e.time)),
        el("span", {}, e.service || "(all)"),
        el("span", {}, el("span", { class: "badge " + (e.reason === "auto_rollback" || e.reason === "canary_abort" ? "bad" : "") }, e.reason)),
        el("span", {}, e.from || e.to ? `${e.from || "–"} → ${e.to || "–"}` : ""),
        el("span", { class: "muted" }, e.actor),
        el("span", { class: "detail", title: detailText(e.detail) }, detailText(e.detail)),
      ),
    );
  $("events").replaceChildren(...items);
}

boot();
