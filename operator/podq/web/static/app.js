// podq web: live updates from the server's one event stream (no polling).
// The server sends `changes` (job keys and statuses, with the queue's counts) and
// `samples` (new chart data); this page refreshes only what it shows.
"use strict";
(function () {
  const body = document.body;
  const pageQueue = body.dataset.queue || "";
  const pageJob = body.dataset.job || "";
  const live = document.getElementById("live");
  const pending = new Map();

  // refresh one element from a server-rendered fragment, at most every 300 ms
  function refresh(id, url) {
    if (pending.has(id)) return;
    pending.set(id, setTimeout(async function () {
      try {
        const response = await fetch(url, { credentials: "same-origin" });
        const element = document.getElementById(id);
        if (response.ok && element) element.innerHTML = await response.text();
      } finally {
        pending.delete(id);
      }
    }, 300));
  }

  function withFragment(url) {
    const u = new URL(url, location.href);
    u.searchParams.set("fragment", "1");
    return u.toString();
  }

  function setCounts(queue, counts) {
    for (const [field, value] of Object.entries(counts || {})) {
      for (const el of document.querySelectorAll('[data-live="' + CSS.escape(queue + ":" + field) + '"]')) {
        el.textContent = String(value);
      }
    }
  }

  const source = new EventSource("/events");
  source.addEventListener("open", function () { live.classList.add("on"); });
  source.addEventListener("error", function () { live.classList.remove("on"); });
  // once subscribed (first time or after a reconnect), fetch what may have changed
  // between rendering this page and the stream starting: nothing is missed
  // the workers page: running jobs change with the jobs, liveness ages with time
  function refreshWorkers() {
    if (document.getElementById("workers-table")) {
      refresh("workers-table", withFragment(location.href));
    }
  }
  source.addEventListener("hello", function () {
    refreshWorkers();
    if (document.getElementById("jobs-table")) {
      refresh("jobs-table", withFragment(location.href));
    }
    if (pageJob) refresh("job-detail", withFragment(location.href));
  });
  source.addEventListener("changes", function (event) {
    const data = JSON.parse(event.data);
    setCounts(data.queue, data.counts);
    refreshWorkers();
    if (data.queue !== pageQueue) return;
    if (document.getElementById("jobs-table")) {
      refresh("jobs-table", withFragment(location.href));
    }
    if (pageJob && (data.more || data.jobs.some(function (j) { return j[0] === pageJob; }))) {
      refresh("job-detail", withFragment(location.href));
    }
  });
  source.addEventListener("samples", function (event) {
    const data = JSON.parse(event.data);
    setCounts(data.queue, data.counts);
    refreshWorkers();
    const charts = document.querySelector('[data-charts="' + CSS.escape(data.queue) + '"]');
    if (charts) {
      if (!charts.id) charts.id = "charts-" + data.queue;
      refresh(charts.id, "/queues/" + encodeURIComponent(data.queue) + "/charts");
    }
  });
})();
