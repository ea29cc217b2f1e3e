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
  function updateCard(data) {
    document.querySelectorAll('[data-project-id="' + CSS.escape(data.project_id) + '"]').forEach(function (card) {
      var v = data.validation, cell = card.querySelector('[data-field="validation"]');
      if (v && cell) {
        cell.textContent = "";
        var link = document.createElement("a");
        link.href = "/validations/" + encodeURIComponent(v.id);
        link.textContent = "#" + v.pr_number;
        var result = document.createElement("span");
        result.className = v.conclusion || v.status;
        result.dataset.field = "conclusion";
        result.textContent = v.conclusion || v.status;
        cell.append(link, " ", result);
      }
      var runs = card.querySelector('[data-field="running-runs"]');
      if (runs && typeof data.running_runs === "number") runs.textContent = data.running_runs + " running";
    });
  }
  // The run page: its live log, and its status, plan and PR fetched again when the run changes.
  var run = document.querySelector("[data-run-id]"), runId = run && run.dataset.runId;
  function field(name) { return run.querySelector('[data-field="' + name + '"]'); }
  // A link only to the configured GitHub (as bot/links.py decides on the server): an agent API's answer
  // could name any URL, javascript: ones included.
  function githubLink(url) {
    try {
      var base = new URL(run.dataset.githubUrl), found = new URL(url);
      var root = base.pathname.replace(/\/+$/, "");
      if (found.origin !== base.origin || found.username || found.password || /[\s\\]/.test(url)) return null;
      return !root || found.pathname === root || found.pathname.indexOf(root + "/") === 0 ? found.href : null;
    } catch (e) { return null; }
  }
  function logLine(text) {
    var log = document.getElementById("run-log"), item = document.createElement("li"), time = document.createElement("time");
    time.textContent = new Date().toTimeString().slice(0, 8);
    item.append(time, " " + text);  // text, never markup
    log.appendChild(item);
    log.scrollTop = log.scrollHeight;
  }
  function refreshRun() {
    fetch("/api/v1/runs/" + encodeURIComponent(runId), {credentials: "same-origin"}).then(function (answer) {
      return answer.ok ? answer.json() : null;
    }).then(function (shown) {
      if (!shown) return;
      var status = field("run-status");
      status.textContent = shown.status.replace(/_/g, " ");
      status.className = shown.status;
      field("run-plan").textContent = shown.plan || "No plan yet.";
      field("run-reason").textContent = shown.reason || "";
      field("run-fixes").textContent = shown.fix_attempts + " of " + shown.max_fix_attempts;
      var pr = field("run-pr");
      if (shown.pr_number) run.dataset.prNumber = shown.pr_number;
      var prLink = shown.pr_url && githubLink(shown.pr_url);
      if (prLink) {
        var link = document.createElement("a");
        link.href = prLink;
        link.textContent = "#" + shown.pr_number;
        pr.textContent = "";
        pr.appendChild(link);
      } else if (shown.pr_number) {
        pr.textContent = "#" + shown.pr_number;
      }
      var decision = field("run-decision"), cancel = field("run-cancel");
      if (decision) decision.hidden = shown.status !== "awaiting_confirmation";
      if (cancel) cancel.hidden = ["completed", "failed", "cancelled"].indexOf(shown.status) >= 0;
    }).catch(function () {});
  }
  function onRunEvent(event) {
    var d = event.data;
    if (event.event === "agent.run.updated") logLine("agent.run.updated: " + d.previous.replace(/_/g, " ") + " → " + d.status.replace(/_/g, " ") + (d.reason ? " (" + d.reason + ")" : ""));
    else if (event.event === "agent.run.completed") logLine("agent.run.completed: " + d.status + (d.reason ? " (" + d.reason + ")" : ""));
    else if (event.event === "pr.created") logLine("pull request #" + d.pr_number + " opened");
    else logLine(event.event);
    refreshRun();
  }
  function connect() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var ws = new WebSocket(scheme + location.host + "/api/v1/ws");
    ws.onopen = function () { delay = 1000; setState("live"); if (runId) refreshRun(); };
    ws.onmessage = function (message) {
      var event = JSON.parse(message.data);
      if (runId && event.data && event.data.run_id === runId) onRunEvent(event);
      else if (runId && event.event.indexOf("validation.") === 0 && event.data.pr_number !== undefined && event.data.pr_number === Number(run.dataset.prNumber)) logLine(event.event + " of PR #" + event.data.pr_number + (event.data.conclusion ? ": " + event.data.conclusion : ""));
      if (event.event === "project.status.updated" && event.data.validation !== undefined) updateCard(event.data);
      else if (event.event === "validation.completed") notify("Validation of PR #" + event.data.pr_number + ": " + event.data.conclusion);
      else if (event.event === "agent.run.completed") notify("Agent run " + event.data.status);
      else if (event.event === "pr.created") notify("Pull request #" + event.data.pr_number + " opened");
    };
    ws.onclose = function () {
      setState("reconnecting…");
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 30000);
    };
  }
  if ("WebSocket" in window) connect();
})();
