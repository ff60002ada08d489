/*!
 * Matrix Commerce Hub — embeddable web chat widget.
 *
 * Embed with one tag:
 *   <script src="https://HUB/webchat/widget.js" async></script>
 * Optional attributes: data-title, data-color (accent, any CSS colour), data-position ("right" | "left").
 *
 * Vanilla JS, no dependencies, no external resources. Everything renders inside an open Shadow DOM.
 * Public API: window.HubChat = { open(), close(), isReady(), setName(name) }.
 * Texts: in the shop's language from the hub (`texts` of the session answer); the English
 * strings here are the fallbacks for a hub that sends none.
 * License: AGPL-3.0-or-later.
 */
(function () {
  "use strict";

  if (window.HubChat && window.HubChat.__hubchat) return; // loaded twice: keep the first instance

  // ---------------------------------------------------------------------------------------------
  // Configuration from our own <script> tag
  // ---------------------------------------------------------------------------------------------
  var WIDGET_PATH = "/webchat/widget.js";
  var scriptEl = document.currentScript;
  if (!scriptEl || !scriptEl.src || scriptEl.src.indexOf(WIDGET_PATH) === -1) {
    scriptEl = null;
    var tags = document.getElementsByTagName("script");
    for (var t = tags.length - 1; t >= 0; t--) {
      if (tags[t].src && tags[t].src.indexOf(WIDGET_PATH) !== -1) { scriptEl = tags[t]; break; }
    }
  }
  var scriptSrc = scriptEl ? scriptEl.src : "";
  var BASE = deriveBase(scriptSrc);
  if (!BASE) {
    if (window.console) console.error("[HubChat] cannot determine the hub URL (script src must end in " + WIDGET_PATH + ")");
    return;
  }
  var WS_URL = BASE.replace(/^http/i, "ws") + "/webchat/ws";
  var attr = function (name) { return scriptEl ? scriptEl.getAttribute(name) : null; };
  var CFG = {
    title: (attr("data-title") || "").trim(),
    color: validColor((attr("data-color") || "").trim()) || "#2563eb",
    position: (attr("data-position") || "").trim().toLowerCase() === "left" ? "left" : "right"
  };

  function deriveBase(src) {
    if (!src) return "";
    try {
      var u = new URL(src, document.baseURI);
      var i = u.pathname.lastIndexOf(WIDGET_PATH);
      if (i === -1) return "";
      return u.origin + u.pathname.slice(0, i);
    } catch (e) { return ""; }
  }

  function validColor(c) {
    if (!c) return "";
    try { if (window.CSS && CSS.supports && !CSS.supports("color", c)) return ""; } catch (e) { return ""; }
    return c;
  }

  // ---------------------------------------------------------------------------------------------
  // Storage (falls back to memory when blocked)
  // ---------------------------------------------------------------------------------------------
  var memStore = {};
  function store(kind) {
    var s = null;
    try { s = window[kind]; var k = "hubchat.__probe"; s.setItem(k, "1"); s.removeItem(k); } catch (e) { s = null; }
    return {
      get: function (k) { try { return s ? s.getItem(k) : (memStore[kind + k] || null); } catch (e) { return null; } },
      set: function (k, v) {
        try { if (s) { if (v == null) s.removeItem(k); else s.setItem(k, String(v)); } else memStore[kind + k] = v; } catch (e) { /* ignore */ }
      }
    };
  }
  var LS = store("localStorage");
  var SS = store("sessionStorage");
  var KEY_TOKEN = "hubchat.token";
  var KEY_SEEN = "hubchat.seen";
  var KEY_OPEN = "hubchat.open";
  var KEY_DRAFT = "hubchat.draft";

  // ---------------------------------------------------------------------------------------------
  // Small utilities
  // ---------------------------------------------------------------------------------------------
  function uuid() {
    try { if (window.crypto && crypto.randomUUID) return crypto.randomUUID(); } catch (e) { /* insecure context */ }
    var b = new Uint8Array(16);
    if (window.crypto && crypto.getRandomValues) crypto.getRandomValues(b);
    else for (var i = 0; i < 16; i++) b[i] = Math.floor(Math.random() * 256);
    b[6] = (b[6] & 0x0f) | 0x40; b[8] = (b[8] & 0x3f) | 0x80;
    var h = [];
    for (var j = 0; j < 16; j++) h.push((b[j] + 0x100).toString(16).slice(1));
    return h.slice(0, 4).join("") + "-" + h.slice(4, 6).join("") + "-" + h.slice(6, 8).join("") + "-" +
      h.slice(8, 10).join("") + "-" + h.slice(10).join("");
  }

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    return e;
  }

  var SVG_NS = "http://www.w3.org/2000/svg";
  var ICONS = {
    chat: "M4 5.5A2.5 2.5 0 0 1 6.5 3h11A2.5 2.5 0 0 1 20 5.5v8a2.5 2.5 0 0 1-2.5 2.5H10l-4.2 3.6c-.5.4-1.3.1-1.3-.6V16H6.5h0A2.5 2.5 0 0 1 4 13.5z",
    close: "M6 6l12 12M18 6L6 18",
    chevron: "M6 9l6 6 6-6",
    send: "M4.5 12h14M12.5 5.5 19 12l-6.5 6.5",
    clip: "M20.5 11.5 12 20a5 5 0 0 1-7-7l8.5-8.5a3.3 3.3 0 0 1 4.7 4.7L9.7 17.7a1.7 1.7 0 0 1-2.4-2.4L15 7.6",
    file: "M14 3H7a2 2 0 0 0-2 2v14a2 2 0 0 0 2 2h10a2 2 0 0 0 2-2V8zM14 3v5h5",
    alert: "M12 8v5M12 16.5v.01M10.3 3.9 2.6 17.5A2 2 0 0 0 4.3 20.5h15.4a2 2 0 0 0 1.7-3L13.7 3.9a2 2 0 0 0-3.4 0z"
  };
  function icon(name, size) {
    var s = document.createElementNS(SVG_NS, "svg");
    s.setAttribute("viewBox", "0 0 24 24");
    s.setAttribute("width", String(size || 20));
    s.setAttribute("height", String(size || 20));
    s.setAttribute("aria-hidden", "true");
    s.setAttribute("focusable", "false");
    s.setAttribute("class", "ico ico-" + name);
    var p = document.createElementNS(SVG_NS, "path");
    p.setAttribute("d", ICONS[name]);
    s.appendChild(p);
    return s;
  }

  // ---------------------------------------------------------------------------------------------
  // Texts: the hub sends them in the shop's language with the session; English until then.
  // ---------------------------------------------------------------------------------------------
  var TEXTS = {};
  var LANG = "";   // the shop's language (BCP 47), for dates and numbers; "" = the browser's
  // The text for `key`, or `fallback`; {placeholders} filled from `vars`.
  function T(key, fallback, vars) {
    var t = typeof TEXTS[key] === "string" && TEXTS[key] ? TEXTS[key] : fallback;
    if (vars) t = t.replace(/\{(\w+)\}/g, function (m, k) { return vars[k] != null ? String(vars[k]) : m; });
    return t;
  }
  function locales() { return LANG ? [LANG] : []; }

  function humanSize(n) {
    if (typeof n !== "number" || !isFinite(n) || n < 0) return "";
    if (n < 1024) return n + " B";
    var units = ["KB", "MB", "GB", "TB"], v = n / 1024, i = 0;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    var shown = v >= 100 ? Math.round(v) : Math.round(v * 10) / 10;
    try { shown = shown.toLocaleString(locales()); } catch (e) { shown = String(shown); }
    return shown + " " + units[i];
  }

  function safeUrl(u, allowBlob) {
    if (!u || typeof u !== "string") return "";
    try {
      var p = new URL(u, BASE + "/");
      if (p.protocol === "http:" || p.protocol === "https:" || (allowBlob && p.protocol === "blob:")) return p.href;
    } catch (e) { /* fallthrough */ }
    return "";
  }

  function parseDate(s) {
    var d = s ? new Date(s) : new Date();
    return isNaN(d.getTime()) ? new Date() : d;
  }
  function fmtTime(d) {
    try { return d.toLocaleTimeString(locales(), { hour: "2-digit", minute: "2-digit" }); } catch (e) { return d.toTimeString().slice(0, 5); }
  }
  function dayKey(d) { return d.getFullYear() + "-" + d.getMonth() + "-" + d.getDate(); }
  function fmtDay(d) {
    var today = new Date(), y = new Date(); y.setDate(today.getDate() - 1);
    if (dayKey(d) === dayKey(today)) return T("today", "Today");
    if (dayKey(d) === dayKey(y)) return T("yesterday", "Yesterday");
    var opts = { weekday: "short", day: "numeric", month: "short" };
    if (d.getFullYear() !== today.getFullYear()) opts.year = "numeric";
    try { return d.toLocaleDateString(locales(), opts); } catch (e) { return d.toDateString(); }
  }

  function uploadingText(progress) {
    return T("uploading", "Uploading… {percent}%", { percent: Math.round((progress || 0) * 100) });
  }

  // Append `text` to `parent` as text nodes, turning http(s) URLs into safe links. Never uses innerHTML.
  var URL_RE = /\bhttps?:\/\/[^\s<>"'`]+/gi;
  function appendLinkified(parent, text) {
    var last = 0, m;
    URL_RE.lastIndex = 0;
    while ((m = URL_RE.exec(text)) !== null) {
      var url = m[0];
      // Trim trailing punctuation that is most likely not part of the URL.
      while (/[.,;:!?'"\u2019\u201d]$/.test(url) ||
             (/\)$/.test(url) && count(url, "(") < count(url, ")")) ||
             (/\]$/.test(url) && count(url, "[") < count(url, "]"))) {
        url = url.slice(0, -1);
      }
      var start = m.index, href = safeUrl(url, false);
      if (!href || !/^https?:\/\//i.test(url)) continue;
      if (start > last) parent.appendChild(document.createTextNode(text.slice(last, start)));
      var a = el("a", "lnk", url);
      a.href = href;
      a.target = "_blank";
      a.rel = "noopener noreferrer";
      parent.appendChild(a);
      last = start + url.length;
      URL_RE.lastIndex = last;
    }
    if (last < text.length) parent.appendChild(document.createTextNode(text.slice(last)));
  }
  function count(s, ch) { return s.split(ch).length - 1; }

  // An adviser's formatting, as the hub sends it (`formatted`, see
  // hub/bridges/webchat/formatting.py): a node is a string or {t: tag, c: [nodes]}, with `href`
  // on "a" and `start` on "ol". Built with createElement and text nodes only: the hub already
  // allowed just these tags and links, and they are checked here again, so neither a bug there
  // nor a message can put other markup (or script) into the page. Never uses innerHTML.
  var RICH_TAGS = { b: 1, strong: 1, i: 1, em: 1, s: 1, del: 1, code: 1, pre: 1, a: 1, ul: 1, ol: 1, li: 1, br: 1, p: 1, blockquote: 1 };
  var RICH_MAX_DEPTH = 16, RICH_MAX_ELEMENTS = 2000;
  function isRichTag(t) { return typeof t === "string" && Object.prototype.hasOwnProperty.call(RICH_TAGS, t); }
  // A link of a message: absolute http(s) with a host, or mailto; "" for anything else.
  function richHref(u) {
    if (typeof u !== "string" || !u || /[\s\u0000-\u001f\u007f-\u009f\\]/.test(u)) return "";
    var p;
    try { p = new URL(u); } catch (e) { return ""; }
    if ((p.protocol === "http:" || p.protocol === "https:") && p.host) return p.href;
    if (p.protocol === "mailto:") return p.href;
    return "";
  }
  function appendRich(parent, nodes) {
    var budget = { n: RICH_MAX_ELEMENTS };
    (function walk(into, list, depth, inLink, inCode) {
      if (!Array.isArray(list)) return;
      for (var i = 0; i < list.length; i++) {
        var n = list[i];
        if (typeof n === "string") {
          // Bare addresses in the text become links too, except in code and inside a link.
          if (inLink || inCode) into.appendChild(document.createTextNode(n)); else appendLinkified(into, n);
          continue;
        }
        if (!n || typeof n !== "object") continue;
        var tag = n.t;
        if (tag === "br") { if (budget.n-- > 0) into.appendChild(document.createElement("br")); continue; }
        var href = tag === "a" ? richHref(n.href) : "";
        // Unknown tags, links we would not open, a link in a link, too deep or too many: the text only.
        if (!isRichTag(tag) || (tag === "a" && (!href || inLink)) || depth >= RICH_MAX_DEPTH || budget.n-- <= 0) {
          walk(into, n.c, depth + 1, inLink, inCode);
          continue;
        }
        var e = document.createElement(tag);
        if (tag === "a") { e.className = "lnk"; e.href = href; e.target = "_blank"; e.rel = "noopener noreferrer"; }
        if (tag === "ol" && typeof n.start === "number" && isFinite(n.start) && n.start >= 0 && n.start <= 1e6) e.start = Math.floor(n.start);
        into.appendChild(e);
        walk(e, n.c, depth + 1, inLink || tag === "a", inCode || tag === "code" || tag === "pre");
      }
    })(parent, nodes, 0, false, false);
  }
  // The words of a formatted message (for screen readers' announcements).
  function richText(nodes) {
    var out = "";
    (function walk(list, depth) {
      if (!Array.isArray(list) || depth > RICH_MAX_DEPTH) return;
      for (var i = 0; i < list.length; i++) {
        var n = list[i];
        if (typeof n === "string") out += n;
        else if (n && typeof n === "object") { if (n.t === "br") out += " "; else { walk(n.c, depth + 1); if (n.t === "p" || n.t === "li") out += " "; } }
      }
    })(nodes, 0);
    return out.replace(/\s+/g, " ").trim();
  }

  function backoff(attempt, base, max) {
    var d = Math.min(max, base * Math.pow(2, attempt));
    return Math.round(d / 2 + Math.random() * d / 2); // "equal jitter": [d/2, d]
  }

  function sleep(ms) { return new Promise(function (r) { setTimeout(r, ms); }); }

  // HTTP helper. Resolves to {status, data}; rejects only on network failure / timeout.
  function api(method, path, body, timeoutMs) {
    var ctrl = window.AbortController ? new AbortController() : null;
    var timer = ctrl ? setTimeout(function () { ctrl.abort(); }, timeoutMs || 20000) : null;
    var headers = { "Accept": "application/json" };
    if (state.token && path !== "/webchat/api/session") headers["Authorization"] = "Bearer " + state.token;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    return fetch(BASE + path, {
      method: method,
      headers: headers,
      body: body !== undefined ? JSON.stringify(body) : undefined,
      credentials: "omit",
      cache: "no-store",
      signal: ctrl ? ctrl.signal : undefined
    }).then(function (res) {
      return res.text().then(function (txt) {
        var data = null;
        try { data = txt ? JSON.parse(txt) : null; } catch (e) { data = null; }
        return { status: res.status, data: data, retryAfter: res.headers.get("Retry-After") };
      });
    }).finally(function () { if (timer) clearTimeout(timer); });
  }

  function errorText(res, fallback) {
    if (res && res.data && typeof res.data.error === "string" && res.data.error) return res.data.error;
    return fallback || T("request_failed", "Request failed ({status})", { status: res ? res.status : T("network", "network") });
  }
  function isTransient(status) { return status === 0 || status === 408 || status === 429 || status >= 500; }
  // How long a 429 (or 503) asks to wait, in ms (capped at two minutes); 0 when it does not say.
  // The header (exposed by the hub's CORS headers) or the JSON's `retry_after`.
  function retryAfterMs(res) {
    var v = res ? res.retryAfter : null;
    if ((v == null || !/^\d+$/.test(String(v))) && res && res.data && typeof res.data.retry_after === "number") v = res.data.retry_after;
    if (v == null || !/^\d+$/.test(String(v))) return 0;
    return Math.min(120, +v) * 1000;
  }

  // ---------------------------------------------------------------------------------------------
  // State
  // ---------------------------------------------------------------------------------------------
  var state = {
    token: LS.get(KEY_TOKEN),
    visitorId: null,
    name: null,
    title: CFG.title,
    welcome: "",
    ready: false,        // session + history loaded
    open: false,
    connected: false,    // websocket authenticated ("ready" received)
    maxId: 0,
    seenId: parseInt(LS.get(KEY_SEEN) || "0", 10) || 0,
    unread: 0,
    maxUpload: 0,
    sessionPromise: null
  };
  var records = [];          // message records, kept sorted by layout()
  var byId = {};             // id -> record
  var byClient = {};         // client_id -> record
  var localSeq = 0;
  var outbox = [];           // text records waiting to be sent (FIFO, sent one at a time)
  var outboxBusy = false;
  var outboxWake = null;     // resolves the current retry sleep early

  // ---------------------------------------------------------------------------------------------
  // DOM / styles
  // ---------------------------------------------------------------------------------------------
  var CSS_TEXT = [
    ":host{all:initial}",
    "*,*::before,*::after{box-sizing:border-box}",
    ".root{--hc-accent:#2563eb;--hc-on-accent:#fff;--hc-bg:#fff;--hc-surface:#f3f4f6;--hc-border:#e5e7eb;",
    "--hc-text:#111827;--hc-muted:#6b7280;--hc-danger:#b91c1c;--hc-radius:18px;",
    "font-family:system-ui,-apple-system,'Segoe UI',Roboto,'Helvetica Neue','Noto Sans','Liberation Sans',Arial,sans-serif,",
    "'Apple Color Emoji','Segoe UI Emoji','Noto Color Emoji';font-size:15px;line-height:1.45;color:var(--hc-text);",
    "-webkit-font-smoothing:antialiased;-webkit-text-size-adjust:100%;text-align:left;letter-spacing:normal;font-weight:400}",
    "button{font:inherit;color:inherit;background:none;border:0;margin:0;padding:0;cursor:pointer;-webkit-tap-highlight-color:transparent}",
    "button:focus-visible,a:focus-visible,textarea:focus-visible{outline:2px solid var(--hc-accent);outline-offset:2px}",
    ".ico{fill:none;stroke:currentColor;stroke-width:2;stroke-linecap:round;stroke-linejoin:round;display:block;flex:none}",

    /* launcher */
    ".launcher{position:fixed;bottom:20px;right:20px;width:60px;height:60px;border-radius:50%;background:var(--hc-accent);",
    "color:var(--hc-on-accent);display:flex;align-items:center;justify-content:center;",
    "box-shadow:0 6px 20px rgba(17,24,39,.22),0 2px 6px rgba(17,24,39,.12);transition:transform .18s ease,box-shadow .18s ease;z-index:2}",
    ".root.left .launcher{right:auto;left:20px}",
    ".launcher:hover{transform:scale(1.06);box-shadow:0 10px 28px rgba(17,24,39,.26),0 2px 6px rgba(17,24,39,.12)}",
    ".launcher:active{transform:scale(.96)}",
    ".launcher .ico{width:28px;height:28px;transition:transform .2s ease,opacity .2s ease;position:absolute}",
    ".launcher .ico-chat{fill:currentColor;stroke:none}",
    ".launcher .ico-chevron{opacity:0;transform:rotate(-90deg)}",
    ".root.open .launcher .ico-chat{opacity:0;transform:rotate(90deg) scale(.6)}",
    ".root.open .launcher .ico-chevron{opacity:1;transform:none}",
    ".badge{position:absolute;top:-3px;right:-3px;min-width:22px;height:22px;padding:0 6px;border-radius:11px;background:#ef4444;",
    "color:#fff;font-size:12px;font-weight:700;line-height:22px;text-align:center;box-shadow:0 0 0 2px #fff}",
    ".badge[hidden],.root.open .badge{display:none}",

    /* panel */
    ".panel{position:fixed;bottom:92px;right:20px;width:380px;height:min(640px,calc(100vh - 116px));min-height:360px;",
    "background:var(--hc-bg);border-radius:16px;overflow:hidden;display:flex;flex-direction:column;",
    "box-shadow:0 16px 48px rgba(17,24,39,.20),0 4px 12px rgba(17,24,39,.10);border:1px solid rgba(17,24,39,.06);",
    "transform-origin:bottom right;transform:translateY(12px) scale(.96);opacity:0;visibility:hidden;",
    "transition:opacity .18s ease,transform .18s ease,visibility 0s linear .18s;z-index:1}",
    ".root.left .panel{right:auto;left:20px;transform-origin:bottom left}",
    ".root.open .panel{opacity:1;transform:none;visibility:visible;transition:opacity .18s ease,transform .18s ease,visibility 0s}",

    ".header{background:var(--hc-accent);color:var(--hc-on-accent);padding:16px 12px 16px 18px;display:flex;align-items:center;gap:12px;flex:none}",
    ".avatar{width:38px;height:38px;border-radius:50%;background:rgba(255,255,255,.22);display:flex;align-items:center;justify-content:center;",
    "font-weight:700;font-size:16px;flex:none;position:relative}",
    ".root.on-dark .avatar{background:rgba(0,0,0,.10)}",
    ".avatar::after{content:'';position:absolute;right:0;bottom:0;width:10px;height:10px;border-radius:50%;background:#22c55e;",
    "box-shadow:0 0 0 2px var(--hc-accent);transition:background .2s}",
    ".root.offline .avatar::after{background:#9ca3af}",
    ".htext{flex:1;min-width:0}",
    ".title{font-size:16px;font-weight:650;line-height:1.25;margin:0;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}",
    ".subtitle{font-size:13px;opacity:.88;line-height:1.3;margin-top:2px;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}",
    ".hbtn{width:36px;height:36px;border-radius:10px;display:flex;align-items:center;justify-content:center;color:inherit;flex:none}",
    ".hbtn:hover{background:rgba(255,255,255,.16)}",
    ".root.on-dark .hbtn:hover{background:rgba(0,0,0,.08)}",

    ".notice{flex:none;font-size:12.5px;padding:6px 14px;background:#fffbeb;color:#92400e;border-bottom:1px solid #fde68a;",
    "display:flex;align-items:center;gap:8px}",
    ".notice[hidden]{display:none}",
    ".spinner{width:12px;height:12px;border-radius:50%;border:2px solid currentColor;border-right-color:transparent;",
    "animation:hc-spin .8s linear infinite;flex:none}",
    "@keyframes hc-spin{to{transform:rotate(360deg)}}",

    ".list{flex:1;overflow-y:auto;overscroll-behavior:contain;padding:16px 14px 8px;background:var(--hc-bg);",
    "display:flex;flex-direction:column;scroll-behavior:auto}",
    ".list:focus-visible{outline:none;box-shadow:inset 0 0 0 2px var(--hc-accent)}",
    ".spacer{flex:1 0 auto}",
    ".day{align-self:center;font-size:12px;color:var(--hc-muted);margin:10px 0 8px;padding:2px 10px;border-radius:999px;background:var(--hc-surface)}",

    ".row{display:flex;flex-direction:column;max-width:82%;margin-top:2px}",
    ".row.first{margin-top:10px}",
    ".row.in{align-self:flex-end;align-items:flex-end}",
    ".row.out{align-self:flex-start;align-items:flex-start}",
    ".sender{font-size:12px;color:var(--hc-muted);margin:0 0 3px 12px;font-weight:550;max-width:100%;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}",
    ".bubble{padding:9px 13px;border-radius:var(--hc-radius);white-space:pre-wrap;overflow-wrap:anywhere;word-break:normal;",
    "unicode-bidi:plaintext;text-align:start;max-width:100%;min-width:0;position:relative}",
    ".row.out .bubble{background:var(--hc-surface);color:var(--hc-text)}",
    ".row.in .bubble{background:var(--hc-accent);color:var(--hc-on-accent)}",
    ".row.out:not(.last) .bubble{border-bottom-left-radius:6px}",
    ".row.out:not(.first) .bubble{border-top-left-radius:6px}",
    ".row.in:not(.last) .bubble{border-bottom-right-radius:6px}",
    ".row.in:not(.first) .bubble{border-top-right-radius:6px}",
    ".row.pending .bubble{opacity:.72}",
    ".row.failed .bubble{opacity:.6}",
    ".bubble .lnk{color:inherit;text-decoration:underline;text-underline-offset:2px}",
    /* an adviser's formatting (bold, lists, quotes, code: the hub's `formatted` tree) */
    ".bubble.rich{white-space:normal}",
    ".rich p,.rich ul,.rich ol,.rich pre,.rich blockquote{margin:0 0 6px}",
    ".rich>:last-child,.rich li>:last-child,.rich blockquote>:last-child{margin-bottom:0}",
    ".rich ul,.rich ol{padding-left:22px}",
    ".rich li{margin:1px 0}",
    ".rich strong,.rich b{font-weight:650}",
    ".rich blockquote{border-left:3px solid rgba(17,24,39,.22);padding:1px 0 1px 10px}",
    ".rich code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,'Liberation Mono',monospace;font-size:.88em;",
    "background:rgba(17,24,39,.07);padding:1px 4px;border-radius:4px}",
    ".rich pre{white-space:pre-wrap;background:rgba(17,24,39,.07);padding:8px 10px;border-radius:8px}",
    ".rich pre code{background:none;padding:0}",
    ".bubble .edited{font-size:11.5px;opacity:.7;margin-left:6px;white-space:nowrap;font-style:normal}",
    ".bubble.deleted{font-style:italic;color:var(--hc-muted)!important;background:transparent!important;border:1px dashed var(--hc-border)}",
    /* the shop's reaction on a customer's message */
    ".reaction{align-self:flex-end;margin:-8px 8px 0 0;min-width:28px;height:24px;padding:0 6px;border-radius:12px;",
    "background:var(--hc-bg);border:1px solid var(--hc-border);box-shadow:0 1px 3px rgba(17,24,39,.12);",
    "font-size:14px;line-height:22px;text-align:center;position:relative;z-index:1}",
    ".row.out .bubble .lnk{color:var(--hc-link,#1d4ed8)}",
    ".bubble.media{padding:4px;background:transparent!important;border:1px solid var(--hc-border)}",
    ".bubble.media a.imglink{display:block;border-radius:14px;overflow:hidden;line-height:0;background:var(--hc-surface)}",
    ".bubble.media img{display:block;max-width:240px;max-height:280px;width:auto;height:auto;min-width:60px;min-height:40px;object-fit:cover}",
    ".bubble.filebox{padding:10px 12px;display:flex;align-items:center;gap:10px;text-decoration:none;white-space:normal}",
    "a.bubble.filebox{color:inherit}",
    ".row.in a.bubble.filebox{color:var(--hc-on-accent)}",
    ".fileicon{width:36px;height:36px;border-radius:10px;display:flex;align-items:center;justify-content:center;flex:none;",
    "background:rgba(17,24,39,.07)}",
    ".row.in .fileicon{background:rgba(255,255,255,.2)}",
    ".root.on-dark .row.in .fileicon{background:rgba(0,0,0,.08)}",
    ".fileinfo{min-width:0;display:flex;flex-direction:column}",
    ".fname{font-weight:600;font-size:14px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap;max-width:200px}",
    ".fsize{font-size:12px;opacity:.75}",
    ".caption{white-space:pre-wrap;overflow-wrap:anywhere;unicode-bidi:plaintext;text-align:start;padding:6px 8px 3px;max-width:240px}",
    ".bubble.filebox .caption{flex-basis:100%;padding:4px 0 0}",
    ".bubble.media .caption{color:var(--hc-text)}",
    ".bubble.filebox:has(.caption){flex-wrap:wrap}",
    ".progress{height:4px;border-radius:2px;background:rgba(17,24,39,.12);overflow:hidden;margin-top:6px;width:100%}",
    ".row.in .filebox .progress{background:rgba(255,255,255,.3)}",
    ".progress>i{display:block;height:100%;width:0;background:currentColor;transition:width .15s linear}",
    ".media .progress{position:absolute;left:12px;right:12px;bottom:12px;width:auto;background:rgba(255,255,255,.6);color:var(--hc-accent);margin:0}",

    ".meta{font-size:11.5px;color:var(--hc-muted);margin:3px 6px 0;display:flex;align-items:center;gap:4px;min-height:15px}",
    ".meta .ico{width:14px;height:14px}",
    ".meta.err{color:var(--hc-danger);white-space:normal;max-width:100%;flex-wrap:wrap;justify-content:flex-end;text-align:right;row-gap:2px}",
    ".meta .acts{display:inline-flex;gap:6px;margin-left:4px}",
    ".meta.warn{color:#b45309}",
    ".linkbtn{color:inherit;font-weight:600;text-decoration:underline;text-underline-offset:2px;font-size:inherit;padding:0 2px}",

    /* reply buttons under a message of the shop */
    ".choices{display:flex;flex-wrap:wrap;gap:6px;margin:6px 0 2px;max-width:100%}",
    ".choices[hidden]{display:none}",
    ".choice{min-height:36px;max-width:100%;padding:7px 14px;border-radius:18px;border:1.5px solid var(--hc-link,#1d4ed8);",
    "background:var(--hc-bg);color:var(--hc-link,#1d4ed8);font-size:14px;font-weight:600;line-height:1.3;text-align:center;",
    "white-space:normal;overflow-wrap:anywhere;unicode-bidi:plaintext;transition:background .15s,color .15s,opacity .15s}",
    ".choice:hover{background:var(--hc-surface)}",
    ".choice:active{background:var(--hc-link,#1d4ed8);color:#fff}",
    ".choice:disabled{opacity:.5;cursor:default;background:var(--hc-bg)}",

    /* composer */
    ".composer{flex:none;border-top:1px solid var(--hc-border);padding:10px 10px 10px 8px;display:flex;align-items:flex-end;gap:4px;background:var(--hc-bg)}",
    ".ibtn{width:40px;height:40px;border-radius:12px;display:flex;align-items:center;justify-content:center;color:var(--hc-muted);flex:none}",
    ".ibtn:hover{background:var(--hc-surface);color:var(--hc-text)}",
    ".send{background:var(--hc-accent);color:var(--hc-on-accent);transition:opacity .15s,transform .15s}",
    ".send:hover{background:var(--hc-accent);color:var(--hc-on-accent);filter:brightness(1.06)}",
    ".send:disabled{opacity:.35;cursor:default;filter:none}",
    ".field{flex:1;min-width:0;display:flex;background:var(--hc-surface);border-radius:20px;padding:0 4px;border:1px solid transparent;transition:border-color .15s,background .15s}",
    ".field:focus-within{border-color:var(--hc-accent);background:#fff}",
    "textarea{flex:1;min-width:0;resize:none;border:0;outline:0;background:transparent;color:var(--hc-text);font:inherit;font-size:15px;",
    "line-height:20px;padding:9px 10px;margin:0;height:38px;max-height:140px;overflow-y:auto;display:block;box-shadow:none;border-radius:0}",
    "textarea:focus-visible{outline:none}",
    "textarea::placeholder{color:#9ca3af;opacity:1}",
    ".file{position:absolute;width:1px;height:1px;opacity:0;overflow:hidden;clip:rect(0 0 0 0);pointer-events:none}",

    ".drop{position:absolute;inset:0;background:rgba(255,255,255,.92);border:2px dashed var(--hc-accent);border-radius:16px;",
    "display:flex;flex-direction:column;gap:8px;align-items:center;justify-content:center;color:var(--hc-accent);font-weight:600;z-index:5;pointer-events:none}",
    ".drop[hidden]{display:none}",
    ".drop .ico{width:32px;height:32px}",
    ".sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}",

    ".row.welcome .bubble{background:var(--hc-surface)}",
    ".row{animation:hc-in .18s ease both}",
    "@keyframes hc-in{from{opacity:0;transform:translateY(4px)}to{opacity:1;transform:none}}",

    /* mobile: full screen panel */
    "@media (max-width:479.98px){",
    ".panel{inset:0;width:100%;height:100%;height:100dvh;max-height:none;min-height:0;border-radius:0;border:0;transform:translateY(24px)}",
    ".root.left .panel{left:0}",
    ".root.open .launcher{opacity:0;visibility:hidden;transform:scale(.6)}",
    ".launcher{bottom:16px;right:16px}.root.left .launcher{left:16px}",
    ".header{padding-top:max(14px,env(safe-area-inset-top))}",
    ".composer{padding-bottom:max(10px,env(safe-area-inset-bottom))}",
    "textarea{font-size:16px}",
    ".row{max-width:86%}",
    ".choice{min-height:40px}",
    ".drop{border-radius:0}",
    "}",
    "@media (prefers-reduced-motion:reduce){.launcher,.launcher .ico,.panel,.row,.choice{transition:none!important;animation:none!important}}",
    "@media print{.launcher,.panel{display:none!important}}"
  ].join("\n");

  var ui = {};
  var host = null;

  function buildUI() {
    host = document.createElement("hubchat-widget");
    var hs = host.style;
    // Keep the host out of the shop's layout; inline !important beats the shop's stylesheets.
    ["all:initial", "position:fixed", "z-index:2147483000", "top:auto", "left:auto", "right:0", "bottom:0",
     "width:0", "height:0", "margin:0", "padding:0", "border:0", "display:block", "overflow:visible",
     "transform:none", "filter:none", "contain:none", "visibility:visible", "opacity:1", "pointer-events:auto"]
      .forEach(function (d) { var i = d.indexOf(":"); hs.setProperty(d.slice(0, i), d.slice(i + 1), "important"); });
    host.setAttribute("data-hubchat", "");
    var shadow = host.attachShadow({ mode: "open" });

    var sheetOk = false;
    try {
      if (shadow.adoptedStyleSheets !== undefined && window.CSSStyleSheet && CSSStyleSheet.prototype.replaceSync) {
        var sheet = new CSSStyleSheet();
        sheet.replaceSync(CSS_TEXT);
        shadow.adoptedStyleSheets = [sheet];
        sheetOk = true;
      }
    } catch (e) { sheetOk = false; }
    if (!sheetOk) { var st = document.createElement("style"); st.textContent = CSS_TEXT; shadow.appendChild(st); }

    var root = el("div", "root offline" + (CFG.position === "left" ? " left" : ""));
    root.style.setProperty("--hc-accent", CFG.color);
    shadow.appendChild(root);
    ui.shadow = shadow; ui.root = root;

    // Launcher
    var launcher = el("button", "launcher");
    launcher.type = "button";
    launcher.setAttribute("data-testid", "hubchat-launcher");
    launcher.setAttribute("aria-label", T("open_chat", "Open chat"));
    launcher.setAttribute("aria-expanded", "false");
    launcher.setAttribute("aria-controls", "hubchat-panel");
    launcher.appendChild(icon("chat", 28));
    launcher.appendChild(icon("chevron", 28));
    var badge = el("span", "badge");
    badge.hidden = true;
    badge.setAttribute("aria-hidden", "true");
    launcher.appendChild(badge);
    ui.launcher = launcher; ui.badge = badge;

    // Panel
    var panel = el("div", "panel");
    panel.id = "hubchat-panel";
    panel.setAttribute("role", "dialog");
    panel.setAttribute("aria-modal", "false");
    panel.setAttribute("data-testid", "hubchat-panel");
    ui.panel = panel;

    var header = el("div", "header");
    var avatar = el("div", "avatar");
    avatar.setAttribute("aria-hidden", "true");
    var htext = el("div", "htext");
    var title = el("h2", "title");
    title.id = "hubchat-title";
    var subtitle = el("div", "subtitle", T("subtitle", "We reply as soon as we can"));
    htext.appendChild(title); htext.appendChild(subtitle);
    var closeBtn = el("button", "hbtn");
    closeBtn.type = "button";
    closeBtn.setAttribute("aria-label", T("close_chat", "Close chat"));
    closeBtn.setAttribute("data-testid", "hubchat-close");
    closeBtn.appendChild(icon("close", 20));
    header.appendChild(avatar); header.appendChild(htext); header.appendChild(closeBtn);
    panel.setAttribute("aria-labelledby", "hubchat-title");
    ui.title = title; ui.avatar = avatar; ui.subtitle = subtitle; ui.closeBtn = closeBtn;

    var notice = el("div", "notice");
    notice.hidden = true;
    notice.setAttribute("role", "status");
    notice.setAttribute("data-testid", "hubchat-status");
    notice.appendChild(el("span", "spinner"));
    var noticeText = el("span", "", T("reconnecting", "Reconnecting…"));
    notice.appendChild(noticeText);
    ui.notice = notice; ui.noticeText = noticeText;

    var list = el("div", "list");
    list.setAttribute("role", "log");
    list.setAttribute("aria-live", "polite");
    list.setAttribute("aria-relevant", "additions");
    list.setAttribute("aria-label", T("messages", "Messages"));
    list.tabIndex = 0;
    list.appendChild(el("div", "spacer"));
    ui.list = list;

    var composer = el("div", "composer");
    var attach = el("button", "ibtn attach");
    attach.type = "button";
    attach.setAttribute("aria-label", T("attach", "Attach a file"));
    attach.setAttribute("title", T("attach", "Attach a file"));
    attach.setAttribute("data-testid", "hubchat-attach");
    attach.appendChild(icon("clip", 22));
    var fileInput = el("input", "file");
    fileInput.type = "file";
    fileInput.multiple = true;
    fileInput.tabIndex = -1;
    fileInput.setAttribute("aria-hidden", "true");
    fileInput.setAttribute("data-testid", "hubchat-file");
    var field = el("div", "field");
    var input = el("textarea", "");
    input.rows = 1;
    input.placeholder = T("placeholder", "Write a message…");
    input.setAttribute("aria-label", T("message", "Message"));
    input.setAttribute("dir", "auto");
    input.setAttribute("data-testid", "hubchat-input");
    input.setAttribute("enterkeyhint", "send");
    input.setAttribute("autocomplete", "off");
    field.appendChild(input);
    var send = el("button", "ibtn send");
    send.type = "button";
    send.setAttribute("aria-label", T("send_message", "Send message"));
    send.setAttribute("title", T("send", "Send"));
    send.setAttribute("data-testid", "hubchat-send");
    send.disabled = true;
    send.appendChild(icon("send", 20));
    composer.appendChild(attach); composer.appendChild(fileInput); composer.appendChild(field); composer.appendChild(send);
    ui.input = input; ui.send = send; ui.fileInput = fileInput; ui.attach = attach;

    var drop = el("div", "drop");
    drop.hidden = true;
    drop.appendChild(icon("clip", 32));
    var dropText = el("span", "", T("drop", "Drop files to send"));
    drop.appendChild(dropText);
    ui.drop = drop; ui.dropText = dropText;

    var live = el("div", "sr");
    live.setAttribute("aria-live", "assertive");
    ui.live = live;

    panel.appendChild(header); panel.appendChild(notice); panel.appendChild(list); panel.appendChild(composer);
    panel.appendChild(drop); panel.appendChild(live);
    root.appendChild(panel);
    root.appendChild(launcher);

    applyTitle();
    applyAccentContrast();
    wireUI();
    document.body.appendChild(host);
    applyAccentContrast();
  }

  // Pick readable text (white or near-black) for the accent colour.
  function applyAccentContrast() {
    if (!ui.root) return;
    var rgb = null;
    try {
      var probe = el("span", "");
      probe.style.color = CFG.color;
      probe.style.display = "none";
      ui.root.appendChild(probe);
      rgb = (getComputedStyle(probe).color || "").match(/[\d.]+/g);
      ui.root.removeChild(probe);
    } catch (e) { rgb = null; }
    if (!rgb || rgb.length < 3) return;
    var lin = function (c) { c = c / 255; return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4); };
    var L = 0.2126 * lin(+rgb[0]) + 0.7152 * lin(+rgb[1]) + 0.0722 * lin(+rgb[2]);
    var dark = L > 0.45; // light accent -> dark text
    ui.root.style.setProperty("--hc-on-accent", dark ? "#111827" : "#ffffff");
    ui.root.classList.toggle("on-dark", dark);
    // Links inside adviser bubbles: use the accent when it is dark enough to read on light grey.
    ui.root.style.setProperty("--hc-link", L < 0.25 ? CFG.color : "#1d4ed8");
  }

  function applyTitle() {
    var t = state.title || T("chat", "Chat");
    ui.title.textContent = t;
    ui.avatar.textContent = (Array.from ? Array.from(t.trim())[0] || "?" : t.charAt(0)).toUpperCase();
    ui.launcher.setAttribute("aria-label", (state.open ? T("close_chat", "Close chat") : T("open_chat", "Open chat")) +
      (state.unread ? " (" + T("unread", "{n} unread", { n: state.unread }) + ")" : ""));
  }

  // The fixed words of the panel again, once the hub's texts have arrived with the session.
  function applyTexts() {
    ui.subtitle.textContent = T("subtitle", "We reply as soon as we can");
    ui.closeBtn.setAttribute("aria-label", T("close_chat", "Close chat"));
    ui.list.setAttribute("aria-label", T("messages", "Messages"));
    ui.attach.setAttribute("aria-label", T("attach", "Attach a file"));
    ui.attach.setAttribute("title", T("attach", "Attach a file"));
    ui.input.placeholder = T("placeholder", "Write a message…");
    ui.input.setAttribute("aria-label", T("message", "Message"));
    ui.send.setAttribute("aria-label", T("send_message", "Send message"));
    ui.send.setAttribute("title", T("send", "Send"));
    ui.dropText.textContent = T("drop", "Drop files to send");
    applyTitle();
    // Day separators and message states are written by the layout, in the new words.
  }

  // ---------------------------------------------------------------------------------------------
  // UI wiring
  // ---------------------------------------------------------------------------------------------
  function wireUI() {
    ui.launcher.addEventListener("click", function () { state.open ? closePanel(true) : openPanel(true); });
    ui.panel.querySelector(".hbtn").addEventListener("click", function () { closePanel(true); });
    ui.root.addEventListener("keydown", function (e) {
      if (e.key === "Escape" && state.open) { e.preventDefault(); e.stopPropagation(); closePanel(true); }
    });

    var input = ui.input;
    var draft = SS.get(KEY_DRAFT);
    if (draft) input.value = draft;
    input.addEventListener("input", function () { autosize(); updateSendBtn(); SS.set(KEY_DRAFT, input.value || null); });
    input.addEventListener("keydown", function (e) {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
        e.preventDefault();
        submitText();
      }
    });
    input.addEventListener("paste", function (e) {
      var files = e.clipboardData && e.clipboardData.files ? Array.prototype.slice.call(e.clipboardData.files) : [];
      if (files.length) { e.preventDefault(); files.forEach(uploadFile); }
    });
    ui.send.addEventListener("click", function () { submitText(); input.focus(); });
    ui.attach.addEventListener("click", function () { ui.fileInput.click(); });
    ui.fileInput.addEventListener("change", function () {
      var files = Array.prototype.slice.call(ui.fileInput.files || []);
      ui.fileInput.value = "";
      files.forEach(uploadFile);
    });

    // Drag & drop onto the panel
    var depth = 0;
    var hasFiles = function (e) {
      var types = e.dataTransfer && e.dataTransfer.types;
      return !!types && Array.prototype.indexOf.call(types, "Files") !== -1;
    };
    ui.panel.addEventListener("dragenter", function (e) { if (!hasFiles(e)) return; e.preventDefault(); depth++; ui.drop.hidden = false; });
    ui.panel.addEventListener("dragover", function (e) { if (!hasFiles(e)) return; e.preventDefault(); e.dataTransfer.dropEffect = "copy"; });
    ui.panel.addEventListener("dragleave", function (e) { if (!hasFiles(e)) return; depth = Math.max(0, depth - 1); if (!depth) ui.drop.hidden = true; });
    ui.panel.addEventListener("drop", function (e) {
      if (!hasFiles(e)) return;
      e.preventDefault(); depth = 0; ui.drop.hidden = true;
      Array.prototype.slice.call(e.dataTransfer.files || []).forEach(uploadFile);
    });

    ui.list.addEventListener("scroll", function () { if (atBottom()) markSeen(); }, { passive: true });

    window.addEventListener("online", function () { wakeAll(); });
    window.addEventListener("offline", function () { if (ws) { try { ws.close(); } catch (e) { /* ignore */ } } });
    var hiddenAt = 0;
    document.addEventListener("visibilitychange", function () {
      if (document.visibilityState === "hidden") { hiddenAt = Date.now(); return; }
      wakeAll();
      // After a long time in the background the socket may be half-dead: catch up over HTTP too.
      if (state.ready && hiddenAt && Date.now() - hiddenAt > 30000) loadHistory(state.maxId);
      if (state.open && atBottom()) markSeen();
    });
    window.addEventListener("pagehide", function () { SS.set(KEY_DRAFT, ui.input.value || null); });
    window.addEventListener("pageshow", function (e) { if (e.persisted) { wakeAll(); if (state.ready) loadHistory(state.maxId); } });
  }

  function autosize() {
    var i = ui.input;
    i.style.height = "38px";
    var h = Math.min(140, Math.max(38, i.scrollHeight));
    i.style.height = h + "px";
  }
  function updateSendBtn() { ui.send.disabled = !ui.input.value.trim(); }

  function openPanel(fromUser) {
    state.open = true;
    SS.set(KEY_OPEN, "1");
    if (!ui.root) return;
    ui.root.classList.add("open");
    ui.launcher.setAttribute("aria-expanded", "true");
    applyTitle();
    scrollToBottom();
    markSeen();
    wakeAll();
    // Avoid popping the on-screen keyboard on touch devices unless the user asked for the chat.
    var coarse = window.matchMedia && window.matchMedia("(pointer: coarse)").matches;
    if (fromUser !== false && !coarse) setTimeout(function () { try { ui.input.focus({ preventScroll: true }); } catch (e) { ui.input.focus(); } }, 60);
  }

  function closePanel(returnFocus) {
    state.open = false;
    SS.set(KEY_OPEN, null);
    if (!ui.root) return;
    var hadFocus = ui.shadow.activeElement && ui.shadow.activeElement !== ui.launcher;
    ui.root.classList.remove("open");
    ui.launcher.setAttribute("aria-expanded", "false");
    applyTitle();
    if (returnFocus && hadFocus) ui.launcher.focus();
  }

  function announce(text) { if (ui.live) { ui.live.textContent = ""; setTimeout(function () { ui.live.textContent = text; }, 30); } }

  // ---------------------------------------------------------------------------------------------
  // Message records & rendering
  // ---------------------------------------------------------------------------------------------
  function sortKey(r) { return r.id != null ? [0, r.id] : [1, r.seq]; }
  function compareRecords(a, b) {
    var ka = sortKey(a), kb = sortKey(b);
    return ka[0] - kb[0] || ka[1] - kb[1];
  }

  // Merge a server message into the UI (dedup by id, then by client_id).
  function upsert(m, opts) {
    if (!m || typeof m !== "object" || typeof m.id !== "number") return null;
    var r = byId[m.id] || (m.client_id ? byClient[m.client_id] : null);
    var isNew = !r;
    if (!r) {
      r = { seq: ++localSeq, local: null, error: null, progress: null };
      records.push(r);
    }
    r.id = m.id;
    r.clientId = m.client_id || r.clientId || null;
    r.direction = m.direction === "out" ? "out" : "in";
    r.kind = m.kind === "image" || m.kind === "file" ? m.kind : "text";
    r.text = typeof m.text === "string" ? m.text : null;
    r.formatted = r.direction === "out" && r.kind === "text" && Array.isArray(m.formatted) && m.formatted.length ? m.formatted : null;
    // Once edited or deleted, always: a late copy of the message must not undo either.
    r.edited = !!(r.edited || m.edited || (opts && opts.edited));
    r.deleted = !!(r.deleted || m.deleted);
    r.reaction = r.direction === "in" ? validReaction(m.reaction) : null;
    r.media = m.media && typeof m.media === "object" ? m.media : null;
    r.senderName = typeof m.sender_name === "string" ? m.sender_name : null;
    r.createdAt = parseDate(m.created_at);
    r.status = typeof m.status === "string" ? m.status : "";
    r.buttons = r.direction === "out" ? validButtons(m.buttons) : [];
    if (r.local) { r.local = null; r.error = null; r.progress = null; r.file = null; }
    byId[r.id] = r;
    if (r.clientId) byClient[r.clientId] = r;
    if (r.id > state.maxId) state.maxId = r.id;
    removeFromOutbox(r);

    if (isNew && r.direction === "out" && r.id > state.seenId) {
      if (state.open && document.visibilityState !== "hidden" && atBottom()) { state.seenId = r.id; LS.set(KEY_SEEN, r.id); sendRead(); }
      else { state.unread++; updateBadge(); }
      if (!(opts && opts.history)) {
        var choices = r.buttons.map(function (b) { return b.title; }).join(" / ");
        var words = r.formatted ? richText(r.formatted) : r.text;
        announce((r.senderName || state.title || T("adviser", "Adviser")) + ": " + (words || (r.media && r.media.filename) || "") +
          (choices ? " (" + choices + ")" : ""));
      }
    }
    if (r.deleted) forget(r);
    renderRecord(r);
    return r;
  }

  // An adviser deleted the message in Matrix: it stays in its place, saying so (the customer
  // saw it and would otherwise wonder where it went); after a reload the hub leaves it out.
  function markDeleted(id) {
    var r = typeof id === "number" ? byId[id] : null;
    if (!r || r.deleted) return;
    r.deleted = true;
    r.text = null;
    forget(r);
    renderRecord(r);
    announce(T("deleted", "Message deleted"));
  }
  function forget(r) { r.kind = "text"; r.formatted = null; r.media = null; r.buttons = []; r.edited = false; }

  // The shop's reaction on a customer's message ("" or null: taken back).
  function setReaction(id, emoji) {
    var r = typeof id === "number" ? byId[id] : null;
    if (!r || r.direction !== "in") return;
    var v = validReaction(emoji);
    if (v === r.reaction) return;
    r.reaction = v;
    renderRecord(r);
    if (v) announce(T("reaction", "Reaction of the shop: {emoji}", { emoji: v }));
  }
  function validReaction(v) { return typeof v === "string" && v.trim() && v.length <= 64 ? v : null; }

  // The reply buttons of a message of the shop: [{id, title}] (at most 10, both non-empty strings).
  function validButtons(list) {
    if (!Array.isArray(list)) return [];
    var out = [];
    for (var i = 0; i < list.length && out.length < 10; i++) {
      var b = list[i];
      if (b && typeof b.id === "string" && b.id && typeof b.title === "string" && b.title.trim()) out.push({ id: b.id, title: b.title });
    }
    return out;
  }

  function addLocal(fields) {
    var r = {
      seq: ++localSeq, id: null, clientId: uuid(), direction: "in", kind: "text", text: null, media: null, buttons: [],
      senderName: null, createdAt: new Date(), status: "", local: "sending", error: null, progress: null, attempt: 0
    };
    for (var k in fields) if (Object.prototype.hasOwnProperty.call(fields, k)) r[k] = fields[k];
    records.push(r);
    byClient[r.clientId] = r;
    renderRecord(r);
    return r;
  }

  function removeRecord(r) {
    var i = records.indexOf(r);
    if (i !== -1) records.splice(i, 1);
    if (r.clientId && byClient[r.clientId] === r) delete byClient[r.clientId];
    if (r.id != null && byId[r.id] === r) delete byId[r.id];
    removeFromOutbox(r);
    if (r.previewUrl) { try { URL.revokeObjectURL(r.previewUrl); } catch (e) { /* ignore */ } }
    if (r.row && r.row.parentNode) r.row.parentNode.removeChild(r.row);
    r.removed = true;
    scheduleLayout();
  }

  function contentSig(r) {
    var m = r.media || {};
    // Images keep their <img> when an upload is confirmed (no flicker); file boxes become links.
    var pending = r.kind === "image" ? "" : (r.local ? "L" : "");
    var buttons = (r.buttons || []).map(function (b) { return b.id + "\u0001" + b.title; }).join("\u0002");
    var rich = r.formatted ? JSON.stringify(r.formatted) : "";
    return [r.kind, r.text, r.previewUrl || m.url, m.filename, m.size, r.senderName, r.direction, pending, buttons,
      rich, r.edited ? "E" : "", r.deleted ? "D" : ""].join("\u0000");
  }

  function renderRecord(r) {
    if (!ui.list) return;
    var stick = atBottom() || (r.direction === "in" && r.id == null);
    if (!r.row) {
      r.row = el("div", "row");
      r.senderEl = el("div", "sender");
      r.metaEl = el("div", "meta");
      r.row.appendChild(r.senderEl);
    }
    var sig = contentSig(r);
    if (sig !== r.sig) {
      r.sig = sig;
      var bubble = buildBubble(r);
      if (r.bubble && r.bubble.parentNode) r.row.replaceChild(bubble, r.bubble);
      else r.row.insertBefore(bubble, r.metaEl.parentNode ? r.metaEl : null);
      r.bubble = bubble;
      if (!r.metaEl.parentNode) r.row.appendChild(r.metaEl);
      if (r.choicesEl && r.choicesEl.parentNode) r.row.removeChild(r.choicesEl);
      r.choicesEl = r.direction === "out" && r.buttons && r.buttons.length ? buildChoices(r) : null;
      if (r.choicesEl) r.row.insertBefore(r.choicesEl, r.metaEl);
    }
    if (r.reaction && !r.deleted) {
      if (!r.reactionEl) {
        r.reactionEl = el("span", "reaction");
        r.reactionEl.setAttribute("data-testid", "hubchat-reaction");
        r.reactionEl.setAttribute("role", "img");
      }
      r.reactionEl.textContent = r.reaction;
      r.reactionEl.setAttribute("aria-label", T("reaction", "Reaction of the shop: {emoji}", { emoji: r.reaction }));
      if (r.reactionEl.previousSibling !== r.bubble) r.row.insertBefore(r.reactionEl, r.bubble.nextSibling);
    } else if (r.reactionEl && r.reactionEl.parentNode) r.reactionEl.parentNode.removeChild(r.reactionEl);
    var b = r.bubble;
    if (r.kind === "image") {
      var link = b.querySelector("a.imglink"), fullUrl = safeUrl((r.media || {}).url, false);
      if (link && fullUrl && link.getAttribute("href") !== fullUrl) link.href = fullUrl;
      if (!r.local && r.progressEl) { if (r.progressEl.parentNode) r.progressEl.parentNode.removeChild(r.progressEl); r.progressEl = null; }
    }
    b.setAttribute("data-testid", "hubchat-message");
    b.setAttribute("data-direction", r.direction);
    b.setAttribute("data-kind", r.kind);
    if (r.id != null) b.setAttribute("data-id", String(r.id)); else b.removeAttribute("data-id");
    if (r.clientId) b.setAttribute("data-client-id", r.clientId);
    b.setAttribute("data-status", r.local || r.status || "sent");
    r.row.className = "row " + r.direction + (r.local === "sending" || r.local === "retrying" || r.local === "uploading" ? " pending" : "") +
      (r.local === "failed" ? " failed" : "");
    r.senderEl.textContent = r.direction === "out" ? (r.senderName || "") : "";
    updateProgress(r);
    scheduleLayout(stick);
  }

  function buildBubble(r) {
    var b;
    var m = r.media || {};
    if (r.kind === "image" && (r.previewUrl || m.url)) {
      b = el("div", "bubble media");
      var full = safeUrl(m.url, false) || safeUrl(r.previewUrl, true);
      var a = el("a", "imglink");
      if (full) { a.href = full; a.target = "_blank"; a.rel = "noopener noreferrer"; }
      a.setAttribute("aria-label", T("open_image", "Open image {name} in a new tab", { name: m.filename || "" }));
      var img = el("img", "");
      img.alt = m.filename || T("image", "Image");
      img.decoding = "async";
      img.loading = "lazy";
      img.src = safeUrl(r.previewUrl, true) || safeUrl(m.url, false);
      img.addEventListener("load", function () {
        // Keep the view pinned to the bottom if it was there before the image grew.
        var l = ui.list;
        if (l && l.scrollHeight - l.scrollTop - l.clientHeight - img.offsetHeight < 60) scrollToBottom();
      });
      a.appendChild(img);
      b.appendChild(a);
      if (r.local) {
        r.progressEl = el("div", "progress");
        r.progressEl.appendChild(el("i", ""));
        b.appendChild(r.progressEl);
      } else r.progressEl = null;
    } else if (r.kind === "file" || r.kind === "image") {
      var href = safeUrl(m.url, false);
      b = el(href && !r.local ? "a" : "div", "bubble filebox");
      if (href && !r.local) {
        b.href = href; b.target = "_blank"; b.rel = "noopener noreferrer";
        b.setAttribute("download", m.filename || "");
        b.setAttribute("aria-label", T("download", "Download {name}", { name: m.filename || T("file", "File") }) + (m.size != null ? " (" + humanSize(m.size) + ")" : ""));
      }
      var ic = el("span", "fileicon");
      ic.appendChild(icon("file", 20));
      var info = el("span", "fileinfo");
      var fname = el("span", "fname", m.filename || T("file", "File"));
      fname.setAttribute("dir", "auto");
      fname.title = m.filename || "";
      info.appendChild(fname);
      info.appendChild(el("span", "fsize", humanSize(m.size)));
      if (r.local) {
        r.progressEl = el("span", "progress");
        r.progressEl.appendChild(el("i", ""));
        info.appendChild(r.progressEl);
      } else r.progressEl = null;
      b.appendChild(ic); b.appendChild(info);
    } else if (r.deleted) {
      // The hub's words when it sent them (a refused photo says so), else ours.
      b = el("div", "bubble deleted", r.text || T("deleted", "Message deleted"));
      b.setAttribute("data-deleted", "true");
      r.progressEl = null;
    } else if (r.formatted) {
      b = el("div", "bubble rich");
      appendRich(b, r.formatted);
      r.progressEl = null;
    } else {
      b = el("div", "bubble");
      appendLinkified(b, r.text || "");
      r.progressEl = null;
    }
    // A caption on an image/file (e.g. an adviser's text sent with a picture), unless it only
    // repeats the file name.
    if (r.kind !== "text" && r.text && r.text !== m.filename) {
      var cap = el("div", "caption");
      cap.setAttribute("dir", "auto");
      appendLinkified(cap, r.text);
      b.appendChild(cap);
    }
    if (r.edited && !r.deleted) {
      var ed = el("span", "edited", T("edited", "edited"));
      ed.setAttribute("data-testid", "hubchat-edited");
      b.appendChild(ed);
    }
    b.setAttribute("dir", "auto");
    return b;
  }

  // The reply buttons under a message of the shop; shown by the layout until the customer has
  // answered or written since (as a messenger's quick replies).
  function buildChoices(r) {
    var box = el("div", "choices");
    box.setAttribute("role", "group");
    box.setAttribute("aria-label", T("reply_options", "Reply options"));
    box.setAttribute("data-testid", "hubchat-buttons");
    box.hidden = true;
    r.buttons.forEach(function (b) {
      var btn = el("button", "choice", b.title);
      btn.type = "button";
      btn.setAttribute("dir", "auto");
      btn.setAttribute("data-testid", "hubchat-button");
      btn.setAttribute("data-button-id", b.id);
      btn.addEventListener("click", function () { choose(r, b); });
      box.appendChild(btn);
    });
    return box;
  }

  function showChoices(r, on) {
    var box = r.choicesEl;
    if (box.hidden !== !on) box.hidden = !on;
    if (on) Array.prototype.forEach.call(box.children, function (btn) { if (btn.disabled) btn.disabled = false; });
  }

  // A reply button tapped: its title is the customer's answer, sent with the button's id (the
  // hub stores it as the button's answer); the buttons go once the answer is in the list.
  function choose(r, b) {
    var box = r.choicesEl;
    if (!box || box.hidden || r.removed || r.id == null) return;
    Array.prototype.forEach.call(box.children, function (btn) { btn.disabled = true; });
    var a = addLocal({ kind: "text", text: b.title, buttonId: b.id });
    outbox.push(a);
    scheduleLayout(true);
    pumpOutbox();
    // The button is gone: keep the focus in the chat (no on-screen keyboard on touch devices).
    var coarse = window.matchMedia && window.matchMedia("(pointer: coarse)").matches;
    var target = coarse ? ui.list : ui.input;
    try { target.focus({ preventScroll: true }); } catch (e) { target.focus(); }
  }

  function updateProgress(r) {
    if (!r.progressEl) return;
    var bar = r.progressEl.firstChild;
    r.progressEl.style.display = r.local === "uploading" ? "" : "none";
    var p = typeof r.progress === "number" ? r.progress : 0;
    bar.style.width = Math.round(p * 100) + "%";
    r.progressEl.setAttribute("role", "progressbar");
    r.progressEl.setAttribute("aria-valuemin", "0");
    r.progressEl.setAttribute("aria-valuemax", "100");
    r.progressEl.setAttribute("aria-valuenow", String(Math.round(p * 100)));
    r.progressEl.setAttribute("aria-label", T("upload_progress", "Upload progress"));
  }

  function renderMeta(r, isLast) {
    var meta = r.metaEl;
    meta.textContent = "";
    meta.className = "meta";
    meta.style.display = "";
    if (r.local === "failed") {
      meta.className = "meta err";
      meta.setAttribute("data-testid", "hubchat-error");
      meta.appendChild(icon("alert", 14));
      meta.appendChild(el("span", "", r.error || T("not_sent", "Not sent.")));
      var acts = el("span", "acts");
      // A refused button answer has only "Remove": the buttons are back above it.
      if (r.kind === "text" && !r.buttonId) {
        // The server refused this text (4xx): let the customer fix it rather than resend it unchanged.
        var edit = el("button", "linkbtn", T("edit", "Edit"));
        edit.type = "button";
        edit.setAttribute("aria-label", T("edit_label", "Edit and resend"));
        edit.addEventListener("click", function () { editRecord(r); });
        acts.appendChild(edit);
      } else if (!r.fatal && !r.buttonId) {
        var retry = el("button", "linkbtn", T("retry", "Retry"));
        retry.type = "button";
        retry.addEventListener("click", function () { retryRecord(r); });
        acts.appendChild(retry);
      }
      var rm = el("button", "linkbtn", T("remove", "Remove"));
      rm.type = "button";
      rm.setAttribute("aria-label", T("remove_label", "Remove unsent message"));
      rm.addEventListener("click", function () { removeRecord(r); ui.input.focus(); });
      acts.appendChild(rm);
      meta.appendChild(acts);
      return;
    }
    meta.removeAttribute("data-testid");
    if (r.local === "retrying" && r.limited) {
      // Over the hub's rate limits: it goes out by itself once the hub allows it again.
      meta.className = "meta warn";
      meta.setAttribute("data-testid", "hubchat-rate-limited");
      meta.appendChild(icon("alert", 14));
      meta.appendChild(el("span", "", T("rate_limited", "Too many messages — sending again in a moment…")));
      return;
    }
    if (r.local === "retrying") {
      meta.className = "meta warn";
      meta.setAttribute("data-testid", "hubchat-retrying");
      meta.appendChild(icon("alert", 14));
      var rt = el("button", "linkbtn", T("retrying", "Not sent — retrying…"));
      rt.type = "button";
      rt.title = T("retry_now", "Retry now");
      rt.style.textDecoration = "none";
      rt.style.fontWeight = "500";
      rt.addEventListener("click", function () { wakeAll(); });
      meta.appendChild(rt);
      return;
    }
    if (r.local === "uploading") {
      meta.appendChild(el("span", "", uploadingText(r.progress)));
      return;
    }
    if (r.local === "sending") {
      meta.appendChild(el("span", "", T("sending", "Sending…")));
      return;
    }
    if (!isLast) { meta.style.display = "none"; return; }
    meta.appendChild(el("span", "", fmtTime(r.createdAt)));
    if (r.direction === "in") {
      var st = (r.status || "").toLowerCase();
      if (st === "failed" || st === "error" || st === "undelivered") {
        meta.className = "meta err";
        meta.appendChild(el("span", "", "· " + T("not_delivered", "Not delivered")));
      } else {
        meta.appendChild(el("span", "", "·"));
        meta.appendChild(el("span", "", st === "read" ? T("read", "Read") : st === "delivered" ? T("delivered", "Delivered") : T("sent", "Sent")));
      }
    }
  }

  var layoutPending = false, layoutStick = false;
  function scheduleLayout(stick) {
    if (stick) layoutStick = true;
    if (layoutPending) return;
    layoutPending = true;
    var run = function () { layoutPending = false; var s = layoutStick; layoutStick = false; layout(s); };
    if (window.requestAnimationFrame && document.visibilityState !== "hidden") requestAnimationFrame(run);
    else setTimeout(run, 0);
  }

  var dayEls = {};
  var welcomeRow = null;
  function layout(stick) {
    if (!ui.list) return;
    var list = ui.list;
    var wasBottom = stick || atBottom();
    records.sort(compareRecords);
    // Reply buttons: only while the customer has neither answered nor written since (a message
    // that failed to send does not count).
    var answered = false;
    for (var k = records.length - 1; k >= 0; k--) {
      var rk = records[k];
      if (rk.direction === "in") { if (rk.local !== "failed") answered = true; }
      else if (rk.choicesEl) showChoices(rk, !answered);
    }
    var wanted = [list.firstChild]; // spacer
    // The welcome bubble is for new conversations: decided once the history is known, then kept.
    if (state.welcome && (welcomeRow || (state.ready && !records.some(function (r) { return r.id != null; })))) {
      if (!welcomeRow) {
        welcomeRow = el("div", "row out first last welcome");
        var sn = el("div", "sender", state.title || "");
        var wb = el("div", "bubble");
        wb.setAttribute("dir", "auto");
        wb.setAttribute("data-testid", "hubchat-welcome");
        appendLinkified(wb, state.welcome);
        welcomeRow.appendChild(sn); welcomeRow.appendChild(wb);
      }
      wanted.push(welcomeRow);
    }
    var prev = null, prevDay = null;
    for (var i = 0; i < records.length; i++) {
      var r = records[i];
      if (!r.row) continue;
      var dk = dayKey(r.createdAt);
      if (dk !== prevDay) {
        var d = dayEls[dk];
        if (!d) { d = dayEls[dk] = el("div", "day"); d.setAttribute("role", "separator"); }
        d.textContent = fmtDay(r.createdAt);
        wanted.push(d);
        prevDay = dk; prev = null;
      }
      var next = records[i + 1];
      var first = !prev || !sameGroup(prev, r);
      var last = !next || !next.row || !sameGroup(r, next) || dayKey(next.createdAt) !== dk;
      r.row.classList.toggle("first", first);
      r.row.classList.toggle("last", last);
      r.senderEl.style.display = first && r.direction === "out" && r.senderName ? "" : "none";
      renderMeta(r, last || r.local != null);
      wanted.push(r.row);
      prev = r;
    }
    // Reconcile DOM order with the minimum number of moves.
    var cur = list.firstChild;
    for (var j = 0; j < wanted.length; j++) {
      var node = wanted[j];
      if (cur === node) { cur = cur.nextSibling; continue; }
      list.insertBefore(node, cur);
    }
    while (cur) { var nx = cur.nextSibling; list.removeChild(cur); cur = nx; }
    if (wasBottom) scrollToBottom();
  }

  function sameGroup(a, b) {
    if (a.direction !== b.direction) return false;
    if (a.direction === "out" && (a.senderName || "") !== (b.senderName || "")) return false;
    return Math.abs(b.createdAt - a.createdAt) < 5 * 60 * 1000;
  }

  function atBottom() {
    if (!ui.list) return true;
    var l = ui.list;
    return l.scrollHeight - l.scrollTop - l.clientHeight < 40;
  }
  function scrollToBottom() { if (ui.list) ui.list.scrollTop = ui.list.scrollHeight; }

  function markSeen() {
    if (!state.open || document.visibilityState === "hidden") return;
    var maxOut = state.seenId;
    for (var i = 0; i < records.length; i++) {
      var r = records[i];
      if (r.direction === "out" && r.id != null && r.id > maxOut) maxOut = r.id;
    }
    if (maxOut !== state.seenId) { state.seenId = maxOut; LS.set(KEY_SEEN, maxOut); }
    if (state.unread) { state.unread = 0; updateBadge(); }
    sendRead();
  }

  // Tell the shop what the customer has seen: advisers get a read receipt in Matrix.
  var readSent = 0;
  function sendRead() {
    if (!ws || ws.readyState !== 1 || !state.connected || state.seenId <= readSent) return;
    try { ws.send(JSON.stringify({ type: "read", up_to: state.seenId })); readSent = state.seenId; } catch (e) { /* next time */ }
  }

  // Status of the customer's own messages: "delivered" (reached the shop), "read" (an adviser read it).
  function applyStatus(ids, status) {
    if (!Array.isArray(ids) || typeof status !== "string") return;
    for (var i = 0; i < ids.length; i++) {
      var r = byId[ids[i]];
      if (r && r.status !== status) { r.status = status; renderRecord(r); }
    }
  }

  function updateBadge() {
    if (!ui.badge) return;
    ui.badge.hidden = !state.unread;
    ui.badge.textContent = state.unread > 9 ? "9+" : String(state.unread);
    ui.badge.setAttribute("data-testid", "hubchat-badge");
    applyTitle();
  }

  function setConnectionHint() {
    if (!ui.root) return;
    ui.root.classList.toggle("offline", !state.connected);
    clearTimeout(setConnectionHint.t);
    if (state.connected) { ui.notice.hidden = true; return; }
    // Give the first connection a moment before showing the hint (no flash on page load).
    setConnectionHint.t = setTimeout(function () {
      if (state.connected) return;
      ui.noticeText.textContent = state.sessionError ? T("unreachable", "Can’t reach the chat right now — retrying…") : T("reconnecting", "Reconnecting…");
      ui.notice.hidden = false;
    }, state.everConnected ? 600 : 2500);
  }

  // ---------------------------------------------------------------------------------------------
  // Session & history
  // ---------------------------------------------------------------------------------------------
  function ensureSession(force) {
    if (state.sessionPromise) return state.sessionPromise;
    if (state.visitorId && !force) return Promise.resolve();
    state.sessionPromise = (async function () {
      var attempt = 0;
      for (;;) {
        var res = null;
        try { res = await api("POST", "/webchat/api/session", { token: state.token || null }); } catch (e) { res = null; }
        if (res && res.status >= 200 && res.status < 300 && res.data && res.data.token) {
          applySession(res.data);
          state.sessionError = false;
          return;
        }
        state.sessionError = true;
        setConnectionHint();
        if (res && res.status >= 400 && res.status < 500 && res.status !== 408 && res.status !== 429) {
          // Our stored token was rejected outright: start afresh.
          state.token = null;
        }
        var pause = backoff(attempt++, 1000, 30000);
        // Too many requests: not before the hub says (waking early would only be refused again).
        if (res && res.status === 429) await sleep(Math.max(pause, retryAfterMs(res)));
        else await wakeableSleep(pause);
      }
    })().finally(function () { state.sessionPromise = null; });
    return state.sessionPromise;
  }

  function applySession(d) {
    var changed = state.token && d.token !== state.token;
    state.token = d.token;
    LS.set(KEY_TOKEN, d.token);
    if (changed) {
      // New identity: forget messages of the old one.
      records.slice().forEach(function (r) { if (r.id != null) removeRecord(r); });
      state.maxId = 0; state.seenId = 0; LS.set(KEY_SEEN, 0); state.unread = 0; updateBadge();
    }
    state.visitorId = d.visitor_id || state.visitorId;
    state.name = d.name != null ? d.name : state.name;
    if (!CFG.title && d.title) state.title = String(d.title);
    if (typeof d.welcome_text === "string") state.welcome = d.welcome_text;
    if (typeof d.max_upload_bytes === "number" && d.max_upload_bytes > 0) state.maxUpload = d.max_upload_bytes;
    var textsChanged = false;
    if (d.texts && typeof d.texts === "object") { TEXTS = d.texts; textsChanged = true; }
    if (typeof d.lang === "string" && d.lang !== LANG) { LANG = d.lang; textsChanged = true; }
    if (ui.root) { if (textsChanged) applyTexts(); else applyTitle(); scheduleLayout(); }
  }

  async function loadHistory(after) {
    var res;
    try { res = await api("GET", "/webchat/api/messages?after=" + (after || 0)); } catch (e) { return false; }
    if (res.status === 401 || res.status === 403) { await ensureSession(true); return false; }
    if (res.status !== 200 || !res.data || !Array.isArray(res.data.messages)) return false;
    res.data.messages.forEach(function (m) { upsert(m, { history: true }); });
    return true;
  }

  async function start() {
    await ensureSession();
    var attempt = 0;
    while (!(await loadHistory(0))) await wakeableSleep(backoff(attempt++, 1000, 30000));
    state.ready = true;
    scheduleLayout(true);
    connect();
    pumpOutbox();
    try { window.dispatchEvent(new CustomEvent("hubchat:ready")); } catch (e) { /* ignore */ }
  }

  // ---------------------------------------------------------------------------------------------
  // Live updates (WebSocket)
  // ---------------------------------------------------------------------------------------------
  var ws = null, wsAttempt = 0, wsTimer = null, wsAuthFailed = false, lastPoll = 0, pingTimer = null;

  function connect() {
    clearTimeout(wsTimer); wsTimer = null;
    if (ws || !state.ready) return;
    if (!window.WebSocket) { scheduleReconnect(); return; }
    var sock;
    try { sock = new WebSocket(WS_URL); } catch (e) { scheduleReconnect(); return; }
    ws = sock;
    var gotReady = false, readyAt = 0;
    sock.hcPongSeen = false;
    sock.hcDeadline = null;
    // A socket that never gets to "ready" (black-holed network, stuck proxy) is given up on.
    var openTimer = setTimeout(function () { if (!gotReady) { try { sock.close(); } catch (e) { /* ignore */ } } }, 15000);
    sock.onopen = function () {
      try { sock.send(JSON.stringify({ type: "auth", token: state.token, after: state.maxId })); } catch (e) { /* onclose follows */ }
    };
    sock.onmessage = function (ev) {
      clearTimeout(sock.hcDeadline); sock.hcDeadline = null; // any frame proves the socket alive
      var data;
      try { data = JSON.parse(ev.data); } catch (e) { return; }
      if (!data || typeof data !== "object") return;
      if (data.type === "pong") { sock.hcPongSeen = true; return; }
      if (data.type === "ready") {
        gotReady = true; readyAt = Date.now(); wsAuthFailed = false; clearTimeout(openTimer);
        clearInterval(pingTimer);
        pingTimer = setInterval(function () { ping(sock); }, 25000);
        state.connected = true; state.everConnected = true;
        setConnectionHint();
        wakeAll();
        readSent = 0;
        sendRead();
      } else if (data.type === "message") {
        upsert(data.message);
      } else if (data.type === "message_edited") {
        // An adviser changed it in Matrix: the new version in the old one's place.
        upsert(data.message, { edited: true });
      } else if (data.type === "message_deleted") {
        markDeleted(data.id);
      } else if (data.type === "reaction") {
        setReaction(data.id, data.emoji);
      } else if (data.type === "status") {
        applyStatus(data.ids, data.status);
      } else if (data.type === "error") {
        if (window.console) console.warn("[HubChat] server:", data.error);
        if (!gotReady) wsAuthFailed = true;
      }
    };
    sock.onerror = function () { /* onclose handles it */ };
    sock.onclose = function () {
      clearTimeout(openTimer); clearTimeout(sock.hcDeadline);
      if (ws !== sock) return;
      clearInterval(pingTimer);
      ws = null;
      // Only a connection that stayed up for a while resets the backoff (no tight loops on flapping).
      if (gotReady && Date.now() - readyAt > 10000) wsAttempt = 0;
      state.connected = false;
      setConnectionHint();
      scheduleReconnect();
    };
  }

  // App-level ping ({"type":"ping"} -> {"type":"pong"}): a socket that stops answering (sleeping
  // laptop, dead NAT mapping) is dropped and replaced. Enforced only once the server has
  // answered a ping on this socket, so servers without ping support are left alone.
  function ping(sock) {
    if (ws !== sock || sock.readyState !== 1) return;
    try { sock.send('{"type":"ping"}'); } catch (e) { return; }
    if (sock.hcPongSeen && !sock.hcDeadline) {
      sock.hcDeadline = setTimeout(function () { dropSocket(sock); }, 10000);
    }
  }

  function dropSocket(sock) {
    if (ws !== sock) return;
    ws = null;
    clearInterval(pingTimer);
    try { sock.close(); } catch (e) { /* ignore */ }
    state.connected = false;
    setConnectionHint();
    scheduleReconnect();
  }

  function scheduleReconnect() {
    clearTimeout(wsTimer);
    var delay = backoff(wsAttempt++, 1000, 30000);
    wsTimer = setTimeout(async function () {
      wsTimer = null;
      if (wsAuthFailed) { wsAuthFailed = false; await ensureSession(true); }
      // While the socket is down, catch up over HTTP now and then (e.g. proxies that block WebSockets).
      if (wsAttempt >= 2 && Date.now() - lastPoll > 10000) { lastPoll = Date.now(); await loadHistory(state.maxId); }
      connect();
    }, delay);
  }

  // Network came back / tab became visible / user opened the panel: retry everything right away.
  function wakeAll() {
    if (state.ready && !ws && !state.connected) { wsAttempt = 0; connect(); }
    else if (ws && state.connected) ping(ws);
    if (sleepWakers.length) { var w = sleepWakers; sleepWakers = []; w.forEach(function (f) { f(); }); }
  }

  var sleepWakers = [];
  function wakeableSleep(ms) {
    return new Promise(function (resolve) {
      var done = false;
      var finish = function () { if (done) return; done = true; clearTimeout(t); var i = sleepWakers.indexOf(finish); if (i !== -1) sleepWakers.splice(i, 1); resolve(); };
      var t = setTimeout(finish, ms);
      sleepWakers.push(finish);
    });
  }

  // ---------------------------------------------------------------------------------------------
  // Sending text (sequential outbox; retries reuse the same client_id, the server dedupes)
  // ---------------------------------------------------------------------------------------------
  function submitText() {
    var text = ui.input.value;
    if (!text.trim()) return;
    ui.input.value = "";
    SS.set(KEY_DRAFT, null);
    autosize(); updateSendBtn();
    var r = addLocal({ kind: "text", text: text });
    outbox.push(r);
    scheduleLayout(true);
    pumpOutbox();
  }

  function removeFromOutbox(r) { var i = outbox.indexOf(r); if (i !== -1) outbox.splice(i, 1); }

  async function pumpOutbox() {
    if (outboxBusy) return;
    outboxBusy = true;
    try {
      while (outbox.length) {
        if (!state.ready) { await ensureSession(); if (!state.token) break; }
        var r = outbox[0];
        if (r.removed || r.id != null || r.local === "failed") { outbox.shift(); continue; }
        var res = null;
        var body = { client_id: r.clientId, text: r.text };
        if (r.buttonId) body.button_id = r.buttonId; // a reply button's answer (the text is its title)
        try { res = await api("POST", "/webchat/api/messages", body); } catch (e) { res = null; }
        if (r.removed || r.id != null) { outbox.shift(); continue; } // confirmed via WebSocket meanwhile
        if (res && (res.status === 200 || res.status === 201) && res.data && res.data.message) {
          outbox.shift();
          r.limited = false;
          upsert(res.data.message);
          r.attempt = 0;
          continue;
        }
        if (res && (res.status === 401 || res.status === 403) && !r.reauthed) {
          r.reauthed = true;
          await ensureSession(true);
          continue;
        }
        if (!res || isTransient(res.status)) {
          await waitToRetry(r, res);
          continue;
        }
        // Permanent failure (4xx): show the server's reason under the bubble.
        outbox.shift();
        r.local = "failed";
        r.error = errorText(res, T("send_failed", "Message could not be sent."));
        renderRecord(r);
        announce(T("message_not_sent", "Message not sent: {error}", { error: r.error }));
      }
    } finally {
      outboxBusy = false;
    }
  }

  // A send or upload that may succeed later: shown as "retrying", tried again after a backoff.
  // Over the hub's rate limits (429) the message is kept and says so ("Too many messages…"),
  // and is sent again once the Retry-After has passed, not sooner (no "Retry now").
  async function waitToRetry(r, res) {
    var wait = backoff(r.attempt++, 1000, 30000);
    var limited = !!res && res.status === 429;
    if (limited && !r.limited) announce(T("rate_limited", "Too many messages — sending again in a moment…"));
    r.limited = limited;
    r.local = "retrying";
    renderRecord(r);
    var asked = retryAfterMs(res);
    if (limited) await sleep(Math.max(wait, asked || 5000));
    else await wakeableSleep(Math.max(wait, asked));
  }

  function editRecord(r) {
    var text = r.text || "";
    removeRecord(r);
    var cur = ui.input.value;
    ui.input.value = cur ? text + "\n" + cur : text;
    autosize(); updateSendBtn();
    ui.input.focus();
  }

  function retryRecord(r) {
    r.error = null; r.attempt = 0; r.reauthed = false; r.limited = false;
    if (r.file) { r.local = "uploading"; r.progress = 0; renderRecord(r); runUpload(r); return; }
    r.local = "sending";
    renderRecord(r);
    if (outbox.indexOf(r) === -1) outbox.push(r);
    pumpOutbox();
  }

  // ---------------------------------------------------------------------------------------------
  // Uploads (XHR for progress events)
  // ---------------------------------------------------------------------------------------------
  function uploadFile(file) {
    if (!file) return;
    var isImage = /^image\/(png|jpe?g|gif|webp|avif|bmp)$/i.test(file.type || "");
    var preview = null;
    if (isImage && window.URL && URL.createObjectURL) { try { preview = URL.createObjectURL(file); } catch (e) { preview = null; } }
    var r = addLocal({
      kind: isImage ? "image" : "file",
      media: { url: null, filename: file.name || "file", mimetype: file.type || "application/octet-stream", size: file.size },
      previewUrl: preview, file: file, local: "uploading", progress: 0
    });
    if (!state.open) openPanel(false);
    scheduleLayout(true);
    if (state.maxUpload && file.size > state.maxUpload) {
      // Known limit (from the session): refuse locally instead of uploading for nothing.
      r.local = "failed"; r.fatal = true;
      r.error = T("too_large_max", "File is too large (max {size}).", { size: humanSize(state.maxUpload) });
      renderRecord(r);
      announce(T("upload_failed_because", "Upload failed: {error}", { error: r.error }));
      return;
    }
    runUpload(r);
  }

  async function runUpload(r) {
    for (;;) {
      if (r.removed || r.id != null) return;
      if (!state.ready) await ensureSession();
      var res = await xhrUpload(r);
      if (r.removed || r.id != null) return;
      if (res.status === 200 || res.status === 201) {
        if (res.data && res.data.message) {
          r.limited = false;
          var preview = r.previewUrl;
          upsert(res.data.message);
          r.previewUrl = preview; // keep showing the local preview: no flicker
          return;
        }
      }
      if ((res.status === 401 || res.status === 403) && !r.reauthed) { r.reauthed = true; await ensureSession(true); continue; }
      if (isTransient(res.status)) {
        await waitToRetry(r, res);
        if (r.removed || r.id != null) return;
        r.local = "uploading"; r.progress = 0;
        renderRecord(r);
        continue;
      }
      r.local = "failed";
      r.fatal = res.status === 413 || res.status === 415;
      r.error = res.status === 413 ? errorText(res, T("too_large", "File is too large.")) : errorText(res, T("upload_failed", "Upload failed."));
      renderRecord(r);
      announce(T("upload_failed_because", "Upload failed: {error}", { error: r.error }));
      return;
    }
  }

  function xhrUpload(r) {
    return new Promise(function (resolve) {
      var xhr = new XMLHttpRequest();
      xhr.open("POST", BASE + "/webchat/api/upload");
      xhr.setRequestHeader("Authorization", "Bearer " + state.token);
      xhr.setRequestHeader("Accept", "application/json");
      xhr.timeout = 10 * 60 * 1000;
      xhr.upload.onprogress = function (e) {
        if (!e.lengthComputable) return;
        r.progress = Math.min(0.99, e.loaded / e.total);
        updateProgress(r);
        if (r.metaEl && r.local === "uploading") {
          var s = r.metaEl.firstChild;
          if (s) s.textContent = uploadingText(r.progress);
        }
      };
      var done = function () {
        var data = null;
        try { data = xhr.responseText ? JSON.parse(xhr.responseText) : null; } catch (e) { data = null; }
        var retryAfter = null;
        try { retryAfter = xhr.getResponseHeader("Retry-After"); } catch (e) { retryAfter = null; }
        resolve({ status: xhr.status || 0, data: data, retryAfter: retryAfter });
      };
      xhr.onload = done;
      xhr.onerror = function () { resolve({ status: 0, data: null }); };
      xhr.ontimeout = xhr.onerror;
      xhr.onabort = xhr.onerror;
      var fd = new FormData();
      fd.append("client_id", r.clientId); // before the file, so streaming parsers see it first
      fd.append("file", r.file, r.file.name || "file");
      xhr.send(fd);
    });
  }

  // ---------------------------------------------------------------------------------------------
  // Public API
  // ---------------------------------------------------------------------------------------------
  window.HubChat = {
    __hubchat: true,
    open: function () { openPanel(true); },
    close: function () { closePanel(false); },
    isReady: function () { return !!state.ready; },
    setName: async function (name) {
      await ensureSession();
      var res = await api("POST", "/webchat/api/session", { token: state.token, name: name == null ? null : String(name) });
      if (res.status >= 200 && res.status < 300 && res.data && res.data.token) { applySession(res.data); return state.name; }
      throw new Error(errorText(res, "Could not set name"));
    }
  };

  function mount() {
    if (host) return;
    buildUI();
    records.forEach(function (r) { if (!r.row) renderRecord(r); });
    if (state.open || SS.get(KEY_OPEN) === "1") openPanel(false);
    updateSendBtn(); autosize();
    setConnectionHint();
    scheduleLayout(true);
  }

  if (document.body) mount();
  else document.addEventListener("DOMContentLoaded", mount);
  start();
})();
