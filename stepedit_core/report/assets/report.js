// Review page: filter the clip table in place. No network, no libraries.
(function () {
  "use strict";
  var rows = Array.prototype.slice.call(document.querySelectorAll("table.clips tbody tr"));
  var text = document.getElementById("filter-text");
  var status = document.getElementById("filter-status");
  var count = document.getElementById("filter-count");

  function matches(row, needle, wanted) {
    if (needle && row.getAttribute("data-search").indexOf(needle) < 0) return false;
    if (wanted === "all") return true;
    if (wanted === "failed") return row.getAttribute("data-status") === "failed";
    if (wanted === "ok") return row.getAttribute("data-status") === "ok";
    if (wanted === "qc-fail") return row.getAttribute("data-qc") === "fail";
    if (wanted === "qc-pass") return row.getAttribute("data-qc") === "pass";
    return true;
  }

  function apply() {
    var needle = (text.value || "").trim().toLowerCase();
    var wanted = status.value;
    var shown = 0;
    rows.forEach(function (row) {
      var keep = matches(row, needle, wanted);
      row.classList.toggle("hidden", !keep);
      if (keep) shown += 1;
    });
    count.textContent = shown + " of " + rows.length + " clips shown";
  }

  // one player at a time: starting one pauses the others
  document.addEventListener("play", function (event) {
    document.querySelectorAll("audio").forEach(function (player) {
      if (player !== event.target) player.pause();
    });
  }, true);

  text.addEventListener("input", apply);
  status.addEventListener("change", apply);
  apply();
  document.body.setAttribute("data-ready", "1");
})();
