// The setup page: register the App under the organization typed in, if any (templates/setup.html).
(function () {
  "use strict";
  var form = document.getElementById("register");
  if (!form) return;
  form.addEventListener("submit", function () {
    var org = document.getElementById("organization").value.trim();
    var base = form.dataset.githubUrl + (org ? "/organizations/" + encodeURIComponent(org) : "");
    form.action = base + "/settings/apps/new?state=" + encodeURIComponent(form.dataset.state);
  });
})();
