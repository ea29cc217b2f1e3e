// The projects page: choosing a project in the picker opens it (templates/projects.html).
(function () {
  "use strict";
  var picker = document.getElementById("project");
  if (!picker) return;
  picker.addEventListener("change", function () {
    if (picker.value) location.href = "/projects/" + picker.value;
  });
})();
