// churn-stream dashboard: plain JS (no build step), Chart.js for every chart.
// Data: JSON from api/*, live alerts from api/stream (server-sent events).
"use strict";

const COLORS = { red: "#dc2626", yellow: "#f59e0b", green: "#16a34a", blue: "#2563eb", ink: "#1f2937", grid: "#eef0f3" };
const DAY_MS = 86400000;
const PAGE = 25;
const state = { band: "", offset: 0, total: 0, sparks: [], charts: {}, feedCount: 0, customerTimer: null, overviewTimer: null };

Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
Chart.defaults.font.size = 11;
Chart.defaults.color = "#6b7280";

// ---- helpers --------------------------------------------------------------------------------
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const c of children) if (c != null) e.append(c);
  return e;
}
async function api(path, params = {}) {
  const q = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== "" && v != null));
  const r = await fetch(`api/${path}${q.toString() ? "?" + q : ""}`, { cache: "no-store" });
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}
const num = (v, d = 0) => v == null ? "–" : Number(v).toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d });
const money = v => v == null ? "–" : "$" + Number(v).toLocaleString("en-US", { maximumFractionDigits: 0 });
const pct = (v, d = 1) => v == null ? "–" : (100 * v).toFixed(d) + "%";
const dayISO = d => new Date(d * DAY_MS).toISOString().slice(0, 10);
const tsShort = ts => ts ? String(ts).slice(0, 16).replace("T", " ") : "";
const pill = (text, cls) => el("span", { class: `pill ${cls || "plain"}`, text: text || "–" });
const custLink = id => el("a", { href: "#/customer/" + encodeURIComponent(id), text: id });
function bandOf(score) { return score == null ? null : score >= 70 ? "green" : score >= 45 ? "yellow" : "red"; }
function humanFactor(f) { return String(f).replace(/^model:/, "").replace(/_/g, " "); }

// ---- overview ---------------------------------------------------------------------------------
function sparkline(canvas, points, band) {
  const color = COLORS[band] || COLORS.blue;
  return new Chart(canvas, {
    type: "line",
    data: { labels: points.map(p => p[0]), datasets: [{ data: points.map(p => p[1]), borderColor: color, borderWidth: 1.6,
      backgroundColor: color + "22", fill: true, pointRadius: 0, tension: 0.3 }] },
    options: { responsive: false, animation: false, events: [], plugins: { legend: { display: false }, tooltip: { enabled: false } },
      scales: { x: { display: false }, y: { display: false, suggestedMin: 0, suggestedMax: 100 } } },
  });
}

async function loadAtRisk() {
  const page = await api("at-risk", { band: state.band, offset: state.offset, limit: PAGE });
  state.total = page.total;
  state.sparks.forEach(c => c.destroy());
  state.sparks = [];
  const tbody = document.querySelector("#atrisk tbody");
  const rows = page.rows.map(r => {
    const canvas = el("canvas", { width: "110", height: "26" });
    const tr = el("tr", { "data-customer": r.customer_id },
      el("td", { class: "num", text: String(r.rank) }),
      el("td", { class: "cust" }, custLink(r.customer_id)),
      el("td", { class: "num" }, el("span", { class: "prob" + (r.churn_probability >= 0.25 ? " hi" : ""), text: pct(r.churn_probability) })),
      el("td", { class: "num", text: num(r.health_score, 1) }),
      el("td", {}, pill(r.health_band, r.health_band)),
      el("td", { class: "spark" }, canvas),
      el("td", { class: "num", text: money(r.mrr) }),
      el("td", { class: "reasons" }, ...r.reasons.map(x => el("span", { class: "chip", text: humanFactor(x) }))),
    );
    if (r.trend.length > 1) state.sparks.push(sparkline(canvas, r.trend, r.health_band));
    return tr;
  });
  tbody.replaceChildren(...rows);
  document.getElementById("atrisk-empty").hidden = rows.length > 0;
  document.getElementById("atrisk-total").textContent = `${num(page.total)} ${state.band || "active"} customers`;
  const last = Math.min(page.offset + page.rows.length, page.total);
  document.getElementById("pageinfo").textContent = page.total ? `${num(page.offset + 1)}–${num(last)} of ${num(page.total)}` : "";
  document.getElementById("prev").disabled = page.offset === 0;
  document.getElementById("next").disabled = page.offset + PAGE >= page.total;
  document.getElementById("band-hint").textContent = page.band ? `band ranking refreshed every ${state.refreshS || 15}s (age ${num(page.band_index_age_s, 0)}s); rows live` : "live ranking";
  if (page.as_of_day != null) document.getElementById("asof").textContent = "as of " + dayISO(page.as_of_day);
}

