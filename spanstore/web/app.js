// spanstore web UI: collapsible subtrees, span details, and new traces without a reload.
// No framework and no eval; the server escapes every span-provided string, and this script only moves
// elements the server rendered (it never builds HTML from span data itself).
(function () {
  "use strict";

  function rowsAfter(row) {
    // The rows of row's subtree: every following .row deeper than it, until one that is not.
    var depth = +row.dataset.depth, out = [], el = row.nextElementSibling;
    while (el) {
      if (el.classList.contains("row")) {
        if (+el.dataset.depth <= depth) break;
        out.push(el);
      }
      el = el.nextElementSibling;
    }
    return out;
  }

  function setCollapsed(row, collapsed) {
    var tog = row.querySelector("button.tog");
    if (!tog) return;
    tog.setAttribute("aria-expanded", collapsed ? "false" : "true");
    tog.title = collapsed ? "expand the subtree" : "collapse the subtree";
    // When expanding, subtrees collapsed inside this one stay collapsed: skip below their depth.
    var skipBelow = Infinity;
    rowsAfter(row).forEach(function (el) {
      var depth = +el.dataset.depth;
      if (depth <= skipBelow) skipBelow = Infinity;
      var hide = collapsed || depth > skipBelow;
      el.classList.toggle("hidden", hide);
      var details = document.getElementById("d-" + el.id.slice(2));
      if (details) details.classList.toggle("hidden", hide);
      var inner = el.querySelector("button.tog");
      if (!hide && inner && inner.getAttribute("aria-expanded") === "false") skipBelow = depth;
    });
  }

  function toggleDetails(id, open) {
    var details = document.getElementById(id);
    if (!details) return;
    details.hidden = open === undefined ? !details.hidden : !open;
  }

  document.addEventListener("click", function (event) {
    var target = event.target.closest("button");
    if (!target) return;
    var row = target.closest(".row");
    if (target.classList.contains("tog") && row) {
      setCollapsed(row, target.getAttribute("aria-expanded") !== "false");
    } else if (target.classList.contains("open")) {
      toggleDetails(target.dataset.target);
    } else if (target.dataset.action) {
      var section = target.closest("section.trace") || document;
      var action = target.dataset.action;
      section.querySelectorAll(".row").forEach(function (r) {
        if (action === "expand" || action === "collapse") {
          if (r.querySelector("button.tog")) setCollapsed(r, action === "collapse");
        }
      });
      if (action === "expand") section.querySelectorAll(".row.hidden, .details.hidden").forEach(function (el) {
        el.classList.remove("hidden");
      });
      if (action === "details") section.querySelectorAll(".details").forEach(function (d) {
        if (!d.classList.contains("hidden")) d.hidden = false;
      });
    }
  });

  // A link to #s-<span id> opens that span's details and scrolls to it.
  function openFromHash() {
    var m = /^#s-([0-9a-f]{16})$/.exec(location.hash);
    if (!m) return;
    toggleDetails("d-" + m[1], true);
    var row = document.getElementById("s-" + m[1]);
    if (row) row.scrollIntoView({ block: "center" });
  }
  window.addEventListener("hashchange", openFromHash);
  openFromHash();

  // New traces without a reload: ask the server for the result rows when its generation changed.
  var table = document.getElementById("results");
  var live = document.getElementById("live");
  if (table && table.dataset.src && window.fetch) {
    var poll = function () {
      if (document.hidden || (live && !live.checked)) return;
      var src = table.dataset.src + (table.dataset.src.indexOf("?") < 0 ? "?" : "&") + "gen=" + table.dataset.gen;
      fetch(src, { credentials: "same-origin" }).then(function (response) {
        if (response.status !== 200) return null;
        table.dataset.gen = response.headers.get("X-Spanstore-Generation") || table.dataset.gen;
        return response.text();
      }).then(function (rows) {
        if (rows === null || rows === undefined) return;
        var tbody = table.tBodies[0];
        var known = {};
        tbody.querySelectorAll("tr[data-trace]").forEach(function (tr) { known[tr.dataset.trace] = true; });
        var fresh = document.createElement("tbody");
        fresh.innerHTML = rows; // server-rendered, every span string escaped there
        fresh.querySelectorAll("tr[data-trace]").forEach(function (tr) {
          if (!known[tr.dataset.trace]) tr.classList.add("new");
        });
        table.replaceChild(fresh, tbody);
        var summary = document.querySelector(".summary .count");
        if (summary) summary.textContent = fresh.querySelectorAll("tr[data-trace]").length;
      }).catch(function () { /* the server may be restarting: try again next time */ });
    };
    setInterval(poll, 2000);
  }
})();
