// Live updates: a WebSocket to /api/v1/ws (reconnecting by itself) that updates project cards and
// shows notifications. Plain JS, no build step.
(function () {
  "use strict";
  var delay = 1000, states = document.querySelectorAll("[data-live-state]");
  function setState(text) { states.forEach(function (el) { el.textContent = text; }); }
  function notify(text) {
    var list = document.getElementById("notifications"), item = document.createElement("li");
    item.textContent = text;  // text, never markup
    list.appendChild(item);
    setTimeout(function () { item.remove(); }, 8000);
  }
  function setText(root, name, text) {
    var el = root.querySelector('[data-field="' + name + '"]');
    if (el) el.textContent = text;
  }
  // A project card (templates/_card.html) from a project.status.updated (dashboard/projects.py live_status):
  // the worst first, "2 failing: #3, #5" while an open PR's current head fails, else the newest result,
  // else the server's headline as is ("none yet"): the card then says what a reload would.
  function link(id, number) {
    var a = document.createElement("a");
    a.href = "/validations/" + encodeURIComponent(id);
    a.textContent = "#" + number;
    return a;
  }
  function result(css, text) {
    var span = document.createElement("span");
    span.className = css;
    span.dataset.field = "conclusion";
    span.textContent = text;
    return span;
  }
  function updateCard(data) {
    document.querySelectorAll('[data-project-id="' + CSS.escape(data.project_id) + '"]').forEach(function (card) {
      var v = data.validation, cell = card.querySelector('[data-field="validation"]');
      var counts = data.counts || {}, failing = data.failing_prs || [];
      if (cell && failing.length && typeof counts.failing === "number") {
        cell.textContent = "";
        cell.append(result("failure", counts.failing + " failing"), ": ");
        failing.forEach(function (f, i) { cell.append(i ? ", " : "", link(f.id, f.pr_number)); });
        if (counts.failing > failing.length) cell.append(", …");
      } else if (v && cell) {
        cell.textContent = "";
        cell.append(link(v.id, v.pr_number), " ", result(v.css, v.label));
      } else if (cell && typeof data.headline === "string") {
        cell.textContent = data.headline;
      }
      if (typeof data.headline_title === "string") setText(card, "headline-title", data.headline_title);
      if (typeof counts.failing === "number") setText(card, "failing", counts.failing);
      if (typeof counts.validating === "number") setText(card, "active-prs", counts.validating);
      if (typeof counts.waiting === "number") setText(card, "waiting", counts.waiting);
      if (typeof counts.ready === "number") setText(card, "ready", counts.ready);
      if (typeof data.running_runs === "number") setText(card, "running-runs", data.running_runs + " running");
    });
  }
  // The project page's PR overview (templates/_pulls.html, `data-pulls-project`) and the merge queue page's
  // branches (templates/_merge_queue.html, `data-queue-project`): fetched again from their `data-pulls` /
  // `data-queue` address. A burst of events costs one fetch: it waits RELOAD_DELAY ms for the rest of the
  // burst, and a box kind of a project has at most one fetch in flight and one pending (asked for while one
  // was in flight, made RELOAD_DELAY ms after it).
  var RELOAD_DELAY = 500, reloads = {};
  function reload(kind, projectId) {
    var key = kind + " " + projectId;
    var r = reloads[key] || (reloads[key] = {timer: null, busy: false, again: false});
    if (r.busy) { r.again = true; return; }
    if (r.timer === null) r.timer = setTimeout(function () { r.timer = null; fetchBoxes(kind, projectId, r); }, RELOAD_DELAY);
  }
  function fetchBoxes(kind, projectId, r) {
    var boxes = Array.from(document.querySelectorAll("[data-" + kind + '-project="' + CSS.escape(projectId) + '"]'));
    if (!boxes.length) return;
    r.busy = true;
    Promise.all(boxes.map(function (box) {
      return fetch(box.dataset[kind], {credentials: "same-origin"}).then(function (answer) {
        return answer.ok ? answer.text() : null;
      }).then(function (html) {
        if (html !== null) box.replaceChildren.apply(box, Array.from(new DOMParser().parseFromString(html, "text/html").body.childNodes));
      }).catch(function () {});
    })).then(function () {
      r.busy = false;
      if (r.again) { r.again = false; reload(kind, projectId); }
    });
  }
  function toast(event) {
    // a merge queue's commit is no PR's: its events carry pr_number null
    var d = event.data, where = d.repository + (d.pr_number === null ? " merge queue group" : d.pr_number !== undefined ? " #" + d.pr_number : "");
    if (event.event === "validation.completed") notify(where + ": " + d.label);
    else if (event.event === "merge.merged") notify(where + ": merged");
    else if (event.event === "agent.run.completed") notify(d.repository + ": agent run " + d.label.toLowerCase());
    else if (event.event === "pr.created") notify(where + ": pull request opened by an agent run");
  }
  // The run page redraws itself from the server (static/run.js) when its run or its PR's validations change.
  var run = document.querySelector("[data-run-id]"), runId = run && run.dataset.runId;
  function runChanged() { document.dispatchEvent(new CustomEvent("codegenapp:run-changed")); }
  function aboutRun(event) {
    var d = event.data || {};
    return d.run_id === runId || (/^(validation|merge)\./.test(event.event) && d.pr_number !== undefined && d.pr_number === Number(run.dataset.prNumber));
  }
  function connect() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var ws = new WebSocket(scheme + location.host + "/api/v1/ws");
    ws.onopen = function () {
      delay = 1000; setState("live"); if (runId) runChanged();
      // what changed while disconnected
      document.querySelectorAll("[data-pulls-project]").forEach(function (box) { reload("pulls", box.dataset.pullsProject); });
      document.querySelectorAll("[data-queue-project]").forEach(function (box) { reload("queue", box.dataset.queueProject); });
    };
    ws.onmessage = function (message) {
      var event = JSON.parse(message.data);
      if (runId && aboutRun(event)) runChanged();
      if (event.event === "project.status.updated") {
        updateCard(event.data); reload("pulls", event.data.project_id); reload("queue", event.data.project_id);
      } else if (event.event === "merge_queue.updated") reload("queue", event.data.project_id);
      else toast(event);
    };
    ws.onclose = function () {
      setState("reconnecting…");
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 30000);
    };
  }
  if ("WebSocket" in window) connect();
})();
