// A sweep's page: a chosen site's posterior mean against a chosen setting (a dot per member, a
// line per combination of the other grid settings through the mean across seeds, with ±1 SD),
// and a table of each grid point across seeds. Data: GET /sweeps/{id}.
"use strict";

(() => {
  const K = window.Kiln;
  const ACROSS = new Set(["seed", "bootstrap", "bootstrap_seed"]); // what varies within a grid point

  function mean(xs) { return xs.reduce((a, b) => a + b, 0) / xs.length; }
  function sd(xs) {
    if (xs.length < 2) return null;
    const m = mean(xs);
    return Math.sqrt(xs.reduce((a, b) => a + (b - m) ** 2, 0) / (xs.length - 1));
  }

  function draw(section, sweep) {
    const site = document.getElementById("pick-site").value;
    const setting = document.getElementById("pick-setting").value;
    const done = sweep.members.filter((m) => m.params[site] !== undefined && m.settings[setting] !== undefined);
    const box = document.getElementById("site-chart");
    box.replaceChildren();
    if (!done.length) { K.message(box, `No finished member has both ${site} and ${setting}.`); return; }
    const raw = done.map((m) => m.settings[setting]);
    const numeric = raw.every((v) => v !== "" && Number.isFinite(Number(v)));
    const categories = numeric ? [] : [...new Set(raw.map(String))];
    const xOf = (m) => (numeric ? Number(m.settings[setting]) : categories.indexOf(String(m.settings[setting])));
    const sorted = done.slice().sort((a, b) => xOf(a) - xOf(b));
    const xs = sorted.map(xOf);
    const points = sorted.map((m) => m.params[site]);
    // The other grid settings: one line per combination of them.
    const grid = JSON.parse(section.dataset.grid || "[]");
    const others = grid.filter((k) => k !== setting && !ACROSS.has(k));
    const comboOf = (m) => others.map((k) => `${k}=${m.settings[k]}`).join(", ");
    const combos = [...new Set(sorted.map(comboOf))];
    const series = [K.dots("member", "rgba(0,0,0,0.55)", 6)];
    const data = [xs, points];
    combos.forEach((combo, c) => {
      const at = new Map();
      sorted.forEach((m, i) => {
        if (comboOf(m) !== combo) return;
        const key = xs[i];
        if (!at.has(key)) at.set(key, { first: i, values: [] });
        at.get(key).values.push(m.params[site]);
      });
      const m = new Array(xs.length).fill(null), hi = new Array(xs.length).fill(null), lo = new Array(xs.length).fill(null);
      for (const { first, values } of at.values()) {
        m[first] = mean(values);
        const s = sd(values);
        if (s !== null) { hi[first] = m[first] + s; lo[first] = m[first] - s; }
      }
      const colour = K.PALETTE[c % K.PALETTE.length];
      const name = combo || "mean across seeds";
      series.push(K.line(name, colour, { width: 2, spanGaps: true, points: { show: true, size: 7 } }));
      series.push(K.line(`${name} +1 SD`, colour, { width: 1, dash: [4, 4], spanGaps: true }));
      series.push(K.line(`${name} -1 SD`, colour, { width: 1, dash: [4, 4], spanGaps: true }));
      data.push(m, hi, lo);
    });
    K.plot(box, {
      title: `${site} against ${setting}`, xLabel: setting, yLabel: `posterior mean of ${site}`, height: 340, data, series,
      xValues: numeric ? null : (u, ticks) => ticks.map((t) => (Number.isInteger(t) ? categories[t] ?? "" : "")),
    });
    summary(sweep, site);
  }

  function summary(sweep, site) {
    const table = document.getElementById("grid-summary");
    const keys = [];
    for (const m of sweep.members) for (const k of Object.keys(m.settings)) if (!ACROSS.has(k) && !keys.includes(k)) keys.push(k);
    const groups = new Map();
    for (const m of sweep.members) {
      const key = keys.map((k) => String(m.settings[k])).join("\u0000");
      if (!groups.has(key)) groups.set(key, { settings: m.settings, members: [] });
      groups.get(key).members.push(m);
    }
    const head = K.el("tr", {}, ...[...keys, "members", "ended", `mean of ${site}`, "SD across seeds", "mean final loss"].map(
      (h) => K.el("th", { scope: "col", text: h })));
    const rows = [...groups.values()].map(({ settings, members }) => {
      const values = members.map((m) => m.params[site]).filter((v) => v !== undefined);
      const losses = members.map((m) => m.final_loss).filter((v) => v !== null && v !== undefined);
      const ended = members.filter((m) => K.ENDED.has(m.status)).length;
      return K.el("tr", {}, ...keys.map((k) => K.el("td", { text: String(settings[k]) })),
        K.el("td", { class: "n", text: String(members.length) }), K.el("td", { class: "n", text: String(ended) }),
        K.el("td", { class: "n", text: values.length ? K.num(mean(values)) : "" }),
        K.el("td", { class: "n", text: K.num(sd(values)) }),
        K.el("td", { class: "n", text: losses.length ? K.num(mean(losses)) : "" }));
    });
    table.tHead.replaceChildren(head);
    table.tBodies[0].replaceChildren(...rows);
  }

  document.addEventListener("DOMContentLoaded", async () => {
    const section = document.getElementById("sweep-chart");
    if (!section || !document.getElementById("pick-site")) return;
    try {
      const sweep = await K.getJSON(section.dataset.url);
      for (const id of ["pick-site", "pick-setting"]) {
        document.getElementById(id).addEventListener("change", () => draw(section, sweep));
      }
      draw(section, sweep);
    } catch (err) { K.message(document.getElementById("site-chart"), `No chart: ${err.message}`); }
  });
})();
