// rltrain's dashboard: the runs table, a run's live curves (uPlot), its rollouts, a cancel button.
// It reads the same routes as the prime CLI (/api/v1/rft/...), authenticated by the session cookie;
// writes carry X-Rltrain-Request, which a cross-site form cannot send. Data is shown with textContent
// only: a completion is the model's text and never becomes markup.
"use strict";

const POLL_MS = 2000;
const CHARTS = [
  { title: "reward", keys: ["reward_mean"], extra: /^(eval|val)\/.+\/avg@\d+$/ },
  { title: "loss", keys: ["loss"] },
  { title: "entropy / kl", keys: ["entropy", "kl"] },
  { title: "seconds per step", keys: ["step_s", "rollout_s", "train_s"] },
];
const COLORS = ["#3b6fd8", "#d8573b", "#2c8a4b", "#8a4fc0", "#c07a00", "#0e8a8a"];
const state = { timer: null, runId: null, rows: [], charts: [], chartKeys: "", steps: [], shownStep: null };

async function api(path, options = {}) {
  const headers = { "X-Rltrain-Request": "1", ...(options.headers || {}) };
  const res = await fetch(path, { ...options, headers, credentials: "same-origin" });
  if (res.status === 401) { location.reload(); throw new Error("logged out"); }
  const body = await res.json();
  if (!res.ok) throw new Error(body.detail || res.statusText);
  return body;
}

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

const fmt = (v, digits = 3) => (typeof v === "number" ? v.toFixed(digits) : "–");
const when = (iso) => (iso ? new Date(iso).toLocaleString() : "");

function stamp() {
  document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
}

// --- the runs table ---------------------------------------------------------------------------------
async function showRuns() {
  const page = await api("/api/v1/rft/runs?limit=200");
  const body = document.querySelector("#runs-table tbody");
  body.replaceChildren();
  for (const run of page.runs) {
    const r = run.rltrain || {};
    const tr = el("tr");
    tr.dataset.id = run.id;
    tr.addEventListener("click", () => (location.hash = "#/run/" + encodeURIComponent(run.id)));
    const status = el("span", "status " + run.status, run.status);
    const cells = [
      el("td", "id", run.id), el("td", "", run.baseModel), el("td", "", r.environment),
      el("td"), el("td", "num step", `${r.step ?? 0}/${run.maxSteps ?? "?"}`),
      el("td", "num reward", fmt(r.rewardMean)), el("td", "num", (r.tokens ?? 0).toLocaleString()),
      el("td", "num", "$" + fmt(r.costUsd, 2)), el("td", "dim", when(run.createdAt)),
    ];
    cells[3].append(status);
    tr.append(...cells);
    body.append(tr);
  }
  document.getElementById("no-runs").hidden = page.runs.length > 0;
  stamp();
}

// --- one run ----------------------------------------------------------------------------------------
function seriesKeys(rows) {
  const seen = new Set();
  for (const row of rows) for (const k of Object.keys(row)) seen.add(k);
  return CHARTS.map((c) => [...c.keys, ...[...seen].filter((k) => c.extra && c.extra.test(k)).sort()]
    .filter((k) => seen.has(k)));
}

function drawCharts(rows) {
  const keys = seriesKeys(rows);
  const signature = JSON.stringify(keys);
  const box = document.getElementById("charts");
  if (signature !== state.chartKeys) {  // new series appeared (an eval): build the charts again
    state.charts.forEach((c) => c.destroy());
    box.replaceChildren();
    state.charts = [];
    state.chartKeys = signature;
    CHARTS.forEach((chart, i) => {
      if (!keys[i].length) return;
      const holder = el("div", "chart");
      holder.dataset.title = chart.title;
      box.append(holder);
      const series = [{}, ...keys[i].map((k, j) => ({ label: k, stroke: COLORS[j % COLORS.length], spanGaps: true }))];
      const axes = [{}, { values: (u, ticks) => ticks.map((v) => +v.toPrecision(3)) }];  // 1e-4, not 0
      const opts = { title: chart.title, width: 440, height: 220, series, axes, scales: { x: { time: false } } };
      const plot = new uPlot(opts, [[], ...keys[i].map(() => [])], holder);
      plot.keys = keys[i];
      state.charts.push(plot);
    });
  }
  for (const plot of state.charts) {
    const data = [rows.map((r) => r.step), ...plot.keys.map((k) => rows.map((r) => (typeof r[k] === "number" ? r[k] : null)))];
    plot.setData(data);
  }
}

function message(m, isPrompt) {
  const out = [];
  const role = m.role || "?";
  const kind = isPrompt ? "prompt" : role === "assistant" ? "assistant" : role === "tool" ? "tool" : "env";
  const label = kind === "tool" ? `tool result${m.name ? " · " + m.name : ""}` : kind === "env" ? `environment (${role})` : role;
  if (m.content || kind !== "assistant" || !m.tool_calls) {
    const box = el("div", "msg " + kind);
    box.append(el("div", "role", label), el("pre", "", m.content ?? ""));
    out.push(box);
  }
  for (const call of m.tool_calls || []) {
    const fn = call.function || {};
    const args = typeof fn.arguments === "string" ? fn.arguments : JSON.stringify(fn.arguments);
    const box = el("div", "msg tool-call");
    box.append(el("div", "role", "tool call · " + (fn.name || "?")), el("pre", "", args));
    out.push(box);
  }
  return out;
}

