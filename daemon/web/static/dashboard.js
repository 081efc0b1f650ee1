// autopack dashboard: live updates only. Every page is complete without this script
// (server-rendered HTML); here the list rows and the run detail are swapped in as the
// server sends them over Server-Sent Events, fed by the daemon's event stream.
"use strict";
(function () {
  const body = document.body;
  const live = document.getElementById("live");
  const page = body.dataset.page;
  if (!window.EventSource || !body.dataset.stream) { markWedged(); return; }

  function fragment(html) {
    const t = document.createElement("template");
    t.innerHTML = html; // server-rendered and escaped; the CSP blocks any script in it
    return t.content;
  }

  function setLive(on) {
    if (!live) return;
    live.hidden = false;
    live.textContent = on ? "live" : "reconnecting…";
    live.classList.toggle("off", !on);
  }

  function open(onEvents) {
    const url = body.dataset.stream + (body.dataset.stream.includes("?") ? "&" : "?") +
      "since=" + encodeURIComponent(body.dataset.since || "0");
    const es = new EventSource(url);
    es.onopen = function () { setLive(true); };
    es.onerror = function () { setLive(false); };
    onEvents(es);
    return es;
  }

  // ------------------------------------------------------------------ run list
  function listPage() {
    const tbody = document.querySelector("#runs tbody");
    const firstPage = body.dataset.firstPage === "1";
    const size = parseInt(body.dataset.pageSize || "50", 10);
    open(function (es) {
      es.addEventListener("row", function (ev) {
        const msg = JSON.parse(ev.data);
        const row = fragment(msg.html).firstElementChild;
        const old = document.getElementById("run-" + msg.id);
        if (old) {
          old.replaceWith(row);
        } else if (firstPage) {
          const empty = tbody.querySelector("tr.empty");
          if (empty) empty.remove();
          // newest first: before the first row with a smaller sequence number
          const rows = Array.from(tbody.querySelectorAll("tr[data-seq]"));
          const next = rows.find(function (r) { return +r.dataset.seq < msg.seq; });
          if (next) tbody.insertBefore(row, next); else tbody.appendChild(row);
          const all = tbody.querySelectorAll("tr[data-seq]");
          if (all.length > size) all[all.length - 1].remove();
        } else {
          return;
        }
        row.classList.add("flash");
      });
      es.addEventListener("drop", function (ev) {
        const old = document.getElementById("run-" + JSON.parse(ev.data).id);
        if (old) old.remove();
      });
    });
    setInterval(markWedged, 5000);
  }

  // A running run with no event for longer than the setting looks wedged (the server marks
  // it when rendering; a wedged run sends no event, so the page re-checks by itself).
  function markWedged() {
    const limit = parseFloat(body.dataset.wedgedAfter || "0");
    if (!limit) return;
    const now = Date.now() / 1000;
    document.querySelectorAll("tr[data-state='running']").forEach(function (tr) {
      const stale = now - parseFloat(tr.dataset.lastEvent) > limit;
      if (stale && !tr.classList.contains("wedged")) {
        tr.classList.add("wedged");
        const cell = tr.querySelector("td");
        const b = document.createElement("span");
        b.className = "badge wedged";
        b.textContent = "looks wedged";
        cell.append(" ", b);
      }
    });
  }

  // ------------------------------------------------------------------ run detail
  function detailPage() {
    const target = document.getElementById("run-body");
    open(function (es) {
      es.addEventListener("detail", function (ev) {
        const msg = JSON.parse(ev.data);
        // keep what the reader opened or closed
        const state = {};
        target.querySelectorAll("details[data-key]").forEach(function (d) {
          state[d.dataset.key] = d.open;
        });
        target.replaceChildren(fragment(msg.html));
        target.querySelectorAll("details[data-key]").forEach(function (d) {
          if (d.dataset.key in state) d.open = state[d.dataset.key];
        });
        const badge = document.querySelector("h1 .badge");
        if (badge) { badge.className = "badge s-" + msg.state; badge.textContent = msg.state; }
      });
    });
  }

  if (page === "list") listPage();
  else if (page === "detail") detailPage();
})();
