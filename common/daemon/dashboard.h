#pragma once
// The admin listener's dashboard (GET /): one self-contained HTML page, no external fetches.
// It loads /stats/history (one sample per second, the last 15 minutes, kept by the daemon),
// then polls /stats every second. Headline: the bytes the link saved. Charts, each with its own
// value axis and a time axis over the data (a young daemon's few minutes fill the width): body
// and link bytes in separate panels (the link is ~1% of the body), the link/body ratio,
// requests, 4xx and 5xx answers, latency. Tables: errors by reason, and the agents (edge) or the
// backend (origin) with their state. The totals it shows are /stats's own figures (ids
// total-*, with the raw number in data-value), so a test can compare them.

#include <string_view>

namespace coilgun::daemon {

inline constexpr std::string_view kDashboardHtml = R"HTML(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Coilgun</title>
<style>
  :root { --fg:#1d2330; --muted:#6b7385; --bg:#f6f7f9; --card:#fff; --body:#8a94a8; --link:#d9480f;
          --ok:#2b8a3e; --bad:#c92a2a; }
  * { box-sizing: border-box; }
  body { margin:0; font:14px/1.4 system-ui, sans-serif; color:var(--fg); background:var(--bg); }
  header { display:flex; gap:1.5em; align-items:baseline; padding:14px 22px; background:var(--card);
           border-bottom:1px solid #e3e6eb; flex-wrap:wrap; }
  header h1 { font-size:18px; margin:0; }
  .muted { color:var(--muted); }
  .state.ok { color:var(--ok); } .state.bad { color:var(--bad); }
  main { padding:18px 22px; max-width:1280px; }
  .totals { display:grid; grid-template-columns:repeat(auto-fill,minmax(170px,1fr)); gap:12px; }
  .total { background:var(--card); border:1px solid #e3e6eb; border-radius:8px; padding:10px 14px; }
  .total .v { font-size:22px; font-variant-numeric:tabular-nums; }
  .total .k { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.04em; }
  .charts { display:grid; grid-template-columns:repeat(auto-fill,minmax(560px,1fr)); gap:14px;
            margin-top:16px; }
  .chart { background:var(--card); border:1px solid #e3e6eb; border-radius:8px; padding:10px 14px; }
  .chart h2 { font-size:13px; margin:0 0 6px; font-weight:600; }
  .chart svg { width:100%; height:170px; display:block; }
  .legend span { margin-right:1.2em; font-size:12px; }
  .legend i { display:inline-block; width:10px; height:3px; margin-right:5px; vertical-align:middle; }
  select { font:inherit; }
  .total.headline { border-color:var(--ok); }
  .total.headline .v { color:var(--ok); }
  .tables { display:grid; grid-template-columns:repeat(auto-fill,minmax(560px,1fr)); gap:14px;
            margin-top:16px; }
  table { width:100%; border-collapse:collapse; font-size:13px; }
  th, td { text-align:left; padding:3px 8px 3px 0; border-bottom:1px solid #eef0f3; }
  th { color:var(--muted); font-weight:600; }
  td.num { text-align:right; font-variant-numeric:tabular-nums; }
</style>
</head>
<body>
<header>
  <h1 id="daemon">Coilgun</h1>
  <span id="version" class="muted"></span>
  <span>state: <b id="state" class="state">loading</b></span>
  <span>tunnels: <b id="tunnels">-</b></span>
  <span>up <b id="uptime">-</b></span>
  <span class="muted">window
    <select id="window"><option value="300">5 min</option><option value="900" selected>15 min</option></select>
  </span>
  <span id="updated" class="muted"></span>
</header>
<main>
  <section class="totals">
    <div class="total headline"><div class="k" id="saved-label">link bytes saved</div><div class="v" id="total-saved">-</div></div>
    <div class="total"><div class="k">body bytes served</div><div class="v" id="total-body">-</div></div>
    <div class="total"><div class="k" id="link-label">link bytes</div><div class="v" id="total-link">-</div></div>
    <div class="total"><div class="k">link / body</div><div class="v" id="total-ratio">-</div></div>
    <div class="total"><div class="k">requests</div><div class="v" id="total-requests">-</div></div>
    <div class="total"><div class="k">delta / full / stream</div><div class="v" id="total-kinds">-</div></div>
    <div class="total"><div class="k">5xx answers</div><div class="v" id="total-errors">-</div></div>
  </section>
  <section class="charts">
    <div class="chart"><h2>Body bytes per second</h2>
      <div class="legend"><span><i style="background:var(--body)"></i>body</span><span id="bytes-now" class="muted"></span></div>
      <svg id="chart-bytes" viewBox="0 0 600 170" preserveAspectRatio="none"></svg></div>
    <div class="chart"><h2>Link bytes per second</h2>
      <div class="legend"><span><i style="background:var(--link)"></i>link</span><span id="link-now" class="muted"></span></div>
      <svg id="chart-link" viewBox="0 0 600 170" preserveAspectRatio="none"></svg></div>
    <div class="chart"><h2>Link / body (per second)</h2>
      <div class="legend"><span><i style="background:var(--link)"></i>ratio</span><span id="ratio-now" class="muted"></span></div>
      <svg id="chart-ratio" viewBox="0 0 600 170" preserveAspectRatio="none"></svg></div>
    <div class="chart"><h2>Requests per second</h2>
      <div class="legend"><span><i style="background:var(--fg)"></i>requests</span><span id="requests-now" class="muted"></span></div>
      <svg id="chart-requests" viewBox="0 0 600 170" preserveAspectRatio="none"></svg></div>
    <div class="chart"><h2>4xx and 5xx answers per second</h2>
      <div class="legend"><span><i style="background:var(--body)"></i>4xx</span><span><i style="background:var(--bad)"></i>5xx</span><span id="errors-now" class="muted"></span></div>
      <svg id="chart-errors" viewBox="0 0 600 170" preserveAspectRatio="none"></svg></div>
    <div class="chart"><h2>Latency (ms)</h2>
      <div class="legend"><span><i style="background:var(--body)"></i>mean</span><span><i style="background:var(--link)"></i>p99 (bucket bound)</span><span id="latency-now" class="muted"></span></div>
      <svg id="chart-latency" viewBox="0 0 600 170" preserveAspectRatio="none"></svg></div>
  </section>
  <section class="tables">
    <div class="chart"><h2>Errors by reason (since start)</h2><table id="reasons"></table></div>
    <div class="chart"><h2 id="peers-title">Agents</h2><table id="peers"></table></div>
  </section>
</main>
<script>
"use strict";
let samples = [];
let linkKey = "link_in";

function sampleOf(stats) {
  const m = stats.metrics || {};
  const sum = (o) => Object.values(o || {}).reduce((a, b) => a + b, 0);
  return {
    t: Date.now(),
    body: m.coilgun_body_bytes_total || 0,
    link_in: (m.coilgun_link_bytes_total || {})["direction=in"] || 0,
    link_out: (m.coilgun_link_bytes_total || {})["direction=out"] || 0,
    requests: sum(m.coilgun_requests_total),
    errors: (m.coilgun_requests_total || {})["code=5xx"] || 0,
    client_errors: (m.coilgun_requests_total || {})["code=4xx"] || 0,
    duration: m.coilgun_request_duration_seconds || {},
  };
}

function bytes(n) {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return (i === 0 ? n.toFixed(0) : n.toFixed(n < 10 ? 2 : 1)) + " " + units[i];
}
function pct(x) { return isFinite(x) ? (100 * x).toFixed(x < 0.1 ? 2 : 1) + "%" : "-"; }
function duration(s) {
  const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
  return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : `${m}m ${Math.floor(s % 60)}s`;
}
function setTotal(id, value, text) {
  const el = document.getElementById(id);
  el.dataset.value = String(value);
  el.textContent = text;
}

// Per-interval rates between consecutive samples: [{t, body, link, requests, mean, p99, ratio}].
function rates(window) {
  const out = [];
  const from = Date.now() - window * 1000;
  for (let i = 1; i < samples.length; i++) {
    const a = samples[i - 1], b = samples[i];
    if (b.t < from) continue;
    const dt = Math.max(0.001, (b.t - a.t) / 1000);
    const body = (b.body - a.body) / dt, link = (b[linkKey] - a[linkKey]) / dt;
    const count = (b.duration.count || 0) - (a.duration.count || 0);
    const mean = count > 0 ? 1000 * ((b.duration.sum || 0) - (a.duration.sum || 0)) / count : NaN;
    out.push({ t: b.t, body, link, requests: (b.requests - a.requests) / dt, mean,
               e4: ((b.client_errors || 0) - (a.client_errors || 0)) / dt,
               e5: ((b.errors || 0) - (a.errors || 0)) / dt,
               p99: count > 0 ? 1000 * bucketQuantile(a.duration.buckets, b.duration.buckets, count, 0.99) : NaN,
               ratio: body > 0 ? link / body : NaN });
  }
  return out;
}

// The upper bound of the histogram bucket holding quantile q of the interval's observations.
// Buckets are [{le, count}] in bound order, +Inf last.
function bucketQuantile(before, after, count, q) {
  const finite = (Array.isArray(after) ? after : []).filter((b) => b.le !== "+Inf");
  for (let i = 0; i < finite.length; i++) {
    const n = finite[i].count - (before && before[i] ? before[i].count : 0);
    if (n >= q * count) return Number(finite[i].le);
  }
  return finite.length ? Number(finite[finite.length - 1].le) : NaN;
}

// Draws |series| ([{color, points: [{t, v}], fmt}]; the first one's fmt labels the value axis)
// from the older of the window's start and the first point to now, with value gridlines
// labelled 0 .. max and time labels under them.
function plot(id, series, window) {
  const svg = document.getElementById(id);
  const W = 600, H = 170, pad = 4, axis = 14;
  const now = Date.now();
  let first = now;
  for (const s of series) for (const p of s.points) first = Math.min(first, p.t);
  const from = Math.max(now - window * 1000, first - 1000);
  let max = 0;
  for (const s of series) for (const p of s.points) if (isFinite(p.v)) max = Math.max(max, p.v);
  if (max <= 0) max = 1;
  const fmt = series[0].fmt, plotH = H - axis - pad;
  const y = (v) => pad + plotH - (plotH * v) / max;
  let html = "";
  for (let g = 0; g <= 4; g++) {
    const gy = y((max * g) / 4);
    html += `<line x1="0" x2="${W}" y1="${gy}" y2="${gy}" stroke="#eef0f3"/>`;
    if (g > 0) html += `<text x="2" y="${gy + 11}" font-size="10" fill="#6b7385">${fmt((max * g) / 4)}</text>`;
  }
  const span = Math.max(1000, now - from);
  for (let g = 0; g <= 4; g++) {
    const t = from + (span * g) / 4, x = (W * g) / 4;
    const ago = Math.round((now - t) / 1000);
    const label = ago <= 0 ? "now" : ago >= 120 ? `-${Math.round(ago / 60)}m` : `-${ago}s`;
    const anchor = g === 0 ? "start" : g === 4 ? "end" : "middle";
    html += `<text x="${x}" y="${H - 2}" font-size="10" text-anchor="${anchor}" fill="#6b7385">${label}</text>`;
  }
  for (const s of series) {
    const pts = s.points.filter((p) => isFinite(p.v)).map((p) =>
      ((W * (p.t - from)) / span).toFixed(1) + "," + y(p.v).toFixed(1));
    html += `<polyline fill="none" stroke="${s.color}" stroke-width="1.8" points="${pts.join(" ")}"/>`;
  }
  svg.innerHTML = html;
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}
function table(id, head, rows) {
  const t = document.getElementById(id);
  t.replaceChildren();
  const tr = document.createElement("tr");
  for (const h of head) { const th = document.createElement("th"); th.textContent = h; tr.append(th); }
  t.append(tr);
  for (const r of rows) {
    const row = document.createElement("tr");
    r.forEach((c, i) => row.append(cell(c, i > 0 && typeof c === "number" ? "num" : "")));
    t.append(row);
  }
}

// Errors by reason with a count above zero, largest first.
function reasons(m) {
  const rows = Object.entries(m.coilgun_errors_total || {}).filter(([, n]) => n > 0)
    .map(([k, n]) => [k.replace(/^reason=/, ""), n]).sort((a, b) => b[1] - a[1]);
  table("reasons", ["reason", "count"], rows.length ? rows : [["none", 0]]);
}

// The edge's agents, or the origin's backend, with their state.
function peers(stats) {
  if (stats.daemon === "coilgun-origin") {
    document.getElementById("peers-title").textContent = "Backend";
    const h = stats.backend_health || { state: "off" };
    table("peers", ["backend", "health", "rtt ms", "last error"],
          [[stats.backend || "-", h.state, h.rtt_ms ?? "-", h.last_error || ""]]);
    return;
  }
  const a = stats.agents || { list: [] };
  document.getElementById("peers-title").textContent =
    `Agents: ${a.up || 0} up, ${a.down || 0} down, ${a.idle || 0} idle`;
  table("peers", ["agent", "state", "tunnels", "rtt ms", "last error"],
        (a.list || []).map((x) => [x.agent, x.state, x.tunnels, x.rtt_ms ?? "-", x.last_error || ""]));
}

function render(stats) {
  linkKey = stats.daemon === "coilgun-origin" ? "link_out" : "link_in";
  const s = sampleOf(stats);
  const m = stats.metrics || {};
  document.getElementById("daemon").textContent = stats.daemon;
  document.title = stats.daemon + " dashboard";
  document.getElementById("version").textContent = "v" + stats.version + ", " + stats.workers + " worker(s)";
  const state = document.getElementById("state");
  state.textContent = stats.draining ? "draining" : stats.ready ? "ready" : "not ready";
  state.className = "state " + (stats.ready && !stats.draining ? "ok" : "bad");
  document.getElementById("tunnels").textContent = m.coilgun_tunnel_connections ?? "-";
  document.getElementById("uptime").textContent = duration(stats.uptime_seconds || 0);
  document.getElementById("link-label").textContent =
    linkKey === "link_in" ? "link bytes in (tunnel)" : "link bytes out (tunnel)";
  // What the link saved: the body bytes that did not cross it.
  const saved = Math.max(0, s.body - s[linkKey]);
  setTotal("total-saved", saved, s.body > 0 ? `${bytes(saved)} (${pct(saved / s.body)})` : "-");
  setTotal("total-body", s.body, bytes(s.body));
  setTotal("total-link", s[linkKey], bytes(s[linkKey]));
  const ratio = s.body > 0 ? s[linkKey] / s.body : NaN;
  setTotal("total-ratio", ratio, pct(ratio));
  setTotal("total-requests", s.requests, s.requests.toLocaleString("en"));
  setTotal("total-errors", s.errors, s.errors.toLocaleString("en"));
  const kinds = m.coilgun_delta_responses_total || {};
  const k = ["result=delta", "result=full", "result=stream"].map((x) => kinds[x] || 0);
  setTotal("total-kinds", k.join(","), k.join(" / "));

  const window = Number(document.getElementById("window").value);
  const r = rates(window);
  const last = r[r.length - 1] || {};
  plot("chart-bytes", [
    { color: "var(--body)", points: r.map((p) => ({ t: p.t, v: p.body })), fmt: (v) => bytes(v) + "/s" }], window);
  plot("chart-link", [
    { color: "var(--link)", points: r.map((p) => ({ t: p.t, v: p.link })), fmt: (v) => bytes(v) + "/s" }], window);
  plot("chart-ratio", [
    { color: "var(--link)", points: r.map((p) => ({ t: p.t, v: p.ratio })), fmt: pct }], window);
  plot("chart-requests", [
    { color: "var(--fg)", points: r.map((p) => ({ t: p.t, v: p.requests })), fmt: (v) => v.toFixed(1) + "/s" }], window);
  plot("chart-errors", [
    { color: "var(--body)", points: r.map((p) => ({ t: p.t, v: p.e4 })), fmt: (v) => v.toFixed(1) + "/s" },
    { color: "var(--bad)", points: r.map((p) => ({ t: p.t, v: p.e5 })) }], window);
  plot("chart-latency", [
    { color: "var(--body)", points: r.map((p) => ({ t: p.t, v: p.mean })), fmt: (v) => v.toFixed(1) + " ms" },
    { color: "var(--link)", points: r.map((p) => ({ t: p.t, v: p.p99 })) }], window);
  document.getElementById("bytes-now").textContent =
    last.body !== undefined ? `now ${bytes(last.body)}/s` : "";
  document.getElementById("link-now").textContent =
    last.link !== undefined ? `now ${bytes(last.link)}/s` : "";
  document.getElementById("errors-now").textContent =
    last.e4 !== undefined ? `now ${last.e4.toFixed(1)}/s 4xx, ${last.e5.toFixed(1)}/s 5xx` : "";
  reasons(m);
  peers(stats);
  document.getElementById("ratio-now").textContent = isFinite(last.ratio) ? "now " + pct(last.ratio) : "";
  document.getElementById("requests-now").textContent =
    last.requests !== undefined ? `now ${last.requests.toFixed(1)}/s` : "";
  document.getElementById("latency-now").textContent =
    isFinite(last.mean) ? `now ${last.mean.toFixed(2)} ms mean` : "";
  document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
  document.body.dataset.rendered = String(Number(document.body.dataset.rendered || 0) + 1);
}

async function poll() {
  try {
    const stats = await (await fetch("/stats", { cache: "no-store" })).json();
    samples.push(sampleOf(stats));
    while (samples.length > 900) samples.shift();
    render(stats);
  } catch (e) {
    const state = document.getElementById("state");
    state.textContent = "unreachable";
    state.className = "state bad";
  }
}

async function start() {
  try {
    const h = await (await fetch("/stats/history", { cache: "no-store" })).json();
    samples = h.samples || [];
  } catch (e) { samples = []; }
  await poll();
  setInterval(poll, 1000);
  document.getElementById("window").addEventListener("change", poll);
}
start();
</script>
</body>
</html>
)HTML";

}  // namespace coilgun::daemon
