// pesa dashboard: live updates and search-as-you-type. Pages work without it.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live) {
    return;
  }
  var SIGN_IN = "/dashboard/sign-in";

  // Fetch the page's live fragment (the server renders only #live for X-Pesa-Live: 1).
  function update(url, newAddress) {
    return fetch(url, {
      headers: { "X-Pesa-Live": "1" },
      credentials: "same-origin",
      cache: "no-store"
    }).then(function (response) {
      if (response.redirected && response.url.indexOf(SIGN_IN) !== -1) {
        window.location.assign(response.url); // the session ended
        return null;
      }
      if (!response.ok && response.status !== 422) {
        return null; // keep what is shown; try again on the next tick
      }
      return response.text();
    }).then(function (html) {
      if (typeof html === "string") {
        live.innerHTML = html;
        if (newAddress) {
          window.history.replaceState(null, "", newAddress);
        }
      }
    }).catch(function () {
      // Offline or restarting: the next tick tries again.
    });
  }

  var every = parseInt(live.getAttribute("data-live") || "0", 10);
  if (every > 0) {
    window.setInterval(function () {
      var focus = document.activeElement;
      if (document.hidden || (focus && focus !== document.body && live.contains(focus))) {
        return; // do not pull a button from under the operator's finger
      }
      update(window.location.href, null);
    }, every);
  }

  var search = document.querySelector("form[data-search]");
  if (search) {
    var timer = null;
    var run = function () {
      var params = new URLSearchParams();
      new FormData(search).forEach(function (value, key) {
        if (value !== "") {
          params.append(key, value);
        }
      });
      var address = search.getAttribute("action") + (params.toString() ? "?" + params : "");
      update(address, address);
    };
    search.addEventListener("input", function () {
      window.clearTimeout(timer);
      timer = window.setTimeout(run, 250);
    });
    search.addEventListener("change", function () {
      window.clearTimeout(timer);
      timer = window.setTimeout(run, 50);
    });
  }
}());
