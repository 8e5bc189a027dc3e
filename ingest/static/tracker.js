/*! Touchstream tracker 1.0.0 | Apache-2.0 | docs/tracker.md
 * Sends pageviews and events to a Touchstream edge (POST /v1/hits, SPEC section 2).
 * ES2017, no dependencies, no build step. Never throws into the host page; the only
 * global it defines is window.touchstream.
 */
(function (window, document) {
  'use strict';
  try {
    var NAME = 'touchstream';
    var previous = window[NAME];
    if (previous && previous.__touchstream) return; // included twice: the first copy keeps running

    var VERSION = '1.0.0';
    var GUID_KEY = 'touchstream.guid';   // localStorage: the device GUID (never expires)
    var QUEUE_KEY = 'touchstream.queue'; // localStorage: hits waiting for a retry
    var COOKIE = 'ts_guid';              // first-party cookie: only to detect cleared storage (SPEC rule 12)
    var COOKIE_MAX_AGE = 400 * 86400;    // the longest lifetime browsers allow; refreshed on every load
    var MAX_QUEUE = 100;                 // retry queue bound (oldest hits are dropped first)
    var MAX_ATTEMPTS = 10;
    var MAX_AGE_MS = 86400 * 1000;       // a hit older than a day is not worth retrying
    var BASE_DELAY_MS = 1000;
    var MAX_DELAY_MS = 5 * 60 * 1000;
    var MAX_BATCH = 20;                  // hits per request (the edge takes up to 500)
    var MAX_BODY = 60000;                // bytes; beacons and keepalive fetches share a 64 KiB budget
    var MAX_PROPERTIES = 8192;           // bytes of event properties as JSON (the edge's limit)
    var UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
    var ABSOLUTE_RE = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]/i;
    var METHODS = ['track', 'pageview', 'flush'];

    var warn = function (message, detail) {
      try {
        if (window.console && console.warn) console.warn('[touchstream] ' + message, detail === undefined ? '' : detail);
      } catch (e) { /* nothing left to do */ }
    };

    // Every function the page can reach goes through this: an internal error is a warning, never an exception.
    var safe = function (fn, fallback) {
      return function () {
        try {
          return fn.apply(this, arguments);
        } catch (e) {
          warn('internal error', e);
          return fallback;
        }
      };
    };

    var clip = function (value, limit) {
      var s = value == null ? '' : String(value);
      return s.length > limit ? s.slice(0, limit) : s;
    };

    var utf8Length = function (s) {
      try {
        if (typeof TextEncoder === 'function') return new TextEncoder().encode(s).length;
      } catch (e) { /* fall through */ }
      return encodeURIComponent(s).replace(/%[0-9A-F]{2}/gi, 'x').length;
    };

    var uuid = function () {
      try {
        if (window.crypto && typeof window.crypto.randomUUID === 'function') return window.crypto.randomUUID();
      } catch (e) { /* not a secure context: fall back */ }
      var b = [];
      var i;
      try {
        var r = new Uint8Array(16);
        window.crypto.getRandomValues(r);
        for (i = 0; i < 16; i++) b.push(r[i]);
      } catch (e) {
        b = [];
        for (i = 0; i < 16; i++) b.push(Math.floor(Math.random() * 256));
      }
      b[6] = (b[6] & 0x0f) | 0x40; // version 4
      b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
      var hex = b.map(function (x) { return (x + 0x100).toString(16).slice(1); }).join('');
      return hex.slice(0, 8) + '-' + hex.slice(8, 12) + '-' + hex.slice(12, 16) + '-' + hex.slice(16, 20) + '-' + hex.slice(20);
    };

    var now = function () { return new Date().toISOString(); }; // ISO 8601, UTC, with Z

    // ---- configuration: from the <script> tag ----------------------------------------------
    var findScript = function () {
      var current = document.currentScript;
      if (current && current.src) return current;
      var scripts = document.getElementsByTagName('script');
      for (var i = scripts.length - 1; i >= 0; i--) {
        var s = scripts[i];
        if (s.hasAttribute('data-touchstream') || /\/tracker\.js([?#]|$)/.test(s.src || '')) return s;
      }
      return null;
    };
    var script = findScript();
    var attr = function (name) {
      var v = script && script.getAttribute(name);
      return v == null || v === '' ? null : v;
    };
    var endpoint;
    try {
      endpoint = new URL(attr('data-endpoint') || '/v1/hits', attr('data-endpoint') ? window.location.href : (script && script.src) || window.location.href).href;
    } catch (e) {
      endpoint = '/v1/hits';
    }
    var site = attr('data-site');
    var cookieDomain = attr('data-cookie-domain');
    var autoPageview = attr('data-auto-pageview') !== 'false';
    // fetch (keepalive) by default: it survives the page closing like a beacon, and it reads the
    // edge's answer, so a 503 (Kafka away) is retried rather than lost. A hit stays in storage until
    // confirmed, so one cut off by an unload goes again from the next page (same hit_id: deduped).
    var transport = attr('data-transport') === 'beacon' ? 'beacon' : 'fetch';
    var sendable = /^https?:$/.test(window.location.protocol);
    if (!sendable) warn('not sending hits from a ' + window.location.protocol + ' page (the edge takes http(s) URLs only)');

    // ---- storage ----------------------------------------------------------------------------
    var storage = (function () {
      try {
        var ls = window.localStorage;
        var probe = '__touchstream_probe__';
        ls.setItem(probe, '1');
        ls.removeItem(probe);
        return ls;
      } catch (e) {
        return null; // blocked or unavailable: the GUID falls back to the cookie
      }
    }());
    var lsGet = function (key) {
      try { return storage ? storage.getItem(key) : null; } catch (e) { return null; }
    };
    var lsSet = function (key, value) {
      try {
        if (!storage) return false;
        if (value == null) storage.removeItem(key); else storage.setItem(key, value);
        return true;
      } catch (e) {
        return false; // quota exceeded or blocked
      }
    };
    var cookieGet = function (name) {
      try {
        var parts = document.cookie ? document.cookie.split(/;\s*/) : [];
        for (var i = 0; i < parts.length; i++) {
          var eq = parts[i].indexOf('=');
          if (eq > 0 && parts[i].slice(0, eq) === name) return decodeURIComponent(parts[i].slice(eq + 1));
        }
      } catch (e) { /* cookies disabled */ }
      return null;
    };
    var cookieSet = function (name, value) {
      try {
        var c = name + '=' + encodeURIComponent(value) + '; Max-Age=' + COOKIE_MAX_AGE + '; Path=/; SameSite=Lax';
        if (cookieDomain) c += '; Domain=' + cookieDomain;
        if (window.location.protocol === 'https:') c += '; Secure';
        document.cookie = c;
      } catch (e) { /* cookies disabled */ }
    };
    var validGuid = function (v) { return typeof v === 'string' && UUID_RE.test(v) ? v.toLowerCase() : null; };

    // ---- identity (the seed: the GUID lives in local storage, never expires, follows the device)
    var guid = null;
    var previousGuid = null; // set when local storage was found cleared; sent once, on the next hit

    // Read on every hit, so a page that stays open notices another tab rotating the GUID and a
    // storage clear that happens while it is open.
    var currentGuid = function () {
      var stored = validGuid(lsGet(GUID_KEY));
      if (stored) {
        if (stored !== guid) {
          guid = stored;
          cookieSet(COOKIE, guid);
        }
        return guid;
      }
      var cookie = validGuid(cookieGet(COOKIE));
      if (!storage) {
        // No usable local storage at all: the cookie is the only memory there is, and nothing was cleared.
        if (!guid) guid = cookie || uuid();
        cookieSet(COOKIE, guid);
        return guid;
      }
      // Local storage works but holds no GUID: a new device, or storage was cleared (SPEC rule 12).
      var old = cookie || guid;
      guid = uuid();
      lsSet(GUID_KEY, guid);
      if (old && old !== guid) previousGuid = old;
      cookieSet(COOKIE, guid);
      return guid;
    };
    guid = currentGuid();
    cookieSet(COOKIE, guid); // refreshed on every load: a sliding lifetime that outlives any gap under 400 days

    // ---- hits -------------------------------------------------------------------------------
    var pageReferrer = ABSOLUTE_RE.test(document.referrer || '') ? clip(document.referrer, 4096) : '';
    var lastPageUrl = null;

    var absoluteUrl = function (value) {
      try { return new URL(String(value), window.location.href).href; } catch (e) { return window.location.href; }
    };

    var buildHit = function (type, url, referrer, title) {
      var hit = {
        guid: currentGuid(),
        type: type,
        hit_id: uuid(),
        url: clip(url, 4096),
        referrer: ABSOLUTE_RE.test(referrer || '') ? clip(referrer, 4096) : '',
        created_at: now()
      };
      if (title) hit.title = clip(title, 2048);
      if (site) hit.site = clip(site, 253);
      if (previousGuid) {
        hit.previous_guid = previousGuid;
        previousGuid = null;
      }
      return hit;
    };

    var cleanProperties = function (properties) {
      if (properties == null) return {};
      var value = (typeof properties === 'object' && !Array.isArray(properties)) ? properties : { value: properties };
      var json;
      try {
        json = JSON.stringify(value);
      } catch (e) {
        warn('event properties are not JSON-serialisable; sending none', e);
        return {};
      }
      if (typeof json !== 'string') return {};
      if (utf8Length(json) > MAX_PROPERTIES) {
        warn('event properties exceed ' + MAX_PROPERTIES + ' bytes as JSON; sending none');
        return {};
      }
      return JSON.parse(json); // a copy: later changes by the page do not alter the queued hit
    };

    // touchstream.pageview([{url, title, referrer}]) — a page view; called by itself on load.
    var pageview = function (options) {
      var o = options && typeof options === 'object' ? options : {};
      var url = o.url ? absoluteUrl(o.url) : window.location.href;
      var referrer;
      if (o.referrer != null) referrer = String(o.referrer);
      else if (lastPageUrl && lastPageUrl !== url) referrer = lastPageUrl; // SPA navigation: the previous view
      else referrer = pageReferrer;
      var hit = buildHit('pageview', url, referrer, o.title != null ? o.title : document.title);
      pageReferrer = hit.referrer;
      lastPageUrl = url;
      enqueue(hit);
      return hit.hit_id;
    };

    // touchstream.track(name, properties, {module}) — an event (lead, appointment, or custom).
    var track = function (name, properties, options) {
      if (typeof name !== 'string' || name.length < 1 || name.length > 64) {
        warn('track(name, ...): name must be a string of 1 to 64 characters', name);
        return null;
      }
      var event = { name: name, properties: cleanProperties(properties) };
      var module = options && typeof options === 'object' ? options.module : null;
      if (module != null && module !== '') event.module = clip(module, 64);
      var hit = buildHit('event', lastPageUrl || window.location.href, pageReferrer, document.title);
      hit.event = event;
      enqueue(hit);
      return hit.hit_id;
    };

    // ---- delivery: every hit goes through a bounded, persisted retry queue -----------------
    // Entry: {hit, attempts, due (ms), busy}. A retried hit keeps its hit_id (the pipeline drops
    // duplicates) and gets a fresh sent_at on every try.
    var queue = [];
    var finished = {}; // hit_ids this page delivered or gave up on: not to be written back to storage
    var finishedCount = 0;
    var timer = null;

    var readStored = function () {
      try {
        var stored = JSON.parse(lsGet(QUEUE_KEY) || '[]');
        return Array.isArray(stored) ? stored.filter(function (e) { return e && e.hit && e.hit.hit_id; }) : [];
      } catch (e) {
        return [];
      }
    };

    var persist = function () {
      if (!storage) return;
      var mine = {};
      queue.forEach(function (e) { mine[e.hit.hit_id] = true; });
      // Keep what other tabs stored meanwhile; write ours; drop what this page finished.
      var all = readStored().filter(function (e) { return !mine[e.hit.hit_id] && !finished[e.hit.hit_id]; })
        .concat(queue.map(function (e) { return { hit: e.hit, attempts: e.attempts }; }));
      if (all.length > MAX_QUEUE) all = all.slice(all.length - MAX_QUEUE);
      lsSet(QUEUE_KEY, all.length ? JSON.stringify(all) : null);
      if (finishedCount > 1000) { // a long-lived page: storage no longer holds those, forget them
        finished = {};
        finishedCount = 0;
      }
    };

    var expired = function (entry) {
      var created = Date.parse(entry.hit.created_at);
      return entry.attempts >= MAX_ATTEMPTS || (created && Date.now() - created > MAX_AGE_MS);
    };

    var finish = function (entries) {
      entries.forEach(function (e) {
        finished[e.hit.hit_id] = true;
        finishedCount += 1;
        var i = queue.indexOf(e);
        if (i >= 0) queue.splice(i, 1);
      });
    };

    var enqueue = function (hit) {
      if (!sendable) return;
      queue.push({ hit: hit, attempts: 0, due: 0, busy: false });
      if (queue.length > MAX_QUEUE) {
        var dropped = queue.splice(0, queue.length - MAX_QUEUE);
        finish(dropped);
        warn('retry queue full: dropped ' + dropped.length + ' oldest hit(s)');
      }
      persist();
      schedule(0);
    };

    // POST one body. Resolves to {done: true} (delivered, or refused for good) or {done: false,
    // after: ms} (try again; `after` from the edge's Retry-After when it could be read).
    var post = function (body, useBeacon) {
      if (useBeacon && navigator.sendBeacon) {
        var queued = false;
        try {
          queued = navigator.sendBeacon(endpoint, body); // a string body: text/plain, no CORS preflight
        } catch (e) {
          queued = false;
        }
        if (queued) return Promise.resolve({ done: true });
      }
      if (typeof window.fetch !== 'function') return Promise.resolve({ done: false });
      return window.fetch(endpoint, {
        method: 'POST',
        body: body, // a string: Content-Type text/plain, a "simple" request, no preflight
        keepalive: body.length <= MAX_BODY,
        credentials: 'omit',
        mode: 'cors'
      }).then(function (response) {
        var status = response.status;
        if (status >= 200 && status < 300) {
          response.json().then(function (b) {
            if (b && b.rejected && b.rejected.length) warn('the edge refused ' + b.rejected.length + ' hit(s)', b.rejected);
          }, function () { /* body unreadable: fine */ });
          return { done: true };
        }
        if (status === 429 || status === 0 || status >= 500) {
          var after = parseFloat(response.headers.get('Retry-After') || '');
          return { done: false, after: isFinite(after) ? after * 1000 : 0 };
        }
        warn('the edge refused the hits: HTTP ' + status + ' (not retried)');
        return { done: true };
      }, function () {
        return { done: false }; // network error, edge down, or CORS: try again later
      });
    };

    var deliver = function (entries) {
      var stamp = now();
      entries.forEach(function (e) {
        e.busy = true;
        e.hit.sent_at = stamp;
      });
      var hits = entries.map(function (e) { return e.hit; });
      var sending;
      try {
        sending = post(JSON.stringify(hits.length === 1 ? hits[0] : hits), transport === 'beacon');
      } catch (e) {
        sending = Promise.resolve({ done: false }); // never leave entries marked busy
      }
      return sending.then(function (result) {
        entries.forEach(function (e) { e.busy = false; });
        if (result.done) {
          finish(entries);
        } else {
          var t = Date.now();
          entries.forEach(function (e) {
            e.attempts += 1;
            var backoff = Math.min(MAX_DELAY_MS, BASE_DELAY_MS * Math.pow(2, e.attempts - 1));
            e.due = t + Math.max(result.after || 0, backoff * (0.5 + Math.random() / 2));
          });
          var gone = entries.filter(expired);
          if (gone.length) {
            finish(gone);
            warn('gave up on ' + gone.length + ' hit(s) after ' + MAX_ATTEMPTS + ' attempts or a day');
          }
        }
        persist();
        schedule();
      }).catch(function (e) {
        entries.forEach(function (x) { x.busy = false; });
        warn('internal error while sending', e);
      });
    };

    var flush = function (force) {
      if (timer) {
        clearTimeout(timer);
        timer = null;
      }
      var t = Date.now();
      var ready = queue.filter(function (e) { return !e.busy && (force || e.due <= t); });
      while (ready.length) {
        var batch = [];
        var size = 2;
        while (ready.length && batch.length < MAX_BATCH) {
          var n = JSON.stringify(ready[0].hit).length + 1;
          if (batch.length && size + n > MAX_BODY) break;
          size += n;
          batch.push(ready.shift());
        }
        deliver(batch);
      }
      schedule();
    };

    var schedule = function (delay) {
      if (timer) clearTimeout(timer);
      timer = null;
      var next = delay;
      if (next == null) {
        var waiting = queue.filter(function (e) { return !e.busy; });
        if (!waiting.length) return;
        next = Math.max(0, Math.min.apply(null, waiting.map(function (e) { return e.due; })) - Date.now());
      }
      timer = setTimeout(safe(function () { timer = null; flush(false); }), next);
    };

    // Hits left in storage by an earlier page (failed sends, or a page closed mid-send) go again.
    readStored().forEach(function (e) {
      if (queue.some(function (q) { return q.hit.hit_id === e.hit.hit_id; })) return;
      var entry = { hit: e.hit, attempts: e.attempts | 0, due: 0, busy: false };
      if (!expired(entry)) queue.push(entry);
      else finish([entry]);
    });

    // Leaving (or hiding) the page: try everything now. A hit stays in storage until the edge has
    // confirmed it (fetch) or the browser has taken it (beacon), so one cut off by the unload goes
    // again on the next page; its hit_id lets the pipeline drop the copy if the first try landed.
    var onHide = safe(function () {
      persist();
      if (queue.length) flush(true);
    });
    window.addEventListener('pagehide', onHide);
    document.addEventListener('visibilitychange', safe(function () {
      if (document.visibilityState === 'hidden') onHide();
    }));
    window.addEventListener('online', safe(function () { flush(true); }));

    // ---- the public API (replaces the snippet's array) -------------------------------------
    var api = {
      __touchstream: true,
      version: VERSION,
      endpoint: endpoint,
      track: safe(track, null),
      pageview: safe(pageview, null),
      getGuid: safe(function () { return currentGuid(); }, null),
      flush: safe(function () { flush(true); }),
      push: null
    };
    var run = function (item) {
      if (typeof item === 'function') {
        item(api);
      } else if (item && typeof item.length === 'number' && METHODS.indexOf(item[0]) >= 0) {
        api[item[0]].apply(api, Array.prototype.slice.call(item, 1));
      } else {
        warn('unknown call pushed to touchstream (expected ["track"|"pageview"|"flush", ...] or a function)', item);
      }
    };
    // Works before and after load: touchstream.push(['track', 'lead', {...}, {module: 'chat'}]).
    api.push = safe(function () {
      for (var i = 0; i < arguments.length; i++) {
        try { run(arguments[i]); } catch (e) { warn('a queued call failed', e); }
      }
      return 0;
    }, 0);
    window[NAME] = api;

    if (autoPageview) api.pageview();
    // Calls made before this script loaded, in order.
    if (previous && typeof previous.length === 'number') {
      for (var i = 0; i < previous.length; i++) api.push(previous[i]);
    }
    if (queue.length) schedule(0);
  } catch (e) {
    try { if (window.console && console.warn) console.warn('[touchstream] failed to start', e); } catch (e2) { /* give up quietly */ }
  }
}(window, document));
