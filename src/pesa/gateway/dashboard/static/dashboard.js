// pesa dashboard: live updates and search-as-you-type. Pages work without it.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live) {
    return;
  }
  var SIGN_IN = "/dashboard/sign-in";
  // Each search gets a number; an answer is shown only if no newer search began since its
  // request left, so a slow answer to "0708" never replaces the one to "0708 374 149".
  var generation = 0;
  var searching = 0;
  // Once a form is sent (sign out, an action) the page is being left: no more updates, or
  // an update answered "sign in" (the session just ended) would race the form's own answer.
  var leaving = false;
  document.addEventListener("submit", function () { leaving = true; }, true);
  window.addEventListener("pagehide", function () { leaving = true; });

  // Fetch the page's live fragment (the server renders only #live for X-Pesa-Live: 1).
  function update(url, newAddress, isSearch) {
    var mine = isSearch ? ++generation : generation;
    if (isSearch) {
      searching += 1;
    }
    return fetch(url, {
      headers: { "X-Pesa-Live": "1" },
      credentials: "same-origin",
      cache: "no-store"
    }).then(function (response) {
      if (leaving) {
        return null;
      }
      if (response.redirected && response.url.indexOf(SIGN_IN) !== -1) {
        window.location.assign(response.url); // the session ended
        return null;
      }
      if (!response.ok && response.status !== 422) {
        return null; // keep what is shown; try again on the next tick
      }
      return response.text();
    }).then(function (html) {
      var current = mine === generation && (isSearch || searching === 0);
      if (typeof html === "string" && current) {
        live.innerHTML = html;
        if (newAddress) {
          window.history.replaceState(null, "", newAddress);
        }
      }
    }).catch(function () {
      // Offline or restarting: the next tick tries again.
    }).then(function () {
      if (isSearch) {
        searching -= 1;
      }
    });
  }

  var every = parseInt(live.getAttribute("data-live") || "0", 10);
  if (every > 0) {
    window.setInterval(function () {
      var focus = document.activeElement;
      if (leaving || document.hidden || searching > 0 ||
          (focus && focus !== document.body && live.contains(focus))) {
        return; // do not pull a button from under the operator's finger
      }
      update(window.location.href, null, false);
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
      update(address, address, true);
    };
    var soon = function (delay) {
      return function () {
        window.clearTimeout(timer);
        timer = window.setTimeout(run, delay);
      };
    };
    search.addEventListener("input", soon(250));
    search.addEventListener("change", soon(50));
  }
}());
