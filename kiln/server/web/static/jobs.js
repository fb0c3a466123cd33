// The jobs page: live status, progress and loss of the rows shown (GET /jobs with the page's
// filters, or GET /jobs/{id} per unfinished row under a text search), and sweep rows that
// expand to their members (GET /sweeps/{id}).
"use strict";

(() => {
  const K = window.Kiln;
  const EVERY_MS = 3000;

  function update(row, job) {
    K.setStatus(row.querySelector(".c-status .status"), job.status);
    row.dataset.status = job.status;
    const bar = row.querySelector(".c-progress progress");
    if (bar) {
      bar.max = Math.max(1, job.progress.total || 1);
      bar.value = job.progress.step;
      row.querySelector(".c-progress .steps").textContent = `${K.num(job.progress.step)}/${K.num(job.progress.total)}`;
    }
    const loss = (job.info && job.info.final_loss) ?? job.last_loss;
    row.querySelector(".c-loss").textContent = K.num(loss);
    let seconds = job.duration_s;
    if (seconds === null && job.started_at) seconds = K.since(job.started_at);
    row.querySelector(".c-duration").textContent = K.duration(seconds);
  }

  function refresher(table) {
    const rows = () => new Map([...table.querySelectorAll("tbody tr[data-job]")].map((r) => [r.dataset.job, r]));
    const unfinished = () => [...rows().values()].filter((r) => !K.ENDED.has(r.dataset.status));
    const notice = document.getElementById("jobs-notice");
    let timer = null;

    async function tick() {
      if (document.hidden) return;
      const shown = rows();
      try {
        if (table.dataset.listable === "1") {
          const jobs = await K.getJSON(table.dataset.refresh);
          let fresh = 0;
          for (const job of jobs) {
            if (shown.has(job.id)) update(shown.get(job.id), job);
            else fresh += 1;
          }
          notice.textContent = fresh ? `${fresh} new job${fresh > 1 ? "s" : ""}: reload to see ${fresh > 1 ? "them" : "it"}.` : "";
        } else {
          for (const row of unfinished()) update(row, await K.getJSON(`/jobs/${row.dataset.job}`));
        }
      } catch (err) {
        notice.textContent = `Live updates paused: ${err.message}`;
      }
      if (!unfinished().length && table.dataset.listable !== "1") clearInterval(timer);
    }

    timer = setInterval(tick, EVERY_MS);
  }

  async function expand(button) {
    const target = document.getElementById(button.getAttribute("aria-controls"));
    const open = button.getAttribute("aria-expanded") === "true";
    button.setAttribute("aria-expanded", open ? "false" : "true");
    button.firstChild.textContent = open ? "Show members" : "Hide members";
    target.hidden = open;
    if (open || target.dataset.loaded) return;
    const cell = target.querySelector("td");
    try {
      const sweep = await K.getJSON(`/sweeps/${button.dataset.sweep}`);
      const keys = [];
      for (const m of sweep.members) for (const k of Object.keys(m.settings)) if (!keys.includes(k)) keys.push(k);
      const head = K.el("tr", {}, ...["#", "Job", ...keys, "Status", "Progress", "Final loss"].map(
        (h) => K.el("th", { scope: "col", text: h, class: h === "Final loss" ? "n" : null })));
      const body = sweep.members.map((m) => K.el("tr", { "data-member": m.job_id },
        K.el("td", { text: String(m.index) }),
        K.el("td", {}, K.el("a", { href: `/ui/jobs/${m.job_id}` }, K.el("code", { text: m.job_id }))),
        ...keys.map((k) => K.el("td", { text: m.settings[k] === undefined ? "" : String(m.settings[k]) })),
        K.el("td", {}, K.el("span", { class: `status s-${m.status}`, text: m.status })),
        K.el("td", { text: `${K.num(m.step)}/${K.num(m.total_steps)}` }),
        K.el("td", { class: "n", text: K.num(m.final_loss) })));
      const table = K.el("table", { class: "grid" },
        K.el("caption", { class: "visually-hidden", text: `Members of sweep ${sweep.id}` }),
        K.el("thead", {}, head), K.el("tbody", {}, ...body));
      cell.replaceChildren(table);
      target.dataset.loaded = "1";
    } catch (err) { K.message(cell, `Could not load the members: ${err.message}`); }
  }

  document.addEventListener("DOMContentLoaded", () => {
    const table = document.getElementById("jobs");
    if (table) refresher(table);
    for (const button of document.querySelectorAll("button.expand")) {
      button.addEventListener("click", () => expand(button));
    }
  });
})();
