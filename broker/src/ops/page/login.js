// A link of the form /login#token=… logs in at once: the fragment never reaches the
// server's logs, and it is removed from the address bar before the form is sent.
"use strict";
(function () {
  function fromHash() {
    const m = /^#token=(.+)$/.exec(location.hash);
    if (!m) return;
    history.replaceState(null, "", location.pathname);
    document.getElementById("token").value = decodeURIComponent(m[1]);
    document.getElementById("login").submit();
  }
  window.addEventListener("hashchange", fromHash);
  fromHash();
})();
