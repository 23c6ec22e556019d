// The fleet dashboard: renders each page from /api/* and keeps it live from /api/stream (SSE).
"use strict";
const app = document.getElementById("app"), PAGE = app.dataset.page, REF = app.dataset.ref;
const esc = s => String(s ?? "").replace(/[&<>"]/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));
const get = async url => { const r = await fetch(url); if (!r.ok) throw new Error((await r.json()).error.message); return r.json(); };
const ago = t => t ? Math.round(Date.now() / 1000 - t) + " s ago" : "";
const num = v => v == null ? "" : (+v).toFixed(2);
let pending = null;
function later(fn) { clearTimeout(pending); pending = setTimeout(fn, 150); }   // coalesce bursts of changes

function table(head, rows, cls = "") {
  return `<table class="${cls}"><tr>${head.map(h => `<th>${h}</th>`).join("")}</tr>${rows.join("")}</table>`;
}

async function overview() {
  const o = await get("/api/overview");
  const card = (k, v) => `<div class="card" data-count="${k}">${k}<b>${v}</b></div>`;
  app.innerHTML = `<h1>Fleet overview</h1><div class="cards">${card("devices", o.devices)}${card("online", o.online)}${card("offline", o.offline)}</div>
  <h2>Model versions</h2>${table(["version", "devices"], Object.entries(o.versions).map(([v, n]) =>
    `<tr><td><a href="/devices?version=${esc(v)}">${esc(v)}</a></td><td>${n}</td></tr>`))}
  <h2>Deployments</h2><div class="cards">${Object.entries(o.deployments).map(([k, v]) => card(k, v)).join("")}</div><br>
  ${table(["id", "state", "wave", "artifact", "target"], o.list.map(d =>
    `<tr><td><a href="/deployments/${esc(d.id)}">${esc(d.id)}</a></td><td>${esc(d.state)}</td><td>${d.wave}</td>
     <td>${esc(d.name)} ${esc(d.version)}</td><td>${esc(JSON.stringify(d.target))}</td></tr>`))}`;
}

const PAGE_ROWS = 200;          // a page of the device table: laying out 1,000 rows costs a second
async function devices() {
  const q = new URLSearchParams(location.search), at = Math.max(0, Math.floor(+(q.get("page") || 0)) || 0);
  const api = new URLSearchParams(q); api.delete("page"); api.set("limit", PAGE_ROWS); api.set("offset", at * PAGE_ROWS);
  const res = await get("/api/devices?" + api), rows = res.devices, pages = Math.ceil(res.total / PAGE_ROWS);
  const sel = v => q.get("online") === v ? "selected" : "";
  const link = n => { const p = new URLSearchParams(q); p.set("page", n); return `<a href="?${p}">${n + 1}</a>`; };
  app.innerHTML = `<h1>Devices (${res.total})</h1><form><input name="tag" placeholder="tag K=V" value="${esc(q.get("tag"))}">
  <input name="version" placeholder="version" value="${esc(q.get("version"))}"><select name="online"><option value="">any</option>
  <option ${sel("online")}>online</option><option ${sel("offline")}>offline</option></select><button>filter</button>
  ${pages > 1 ? "page " + [...Array(pages).keys()].map(n => n === at ? `<b>${n + 1}</b>` : link(n)).join(" ") : ""}</form>
  ${table(["device", "state", "model", "version", "p95 ms", "error rate", "tags", "last seen"], rows.map(d =>
    `<tr data-device="${esc(d.id)}"><td><a href="/devices/${esc(d.id)}">${esc(d.id)}</a></td>
     <td class="state ${d.online ? "online" : "offline"}">${d.online ? "online" : "offline"}</td><td>${esc(d.model)}</td>
     <td class="version">${esc(d.model_version)}</td><td>${num(d.health.p95_ms)}</td><td>${num(d.health.error_rate)}</td>
     <td>${esc(Object.entries(d.tags || {}).map(([k, v]) => k + "=" + v).join(" "))}</td><td>${ago(d.last_seen)}</td></tr>`), "devices")}`;
}

const CHARTS = [["latency ms", ["p50_ms", "p95_ms"]], ["throughput /s", ["throughput"]],
                ["error rate", ["error_rate"]], ["temperature °C", ["temperature_c"]]];
const series = {t: []}, plots = [];
function charts(el) {
  for (const [title, keys] of CHARTS) {
    keys.forEach(k => series[k] = series[k] || []);
    const div = document.createElement("div"); div.className = "chart"; el.appendChild(div);
    plots.push([keys, new uPlot({title, width: 380, height: 180, series: [{}, ...keys.map((k, i) =>
      ({label: k, stroke: ["#27c", "#e52", "#393"][i]}))]}, [series.t, ...keys.map(k => series[k])], div)]);
  }
}
function health(h) {
  if (!h.t) return;
  series.t.push(h.t);
  for (const k in series) if (k !== "t") series[k].push(h[k] ?? null);
  if (series.t.length > 300) for (const k in series) series[k].shift();
  for (const [keys, plot] of plots) plot.setData([series.t, ...keys.map(k => series[k])]);
}

async function device() {
  const d = await get("/api/devices/" + encodeURIComponent(REF));
  let info = document.getElementById("info");
  if (!info) {
    app.innerHTML = `<h1>${esc(d.id)}</h1><div id="info"></div><h2>Health</h2><div class="charts" id="charts"></div><div id="lists"></div>`;
    info = document.getElementById("info"); charts(document.getElementById("charts"));
  }
  info.innerHTML = `<div class="cards"><div class="card">state<b class="state ${d.online ? "online" : "offline"}">${d.online ? "online" : "offline"}</b></div>
   <div class="card">model<b>${esc(d.model)} <span class="version">${esc(d.model_version)}</span></b></div>
   <div class="card">board<b>${esc(d.board)}</b></div><div class="card">last seen<b>${ago(d.last_seen)}</b></div></div>`;
  document.getElementById("lists").innerHTML = `<h2>Recent events</h2>${table(["event", "detail"], d.events.slice().reverse().map(e =>
    `<tr><td>${esc(e.event || e.kind || e.type)}</td><td>${esc(JSON.stringify(e))}</td></tr>`))}
    <h2>Deployment history</h2>${table(["when", "deployment", "action", "error"], d.history.map(h =>
    `<tr><td>${new Date(h.ts * 1000).toLocaleString()}</td><td><a href="/deployments/${esc(h.deployment)}">${esc(h.deployment)}</a></td>
     <td>${esc(h.action)}</td><td class="err">${esc(h.detail.error)}</td></tr>`))}`;
}

async function deployment() {
  const d = await get("/api/deployments/" + encodeURIComponent(REF));
  const done = w => (w.states.updated || 0) + (w.states.failed || 0) + (w.states.rolled_back || 0);
  const failures = d.devices.filter(m => m.error);
  let box = document.getElementById("dep");
  if (!box) {
    app.innerHTML = `<h1>Deployment ${esc(d.id)}</h1><div id="dep"></div><h2>Operator</h2>
    <input id="token" type="password" placeholder="operator token" value="${esc(sessionStorage.getItem("token"))}">
    ${["pause", "resume", "abort"].map(v => `<button data-action="${v}">${v}</button>`).join(" ")}<span id="msg" class="msg"></span>`;
    box = document.getElementById("dep");
    app.querySelectorAll("button[data-action]").forEach(b => b.onclick = () => act(b.dataset.action));
  }
  box.innerHTML = `<div class="cards"><div class="card">state<b id="state">${esc(d.state)}</b></div>
   <div class="card">artifact<b>${esc(d.name)} ${esc(d.version)}</b></div><div class="card">wave<b>${d.wave}</b></div>
   <div class="card">rollback<b>${esc(d.rollback)}</b></div></div><p>${esc(d.reason)}</p>
   <h2>Waves</h2>${table(["wave", "%", "devices", "progress", "states"], d.waves.map(w =>
    `<tr><td>${w.wave}${w.open ? "" : " (not open)"}</td><td>${w.percent}</td><td>${w.devices}</td>
     <td><span class="bar"><i style="width:${w.devices ? 100 * done(w) / w.devices : 0}%"></i></span> ${done(w)}/${w.devices}</td>
     <td>${esc(Object.entries(w.states).map(([s, n]) => s + " " + n).join(", "))}</td></tr>`))}
   <h2>Failures (${failures.length})</h2>${table(["device", "wave", "state", "error"], failures.map(m =>
    `<tr><td><a href="/devices/${esc(m.device)}">${esc(m.device)}</a></td><td>${m.wave}</td><td>${esc(m.state)}</td><td class="err">${esc(m.error)}</td></tr>`))}`;
}

async function act(verb) {
  const token = document.getElementById("token").value, msg = document.getElementById("msg");
  sessionStorage.setItem("token", token);
  const r = await fetch(`/api/deployments/${encodeURIComponent(REF)}/${verb}`, {method: "POST", headers: {Authorization: "Bearer " + token}});
  const body = await r.json();
  msg.textContent = r.ok ? `${verb}: ${body.state}` : `refused: ${body.error.message}`;
  msg.className = "msg " + (r.ok ? "online" : "err");
  render();
}

const RENDER = {overview, devices, device, deployment};
function render() { RENDER[PAGE]().catch(e => app.innerHTML = `<h1>Error</h1><p class="err">${esc(e.message)}</p>`); }

function relevant(c) {
  if (PAGE === "device") return c.ref === REF;
  if (PAGE === "deployment") return c.kind !== "device" && c.kind !== "event" && c.ref === REF;
  return PAGE === "overview" || c.kind === "device";
}

render();
const live = document.getElementById("live");
const es = new EventSource("/api/stream" + (PAGE === "device" ? "?device=" + encodeURIComponent(REF) : ""));
es.onopen = () => { live.textContent = "live"; live.className = "live on"; };
es.onerror = () => { live.textContent = "reconnecting"; live.className = "live"; };
es.addEventListener("change", e => { if (relevant(JSON.parse(e.data))) later(render); });
es.addEventListener("health", e => health(JSON.parse(e.data)));
