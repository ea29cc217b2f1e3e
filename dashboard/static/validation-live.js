// The validation page while its run goes on (templates/validation.html): every 3 s it asks
// /validations/{id}/live for each step's state and duration and the running step's numbered log, and
// updates the page in place. The running step's log follows its end unless the reader scrolled up.
// The page reloads when the run ends (its final report) or when its list of steps changed.
(function () {
  "use strict";
  var list = document.getElementById("steps");
  var MAX_LINES = 500;

  function text(parent, selector, value) {
    var node = parent.querySelector(selector);
    if (node && node.textContent !== value) { node.textContent = value; }
  }

  function atEnd(log) {
    return log.scrollHeight - log.scrollTop - log.clientHeight < 24;
  }

  function showLog(item, lines) {
    var log = item.querySelector(".log");
    if (!log) { return; }
    var follow = log.hidden || atEnd(log);
    var fragment = document.createDocumentFragment();
    lines.slice(-MAX_LINES).forEach(function (entry) {
      var line = document.createElement("div");
      line.className = "line";
      var number = document.createElement("span");
      number.className = "ln";
      number.setAttribute("aria-hidden", "true");
      number.textContent = String(entry[0]);
      var body = document.createElement("span");
      body.className = "text";
      body.textContent = entry[1];
      line.appendChild(number);
      line.appendChild(body);
      fragment.appendChild(line);
    });
    log.replaceChildren(fragment);
    log.hidden = lines.length === 0;
    var empty = item.querySelector(".empty");
    if (empty) { empty.hidden = lines.length > 0; }
    if (follow) { log.scrollTop = log.scrollHeight; }
  }

  function update(data) {
    if (!data.running) { location.reload(); return false; }
    var items = list ? list.querySelectorAll("li.step") : [];
    var names = Array.prototype.map.call(items, function (item) { return item.querySelector(".name").textContent; });
    var fresh = data.steps.map(function (step) { return step.name; });
    if (names.join("\n") !== fresh.join("\n")) { location.reload(); return false; }
    text(document, "#run-state", data.state_label);
    text(document, "#run-took", data.took);
    data.steps.forEach(function (step, index) {
      var item = items[index];
      var was = item.className;
      item.className = "step " + step.state;
      text(item, ".icon", step.icon);
      text(item, ".state", step.state_label);
      text(item, ".duration", step.duration);
      var details = item.querySelector("details");
      if (was !== item.className) {  // a step began or ended: open the running one, close one that passed
        if (step.state === "running" || step.state === "failed" || step.state === "timed_out") { details.open = true; }
        if (step.state === "passed") { details.open = false; }
      }
      if (step.key === data.current_key) { showLog(item, data.log); }
    });
    return true;
  }

  function poll() {
    fetch(location.pathname + "/live", {cache: "no-store"})
      .then(function (response) { return response.json(); })
      .then(function (data) { if (update(data)) { setTimeout(poll, 3000); } })
      .catch(function () { setTimeout(poll, 5000); });
  }

  var running = list && list.querySelector("li.step.running .log");
  if (running) { running.scrollTop = running.scrollHeight; }
  setTimeout(poll, 3000);
})();
