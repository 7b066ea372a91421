// Bulwark console: every figure comes from this server's JSON API; every chart is Plotly, served locally.
"use strict";

const COLORS = { up: "#1a7f37", degraded: "#e08a00", down: "#c62828", unknown: "#9aa3b2" };
const PLOT_CONFIG = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["toImage"] };
const state = { view: "chain", refreshMs: 2000, models: [], token: "", pending: null, signals: {} };

const $ = (id) => document.getElementById(id);

function esc(v) {
  return String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

async function api(path, opts) {
  const r = await fetch(path, opts);
  const body = await r.json().catch(() => ({ error: r.statusText }));
  if (!r.ok) { const e = new Error(body.error || r.statusText); e.status = r.status; throw e; }
  return body;
}

function stateCell(s) { return `<td class="state state-${esc(s)}">${esc(s)}</td>`; }

function stamp() { $("updated").textContent = "updated " + new Date().toLocaleTimeString(); }

// ------------------------------------------------------------------------------------------ chain
async function loadChain() {
  const c = await api("/api/chain");
  const nodes = c.nodes;
  const pos = Object.fromEntries(nodes.map((n) => [n.name, n]));
  const annotations = [];
  for (const e of c.edges) {
    const a = pos[e.source], b = pos[e.target];
    annotations.push({ x: b.x, y: b.y, ax: a.x, ay: a.y, xref: "x", yref: "y", axref: "x", ayref: "y",
      showarrow: true, arrowhead: 3, arrowsize: 1.2, arrowwidth: 1.5, arrowcolor: "#6b7280", standoff: 22, startstandoff: 22, text: "" });
    const bits = [e.carries];
    if (e.rate !== null) bits.push(`${e.rate}/s`);
    if (e.lag !== null) bits.push(`lag ${e.lag}`);
    annotations.push({ x: (a.x + b.x) / 2, y: (a.y + b.y) / 2 + 0.13, xref: "x", yref: "y", showarrow: false,
      text: bits.join("<br>"), font: { size: 10, color: "#374151" } });
  }
  const trace = {
    type: "scatter", mode: "markers+text", x: nodes.map((n) => n.x), y: nodes.map((n) => n.y),
    text: nodes.map((n) => `<b>${esc(n.label)}</b><br>${esc(n.state)}`), textposition: "bottom center",
    customdata: nodes.map((n) => [n.name, n.state, n.detail]),
    hovertemplate: "%{customdata[0]}: %{customdata[1]}<br>%{customdata[2]}<extra></extra>",
    marker: { size: 34, symbol: "square", color: nodes.map((n) => COLORS[n.state] || COLORS.unknown), line: { width: 1, color: "#1d2330" } },
  };
  Plotly.react("chain-plot", [trace], {
    margin: { l: 20, r: 20, t: 20, b: 20 }, showlegend: false, annotations, hovermode: "closest",
    xaxis: { visible: false, range: [-0.5, 7.6] }, yaxis: { visible: false, range: [-0.55, 1.45] },
  }, PLOT_CONFIG);
  const verdict = c.down.length ? `down: ${c.down.join(", ")}` : "nothing down";
  $("chain-verdict").textContent = verdict + (c.degraded.length ? `; degraded: ${c.degraded.join(", ")}` : "");
  $("chain-verdict").className = "verdict " + (c.down.length ? "state-down" : c.degraded.length ? "state-degraded" : "state-up");
  const rows = nodes.filter((n) => n.kind !== "external").concat(c.other.map((o) => ({ name: o.name, kind: "service", state: o.state, detail: o.detail })));
  $("parts-table").tBodies[0].innerHTML = rows.map((n) =>
    `<tr data-part="${esc(n.name)}"><td>${esc(n.name)}</td><td>${esc(n.kind)}</td>${stateCell(n.state)}<td>${esc(n.detail)}</td></tr>`).join("");
}

// ------------------------------------------------------------------------------------------ trace
async function lookupTrace(ev) {
  ev.preventDefault();
  const id = $("trace-id").value.trim();
  if (!id) return;
  $("trace-detail").textContent = "looking up " + id + " ..."; $("trace-detail").className = "muted";
  try {
    const t = await api("/api/trace/" + encodeURIComponent(id));
    $("trace-detail").textContent = t.detail;
    $("trace-detail").className = t.complete ? "state-up" : "state-down";
    $("trace-table").tBodies[0].innerHTML = t.hops.map((h) =>
      `<tr data-hop="${esc(h.hop)}" class="${h.hop === t.stopped_at ? "stopped" : ""}"><td>${esc(h.hop)}</td>` +
      `<td>${h.seen ? "yes" : "NO"}</td><td>${h.after_ms === null ? "" : esc(h.after_ms) + " ms"}</td><td>${esc(h.detail)}</td></tr>`).join("");
    Plotly.react("trace-plot", [{
      type: "bar", orientation: "h", y: t.hops.map((h) => h.hop), x: t.hops.map(() => 1),
      marker: { color: t.hops.map((h) => (h.hop === t.stopped_at ? COLORS.down : h.seen ? COLORS.up : COLORS.unknown)) },
      text: t.hops.map((h) => (h.after_ms === null ? (h.seen ? "reached" : "not reached") : `+${h.after_ms} ms`)),
      textposition: "inside", hovertext: t.hops.map((h) => h.detail), hoverinfo: "text",
    }], { margin: { l: 140, r: 20, t: 10, b: 20 }, xaxis: { visible: false }, yaxis: { autorange: "reversed" }, height: 60 + 40 * t.hops.length }, PLOT_CONFIG);
  } catch (e) {
    $("trace-detail").textContent = e.message; $("trace-detail").className = "error";
  }
}

// ------------------------------------------------------------------------------------------ models
async function loadModels() {
  state.models = await api("/api/models");
  for (const sel of document.querySelectorAll(".model-select")) {
    const keep = sel.value;
    const names = state.models.map((m) => m.model);
    if (sel.options.length !== names.length || [...sel.options].some((o, i) => o.value !== names[i])) {
      sel.innerHTML = names.map((n) => `<option value="${esc(n)}">${esc(n)}</option>`).join("");
      if (names.includes(keep)) sel.value = keep;
    }
  }
}

function signalsCharts(model, r) {
  if (!r.signals) {
    Plotly.react("signals-plot", [], { title: { text: "no rollout in progress", font: { size: 13 } }, margin: { t: 40 } }, PLOT_CONFIG);
    Plotly.react("signals-time-plot", [], { title: { text: "canary against live over time", font: { size: 13 } }, margin: { t: 40 } }, PLOT_CONFIG);
    return;
  }
  const names = ["errorRate", "guardFlagRate", "agreement", "accuracy"];
  const bars = ["candidate", "live"].map((who) => ({
    type: "bar", name: who === "candidate" ? `canary v${r.candidate}` : `live v${r.live_version}`,
    x: names, y: names.map((n) => Number(r.signals[who][n] || 0)),
  }));
  Plotly.react("signals-plot", bars, { barmode: "group", title: { text: `canary against live (${r.stage}, share ${r.share})`, font: { size: 13 } },
    margin: { t: 40, b: 40 }, yaxis: { range: [0, 1.05] } }, PLOT_CONFIG);
  const key = `${model}:${r.candidate}`;
  const series = (state.signals[key] = state.signals[key] || []);
  series.push({ t: new Date(), c: r.signals.candidate, l: r.signals.live });
  if (series.length > 300) series.shift();
  const lines = [];
  for (const [who, label] of [["c", "canary"], ["l", "live"]]) {
    lines.push({ type: "scatter", mode: "lines+markers", name: `${label} agreement`, x: series.map((s) => s.t), y: series.map((s) => Number(s[who].agreement || 0)) });
    lines.push({ type: "scatter", mode: "lines+markers", name: `${label} p99 ms`, yaxis: "y2", x: series.map((s) => s.t), y: series.map((s) => Number(s[who].latencyP99Ms || 0)) });
  }
  Plotly.react("signals-time-plot", lines, { title: { text: "canary against live over time", font: { size: 13 } }, margin: { t: 40 },
    yaxis: { title: { text: "agreement" }, range: [0, 1.05] }, yaxis2: { title: { text: "p99 ms" }, overlaying: "y", side: "right" } }, PLOT_CONFIG);
}

function fmtMetrics(m) {
  return Object.entries(m || {}).filter(([, v]) => typeof v === "number").slice(0, 6).map(([k, v]) => `${esc(k)}=${v.toFixed(3)}`).join("<br>");
}

function fmtReport(q) {
  if (!q || !Object.keys(q).length) return "";
  const bits = [];
  for (const k of ["form", "passed", "reason", "reasons", "size_ratio", "speedup", "accuracy_drop", "agreement"]) {
    if (q[k] !== undefined) bits.push(`${esc(k)}=${esc(Array.isArray(q[k]) ? q[k].join("; ") : q[k])}`);
  }
  return bits.join("<br>") || esc(JSON.stringify(q).slice(0, 160));
}

async function loadModel() {
  await loadModels();
  const model = $("model-select").value;
  if (!model) { $("rollout").textContent = "no model trained yet"; return; }
  const m = await api("/api/models/" + encodeURIComponent(model));
  const r = m.rollout;
  $("rollout").innerHTML = `<b>${esc(model)}</b>: live <b id="live-version">${r.live_version ? "v" + esc(r.live_version) : "none"}</b>` +
    (r.candidate ? `, candidate <b id="candidate-version">v${esc(r.candidate)}</b>` : "") +
    ` — stage <b id="rollout-stage">${esc(r.stage)}</b>` + (r.share ? ` (share ${esc(r.share)})` : "") +
    (r.decision ? `<br>updater: ${esc(r.decision)}` : "") + (r.reason ? `<br>why: <span id="rollout-reason">${esc(r.reason)}</span>` : "") +
    `<br><span class="muted">loaded in Triton: ${esc((r.loaded || []).join(", ") || "-")}; figures from ${esc(r.source)}</span>`;
  signalsCharts(model, r);
  $("versions-table").tBodies[0].innerHTML = m.versions.slice().reverse().map((v) =>
    `<tr data-version="${v.version}"><td>v${v.version}</td><td class="vstate">${esc(v.state)}</td><td>${esc(v.family)}</td>` +
    `<td>${v.parent ? "v" + esc(v.parent) : ""}</td><td>${esc((v.dataset_digest || "").slice(0, 12))}<br>` +
    `<span class="muted">${esc(Object.entries(v.dataset || {}).map(([k, x]) => `${k}=${typeof x === "object" ? JSON.stringify(x) : x}`).join(" "))}</span></td>` +
    `<td>${fmtMetrics(v.metrics)}</td><td>${fmtReport(v.quantization)}</td><td>${fmtReport(v.gate)}</td>` +
    `<td class="${v.signature === "ok" ? "state-up" : v.signature === "FAILED" ? "state-down" : "state-unknown"}">${esc(v.signature)}</td></tr>`).join("");
  $("changes-table").tBodies[0].innerHTML = m.changes.slice().reverse().map((c) =>
    `<tr data-action="${esc(c.action)}"><td>${esc(c.at)}</td><td>${esc(c.action)}</td><td>${c.version ? "v" + esc(c.version) : ""}</td>` +
    `<td>${c.live_version ? "v" + esc(c.live_version) : ""}</td><td>${esc(c.by)}</td><td>${esc(c.reason)}</td></tr>`).join("");
}

function askReason(ev) {
  state.pending = ev.target.dataset.action;
  $("reason-label").textContent = `Why ${state.pending}?`;
  $("reason").value = "";
  $("reason-form").hidden = false;
  $("reason").focus();
}

async function submitChange(ev) {
  ev.preventDefault();
  const action = state.pending, reason = $("reason").value.trim(), model = $("model-select").value;
  if (!action || !model) return;
  if (reason.length < 3) { $("admin-result").textContent = "say why: a reason is required"; $("admin-result").className = "error"; return; }
  try {
    const out = await api(`/api/models/${encodeURIComponent(model)}/${action}`, {
      method: "POST", headers: { "Content-Type": "application/json", Authorization: "Bearer " + state.token },
      body: JSON.stringify({ reason }) });
    $("admin-result").textContent = `${action} done by ${out.by}`; $("admin-result").className = "state-up";
    $("reason-form").hidden = true; state.pending = null;
    await loadModel();
  } catch (e) {
    $("admin-result").textContent = e.message; $("admin-result").className = "error";
  }
}

function onToken() {
  state.token = $("admin-token").value.trim();
  for (const b of document.querySelectorAll(".admin-action")) b.disabled = !state.token;
}

// ------------------------------------------------------------------------------------------ drift
async function loadDrift() {
  await loadModels();
  const model = $("drift-model").value;
  if (!model) return;
  const d = await api("/api/drift/" + encodeURIComponent(model));
  const cur = d.current;
  $("drift-detail").textContent = `${model} v${d.version ?? "-"}: PSI threshold ${d.threshold}, windows of ${d.window} records; ` +
    (cur ? `open window ${cur.records}/${cur.of}` : "no open window") + `; ${d.windows.length} drifting window(s) so far`;
  const feats = d.features;
  const curPsi = feats.map((f) => (cur && cur.psi[f] !== undefined ? cur.psi[f] : null));
  Plotly.react("drift-current-plot", [
    { type: "bar", x: feats, y: curPsi, name: "open window", marker: { color: curPsi.map((v) => (v !== null && v > d.threshold ? COLORS.down : "#5aa9ff")) } },
  ], { title: { text: "PSI per feature, open window", font: { size: 13 } }, margin: { t: 40, b: 90 },
    shapes: [{ type: "line", xref: "paper", x0: 0, x1: 1, y0: d.threshold, y1: d.threshold, line: { color: COLORS.down, dash: "dash" } }],
    annotations: [{ xref: "paper", x: 1, y: d.threshold, text: `threshold ${d.threshold}`, showarrow: false, yanchor: "bottom", xanchor: "right" }] }, PLOT_CONFIG);
  const lines = feats.map((f) => ({ type: "scatter", mode: "lines+markers", name: f,
    x: d.windows.map((w) => `w${w.window}`), y: d.windows.map((w) => (w.psi[f] ?? null)) }));
  Plotly.react("drift-windows-plot", lines, { title: { text: "PSI per feature over drifting windows", font: { size: 13 } }, margin: { t: 40 },
    shapes: [{ type: "line", xref: "paper", x0: 0, x1: 1, y0: d.threshold, y1: d.threshold, line: { color: COLORS.down, dash: "dash" } }] }, PLOT_CONFIG);
}

// ------------------------------------------------------------------------------------------ alerts
async function loadAlerts() {
  const rows = await api("/api/alerts");
  const sev = { info: "#5aa9ff", warning: COLORS.degraded, error: COLORS.down, critical: "#7b1fa2" };
  Plotly.react("alerts-plot", [{
    type: "scatter", mode: "markers", x: rows.map((a) => a.at), y: rows.map((a) => a.service || "?"),
    marker: { size: 12, color: rows.map((a) => sev[a.severity] || "#9aa3b2") },
    text: rows.map((a) => `${a.kind}: ${a.summary}`), hoverinfo: "text+x",
  }], { title: { text: `${rows.length} alert(s)`, font: { size: 13 } }, margin: { t: 40, l: 140 }, xaxis: { type: "date" } }, PLOT_CONFIG);
  $("alerts-table").tBodies[0].innerHTML = rows.slice().reverse().slice(0, 200).map((a) =>
    `<tr data-kind="${esc(a.kind)}"><td>${esc(a.at)}</td><td>${esc(a.severity)}</td><td>${esc(a.service)}</td><td>${esc(a.kind)}</td><td>${esc(a.summary)}</td></tr>`).join("");
}

// ------------------------------------------------------------------------------------------ explanations
async function explain(ev) {
  ev.preventDefault();
  const model = $("explain-model").value, rid = $("explain-id").value.trim();
  if (!model || !rid) return;
  try {
    const x = await api(`/api/explain/${encodeURIComponent(model)}/${encodeURIComponent(rid)}`);
    $("explain-detail").textContent = `${x.model} v${x.version}, ${x.method}, target ${x.target}: output ${Number(x.output).toFixed(4)} ` +
      `against baseline ${Number(x.baseline_output).toFixed(4)}` + (x.converged === false ? " (not converged)" : "");
    $("explain-detail").className = "";
    const bars = x.bars.slice().reverse();
    Plotly.react("explain-plot", [{
      type: "bar", orientation: "h", y: bars.map((b) => b.feature), x: bars.map((b) => b.value),
      marker: { color: bars.map((b) => (b.value >= 0 ? "#c62828" : "#1565c0")) },
    }], { title: { text: `attributions for request ${x.request_id}`, font: { size: 13 } }, margin: { l: 180, t: 40 },
      height: Math.max(320, 60 + 22 * bars.length) }, PLOT_CONFIG);
  } catch (e) {
    $("explain-detail").textContent = e.message; $("explain-detail").className = "error";
  }
}

// ------------------------------------------------------------------------------------------ wiring
const LOADERS = { chain: loadChain, models: loadModel, drift: loadDrift, alerts: loadAlerts, trace: loadModels, explain: loadModels };
let busy = false;

async function refresh() {
  if (busy) return;
  busy = true;
  try { await LOADERS[state.view](); stamp(); } catch (e) { $("updated").textContent = "refresh failed: " + e.message; } finally { busy = false; }
}

function show() {
  state.view = (location.hash || "#chain").slice(1);
  if (!LOADERS[state.view]) state.view = "chain";
  for (const s of document.querySelectorAll(".view")) s.classList.toggle("active", s.id === "view-" + state.view);
  for (const a of document.querySelectorAll("#tabs a")) a.classList.toggle("active", a.dataset.view === state.view);
  refresh();
}

async function start() {
  try { state.refreshMs = (await api("/api/config")).refresh_s * 1000; } catch (e) { /* keep the default */ }
  $("trace-form").addEventListener("submit", lookupTrace);
  $("explain-form").addEventListener("submit", explain);
  $("reason-form").addEventListener("submit", submitChange);
  $("reason-cancel").addEventListener("click", () => { $("reason-form").hidden = true; state.pending = null; });
  $("admin-token").addEventListener("input", onToken);
  for (const b of document.querySelectorAll(".admin-action")) b.addEventListener("click", askReason);
  $("model-select").addEventListener("change", refresh);
  $("drift-model").addEventListener("change", refresh);
  window.addEventListener("hashchange", show);
  show();
  setInterval(() => { if (["chain", "models", "drift", "alerts"].includes(state.view)) refresh(); }, state.refreshMs);
}

start();