function rolloutNode(s) {
  const node = el("div", "rollout");
  const meta = el("div", "meta");
  meta.append(el("span", "reward", "reward " + fmt(s.reward)),
    ` · advantage ${fmt(s.advantage)} · group ${s.group} · ${s.env} · finish ${s.finish}` +
    (s.turns ? ` · ${s.turns} turns, ${s.tool_calls || 0} tool calls` : ""));
  node.append(meta);
  const prompt = Array.isArray(s.prompt) ? s.prompt : s.prompt ? [{ role: "user", content: s.prompt }] : [];
  prompt.forEach((m) => node.append(...message(m, true)));
  const turns = Array.isArray(s.messages) ? s.messages : [{ role: "assistant", content: s.completion }];
  turns.forEach((m) => node.append(...message(m, false)));
  if (s.error) node.append(el("p", "error", s.error));
  return node;
}

async function showRollouts(runId, steps) {
  const select = document.getElementById("step-select");
  if (steps.join() !== state.steps.join()) {
    state.steps = steps;
    const keep = select.value;
    select.replaceChildren(...steps.map((s) => { const o = el("option", "", s); o.value = s; return o; }));
    if (keep && steps.includes(Number(keep))) select.value = keep;
  }
  if (!steps.length) return;
  if (document.getElementById("follow").checked) select.value = String(steps[steps.length - 1]);
  const step = Number(select.value);
  if (step === state.shownStep) return;
  const page = await api(`/api/v1/rft/runs/${encodeURIComponent(runId)}/samples?step=${step}&limit=50`);
  state.shownStep = step;
  document.getElementById("rollout-count").textContent = `${page.samples.length} of ${page.total} at step ${step}`;
  document.getElementById("rollouts").replaceChildren(...page.samples.map(rolloutNode));
}

async function showRun(runId) {
  const base = "/api/v1/rft/runs/" + encodeURIComponent(runId);
  const { run } = await api(base);
  if (state.runId !== runId) return;  // the page moved on while this answer was coming
  const r = run.rltrain || {};
  document.getElementById("run-title").textContent = run.id;
  const status = document.getElementById("run-status");
  status.textContent = run.status;
  status.className = "status " + run.status;
  document.getElementById("run-info").textContent =
    `${run.baseModel} · ${r.environment} · step ${r.step ?? 0}/${run.maxSteps} · reward ${fmt(r.rewardMean)} · ` +
    `${(r.tokens ?? 0).toLocaleString()} tokens · $${fmt(r.costUsd, 2)} · created ${when(run.createdAt)}`;
  const error = document.getElementById("run-error");
  error.hidden = !run.errorMessage;
  error.textContent = run.errorMessage || "";
  const cancel = document.getElementById("cancel");
  cancel.hidden = !["QUEUED", "RUNNING"].includes(run.status);
  const last = state.rows.length ? state.rows[state.rows.length - 1].step : -1;
  if ((r.step ?? 0) < last) state.rows = [];  // resumed from an earlier checkpoint: read again
  const from = state.rows.length ? state.rows[state.rows.length - 1].step + 1 : 0;
  const { metrics } = await api(`${base}/metrics?min_step=${from}`);
  if (state.runId !== runId) return;
  const newest = state.rows.length ? state.rows[state.rows.length - 1].step : -1;
  state.rows = state.rows.concat(metrics.filter((m) => m.step > newest));  // uPlot needs x ascending
  drawCharts(state.rows);
  const progress = await api(base + "/progress");
  await showRollouts(runId, progress.stepsWithSamples);
  stamp();
}

// --- navigation ---------------------------------------------------------------------------------------
function route() {
  clearTimeout(state.timer);
  const generation = (state.generation = (state.generation || 0) + 1);
  const match = location.hash.match(/^#\/run\/(.+)$/);
  const runId = match ? decodeURIComponent(match[1]) : null;
  document.getElementById("runs-view").hidden = !!runId;
  document.getElementById("run-view").hidden = !runId;
  if (runId !== state.runId) {
    Object.assign(state, { runId, rows: [], steps: [], shownStep: null, chartKeys: "" });
    state.charts.forEach((c) => c.destroy());
    state.charts = [];
    document.getElementById("charts").replaceChildren();
    document.getElementById("rollouts").replaceChildren();
    document.getElementById("follow").checked = true;
  }
  // one poll at a time: the next is scheduled when this one is done (a slow server never stacks them)
  const tick = async () => {
    await (runId ? showRun(runId) : showRuns()).catch((e) => console.error(e));
    if (generation === state.generation) state.timer = setTimeout(tick, POLL_MS);
  };
  tick();
}

document.getElementById("cancel").addEventListener("click", async (event) => {
  const button = event.currentTarget;
  button.disabled = true;
  try {
    await api(`/api/v1/rft/runs/${encodeURIComponent(state.runId)}/stop`, { method: "PUT" });
    await showRun(state.runId);
  } catch (e) {
    document.getElementById("run-error").hidden = false;
    document.getElementById("run-error").textContent = "cancel: " + e.message;
  } finally {
    button.disabled = false;
  }
});
document.getElementById("step-select").addEventListener("change", () => {
  document.getElementById("follow").checked = false;
  showRollouts(state.runId, state.steps);
});
document.getElementById("logout").addEventListener("click", async () => {
  await api("/logout", { method: "POST" }).catch(() => {});
  location.reload();
});
window.addEventListener("hashchange", route);
route();
