// The settings page: show only the agent fields of the chosen backend (without this script all show).
(function () {
  "use strict";
  var select = document.getElementById("agent_backend");
  if (!select) return;
  var groups = document.querySelectorAll("[data-backends]");

  function show() {
    var chosen = select.value || select.getAttribute("data-default-backend") || "none";
    for (var i = 0; i < groups.length; i++) {
      var wanted = groups[i].getAttribute("data-backends").split(" ");
      groups[i].hidden = wanted.indexOf(chosen) < 0;
    }
  }

  select.addEventListener("change", show);
  show();
})();
