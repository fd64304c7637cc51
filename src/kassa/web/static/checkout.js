/* Kassa hosted checkout: a countdown to the order's expiry, and the order's status polled
   every second while it is waiting, so the page follows the payment as it happens.
   Once paid, the payer is sent back to the merchant's return URL. No framework. */
(function () {
  "use strict";

  var main = document.getElementById("checkout");
  if (!main) { return; }
  var statusUrl = main.getAttribute("data-status-url");
  var statusEl = document.getElementById("status");
  var messageEl = document.getElementById("message");
  var countdownEl = document.getElementById("countdown");
  var lang = document.documentElement.getAttribute("lang") || "en";
  var WAITING = { pending: true, processing: true };
  var POLL_MS = 1000;
  var RETRY_MS = 3000;
  var RETURN_DELAY_MS = 1500;
  var deadline = null;
  var ticker = null;
  var leaving = false;

  // Forget a one-off notice (?notice=...) so a reload does not show it again.
  if (window.history && window.history.replaceState && window.URLSearchParams) {
    var params = new URLSearchParams(window.location.search);
    if (params.has("notice")) {
      params.delete("notice");
      var query = params.toString();
      window.history.replaceState(null, "", window.location.pathname + (query ? "?" + query : ""));
    }
  }

  function two(n) { return (n < 10 ? "0" : "") + n; }

  function formatSeconds(total) {
    var hours = Math.floor(total / 3600);
    var minutes = Math.floor((total % 3600) / 60);
    var seconds = total % 60;
    return hours ? hours + ":" + two(minutes) + ":" + two(seconds) : two(minutes) + ":" + two(seconds);
  }

  function stopCountdown(state) {
    if (ticker !== null) { window.clearInterval(ticker); ticker = null; }
    if (countdownEl) { countdownEl.setAttribute("data-state", state); }
  }

  function tick() {
    var left = Math.max(0, Math.ceil((deadline - Date.now()) / 1000));
    countdownEl.textContent = formatSeconds(left);
    if (left === 0) {
      stopCountdown("expired");  // the server expires the order; polling will show it
    }
  }

  function startCountdown() {
    if (!countdownEl || countdownEl.getAttribute("data-state") !== "running") { return; }
    var left = parseInt(countdownEl.getAttribute("data-seconds-left"), 10);
    if (isNaN(left)) { return; }
    // Counted on this device's clock from the server's figure: a wrong clock does not matter.
    deadline = Date.now() + left * 1000;
    ticker = window.setInterval(tick, 1000);
  }

  function safeTarget(url) {
    return typeof url === "string" && /^(https?:\/\/|\/)/i.test(url) && url.indexOf("//") !== 0
      ? url : null;
  }

  function show(data) {
    var status = data.status;
    var changed = status !== main.getAttribute("data-status");
    if (changed) {
      main.setAttribute("data-status", status);
      if (statusEl) {
        statusEl.textContent = statusEl.getAttribute("data-label-" + status) || status;
      }
      if (messageEl) { messageEl.textContent = data.message || ""; }
      if (status !== "pending") {
        stopCountdown(status === "expired" ? "expired" : "stopped");
      }
    } else if (messageEl && data.message && !messageEl.textContent) {
      messageEl.textContent = data.message;
    }
    var target = status === "completed" ? safeTarget(data.return_url) : null;
    if (target && !leaving) {
      leaving = true;
      window.setTimeout(function () { window.location.assign(target); }, RETURN_DELAY_MS);
    }
    return WAITING[status] === true;
  }

  function poll() {
    if (!statusUrl || leaving) { return; }
    fetch(statusUrl + "?lang=" + encodeURIComponent(lang), {
      headers: { "Accept": "application/json" },
      cache: "no-store",
      credentials: "same-origin"
    }).then(function (response) {
      if (!response.ok) { throw new Error("status " + response.status); }
      return response.json();
    }).then(function (data) {
      if (show(data)) { window.setTimeout(poll, POLL_MS); }
    }).catch(function () {
      window.setTimeout(poll, RETRY_MS);
    });
  }

  // A form is sent once: its button is disabled while the page goes.
  Array.prototype.forEach.call(document.querySelectorAll("main form"), function (form) {
    form.addEventListener("submit", function () {
      var button = form.querySelector("button[type=submit]");
      if (button) {
        window.setTimeout(function () { button.disabled = true; }, 0);
      }
    });
  });

  startCountdown();
  var initial = main.getAttribute("data-status");
  if (WAITING[initial] || initial === "completed") {
    // A completed order is asked once, for where to send the payer back.
    window.setTimeout(poll, initial === "completed" ? 0 : POLL_MS);
  }
}());
