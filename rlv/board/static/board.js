// rlv board: polls /api/state and redraws what moved. The server decides what is shown (the
// charts' data too: rlv/board/charts.py); this file lays out the page, charts.js draws the charts.
"use strict";

const board = {
  metric: new URLSearchParams(location.search).get("metric") || "",
  version: "",       // the document on the page ("" before the first): the server skips repeats
  anovaKey: "",      // the ANOVA on the page (or being fitted)
  refreshMs: 2000,
  timer: null,
  asked: 0,          // polls sent: a reply to an older one (another metric) is dropped
  renders: 0,        // for tests and the benchmark: documents drawn, and when the first was
  firstTablesMs: null,  // ms after the page was opened: the grid and the tables shown
  firstRenderMs: null,  // ... and the cell means drawn: the first screen
  firstCurvesMs: null,  // ... and the learning curves below it
};
window.rlvBoard = board;

// BokehJS and charts.js are deferred (board.html): charts wait for them, the grid does not
const chartsReady = new Promise((resolve) => {
  if (document.readyState !== "loading") resolve();
  else document.addEventListener("DOMContentLoaded", () => resolve());
});

const esc = (text) => String(text ?? "").replace(/[&<>"']/g,
  (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
const fmt = (x) => (x === null || x === undefined) ? "" : Number(x).toPrecision(5);
const byId = (id) => document.getElementById(id);

function showError(message) {
  const box = byId("error");
  box.textContent = message;
  box.hidden = !message;
}

function schedule(delayMs) {
  clearTimeout(board.timer);
  board.timer = setTimeout(() => poll(false), delayMs ?? board.refreshMs);
}

async function poll(fresh) {
  const asked = ++board.asked;
  const params = new URLSearchParams();
  if (board.metric) params.set("metric", board.metric);
  if (!fresh && board.version) params.set("since", board.version);
  try {
    const response = await fetch(`/api/state?${params}`, {cache: "no-store"});
    const doc = await response.json();
    if (asked !== board.asked) return;  // a newer poll (another metric) is on its way
    if (!response.ok) {
      showError(doc.error || `the board answered ${response.status}`);
    } else {
      showError("");
      if (!doc.unchanged) await render(doc);
    }
  } catch (err) {
    if (asked !== board.asked) return;
    showError(`the board does not answer (${err}); trying again`);
  }
  schedule();
}

function renderLinks(doc) {
  byId("sweep").textContent = `${doc.sweep}`;
  document.title = `rlv board: ${doc.sweep}`;
  byId("links").innerHTML =
    `<a id="dashboard-link" href="${esc(doc.links.dashboard)}" target="_blank" rel="noopener">` +
    `Ray dashboard</a><span class="note"> (token: <code>ray get-auth-token</code>)</span>` +
    `<code id="tensorboard">${esc(doc.links.tensorboard)}</code>`;
}

function renderProgress(p) {
  const share = (n) => `${p.total ? (100 * n) / p.total : 0}%`;
  byId("progress-done").style.width = share(p.done);
  byId("progress-running").style.width = share(p.running);
  byId("progress-failed").style.width = share(p.failed);
  // the words `rlv status` and the terminal use (rlv/store/status.py progress_counts)
  byId("progress-text").textContent = p.text + (p.complete ? ": the sweep is done" : "");
  byId("remaining").textContent = p.remaining;
  byId("driver").textContent = p.driver;
}

function renderGrid(grid) {
  const head = grid.seeds.map((s) => `<th>${esc(s)}</th>`).join("");
  const rows = grid.cells.map((cell) => {
    const squares = cell.trials.map((t) => {
      const what = t.state === "running" ? `running, epoch ${t.epoch}`
        : t.state === "failed" ? `failed: ${t.reason}` : t.state;
      const text = t.state === "running" && t.epoch !== null ? esc(t.epoch) : "";
      return `<td class="sq s-${t.state}" data-trial="${esc(t.id)}" data-state="${t.state}" ` +
        `title="${esc(`${t.id}: ${what}`)}">${text}</td>`;
    }).join("");
    return `<tr><th class="cell">${esc(cell.name)}</th>${squares}</tr>`;
  }).join("");
  // many seeds: smaller squares, the epoch in the tooltip only
  const dense = grid.seeds.length > 40 ? " dense" : "";
  byId("grid").innerHTML =
    `<table class="grid${dense}"><tr><th class="cell">cell \\ seed</th>${head}</tr>${rows}` +
    "</table>";
}

function renderMetrics(doc) {
  const select = byId("metric");
  if (!select.options.length) {
    select.innerHTML = doc.metrics.map((m) =>
      `<option value="${esc(m.name)}">${esc(m.label)}</option>`).join("");
    select.addEventListener("change", () => {
      board.metric = select.value;
      const url = new URL(location.href);
      url.searchParams.set("metric", board.metric);
      history.replaceState(null, "", url);
      poll(true);
    });
  }
  select.value = doc.metric;
  board.metric = doc.metric;
}

function renderStats(stats) {
  const rows = stats.map((s) => `<tr data-cell="${esc(s.name)}"><td>${esc(s.name)}</td>` +
    `<td>${s.n}</td><td>${fmt(s.mean)}</td><td>${fmt(s.sd)}</td>` +
    `<td>${s.lower === null ? "" : `${fmt(s.lower)} to ${fmt(s.upper)}`}</td></tr>`).join("");
  byId("stats").innerHTML = `<table class="numbers"><tr><th>cell</th><th>n</th><th>mean</th>` +
    `<th>sd</th><th>95% interval</th></tr>${rows}</table>`;
}

// The ANOVA comes apart from the document (fitting it may take seconds): asked for when it is
// due and its key (the store's rows, the metric) is not the one on the page.
async function updateAnova(due) {
  if (!due.due) {
    board.anovaKey = "";
    renderAnova({shown: false, provisional: true, note: due.note, rows: []});
    return;
  }
  if (due.key === board.anovaKey) return;
  board.anovaKey = due.key;
  const metric = board.metric;
  const shown = byId("anova-table");
  if (!shown || shown.dataset.metric !== metric) {  // same metric, new rows: the old one stays
    byId("anova-mark").textContent = "";
    byId("anova").innerHTML = '<p class="note">fitting the ANOVA…</p>';
  }
  try {
    const response = await fetch(`/api/anova?metric=${encodeURIComponent(board.metric)}`,
                                 {cache: "no-store"});
    const anova = await response.json();
    if (board.anovaKey !== due.key) return;  // the rows or the metric changed meanwhile
    if (!response.ok) {
      board.anovaKey = "";  // asked again at the next poll
      byId("anova").innerHTML = `<p class="note">${esc(anova.error)}</p>`;
      return;
    }
    renderAnova(anova, metric);
  } catch (err) {
    board.anovaKey = "";
    byId("anova").innerHTML = `<p class="note">the ANOVA did not come (${esc(err)})</p>`;
  }
}

function renderAnova(anova, metric) {
  const mark = byId("anova-mark");
  mark.className = anova.shown ? (anova.provisional ? "provisional" : "final") : "";
  mark.textContent = anova.shown ? (anova.provisional
    ? "provisional: the sweep is still running" : "final: every trial is in") : "";
  if (!anova.rows.length) {
    byId("anova").innerHTML = `<p class="note">${esc(anova.note)}</p>`;
    return;
  }
  const cols = ["dataset", "model", "term", "df", "resid_df", "F", "p", "partial_eta_sq"];
  const head = cols.map((c) => `<th>${esc(c)}</th>`).join("");
  const cell = (r, c) => typeof r[c] === "number" && !Number.isInteger(r[c]) ? fmt(r[c])
    : esc(r[c]);
  const rows = anova.rows.map((r) =>
    `<tr>${cols.map((c) => `<td>${cell(r, c)}</td>`).join("")}</tr>`).join("");
  const notes = [...new Set(anova.rows.map((r) => r.note).filter(Boolean))];
  byId("anova").innerHTML =
    `<table class="numbers" id="anova-table" data-metric="${esc(metric)}"><tr>${head}</tr>${rows}` +
    `</table>${notes.map((n) => `<p class="note">${esc(n)}</p>`).join("")}`;
}

async function render(doc) {
  const start = performance.now();
  board.refreshMs = 1000 * (doc.refresh_s || 2);
  renderLinks(doc);
  renderProgress(doc.progress);
  renderGrid(doc.grid);
  renderMetrics(doc);
  renderStats(doc.stats);
  updateAnova(doc.anova);  // not awaited: the charts do not wait for the fit
  const tables = performance.now();
  if (board.firstTablesMs === null) board.firstTablesMs = tables;
  await chartsReady;
  const ready = performance.now();
  byId("interaction-title").textContent = doc.interaction.title;
  await rlvCharts.interaction("interaction", doc.interaction);
  const interaction = performance.now();
  // the first screen is drawn (progress, grid, cell means): the curves below it come next
  if (board.firstRenderMs === null) board.firstRenderMs = interaction;
  await new Promise((resolve) => setTimeout(resolve, 0));  // let the browser paint first
  byId("curves-title").textContent = doc.curves.title;
  await rlvCharts.curves("curves", doc.curves);
  const curves = performance.now();
  if (board.firstCurvesMs === null) board.firstCurvesMs = curves;
  // how long each part took (ms), for the benchmark
  board.lastDraw = {tables: tables - start, chartsWait: ready - tables,
                    interaction: interaction - ready, curves: curves - interaction};
  board.version = doc.version;
  board.renders += 1;
  document.body.dataset.version = doc.version;  // what tests wait for: a document drawn whole
  document.body.dataset.metric = doc.metric;
}

poll(true);
