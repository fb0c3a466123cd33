// A job's page: the live progress bar and loss curve (Server-Sent Events from
// /jobs/{id}/events), metrics by epoch, histograms, MCMC traces and the predictive figure.
"use strict";

(() => {
  const K = window.Kiln;
  const MAX_POINTS = 4000; // a live curve is halved past this many points

  function liveProgress() {
    const live = document.getElementById("live");
    if (!live) return;
    const bar = document.getElementById("job-progress");
    const steps = document.getElementById("job-steps");
    const box = document.getElementById("loss-chart");
    const xs = [], ys = [];
    let chart = null;

    function draw() {
      if (!box) return;
      box.dataset.points = String(xs.length);
      if (!xs.length) return;
      const smooth = K.movingMean(ys);
      const data = [xs, ys, smooth.values];
      if (!chart) {
        chart = K.plot(box, {
          xLabel: "step", yLabel: "loss (nats)", data, height: 300,
          series: [K.line("ELBO loss", "rgba(0,114,178,0.55)", { width: 1 }),
                   K.line("moving mean", K.PALETTE[3], { width: 2 })],
          yRange: K.settledRange(() => ys),
        });
      } else {
        chart.setData(data);
      }
    }

    function add(rows) {
      const last = xs.length ? xs[xs.length - 1] : -1;
      for (const [step, loss] of rows) {
        if (step > last || xs.length === 0) { xs.push(step); ys.push(loss); }
      }
      if (xs.length > MAX_POINTS) { // keep every other point, and the newest
        const keep = (_, i) => i % 2 === 0 || i === xs.length - 1;
        const kx = xs.filter(keep), ky = ys.filter(keep);
        xs.splice(0, xs.length, ...kx);
        ys.splice(0, ys.length, ...ky);
      }
      draw();
    }

    function progress(p) {
      K.setStatus(document.getElementById("job-status"), p.status);
      bar.max = Math.max(1, p.total || 1);
      bar.value = p.step;
      steps.textContent = `${K.num(p.step)} of ${K.num(p.total)} steps` +
        (p.last_loss !== null && p.last_loss !== undefined ? `, loss ${K.num(p.last_loss, 6)}` : "");
      live.dataset.status = p.status;
    }

    function follow() {
      const source = new EventSource(live.dataset.events);
      source.addEventListener("losses", (e) => add(JSON.parse(e.data).rows));
      source.addEventListener("progress", (e) => progress(JSON.parse(e.data)));
      source.addEventListener("end", (e) => {
        progress(JSON.parse(e.data));
        source.close();
        // its results (posterior, figures, downloads) are on the page once it is reloaded
        setTimeout(() => window.location.reload(), 1500);
      });
      source.onerror = () => { if (source.readyState === EventSource.CLOSED) live.dataset.stream = "closed"; };
    }

    (async () => {
      if (live.dataset.losses) {
        try {
          add((await K.getJSON(live.dataset.losses)).rows);
        } catch (err) { K.message(box, `No loss curve: ${err.message}`); }
      }
      if (!K.ENDED.has(live.dataset.status)) follow();
    })();
  }

  async function metrics() {
    const container = document.getElementById("metrics");
    if (!container) return;
    try {
      const rows = (await K.getJSON(container.dataset.url)).rows;
      const byName = new Map();
      for (const [name, step, epoch, value] of rows) {
        if (!byName.has(name)) byName.set(name, []);
        byName.get(name).push([step, epoch, value]);
      }
      let i = 0;
      for (const [name, points] of byName) {
        const byEpoch = points.some(([, epoch]) => epoch > 0);
        const xs = points.map(([step, epoch]) => (byEpoch ? epoch : step));
        const box = K.figure(container, `${name} by ${byEpoch ? "epoch" : "step"}`);
        K.plot(box, { title: name, xLabel: byEpoch ? "epoch" : "step", yLabel: name,
                      data: [xs, points.map((p) => p[2])], height: 240, legend: false,
                      series: [K.line(name, K.PALETTE[i++ % K.PALETTE.length], { points: { show: points.length < 60 } })] });
      }
    } catch (err) { K.message(container, `No metrics: ${err.message}`); }
  }

  function elements(container) {
    return container ? JSON.parse(container.dataset.elements || "[]") : [];
  }

  function query(url, element, extra) {
    const q = new URLSearchParams({ site: element.site, index: String(element.index), ...extra });
    return `${url}?${q}`;
  }

  async function histograms() {
    const container = document.getElementById("histograms");
    for (const element of elements(container)) {
      try {
        const h = await K.getJSON(query(container.dataset.url, element, { bins: "30" }));
        const centres = h.counts.map((_, i) => (h.edges[i] + h.edges[i + 1]) / 2);
        const box = K.figure(container, `${h.label}: ${h.finite} draws; mean ${K.num(h.mean)}, 90% in [${K.num(h.q05)}, ${K.num(h.q95)}]`);
        K.plot(box, {
          title: h.label, xLabel: `${h.label} (model units)`, yLabel: "draws", data: [centres, h.counts],
          height: 220, legend: false, xRange: [h.edges[0], h.edges[h.edges.length - 1]],
          series: [{ label: "draws", stroke: K.PALETTE[0], fill: "rgba(0,114,178,0.45)", width: 1,
                     paths: uPlot.paths.bars({ size: [0.92, 200] }), points: { show: false } }],
        });
      } catch (err) { K.message(container, `No histogram of ${element.label}: ${err.message}`); }
    }
  }

  async function traces() {
    const container = document.getElementById("traces");
    for (const element of elements(container)) {
      try {
        const t = await K.getJSON(query(container.dataset.url, element, { max_points: "600" }));
        const xs = t.chains[0].draw;
        const box = K.figure(container, `${t.label} by draw, one line per chain` + (t.stride > 1 ? ` (every ${t.stride}th draw)` : ""));
        K.plot(box, {
          title: t.label, xLabel: "draw (after warm-up)", yLabel: `${t.label} (model units)`, height: 220,
          data: [xs, ...t.chains.map((c) => c.value)],
          series: t.chains.map((c, i) => K.line(`chain ${c.chain}`, K.PALETTE[i % K.PALETTE.length], { width: 1 })),
        });
      } catch (err) { K.message(container, `No trace of ${element.label}: ${err.message}`); }
    }
  }

  function bandPanel(container, p, x_label, y_label, title) {
    const inside = p.inside_90 === null ? "" : `; ${Math.round(100 * p.inside_90)}% of the observed points inside the 90% predictive band`;
    const box = K.figure(container, `${p.label}: ${p.rows} rows${inside}.`, `Posterior predictive of ${y_label} against ${x_label}, ${p.label}`);
    K.plot(box, {
      title: `${title}: ${p.label}`, xLabel: x_label, yLabel: y_label, height: 340,
      data: [p.x, p.obs_lo, p.obs_hi, p.mean_lo, p.mean_hi, p.mean_mid, p.y],
      series: [
        K.line("obs 5%", "rgba(230,159,0,0.9)", { width: 1, dash: [4, 3] }),
        K.line("obs 95%", "rgba(230,159,0,0.9)", { width: 1, dash: [4, 3] }),
        K.line("mean 5%", "rgba(0,114,178,0.8)", { width: 1 }),
        K.line("mean 95%", "rgba(0,114,178,0.8)", { width: 1 }),
        K.line("posterior median of the mean", K.PALETTE[0], { width: 2.2 }),
        K.dots("observed", "#000000", 5),
      ],
      bands: [{ series: [2, 1], fill: "rgba(230,159,0,0.22)" }, { series: [4, 3], fill: "rgba(0,114,178,0.30)" }],
      legend: false,
    });
  }

  async function predictive() {
    const container = document.getElementById("predictive");
    if (!container) return;
    try {
      const f = await K.getJSON(container.dataset.url);
      container.replaceChildren();
      const from = f.prediction !== f.id ? ` (from its prediction ${f.prediction})` : "";
      if (f.kind === "bands") {
        for (const p of f.panels) bandPanel(container, p, f.x_label, f.y_label, f.title);
        const key = K.el("div", { class: "chart-key" });
        K.legend(key, [["90% posterior predictive (obs)", "sw-band-obs"], ["90% interval of the mean", "sw-band-mean"],
                       ["posterior median of the mean", "sw-line"], ["observed", "sw-dot"]]);
        if (from) key.append(K.el("p", { class: "chart-note", text: `Drawn from this fit's latest prediction, job ${f.prediction}.` }));
        container.append(key);
      } else if (f.kind === "forecast") {
        const xs = f.days.map((d) => d * 86400);
        const box = K.figure(container, `${f.title}${from}.`);
        box.parentNode.classList.add("wide");
        K.plot(box, {
          title: f.title, xLabel: "date", yLabel: f.y_label, time: true, height: 340,
          data: [xs, f.lo, f.hi, f.mean, f.observed],
          series: [K.line("5%", "rgba(0,114,178,0.7)", { width: 1 }), K.line("95%", "rgba(0,114,178,0.7)", { width: 1 }),
                   K.line("predictive mean", K.PALETTE[0], { width: 2.2 }),
                   K.line("observed", "#000000", { width: 1, points: { show: true, size: 5, fill: "#000" } })],
          bands: [{ series: [2, 1], fill: "rgba(0,114,178,0.25)" }], legend: false,
        });
        K.legend(box.parentNode, [["90% predictive band", "sw-band-mean"], ["predictive mean", "sw-line"], ["observed", "sw-dot"]]);
      } else {
        const fig = K.el("figure", { class: "chart-figure" },
          K.el("img", { src: f.src, alt: `${f.title}: the model's predictive figure`, loading: "lazy" }),
          K.el("figcaption", { text: `${f.title}${from}.` }));
        container.append(fig);
      }
    } catch (err) { K.message(container, `No predictive figure: ${err.message}`); }
  }

  document.addEventListener("DOMContentLoaded", () => {
    liveProgress();
    metrics();
    predictive();
    histograms();
    traces();
  });
})();