function setTile(id, big, note, cls) {
  const t = document.getElementById(id);
  const b = t.querySelector(".big");
  b.textContent = big;
  b.className = "big" + (cls ? " " + cls : "");
  t.querySelector(".note").textContent = note;
}

async function loadPortfolio() {
  const p = await api("portfolio");
  state.refreshS = p.refresh_s;
  const bb = p.by_band;
  setTile("tile-customers", num(p.active), `${num(bb.red)} red · ${num(bb.yellow)} yellow · ${num(bb.green)} green`);
  const bar = document.querySelector("#tile-customers .bandbar");
  const sum = (bb.red + bb.yellow + bb.green) || 1;
  bar.replaceChildren(...["red", "yellow", "green"].map(b => { const s = el("span", { class: b, title: `${b}: ${bb[b]}` }); s.style.width = (100 * bb[b] / sum) + "%"; return s; }));
  setTile("tile-health", num(p.avg_health, 1), `of 100 · ${bandOf(p.avg_health) || "–"} on average`);
  setTile("tile-nps", p.nps == null ? "–" : (p.nps > 0 ? "+" : "") + num(p.nps, 0), `${num(p.nps_responses)} customers answered (90 d)`);
  setTile("tile-csat", pct(p.csat, 0), `${num(p.csat_responses)} answers, satisfied = 4–5`);
  setTile("tile-churn", pct(p.churn_rate_30d, 1), `${num(p.cancelled_30d)} cancelled of ${num(p.active + p.cancelled_30d)}`);
  setTile("tile-mrr", money(p.mrr_at_risk), `${num(p.at_risk)} customers ≥ ${pct(p.risk_threshold, 0)} churn p · of ${money(p.mrr_total)}`, p.mrr_at_risk > 0 ? "red" : "");
  const note = document.getElementById("dist-note");
  note.textContent = `${num(p.active)} active · every ${p.refresh_s}s`;
  note.title = `one pass over customer state took ${num(p.duration_ms, 0)} ms; cached, age ${num(p.age_s, 0)} s`;
  const labels = p.histogram.map(b => `${b.lo}–${b.hi}`);
  const data = p.histogram.map(b => b.count);
  const colors = p.histogram.map(b => COLORS[b.band]);
  if (state.charts.dist) {
    state.charts.dist.data.labels = labels;
    state.charts.dist.data.datasets[0].data = data;
    state.charts.dist.data.datasets[0].backgroundColor = colors;
    state.charts.dist.update("none");
  } else {
    state.charts.dist = new Chart(document.getElementById("dist"), {
      type: "bar",
      data: { labels, datasets: [{ label: "customers", data, backgroundColor: colors, borderRadius: 2, barPercentage: 0.95, categoryPercentage: 0.95 }] },
      options: { responsive: true, maintainAspectRatio: false, animation: false, plugins: { legend: { display: false } },
        scales: { x: { title: { display: true, text: "health score" }, grid: { display: false }, ticks: { maxRotation: 0, autoSkip: true, maxTicksLimit: 10 } },
                  y: { title: { display: true, text: "customers" }, grid: { color: COLORS.grid }, beginAtZero: true, ticks: { precision: 0 } } } },
    });
  }
}

