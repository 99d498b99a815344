// geosaga console: keeps the regions marked data-refresh="URL" fresh while sagas run.
// Every page works without this script; it only saves the reloads. A region is fetched
// again every data-every milliseconds (default 2000) while the tab is visible, replaced
// when its HTML changed, and no longer polled once it holds an element marked data-final.
(function () {
  "use strict";

  function watch(region) {
    var url = region.getAttribute("data-refresh");
    var every = Number(region.getAttribute("data-every")) || 2000;
    var last = null;

    function later() {
      window.setTimeout(tick, every);
    }

    function swap(html) {
      // Keep the keyboard focus on the same link or button across the swap.
      var active = document.activeElement;
      var key = region.contains(active) ? active.getAttribute("data-key") : null;
      region.innerHTML = html;
      if (key) {
        var again = region.querySelector('[data-key="' + CSS.escape(key) + '"]');
        if (again) again.focus();
      }
    }

    function tick() {
      if (document.hidden) {
        document.addEventListener("visibilitychange", tick, { once: true });
        return;
      }
      fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
        .then(function (response) {
          if (response.status === 401) {
            window.location.reload(); // the session ended: the page asks to log in
            return null;
          }
          return response.ok ? response.text() : null;
        })
        .then(function (html) {
          if (html !== null && html !== last) {
            last = html;
            swap(html);
          }
          if (!region.querySelector("[data-final]")) later();
        })
        .catch(later); // the coordinator restarts: try again
    }

    if (!region.querySelector("[data-final]")) later();
  }

  document.querySelectorAll("[data-refresh]").forEach(watch);
})();
