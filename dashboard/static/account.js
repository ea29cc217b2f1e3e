// The account page: copy a new API token (the clipboard, or else the token selected for Ctrl+C).
(function () {
  "use strict";
  var button = document.getElementById("copy-token");
  var token = document.getElementById("new-token");
  var status = document.getElementById("copy-status");
  if (!button || !token) return;

  function selectToken() {
    var range = document.createRange();
    range.selectNodeContents(token);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    status.textContent = "Selected: press Ctrl+C (or ⌘C) to copy.";
  }

  button.hidden = false;
  button.addEventListener("click", function () {
    var text = token.textContent;
    if (!navigator.clipboard || !window.isSecureContext) {
      selectToken();
      return;
    }
    navigator.clipboard.writeText(text).then(function () {
      status.textContent = "Copied.";
    }, selectToken);
  });
})();