// ---- portfolio KPIs (live per-period sums) ---------------------------------------------------------
const KPI_ROWS = [
  ["Customers (start → end)", k => `${num(k.customers_start)} → ${num(k.customers_end)}`],
  ["New / churned", k => `${num(k.new_customers)} / ${num(k.churned_customers)}`],
  ["Logo churn / retention", k => `${pct(k.logo_churn_rate, 1)} / ${pct(k.logo_retention_rate, 1)}`],
  ["MRR (end)", k => money(k.mrr_end)],
  ["GRR / NRR", k => `${pct(k.grr, 1)} / ${pct(k.nrr, 1)}`],
  ["Expansion (customers / MRR)", k => `${pct(k.expansion_customer_rate, 1)} / ${pct(k.expansion_mrr_rate, 1)}`],
  ["ARPA / CLV", k => `${money(k.arpa)} / ${money(k.clv)}`],
  ["CSAT / NPS", k => `${pct(k.csat, 0)} / ${k.nps == null ? "–" : num(k.nps, 0)}`],
  ["Engagement / repeat", k => `${pct(k.engagement_rate, 0)} / ${pct(k.repeat_rate, 0)}`],
  ["Avg health (green/yellow/red)", k => `${num(k.avg_health, 1)} (${["green", "yellow", "red"].map(b => num((k.band_mix || {})[b] || 0)).join("/")})`],
  ["MRR at risk", k => `${money(k.mrr_at_risk)} (${pct(k.mrr_at_risk_share, 1)})`],
];

async function loadKpis() {
  const d = await api("kpis");
  const cols = [...d.months, ...d.quarters];
  const table = document.getElementById("kpis");
  document.getElementById("kpis-empty").hidden = cols.length > 0;
  table.hidden = cols.length === 0;
  table.tHead.replaceChildren(el("tr", {}, el("th", { text: "KPI" }),
    ...cols.map(k => el("th", { class: "num", text: k.period + (k.partial ? " (so far)" : "") }))));
  table.tBodies[0].replaceChildren(...KPI_ROWS.map(([label, f]) =>
    el("tr", {}, el("td", { text: label }), ...cols.map(k => el("td", { class: "num", text: f(k) })))));
  document.getElementById("kpi-note").textContent = `event-time periods · gross margin ${pct(d.gross_margin, 0)}`;
  const width = Math.max(0, ...d.cohorts.map(c => c.retention.length));
  const ct = document.getElementById("cohorts");
  ct.tHead.replaceChildren(el("tr", {}, el("th", { text: "Cohort" }), el("th", { class: "num", text: "Size" }),
    ...Array.from({ length: width }, (_, i) => el("th", { class: "num", text: `+${i + 1}m` }))));
  ct.tBodies[0].replaceChildren(...d.cohorts.map(c => el("tr", {}, el("td", { text: c.cohort }), el("td", { class: "num", text: num(c.size) }),
    ...Array.from({ length: width }, (_, i) => el("td", { class: "num", text: i < c.retention.length ? pct(c.retention[i], 0) + (c.last_partial && i === c.retention.length - 1 ? "*" : "") : "" })))));
}

async function loadModel() {
  try {
    const m = await api("model");
    const auc = m.prequential && m.serving && m.prequential[m.serving] ? ` · AUC ${num(m.prequential[m.serving].roc_auc, 3)}` : "";
    document.getElementById("model-tag").textContent = `model ${m.serving} · ${num(m.labels_seen)} labels${auc}`;
  } catch (e) { /* the tag keeps its last value */ }
}

// ---- live alert feed (server-sent events) -------------------------------------------------------
function alertItem(a, fresh) {
  const reason = (a.reasons || [])[0];
  return el("li", { class: `${a.severity}${fresh ? " fresh" : ""}`, "data-alert-id": a.alert_id },
    el("span", { class: "who" }, custLink(a.customer_id), " ", pill(a.kind.replace("_", " "), a.severity)),
    el("span", { class: "when", text: tsShort(a.ts) }),
    el("span", { class: "what", text: `health ${num(a.health_score, 0)} (${a.health_band}) · churn p ${pct(a.churn_probability)}` +
      (reason ? ` · ${humanFactor(reason.factor)}` : "") }),
  );
}

