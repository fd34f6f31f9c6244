// Review page: rate rounds 1-5, kept in localStorage per run, downloaded as JSON or CSV for
// `stepedit dataset import-ratings`. No network, no libraries; works from file://.
(function () {
  "use strict";
  var bar = document.getElementById("ratings-bar");
  var widgets = Array.prototype.slice.call(document.querySelectorAll("div.rating"));
  if (!bar || widgets.length === 0) return;
  var run = bar.getAttribute("data-run");
  var storeKey = "stepedit-ratings:" + run + ":" + (bar.getAttribute("data-digest") || "");
  var raterKey = "stepedit-rater";
  var rater = document.getElementById("ratings-rater");
  var count = document.getElementById("ratings-count");
  var FIELDS = ["run_id", "clip_id", "row_index", "iteration", "rating", "audio_sha256",
                "rater", "rated_at"];

  function load() {
    try { return JSON.parse(window.localStorage.getItem(storeKey) || "{}"); }
    catch (e) { return {}; }
  }
  function save(all) { window.localStorage.setItem(storeKey, JSON.stringify(all)); }
  function keyOf(w) { return w.getAttribute("data-row") + ":" + w.getAttribute("data-iteration"); }

  function show() {
    var all = load();
    widgets.forEach(function (w) {
      var entry = all[keyOf(w)];
      w.querySelectorAll("button").forEach(function (b) {
        var on = !!entry && String(entry.rating) === b.getAttribute("data-rating");
        b.classList.toggle("chosen", on);
        b.setAttribute("aria-pressed", on ? "true" : "false");
      });
    });
    var n = Object.keys(all).length;
    count.textContent = n + (n === 1 ? " round rated" : " rounds rated");
  }

  widgets.forEach(function (w) {
    w.addEventListener("click", function (event) {
      var button = event.target.closest("button[data-rating]");
      if (!button) return;
      var all = load();
      all[keyOf(w)] = {
        run_id: run,
        clip_id: w.getAttribute("data-clip"),
        row_index: Number(w.getAttribute("data-row")),
        iteration: Number(w.getAttribute("data-iteration")),
        rating: Number(button.getAttribute("data-rating")),
        audio_sha256: w.getAttribute("data-sha") || null,
        rater: rater.value.trim() || null,
        rated_at: new Date().toISOString()
      };
      save(all);
      show();
    });
  });

  function entries() {
    var all = load();
    return Object.keys(all).sort().map(function (k) { return all[k]; });
  }
  function download(name, type, text) {
    var url = URL.createObjectURL(new Blob([text], { type: type }));
    var link = document.createElement("a");
    link.href = url;
    link.download = name;
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(function () { URL.revokeObjectURL(url); }, 10000);
  }
  function csvCell(value) {
    var text = value === null || value === undefined ? "" : String(value);
    return /[",\n]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text;
  }

  document.getElementById("ratings-export-json").addEventListener("click", function () {
    var text = JSON.stringify({ run_id: run, ratings: entries() }, null, 1);
    download("ratings-" + run + ".json", "application/json", text);
  });
  document.getElementById("ratings-export-csv").addEventListener("click", function () {
    var lines = [FIELDS.join(",")].concat(entries().map(function (e) {
      return FIELDS.map(function (f) { return csvCell(e[f]); }).join(",");
    }));
    download("ratings-" + run + ".csv", "text/csv", lines.join("\n") + "\n");
  });
  document.getElementById("ratings-clear").addEventListener("click", function () {
    if (window.confirm("Forget every rating of this run kept in this browser?")) {
      window.localStorage.removeItem(storeKey);
      show();
    }
  });
  rater.value = window.localStorage.getItem(raterKey) || "";
  rater.addEventListener("change", function () {
    window.localStorage.setItem(raterKey, rater.value.trim());
  });
  bar.classList.add("ready");
  show();
  bar.setAttribute("data-ready", "1");
})();
