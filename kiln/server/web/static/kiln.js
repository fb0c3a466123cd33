// Kiln's dashboard: what every page's script shares. Plain JavaScript, no build step; charts
// are uPlot (vendored in /static/vendor). Data comes from the JSON API with the page's cookie.
"use strict";

window.Kiln = (() => {
  // Okabe-Ito: distinguishable with every common colour-vision deficiency.
  const PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000"];
  const ENDED = new Set(["succeeded", "failed", "cancelled"]);

  function cookie(name) {
    const found = document.cookie.split("; ").find((c) => c.startsWith(name + "="));
    return found ? decodeURIComponent(found.slice(name.length + 1)) : "";
  }

  async function getJSON(url) {
    const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (!response.ok) {
      let detail = `${response.status} ${response.statusText}`;
      try { detail = (await response.json()).detail || detail; } catch (e) { /* not JSON */ }
      throw new Error(detail);
    }
    return response.json();
  }

  function num(value, digits = 4) {
    if (value === null || value === undefined || value === "") return "";
    const n = Number(value);
    if (!Number.isFinite(n)) return String(value);
    if (Number.isInteger(n) && Math.abs(n) < 1e15) return n.toLocaleString("en-US");
    return Number(n.toPrecision(digits)).toString();
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "";
    if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
    if (seconds < 60) return `${seconds.toFixed(1)} s`;
    let minutes = Math.floor(Math.round(seconds) / 60);
    const secs = Math.round(seconds) % 60;
    if (minutes < 60) return `${minutes} min ${String(secs).padStart(2, "0")} s`;
    const hours = Math.floor(minutes / 60);
    minutes %= 60;
    return `${hours} h ${String(minutes).padStart(2, "0")} min`;
  }

  function since(iso) {
    return iso ? Math.max(0, (Date.now() - Date.parse(iso)) / 1000) : null;
  }

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "text") node.textContent = value;
      else if (key === "class") node.className = value;
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children) node.append(child);
    return node;
  }

  function setStatus(badge, status) {
    if (!badge || badge.textContent === status) return;
    badge.textContent = status;
    badge.className = `status s-${status}`;
  }

  function message(container, text) {
    container.replaceChildren(el("p", { class: "muted", text }));
  }

  // A figure with a caption and a uPlot chart in it, sized to its container.
  function figure(container, caption, label) {
    const box = el("div", { class: "chart", role: "img", "aria-label": label || caption });
    const fig = el("figure", { class: "chart-figure" }, box, el("figcaption", { text: caption }));
    container.append(fig);
    return box;
  }

  // opts: title, xLabel, yLabel, series (uPlot series after x), data, bands, time, height,
  // yRange (function or [min, max]), xValues (axis tick labels), scatter (series indices).
  function plot(box, opts) {
    const height = opts.height || 280;
    const width = () => Math.max(280, box.clientWidth || box.parentNode.clientWidth || 600);
    const axis = (label, extra) => Object.assign({
      label, stroke: "#333", labelSize: 22, font: "12px system-ui, sans-serif",
      labelFont: "600 12px system-ui, sans-serif", grid: { stroke: "#e6e9ec", width: 1 },
      ticks: { stroke: "#c8ced4" },
    }, extra || {});
    const options = {
      title: opts.title, width: width(), height,
      scales: { x: Object.assign({ time: !!opts.time }, opts.xRange ? { range: opts.xRange } : {}),
                y: opts.yRange ? { range: opts.yRange } : {} },
      axes: [axis(opts.xLabel, opts.xValues ? { values: opts.xValues } : null),
             axis(opts.yLabel, { size: 64 })],
      series: [{ label: opts.xLabel }, ...opts.series],
      bands: opts.bands || [],
      legend: { show: opts.legend !== false, live: false },
      cursor: { drag: { x: true, y: false } },
    };
    const chart = new uPlot(options, opts.data, box);
    let pending = null;
    new ResizeObserver(() => {
      clearTimeout(pending);
      pending = setTimeout(() => {
        if (Math.abs(chart.width - width()) > 4) chart.setSize({ width: width(), height });
      }, 100);
    }).observe(box);
    return chart;
  }

  function line(label, color, extra) {
    return Object.assign({ label, stroke: color, width: 1.6, points: { show: false } }, extra || {});
  }

  function dots(label, color, size = 5) {
    return { label, stroke: color, fill: color, width: 0, paths: () => null,
             points: { show: true, size, space: 0, fill: color, stroke: color } };
  }

  // A legend of our own (for bands, which uPlot's legend would list as two lines each):
  // items are [label, swatch class] (.sw-band-obs, .sw-band-mean, .sw-line, .sw-dot).
  function legend(container, items) {
    const list = el("ul", { class: "legend" }, ...items.map(([label, swatch]) =>
      el("li", {}, el("span", { class: `sw ${swatch}`, "aria-hidden": "true" }), label)));
    container.append(list);
    return list;
  }

  // The mean of the last k values at each point (k grows with the curve: about 50 windows).
  function movingMean(values) {
    const k = Math.max(5, Math.floor(values.length / 50));
    const out = new Array(values.length).fill(null);
    let sum = 0;
    for (let i = 0; i < values.length; i++) {
      sum += values[i];
      if (i >= k) sum -= values[i - k];
      if (i >= k - 1) out[i] = sum / k;
    }
    return { k, values: out };
  }

  // The y range that leaves out the first steps' spike: from the minimum to the 98th percentile.
  function settledRange(values) {
    return (u, min, max) => {
      const finite = values().filter(Number.isFinite).slice().sort((a, b) => a - b);
      if (finite.length < 20) return [min - 0.05 * Math.abs(min || 1), max + 0.05 * Math.abs(max || 1)];
      const lo = finite[0];
      const hi = finite[Math.floor(0.98 * (finite.length - 1))];
      const pad = 0.05 * (hi - lo || Math.abs(hi) || 1);
      return [lo - pad, hi + pad];
    };
  }

  return { PALETTE, ENDED, cookie, getJSON, num, duration, since, el, setStatus, message,
           figure, plot, line, dots, settledRange, legend, movingMean };
})();
