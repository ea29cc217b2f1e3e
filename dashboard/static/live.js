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
  function connect() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var ws = new WebSocket(scheme + location.host + "/api/v1/ws");
    ws.onopen = function () { delay = 1000; setState("live"); };
    ws.onmessage = function (message) {
      var event = JSON.parse(message.data);
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
