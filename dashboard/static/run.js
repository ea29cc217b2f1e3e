// The agent run page (templates/run.html): when live.js says the run changed, the page is fetched again
// and its #run part replaced, so the stepper, the plan, the links and the events are the server's own
// rendering (sanitised markdown, words from bot/labels.py), never built here. Plain JS, no build step.
(function () {
  "use strict";
  var run = document.getElementById("run");
  if (!run) return;
  var busy = false, again = false;
  function redraw() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(location.pathname, {credentials: "same-origin", headers: {"Accept": "text/html"}}).then(function (answer) {
      return answer.ok ? answer.text() : null;
    }).then(function (html) {
      if (html === null) return;
      var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("run");
      if (!fresh) return;
      run.dataset.prNumber = fresh.dataset.prNumber || "";
      run.replaceChildren.apply(run, Array.from(fresh.childNodes));
    }).catch(function () {}).then(function () {
      busy = false;
      if (again) { again = false; redraw(); }
    });
  }
  document.addEventListener("codegenapp:run-changed", redraw);
})();
