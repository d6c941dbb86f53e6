// Tollgate dashboard: progressive enhancement only — every page works without this file.
// - Tabs, range presets and the filter form load the next page in place (fetch), with a
//   loading state and an error state, and keep the URL (history) in step.
// - Chart tooltips from each bucket's <title>.
// - Live tabs (a [data-live-etag] marker: Overview, Alerts) poll their own URL with
//   If-None-Match every data-live-every seconds while the browser tab is visible (without it
//   once the page is data-live-redraw seconds old: relative times move); a 304 costs nothing,
//   a 200 replaces <main> in place (web/live.rs explains the server side).
// - The provider select applies itself; the custom range opens in place; the budget form shows
//   only the id field its scope needs.
(function () {
  "use strict";
  var doc = document;
  doc.documentElement.classList.add("js");

  function same(url) { return url.origin === location.origin; }

  function swap(html, url, push) {
    var next = new DOMParser().parseFromString(html, "text/html");
    var main = next.querySelector("main");
    // Not a dashboard page (sign-in after a session ended): go there for real.
    if (!main || !doc.querySelector("main") || !next.querySelector(".tabs")) {
      location.href = url;
      return;
    }
    ["main", ".tabs", ".filters", ".top"].forEach(function (sel) {
      var now = doc.querySelector(sel), then = next.querySelector(sel);
      if (now && then) now.replaceWith(then);
      else if (now && !then) now.remove();
      else if (!now && then && sel === ".filters") doc.querySelector(".tabs").after(then);
    });
    doc.title = next.title;
    drawnAt = Date.now();
    if (push) history.pushState({}, "", url);
    init(doc);
    var h = doc.querySelector("main h1");
    var m = doc.querySelector("main");
    if (m) m.focus({ preventScroll: true });
    if (h && push && window.scrollY > 120) window.scrollTo(0, 0);
  }

  var pending = null;
  function go(href, push) {
    var url = new URL(href, location.href);
    if (!same(url) || !window.fetch || !window.DOMParser) { location.href = url; return; }
    if (pending) pending.abort();
    var ctl = window.AbortController ? new AbortController() : null;
    pending = ctl;
    doc.body.classList.add("loading");
    var main = doc.querySelector("main");
    if (main) main.setAttribute("aria-busy", "true");
    fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" }, signal: ctl && ctl.signal })
      .then(function (res) {
        var final = new URL(res.url || url);
        if (final.pathname === "/login") { location.href = final; return null; }
        return res.text().then(function (t) { swap(t, final.pathname + final.search + final.hash, push); });
      })
      .catch(function (err) {
        if (err && err.name === "AbortError") return;
        var m = doc.querySelector("main");
        if (!m) { location.href = url; return; }
        var box = doc.createElement("div");
        box.className = "panel error";
        box.setAttribute("role", "alert");
        box.innerHTML = '<p class="error-title">Could not reach the dashboard</p><p>The server did not answer. Check the connection and retry.</p><p><a class="button" href="">Retry</a></p>';
        box.querySelector("a").href = url.pathname + url.search;
        m.prepend(box);
      })
      .finally(function () {
        if (pending === ctl) pending = null;
        doc.body.classList.remove("loading");
        var m2 = doc.querySelector("main");
        if (m2) m2.removeAttribute("aria-busy");
      });
  }

  doc.addEventListener("click", function (e) {
    var a = e.target.closest && e.target.closest("a");
    if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    if (a.hasAttribute("data-custom")) {
      e.preventDefault();
      var box = doc.getElementById("custom-range");
      if (box) {
        box.toggleAttribute("data-open");
        var first = box.querySelector("input");
        if (first && box.hasAttribute("data-open")) first.focus();
      }
      return;
    }
    if (!a.hasAttribute("data-nav")) return;
    e.preventDefault();
    go(a.href, true);
  });

  doc.addEventListener("submit", function (e) {
    var f = e.target;
    if (!f.hasAttribute("data-nav-form")) {
      // Posting forms navigate normally; show that something is happening.
      doc.body.classList.add("loading");
      return;
    }
    e.preventDefault();
    var url = new URL(f.action, location.href);
    var params = new URLSearchParams();
    new FormData(f).forEach(function (v, k) { if (String(v).trim() !== "") params.append(k, v); });
    if (params.has("from") || params.has("to")) params.delete("range");
    if (params.get("range") === "30d") params.delete("range");
    url.search = params.toString();
    go(url.href, true);
  });

  doc.addEventListener("change", function (e) {
    var t = e.target;
    if (t.matches && t.matches("[data-autosubmit]") && t.form) {
      if (t.form.requestSubmit) t.form.requestSubmit(); else t.form.submit();
    }
    if (t.id === "f-scope") scopeFields(doc);
  });

  window.addEventListener("popstate", function () { go(location.href, false); });
  // Coming back to a page from the back-forward cache: it is not loading any more.
  window.addEventListener("pageshow", function () { doc.body.classList.remove("loading"); });

  // Tooltips: each hover target's <title> becomes data-tip (so the browser's own tooltip does
  // not double it).
  var tip = null;
  function showTip(target, x, y) {
    tip = tip || doc.querySelector(".tooltip");
    if (!tip) return;
    tip.textContent = target.getAttribute("data-tip");
    tip.hidden = false;
    var w = tip.offsetWidth, h = tip.offsetHeight;
    var left = Math.min(Math.max(8, x + 14), window.innerWidth - w - 8);
    var top = y - h - 12 < 8 ? y + 16 : y - h - 12;
    tip.style.left = left + "px";
    tip.style.top = top + "px";
  }
  function hideTip() { if (tip) tip.hidden = true; }

  function init(root) {
    tip = null;
    root.querySelectorAll("rect.hit").forEach(function (r) {
      var t = r.querySelector("title");
      if (t) { r.setAttribute("data-tip", t.textContent); t.remove(); }
      r.addEventListener("pointermove", function (e) { showTip(r, e.clientX, e.clientY); });
      r.addEventListener("pointerleave", hideTip);
    });
    var sub = root.querySelector(".filter-form button[type=submit]");
    if (sub && !root.querySelector("#custom-range[data-open]")) sub.classList.add("secondary");
    scopeFields(root);
    live();
  }

  function scopeFields(root) {
    var scope = root.querySelector("#f-scope");
    if (!scope) return;
    var u = root.querySelector('[data-field="user_id"]'), a = root.querySelector('[data-field="app_id"]');
    if (u) u.hidden = scope.value !== "user";
    if (a) a.hidden = scope.value !== "app";
  }

  // Live refresh. One timer at a time; none while the tab is hidden or a navigation is on its
  // way; a refresh never moves focus or scroll.
  var liveTimer = null, livePoll = null, drawnAt = Date.now();
  function live() {
    clearTimeout(liveTimer);
    liveTimer = null;
    var marker = doc.querySelector("main [data-live-etag]");
    if (!marker || !window.fetch || !window.DOMParser) return;
    var every = Math.max(2, parseInt(marker.getAttribute("data-live-every"), 10) || 5) * 1000;
    liveTimer = setTimeout(poll, every);
  }
  function poll() {
    liveTimer = null;
    if (doc.hidden) return; // visibilitychange polls again
    var marker = doc.querySelector("main [data-live-etag]");
    if (!marker) return;
    if (pending || livePoll) { live(); return; }
    var url = location.href, etag = marker.getAttribute("data-live-etag");
    var redraw = (parseInt(marker.getAttribute("data-live-redraw"), 10) || 60) * 1000;
    var headers = { Accept: "text/html" };
    if (etag && Date.now() - drawnAt < redraw) headers["If-None-Match"] = etag;
    var ctl = window.AbortController ? new AbortController() : null;
    livePoll = ctl || {};
    fetch(url, { credentials: "same-origin", cache: "no-store", headers: headers, signal: ctl && ctl.signal })
      .then(function (res) {
        if (res.status !== 200 || new URL(res.url || url).pathname === "/login") return null;
        return res.text().then(function (t) {
          // The person went elsewhere meanwhile: this page is not theirs to replace.
          if (location.href !== url || pending) return;
          var next = new DOMParser().parseFromString(t, "text/html").querySelector("main");
          var now = doc.querySelector("main");
          if (!next || !now) return;
          var y = window.scrollY;
          now.replaceWith(next);
          drawnAt = Date.now();
          init(doc);
          window.scrollTo(window.scrollX, y);
          doc.dispatchEvent(new CustomEvent("tollgate:live"));
        });
      })
      .catch(function () { /* offline for a moment: the next poll tries again */ })
      .finally(function () { livePoll = null; live(); });
  }
  doc.addEventListener("visibilitychange", function () {
    if (doc.hidden) { clearTimeout(liveTimer); liveTimer = null; }
    else if (!livePoll) poll();
  });

  doc.addEventListener("scroll", hideTip, { passive: true });
  if (doc.readyState === "loading") doc.addEventListener("DOMContentLoaded", function () { init(doc); });
  else init(doc);
})();
