// The validation page while its run goes on: the running step and its output tail, polled every 3 s;
// the page reloads when the run ends (templates/validation.html).
(function poll() {
  "use strict";
  fetch(location.pathname + "/live", {cache: "no-store"}).then(function (r) { return r.json(); }).then(function (data) {
    if (!data.running) { location.reload(); return; }
    document.getElementById("live-step").textContent = data.current || "starting";
    document.getElementById("live-tail").textContent = data.tail || "";
    setTimeout(poll, 3000);
  }).catch(function () { setTimeout(poll, 5000); });
})();
