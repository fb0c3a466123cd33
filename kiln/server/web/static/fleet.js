// The fleet page, refreshed every 5 s from GET /stats (counts, oldest queued, live workers).
"use strict";

(() => {
  const K = window.Kiln;
  const STATUSES = ["waiting", "queued", "running", "succeeded", "failed", "cancelled"];

  function age(iso) {
    const s = K.since(iso);
    return s === null ? "" : s < 90 ? `${Math.round(s)} s ago` : `${Math.round(s / 60)} min ago`;
  }

  function when(iso) {
    return iso ? iso.replace("T", " ").slice(0, 19) : "";
  }

  function workers(list) {
    const body = document.querySelector("#workers tbody");
    if (!list.length) {
      body.replaceChildren(K.el("tr", {}, K.el("td", { colspan: "7", class: "muted", text: "No live worker." })));
      return;
    }
    body.replaceChildren(...list.map((w) => {
      const mine = w.running && !w.running.startsWith("(");
      const running = mine ? K.el("a", { href: `/ui/jobs/${w.running}` }, K.el("code", { text: w.running }))
                           : document.createTextNode(w.running || "idle");
      return K.el("tr", {},
        K.el("td", { text: w.name }), K.el("td", { text: w.host }), K.el("td", { text: w.queues.join(", ") }),
        K.el("td", { text: w.device }), K.el("td", {}, running), K.el("td", { text: w.progress || "" }),
        K.el("td", { class: "n", "data-beat": w.last_heartbeat, text: age(w.last_heartbeat) }));
    }));
  }

  function queues(counts, oldest) {
    const body = document.querySelector("#queues tbody");
    const names = Object.keys(counts).sort();
    if (!names.length) return;
    body.replaceChildren(...names.map((q) => K.el("tr", {},
      K.el("th", { scope: "row", text: q }),
      ...["queued", "running", "waiting"].map((s) => K.el("td", { class: "n", text: K.num(counts[q][s] || 0) })),
      K.el("td", { text: when(oldest[q]) }))));
    for (const s of STATUSES) {
      const cell = document.querySelector(`#by-status td[data-status="${s}"]`);
      if (cell) cell.textContent = K.num(names.reduce((n, q) => n + (counts[q][s] || 0), 0));
    }
  }

  async function tick() {
    if (document.hidden) return;
    const updated = document.getElementById("fleet-updated");
    try {
      const stats = await K.getJSON("/stats");
      workers(stats.workers);
      queues(stats.counts, stats.oldest_queued);
      updated.textContent = `Last refreshed ${new Date().toISOString().slice(11, 19)} UTC.`;
    } catch (err) { updated.textContent = `Refresh failed: ${err.message}`; }
  }

  document.addEventListener("DOMContentLoaded", () => {
    for (const cell of document.querySelectorAll("#workers td[data-beat]")) cell.textContent = age(cell.dataset.beat);
    setInterval(tick, 5000);
  });
})();
