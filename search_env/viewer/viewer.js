"use strict";
// search-env view: the episodes of one run, filtered, sorted and plotted. Data: the JSON in #data (see viewer/__init__.py).
(function () {
  const DATA = JSON.parse(document.getElementById("data").textContent);
  const RECORDS = DATA.records, PASSAGES = DATA.passages, ROW = 28;
  const $ = (id) => document.getElementById(id);
  const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
  const fmt = (x, d = 3) => (x === null || x === undefined || Number.isNaN(x) ? "–" : Number(x).toFixed(d));
  const sum = (xs) => xs.reduce((a, b) => a + b, 0);
  const mean = (xs) => (xs.length ? sum(xs) / xs.length : null);
  const signed = (x, d = 3) => `<span class="${x > 0 ? "pos" : x < 0 ? "neg" : ""}">${x > 0 ? "+" : ""}${fmt(x, d)}</span>`;

  // Per episode: what the filters and sorts read.
  const EPISODES = RECORDS.map((r, index) => {
    const searches = r.turns.filter((t) => t.action_type === "search");
    const igs = searches.map((t) => t.ig).filter((x) => typeof x === "number");
    const credits = searches.map((t) => t.credit).filter((x) => typeof x === "number");
    return {
      index, r, igs,
      outcome: r.prediction === null || r.prediction === undefined ? "none" : r.em >= 1 ? "correct" : "wrong",
      hops: r.hops === null || r.hops === undefined ? "unknown" : String(r.hops),
      type: r.question_type ?? "unknown", dialect: r.dialect ?? "unknown",
      dataset: r.dataset ?? null, split: r.split ?? null, step: r.step ?? null,
      igSum: igs.length ? sum(igs) : null, igMean: mean(igs),
      creditSum: credits.length ? sum(credits) : null,
      advantage: typeof r.advantage === "number" ? r.advantage : null,
      text: (r.question + " " + searches.map((t) => t.query).join(" ")).toLowerCase(),
    };
  });

  const HAS_CREDIT = EPISODES.some((e) => e.creditSum !== null);
  const FILTERS = [
    ["f-outcome", "outcome", ["correct", "wrong", "none"]],
    ["f-hops", "hops"], ["f-type", "type"], ["f-dialect", "dialect"],
    ["f-dataset", "dataset"], ["f-split", "split"], ["f-step", "step"],
  ];
  const SORTS = {
    order: [null, 1], "ig-desc": ["igSum", -1], "ig-asc": ["igSum", 1], "igmean-desc": ["igMean", -1],
    "credit-desc": ["creditSum", -1], "credit-asc": ["creditSum", 1], "advantage-desc": ["advantage", -1],
    "advantage-asc": ["advantage", 1], "return-desc": ["return", -1], "f1-desc": ["f1", -1], "searches-desc": ["searches", -1],
  };
  const sortValue = (e, key) => (key === "return" ? e.r.return : key === "f1" ? e.r.f1 : key === "searches" ? e.r.n_searches : e[key]);

  function setUpControls() {
    for (const [id, key, fixed] of FILTERS) {
      const values = fixed || [...new Set(EPISODES.map((e) => e[key]).filter((v) => v !== null))]
        .sort((a, b) => (isFinite(a) && isFinite(b) ? a - b : String(a).localeCompare(String(b))));
      const select = $(id);
      for (const v of values) select.add(new Option(key === "outcome" ? { correct: "correct (EM 1)", wrong: "wrong", none: "no answer" }[v] : String(v), String(v)));
      // A filter with a single value (or none) says nothing: hidden, outcome excepted.
      select.parentElement.hidden = key !== "outcome" && values.length < 2;
      select.addEventListener("change", update);
    }
    const has = (key) => EPISODES.some((e) => e[key] !== null);
    for (const option of $("sort").options) {
      const key = SORTS[option.value][0];
      if (key && !["return", "f1", "searches"].includes(key) && !has(key)) option.hidden = option.disabled = true;
    }
    $("head-credit").hidden = !HAS_CREDIT;
    $("sort").addEventListener("change", update);
    $("f-text").addEventListener("input", update);
    $("list").addEventListener("scroll", drawRows);
  }

  let shown = [], selected = null;

  function update() {
    const text = $("f-text").value.trim().toLowerCase();
    const wanted = FILTERS.map(([id, key]) => [key, $(id).value]).filter(([, v]) => v !== "all");
    shown = EPISODES.filter((e) => wanted.every(([k, v]) => String(e[k]) === v) && (!text || e.text.includes(text)));
    const [key, dir] = SORTS[$("sort").value];
    if (key) {
      shown.sort((a, b) => {
        const x = sortValue(a, key), y = sortValue(b, key);
        if (x === null || y === null) return (x === null) - (y === null) || a.index - b.index;
        return dir * (x - y) || a.index - b.index;
      });
    }
    $("count").textContent = shown.length === EPISODES.length ? `${shown.length} episodes` : `${shown.length} of ${EPISODES.length} episodes`;
    const igs = shown.flatMap((e) => e.igs);
    $("summary").textContent = `EM ${fmt(mean(shown.map((e) => e.r.em)), 3)} · F1 ${fmt(mean(shown.map((e) => e.r.f1)), 3)} · `
      + `searches/episode ${fmt(mean(shown.map((e) => e.r.n_searches)), 2)} · mean IG per search ${fmt(mean(igs), 3)} (${igs.length} scored)`;
    $("list-inner").style.height = `${shown.length * ROW}px`;
    drawRows();
    drawPlots();
    if (!shown.includes(selected)) showEpisode(shown[0] || null);
  }

  // Only the rows in view (and a few around them) are in the page.
  function drawRows() {
    const list = $("list"), inner = $("list-inner");
    const first = Math.max(0, Math.floor(list.scrollTop / ROW) - 5);
    const last = Math.min(shown.length, first + Math.ceil(list.clientHeight / ROW) + 10);
    let html = "";
    for (let k = first; k < last; k++) {
      const e = shown[k], r = e.r;
      const badge = e.outcome === "correct" ? "ok" : e.outcome === "wrong" ? "bad" : "none";
      html += `<div class="row${e === selected ? " selected" : ""}" data-k="${k}" style="top:${k * ROW}px">`
        + `<span class="badge ${badge}" style="margin-right:26px">${e.outcome === "correct" ? "✓" : e.outcome === "wrong" ? "✗" : "–"}</span>`
        + `<span class="n" title="searches">${r.n_searches} s</span><span class="n" title="total IG">${fmt(e.igSum, 2)}</span>`
        + (HAS_CREDIT ? `<span class="n" title="total credit">${fmt(e.creditSum, 2)}</span>` : "")
        + `<span class="q" title="${esc(r.question)}">${esc(r.id)} · ${esc(r.question)}</span></div>`;
    }
    inner.innerHTML = html;
    for (const row of inner.children) row.addEventListener("click", () => showEpisode(shown[+row.dataset.k]));
  }

  function showEpisode(e) {
    selected = e;
    for (const row of $("list-inner").children) row.classList.toggle("selected", shown[+row.dataset.k] === e);
    const box = $("detail");
    if (!e) { box.innerHTML = '<div class="empty">No episode matches these filters.</div>'; return; }
    const r = e.r;
    const facts = [["gold", r.golden_answers.join(" | ")], ["prediction", r.prediction ?? "(none)"],
      ["EM", fmt(r.em, 2)], ["F1", fmt(r.f1, 2)], ["return", fmt(r.return, 3)], ["searches", r.n_searches],
      ["hops", r.hops ?? "–"], ["type", r.question_type ?? "–"], ["dialect", r.dialect ?? "–"]];
    for (const key of ["dataset", "split", "step", "advantage"]) if (r[key] !== undefined && r[key] !== null) facts.push([key, typeof r[key] === "number" && key === "advantage" ? fmt(r[key]) : r[key]]);
    let html = `<h2>${esc(r.question)}</h2><div class="facts">`
      + facts.map(([k, v]) => `<span><span class="muted">${k}</span> ${esc(v)}</span>`).join("") + `</div><div class="muted">id ${esc(r.id)}</div>`;
    let s = 0;
    r.turns.forEach((t, i) => {
      const parts = Object.entries(t.reward_components || {}).map(([k, v]) => `${esc(k)} ${signed(v)}`).join(" · ");
      html += `<div class="turn"><div class="turn-head"><b>Turn ${i + 1}</b><span class="kind ${esc(t.action_type)}">${esc(t.action_type)}</span>`
        + `<span>reward ${signed(t.reward)}</span>${parts ? `<span class="muted">${parts}</span>` : ""}</div><pre>${esc(t.text)}</pre>`;
      if (t.action_type === "invalid") html += `<div>invalid: ${esc(t.invalid_reason ?? "?")}</div>`;
      if (t.action_type === "search") {
        s += 1;
        html += `<div>search ${s}: <b>${esc(t.query)}</b></div><div class="ig-line">` + igLine(t) + "</div>";
        (t.passages || []).forEach((p, j) => {
          const [title, text] = PASSAGES[p[0]];
          const gain = t.doc_gains && typeof t.doc_gains[j] === "number" ? ` · gain ${signed(t.doc_gains[j])}` : "";
          html += `<details class="passage"><summary>Doc ${j + 1}: ${esc(title)} <span class="muted">(id ${esc(p[2])}, score ${fmt(p[1], 2)})</span>${gain}</summary>`
            + `<div class="text">${esc(text)}</div></details>`;
        });
      }
      html += "</div>";
    });
    box.innerHTML = html;
    box.scrollTop = 0;
  }

  // IG against its draws: a number line with each random draw's log p (grey) and the real passages' (blue).
  function igLine(t) {
    const d = t.ig_detail;
    let out = `<span>IG ${t.ig === null || t.ig === undefined ? "not scored" : signed(t.ig)}</span>`;
    if (typeof t.credit === "number") out += `<span>credit ${signed(t.credit)}</span>`;
    if (typeof t.advantage === "number") out += `<span>query advantage ${signed(t.advantage)}</span>`;
    if (!d || typeof d.logp_real !== "number") return out;
    const draws = d.logp_random || [];
    out += `<span class="muted">log p(gold): real ${fmt(d.logp_real)} vs ${draws.length ? "random " + draws.map((x) => fmt(x)).join(", ") : esc(d.baseline) + " " + fmt(d.logp_baseline)}</span>`;
    const xs = [d.logp_real, ...draws, ...(typeof d.logp_baseline === "number" ? [d.logp_baseline] : [])];
    const lo = Math.min(...xs), hi = Math.max(...xs), w = 220, pad = 8, span = hi - lo || 1;
    const x = (v) => pad + ((v - lo) / span) * (w - 2 * pad);
    let svg = `<svg class="igstrip" width="${w}" height="18"><line class="axis" x1="${pad}" x2="${w - pad}" y1="9" y2="9"/>`;
    for (const v of draws) svg += `<circle cx="${x(v)}" cy="9" r="4" fill="#999"><title>random draw ${fmt(v)}</title></circle>`;
    svg += `<circle cx="${x(d.logp_real)}" cy="9" r="5" fill="#3558c7"><title>real ${fmt(d.logp_real)}</title></circle></svg>`;
    return out + svg;
  }

  // ---- plots: inline SVG, drawn here
  const COLORS = { correct: "#1a7f37", wrong: "#c62828", none: "#888" };
  const W = 300, H = 150, M = { l: 38, r: 8, t: 8, b: 22 };

  function frame(svg, x0, x1, y0, y1, xticks) {
    const sx = (v) => M.l + ((v - x0) / (x1 - x0 || 1)) * (W - M.l - M.r);
    const sy = (v) => H - M.b - ((v - y0) / (y1 - y0 || 1)) * (H - M.t - M.b);
    let out = "";
    for (let k = 0; k <= 4; k++) {
      const v = y0 + ((y1 - y0) * k) / 4;
      const digits = Math.abs(y1 - y0) < 1 ? 3 : Math.abs(y1 - y0) < 5 ? 2 : Math.abs(y1 - y0) < 50 ? 1 : 0;
      out += `<line class="grid" x1="${M.l}" x2="${W - M.r}" y1="${sy(v)}" y2="${sy(v)}"/><text x="${M.l - 3}" y="${sy(v) + 3}" text-anchor="end">${fmt(v, digits)}</text>`;
    }
    for (const [v, label] of xticks) out += `<text x="${sx(v)}" y="${H - 8}" text-anchor="middle">${esc(label)}</text>`;
    out += `<path class="axis" d="M${M.l},${M.t} V${H - M.b} H${W - M.r}"/>`;
    svg.innerHTML = out;
    return [sx, sy];
  }

  function empty(svg, message) {
    svg.innerHTML = `<text x="${W / 2}" y="${H / 2}" text-anchor="middle">${esc(message)}</text>`;
    svg.dataset.points = "0";
  }

  function bounds(values) {
    let lo = Math.min(...values), hi = Math.max(...values);
    if (lo === hi) { lo -= 1; hi += 1; }
    return [lo, hi];
  }

  function plotIgByOutcome(svg) {
    const groups = ["correct", "wrong", "none"].map((o) => [o, shown.filter((e) => e.outcome === o).flatMap((e) => e.igs)]).filter(([, v]) => v.length);
    const all = groups.flatMap(([, v]) => v);
    if (!all.length) return empty(svg, "no IG scored in these episodes");
    const [lo, hi] = bounds(all);
    const [sx, sy] = frame(svg, -0.5, groups.length - 0.5, lo, hi, groups.map(([o, v], k) => [k, `${o} (${v.length})`]));
    let out = "", points = 0;
    groups.forEach(([o, values], k) => {
      const step = Math.max(1, Math.ceil(values.length / 600)); // at most ~600 dots a group
      for (let i = 0; i < values.length; i += step, points++) {
        const jitter = (((i * 2654435761) % 1000) / 1000 - 0.5) * 0.5;
        out += `<circle cx="${sx(k + jitter)}" cy="${sy(values[i])}" r="1.8" fill="${COLORS[o]}" fill-opacity="0.45"/>`;
      }
      const m = mean(values);
      out += `<line x1="${sx(k - 0.3)}" x2="${sx(k + 0.3)}" y1="${sy(m)}" y2="${sy(m)}" stroke="#000" stroke-width="2"><title>mean ${fmt(m)}</title></line>`;
    });
    svg.insertAdjacentHTML("beforeend", out);
    svg.dataset.points = String(points);
  }

  function plotIgByTurn(svg) {
    const series = {};
    for (const e of shown) {
      e.r.turns.forEach((t, i) => {
        if (t.action_type !== "search" || typeof t.ig !== "number") return;
        ((series[e.outcome] ||= {})[i + 1] ||= []).push(t.ig);
      });
    }
    const lines = Object.entries(series).map(([o, byTurn]) => [o, Object.entries(byTurn).map(([k, v]) => [+k, mean(v), v.length]).sort((a, b) => a[0] - b[0])]);
    const pts = lines.flatMap(([, p]) => p);
    if (!pts.length) return empty(svg, "no IG scored in these episodes");
    const turns = pts.map((p) => p[0]), [lo, hi] = bounds(pts.map((p) => p[1]));
    const t0 = Math.min(...turns), t1 = Math.max(...turns);
    const ticks = []; for (let k = t0; k <= t1; k++) ticks.push([k, `turn ${k}`]);
    const [sx, sy] = frame(svg, t0 - 0.3, t1 + 0.3, lo, hi, ticks);
    let out = "";
    for (const [o, p] of lines) {
      out += `<path d="${p.map(([k, m], i) => `${i ? "L" : "M"}${sx(k)},${sy(m)}`).join(" ")}" stroke="${COLORS[o]}" fill="none" stroke-width="1.5"/>`;
      for (const [k, m, n] of p) out += `<circle cx="${sx(k)}" cy="${sy(m)}" r="3" fill="${COLORS[o]}"><title>${o}, turn ${k}: mean IG ${fmt(m)} over ${n}</title></circle>`;
    }
    svg.insertAdjacentHTML("beforeend", out);
    svg.dataset.points = String(pts.length);
  }

  function plotSearches(svg) {
    if (!shown.length) return empty(svg, "no episodes");
    const counts = {};
    for (const e of shown) counts[e.r.n_searches] = (counts[e.r.n_searches] || 0) + 1;
    const keys = Object.keys(counts).map(Number), k0 = Math.min(...keys), k1 = Math.max(...keys);
    const ticks = []; for (let k = k0; k <= k1; k++) ticks.push([k, String(k)]);
    const [sx, sy] = frame(svg, k0 - 0.5, k1 + 0.5, 0, Math.max(...Object.values(counts)), ticks);
    const bw = Math.max(2, (sx(k0 + 1) - sx(k0)) * 0.7);
    let out = "";
    for (const k of keys) out += `<rect x="${sx(k) - bw / 2}" y="${sy(counts[k])}" width="${bw}" height="${sy(0) - sy(counts[k])}" fill="#3558c7"><title>${counts[k]} episodes with ${k} searches</title></rect>`;
    svg.insertAdjacentHTML("beforeend", out);
    svg.dataset.points = String(keys.length);
  }

  function plotCurve(svg) {
    const m = DATA.metrics, column = $("metric").value;
    const rows = m.rows.map((row) => [row[0], row[m.columns.indexOf(column)]]).filter(([x, y]) => typeof x === "number" && typeof y === "number");
    if (!rows.length) return empty(svg, `no ${column} in metrics.csv`);
    const [lo, hi] = bounds(rows.map((p) => p[1])), s0 = rows[0][0], s1 = rows[rows.length - 1][0];
    const [sx, sy] = frame(svg, s0, s1 === s0 ? s0 + 1 : s1, lo, hi, [[s0, `step ${s0}`], [s1, `step ${s1}`]]);
    let out = `<path d="${rows.map(([x, y], i) => `${i ? "L" : "M"}${sx(x)},${sy(y)}`).join(" ")}" stroke="#3558c7" fill="none" stroke-width="1.5"/>`;
    for (const [x, y] of rows) out += `<circle cx="${sx(x)}" cy="${sy(y)}" r="2" fill="#3558c7"><title>step ${x}: ${fmt(y, 4)}</title></circle>`;
    svg.insertAdjacentHTML("beforeend", out);
    svg.dataset.points = String(rows.length);
  }

  function drawPlots() {
    plotIgByOutcome($("plot-ig-outcome"));
    plotIgByTurn($("plot-ig-turn"));
    plotSearches($("plot-searches"));
  }

  function setUpCurves() {
    const m = DATA.metrics;
    if (!m || !m.rows.length) return;
    $("fig-curves").hidden = false;
    const select = $("metric");
    for (const c of m.columns.slice(1)) select.add(new Option(c, c));
    select.value = ["eval/em", "train/reward", "train/em"].find((c) => m.columns.includes(c)) || m.columns[1];
    select.addEventListener("change", () => plotCurve($("plot-curves")));
    plotCurve($("plot-curves"));
  }

  document.title = DATA.title;
  $("title").textContent = DATA.title;
  $("source").textContent = DATA.source;
  for (const svg of document.querySelectorAll("svg.plot")) { svg.setAttribute("viewBox", `0 0 ${W} ${H}`); svg.setAttribute("width", W); svg.setAttribute("height", H); }
  setUpControls();
  setUpCurves();
  update();
  window.viewerReadyMs = performance.now(); // for benchmarks/bench_view.py
  document.body.dataset.ready = "1";
})();