function connectStream() {
  const feed = document.getElementById("feed");
  const live = document.getElementById("live");
  let ready = false;
  const es = new EventSource("api/stream");
  es.addEventListener("open", () => { live.className = "live on"; live.querySelector("b").textContent = "live"; });
  es.addEventListener("error", () => { live.className = "live off"; live.querySelector("b").textContent = "reconnecting"; });
  es.addEventListener("ready", () => { ready = true; });
  es.addEventListener("alert", ev => {
    const a = JSON.parse(ev.data);
    if (feed.querySelector(`[data-alert-id="${CSS.escape(a.alert_id)}"]`)) return;
    feed.prepend(alertItem(a, ready));
    while (feed.children.length > 100) feed.lastElementChild.remove();
    state.feedCount += 1;
    document.getElementById("feed-empty").hidden = true;
    document.getElementById("feed-count").textContent = `${num(state.feedCount)} received`;
  });
}

// ---- customer page ------------------------------------------------------------------------------
function destroyChart(name) { if (state.charts[name]) { state.charts[name].destroy(); delete state.charts[name]; } }

async function loadCustomer(id) {
  let d;
  try { d = await api("customer", { id }); } catch (e) {
    document.getElementById("c-id").textContent = id;
    document.getElementById("c-facts").replaceChildren(el("span", { text: e.message }));
    return;
  }
  const h = d.view.health, agg = d.view.aggregates;
  document.getElementById("c-id").textContent = d.view.customer_id;
  document.getElementById("c-facts").replaceChildren(
    pill(h.health_band, h.health_band), pill(agg.subscription_status || "no subscription", "plain"),
    el("span", { text: `plan ${agg.plan || "–"}` }), el("span", { text: `tenure ${num(agg.tenure_days, 0)} d` }),
    el("span", { text: `last event ${tsShort(agg.last_event)}` }), el("span", { text: `model ${h.model_version || "–"}` }));
  document.getElementById("c-health").textContent = num(h.health_score, 1);
  document.getElementById("c-health").style.color = COLORS[h.health_band] || COLORS.ink;
  document.getElementById("c-churn").textContent = pct(h.churn_probability);
  document.getElementById("c-churn").style.color = h.churn_probability >= d.risk_threshold ? COLORS.red : COLORS.ink;
  document.getElementById("c-mrr").textContent = money(agg.mrr);
  const sgn = v => v == null ? "–" : (v > 0 ? "+" : "") + num(v, 1);
  document.getElementById("c-trend").textContent = `${sgn(h.trend_7d)} / ${sgn(h.trend_30d)}`;

  // history: health (left axis) and churn probability (right axis) per event-time day
  // every day from the first to the last point (gaps stay gaps, bridged by the line)
  const known = [...d.health_history.map(p => p[0]), ...d.churn_history.map(p => p[0])];
  const days = [];
  if (known.length) for (let x = Math.min(...known); x <= Math.max(...known); x++) days.push(x);
  const hMap = new Map(d.health_history), pMap = new Map(d.churn_history);
  destroyChart("history");
  state.charts.history = new Chart(document.getElementById("c-history"), {
    type: "line",
    data: { labels: days.map(dayISO), datasets: [
      { label: "health score", data: days.map(x => hMap.has(x) ? hMap.get(x) : null), yAxisID: "y", borderColor: COLORS.green,
        backgroundColor: COLORS.green + "18", fill: true, tension: 0.25, pointRadius: 2, spanGaps: true },
      { label: "churn probability (%)", data: days.map(x => pMap.has(x) ? +(100 * pMap.get(x)).toFixed(2) : null), yAxisID: "y1",
        borderColor: COLORS.red, tension: 0.25, pointRadius: 2, borderDash: [5, 3], spanGaps: true },
    ] },
    options: { responsive: true, maintainAspectRatio: false, animation: false, interaction: { mode: "index", intersect: false },
      plugins: { legend: { position: "top", align: "end" } },
      scales: { y: { min: 0, max: 100, title: { display: true, text: "health" }, grid: { color: COLORS.grid } },
                y1: { position: "right", min: 0, suggestedMax: 50, title: { display: true, text: "churn probability %" }, grid: { display: false } },
                x: { grid: { display: false }, ticks: { maxTicksLimit: 12 } } } },
  });
  document.getElementById("c-hist-note").textContent = `${d.health_history.length} daily scores · churn probability from ${d.churn_history_source}`;

  const comps = Object.entries(d.components);
  destroyChart("components");
  state.charts.components = new Chart(document.getElementById("c-components"), {
    type: "bar",
    data: { labels: comps.map(c => `${c[0]}  ${num(c[1], 0)}`), datasets: [{ data: comps.map(c => c[1]), backgroundColor: comps.map(c => COLORS[bandOf(c[1])]), borderRadius: 3 }] },
    options: { indexAxis: "y", responsive: true, maintainAspectRatio: false, animation: false, plugins: { legend: { display: false } },
      scales: { x: { min: 0, max: 100, grid: { color: COLORS.grid } }, y: { grid: { display: false } } } },
  });
  document.getElementById("c-reasons").replaceChildren(...h.reasons.map(r =>
    el("li", {}, humanFactor(r.factor), el("span", { class: "impact", text: `${num(r.impact, 1)} pts` }))));

  const alertsList = document.getElementById("c-alerts");
  alertsList.replaceChildren(...d.alerts.map(a => alertItem(a, false)));
  document.getElementById("c-alerts-empty").hidden = d.alerts.length > 0;
  const lastKinds = Object.entries(d.last_alert_ms).map(([k, ms]) => `${k.replace("_", " ")} ${dayISO(Math.floor(ms / DAY_MS))}`);
  document.getElementById("c-alerts-note").textContent = lastKinds.length ? "latest: " + lastKinds.join(" · ") : "";

  const tt = document.querySelector("#c-tickets tbody");
  tt.replaceChildren(...d.tickets.map(t => el("tr", {},
    el("td", {}, el("code", { text: t.ticket.slice(0, 8) })), el("td", {}, pill(t.state, t.state === "open" ? "yellow" : "plain")),
    el("td", { text: t.priority || "–" }), el("td", { text: t.opened ? tsShort(new Date(t.opened).toISOString()) : "–" }),
    el("td", { text: tsShort(new Date(t.last_update).toISOString()) }))));
  document.getElementById("c-tickets-empty").hidden = d.tickets.length > 0;
  document.getElementById("c-tickets-note").textContent = `${num(agg.open_tickets)} open`;

  const st = document.querySelector("#c-surveys tbody");
  st.replaceChildren(...d.surveys.slice(0, 12).map(s => el("tr", {},
    el("td", { text: dayISO(s.day) }), el("td", { class: "num", text: num(s.nps_responses) }), el("td", { class: "num", text: num(s.nps_mean, 1) }),
    el("td", { class: "num", text: num(s.csat_responses) }), el("td", { class: "num", text: num(s.csat_mean, 2) }), el("td", { class: "num", text: num(s.ces_mean, 2) }))));
  document.getElementById("c-surveys-empty").hidden = d.surveys.length > 0;
  document.getElementById("c-surveys-note").textContent = d.last_nps == null ? "" : `last NPS answer: ${d.last_nps}`;
}

// ---- routing and refresh --------------------------------------------------------------------------
async function refreshOverview() {
  await Promise.allSettled([loadAtRisk(), loadPortfolio(), loadModel(), loadKpis()]);
}

function route() {
  clearInterval(state.customerTimer);
  clearInterval(state.overviewTimer);
  const m = location.hash.match(/^#\/customer\/(.+)$/);
  document.getElementById("overview").hidden = !!m;
  document.getElementById("customer").hidden = !m;
  if (m) {
    const id = decodeURIComponent(m[1]);
    document.title = `${id} · churn-stream`;
    window.scrollTo(0, 0);
    loadCustomer(id);
    state.customerTimer = setInterval(() => loadCustomer(id), 10000);
  } else {
    document.title = "churn-stream · customer health";
    refreshOverview();
    state.overviewTimer = setInterval(refreshOverview, 5000);
  }
}

document.getElementById("band-filter").addEventListener("click", ev => {
  const b = ev.target.closest("button");
  if (!b) return;
  document.querySelectorAll("#band-filter button").forEach(x => x.classList.toggle("on", x === b));
  state.band = b.dataset.band;
  state.offset = 0;
  loadAtRisk();
});
document.getElementById("prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - PAGE); loadAtRisk(); });
document.getElementById("next").addEventListener("click", () => { state.offset += PAGE; loadAtRisk(); });
window.addEventListener("hashchange", route);
connectStream();
route();
