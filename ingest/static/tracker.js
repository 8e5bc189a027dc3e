/*! Touchstream tracker 1.1.0 | Apache-2.0 | docs/tracker.md (the reasons: comments here
 * count against the 8 KB gzipped budget). ES2017, no build step, one global, never throws. */
(function (window, document) {
  'use strict';
  try {
    var NAME = 'touchstream';
    var previous = window[NAME];
    if (previous && previous.__touchstream) return;

    var VERSION = '1.1.0';
    var GUID_KEY = 'touchstream.guid';
    var QUEUE_KEY = 'touchstream.queue';
    var CONSENT_KEY = 'touchstream.consent';
    var OPTOUT_KEY = 'touchstream.optout';
    var UID_KEY = 'touchstream.uid';
    var COOKIE = 'ts_guid'; // only to detect cleared storage (SPEC rule 12)
    var COOKIE_MAX_AGE = 400 * 86400;
    var LINK_PARAM = '_tsl';
    var LINK_TTL_S = 120;
    var SPA_DELAY_MS = 300;
    var MAX_QUEUE = 100;
    var MAX_ATTEMPTS = 10;
    var MAX_AGE_MS = 86400 * 1000;
    var MAX_DELAY_MS = 5 * 60 * 1000;
    var MAX_BATCH = 20;
    var MAX_BODY = 60000; // keepalive fetches and beacons share 64 KiB
    var MAX_PROPERTIES = 8192;           // the edge's limit
    var UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
    var ABSOLUTE_RE = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]/i;
    var HTTP_RE = /^https?:$/;
    var METHODS = ['track', 'pageview', 'flush', 'consent', 'optOut', 'identify'];
    var DOWNLOADS = 'pdf,xls,xlsx,doc,docx,txt,rtf,csv,exe,key,pps,ppt,pptx,7z,pkg,rar,gz,zip,avi,mov,mp4,mpe,mpeg,wmv,mid,midi,mp3,wav,wma'; // GA4's
    var loc = window.location;
    var nav = window.navigator;

    var warn = (message, detail) => {
      try { console.warn('[touchstream] ' + message, detail === undefined ? '' : detail); } catch (e) { /* no console */ }
    };

    // What the page can call: an internal error is a warning, not an exception.
    var safe = (fn, fallback) => function () {
      try {
        return fn.apply(this, arguments);
      } catch (e) {
        warn('internal error', e);
        return fallback;
      }
    };

    var clip = (value, limit) => {
      var s = value == null ? '' : String(value);
      return s.length > limit ? s.slice(0, limit) : s;
    };

    var uuid = () => { // not randomUUID: https only
      var b = Array.from(window.crypto.getRandomValues(new Uint8Array(16)));
      b[6] = (b[6] & 0x0f) | 0x40;
      b[8] = (b[8] & 0x3f) | 0x80;
      var hex = b.map(x => (x + 0x100).toString(16).slice(1)).join('');
      return hex.slice(0, 8) + '-' + hex.slice(8, 12) + '-' + hex.slice(12, 16) + '-' + hex.slice(16, 20) + '-' + hex.slice(20);
    };

    var now = () => new Date().toISOString();

    // ---- configuration: the <script> tag's data- attributes
    var script = document.currentScript || [].slice.call(document.scripts).reverse().find(t => /\/tracker\.js([?#]|$)/.test(t.src));
    var attr = name => {
      var v = script && script.getAttribute('data-' + name);
      return v == null || v === '' ? null : v;
    };
    var list = (name, fallback) => (attr(name) || fallback || '').toLowerCase().split(/[\s,]+/).filter(Boolean);
    var endpoint;
    try {
      endpoint = new URL(attr('endpoint') || '/v1/hits', attr('endpoint') ? loc.href : (script && script.src) || loc.href).href;
    } catch (e) {
      endpoint = '/v1/hits';
    }
    var site = attr('site');
    var cookieDomain = attr('cookie-domain');
    var autoPageview = attr('auto-pageview') !== 'false';
    var spa = autoPageview ? attr('spa') || 'history' : 'off';
    var crossDomains = list('cross-domain');
    var denied = list('strip-params', 'email,token,access_token,auth,code,key,api_key,password,pwd,secret,sid');
    var scrub = s => {
      try {
        var u = new URL(s), p = u.searchParams;
        [...p.keys()].map(k => denied.includes(k.toLowerCase()) && p.delete(k));
        if (spa !== 'hash' && attr('keep-fragment') !== 'true') u.hash = '';
        return u.href;
      } catch (e) { return s; }
    };
    var downloadExts = attr('downloads') === 'false' ? [] : list('download-extensions', DOWNLOADS);
    var outbound = attr('outbound-links') !== 'false';
    var consentRequired = attr('consent') === 'required';
    // GPC (unless told not to) or DNT (if asked to): an opt-out.
    var signal = (attr('respect-gpc') !== 'false' && nav.globalPrivacyControl === true) ||
      (attr('respect-dnt') === 'true' && (nav.doNotTrack === '1' || window.doNotTrack === '1'));
    var transport = attr('transport') === 'beacon' ? 'beacon' : 'fetch';
    var sendable = HTTP_RE.test(loc.protocol);
    if (!sendable) warn('no hits from a ' + loc.protocol + ' page: the edge takes http(s) URLs');

    // ---- storage: written only while tracking is allowed (`state`)
    var state = 'granted'; // | pending (no consent yet) | denied (opt-out, GPC/DNT)
    var storage = null;
    var lsGet = key => {
      try { return window.localStorage.getItem(key); } catch (e) { return null; }
    };
    var lsSet = (key, value, always) => { // always: consent bookkeeping, in any state
      try {
        if (value == null) window.localStorage.removeItem(key);
        else if (always || (storage && state === 'granted')) window.localStorage.setItem(key, value);
      } catch (e) { /* quota exceeded or blocked */ }
    };
    var cookieGet = () => {
      try {
        var m = new RegExp('(?:^|;\\s*)' + COOKIE + '=([^;]*)').exec(document.cookie);
        return m && decodeURIComponent(m[1]);
      } catch (e) { return null; }
    };
    var cookieSet = value => {
      if (value != null && state !== 'granted') return;
      try {
        var c = COOKIE + '=' + (value == null ? '; Max-Age=0' : encodeURIComponent(value) + '; Max-Age=' + COOKIE_MAX_AGE) + '; Path=/; SameSite=Lax';
        if (cookieDomain) c += '; Domain=' + cookieDomain;
        if (loc.protocol === 'https:') c += '; Secure';
        document.cookie = c;
      } catch (e) { /* cookies disabled */ }
    };
    var validGuid = v => typeof v === 'string' && UUID_RE.test(v) ? v.toLowerCase() : null;

    // ---- identity: the GUID lives in local storage, never expires
    var guid = null;
    var previousGuid = null; // the replaced GUID, sent once on the next hit
    var userId = lsGet(UID_KEY); // identify(): in memory until consent, like the GUID

    var identify = id => {
      if (id == null || id === '') id = null;
      else if (!/^(string|number)$/.test(typeof id) || !(id = String(id)) || id.length > 256 || id.includes('\0')) return warn('identify(user_id): 1 to 256 characters, no NUL', id);
      userId = id;
      lsSet(UID_KEY, id);
    };

    // Read on every hit: an open page follows a storage clear or another tab's new GUID.
    var currentGuid = () => {
      var stored = validGuid(lsGet(GUID_KEY));
      if (stored) {
        if (stored !== guid) {
          guid = stored;
          cookieSet(guid);
        }
        return guid;
      }
      var cookie = validGuid(cookieGet());
      if (!storage) { // no local storage: the cookie is all there is, nothing was cleared
        if (!guid) guid = cookie || uuid();
        cookieSet(guid);
        return guid;
      }
      var old = cookie || guid; // storage works but lost the GUID: cleared (SPEC rule 12)
      guid = uuid();
      lsSet(GUID_KEY, guid);
      if (old && old !== guid) previousGuid = old;
      cookieSet(guid);
      return guid;
    };

    // ---- cross-domain: links to listed domains carry the GUID; the check (FNV-1a) ties it
    // to this browser and moment, so a shared link hands nothing over.
    var linkCheck = (g, t) => {
      var str = g + t + nav.userAgent + nav.language;
      var h = 0x811c9dc5;
      for (var i = 0; i < str.length; i++) h = Math.imul(h ^ str.charCodeAt(i), 16777619) >>> 0;
      return h.toString(36);
    };
    var withoutParam = search => {
      var kept = search.slice(1).split('&').filter(p => p && p.split('=')[0] !== LINK_PARAM);
      return kept.length ? '?' + kept.join('&') : '';
    };
    var listed = host => crossDomains.some(d => host === d || host.slice(-d.length - 1) === '.' + d);
    var decorate = (a, u) => {
      if (state !== 'granted') return;
      var g = currentGuid();
      var t = Math.floor(Date.now() / 1000).toString(36);
      var search = withoutParam(u.search);
      u.search = (search ? search + '&' : '?') + LINK_PARAM + '=' + g + '.' + t + '.' + linkCheck(g, t);
      a.href = u.href;
    };
    // An arriving parameter leaves the address bar at once (and so every hit).
    var linkGuid = (() => {
      var m = new RegExp('[?&]' + LINK_PARAM + '=([^&#]*)').exec(loc.search);
      if (!m) return null;
      try { history.replaceState(history.state, '', loc.pathname + withoutParam(loc.search) + loc.hash); } catch (e) { /* sandboxed */ }
      var p = decodeURIComponent(m[1]).split('.');
      var age = Date.now() / 1000 - parseInt(p[1], 36);
      if (p.length === 3 && validGuid(p[0]) && age > -60 && age <= LINK_TTL_S && p[2] === linkCheck(p[0], p[1])) return p[0].toLowerCase();
      warn('ignored an expired or foreign ' + LINK_PARAM + ' parameter');
      return null;
    })();
    var adopt = () => {
      if (!linkGuid) return;
      var old = validGuid(lsGet(GUID_KEY)) || validGuid(cookieGet());
      guid = linkGuid;
      lsSet(GUID_KEY, guid);
      cookieSet(guid);
      if (old && old !== guid) previousGuid = old;
      linkGuid = null;
    };

    // ---- hits
    var pageReferrer = ABSOLUTE_RE.test(document.referrer) ? clip(document.referrer, 4096) : '';
    var lastPageUrl = null;

    var buildHit = (type, url, referrer, title) => {
      var hit = {
        type,
        hit_id: uuid(),
        url: clip(scrub(url), 4096),
        referrer: ABSOLUTE_RE.test(referrer || '') ? clip(scrub(referrer), 4096) : '',
        created_at: now()
      };
      if (title) hit.title = clip(title, 2048);
      if (site) hit.site = clip(site, 253);
      return hit;
    };

    var cleanProperties = properties => {
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
      if (new Blob([json]).size > MAX_PROPERTIES) {
        warn('event properties exceed ' + MAX_PROPERTIES + ' bytes as JSON; sending none');
        return {};
      }
      return JSON.parse(json); // a copy: the page may change its object later
    };

    var pageview = options => {
      var o = options && typeof options === 'object' ? options : {};
      var url = o.url ? new URL(String(o.url), loc.href).href : loc.href;
      var referrer;
      if (o.referrer != null) referrer = String(o.referrer);
      else if (lastPageUrl && lastPageUrl !== url) referrer = lastPageUrl;
      else referrer = pageReferrer;
      var hit = buildHit('pageview', url, referrer, o.title != null ? o.title : document.title);
      pageReferrer = hit.referrer;
      lastPageUrl = url;
      return enqueue(hit);
    };

    var track = (name, properties, options) => {
      if (typeof name !== 'string' || name.length < 1 || name.length > 64) {
        warn('track(name, ...): name must be a string of 1 to 64 characters', name);
        return null;
      }
      if (pendingUrl) sendPending(); // the new page's view goes first
      var event = { name, properties: cleanProperties(properties) };
      var o = options && typeof options === 'object' ? options : {};
      if (o.module != null && o.module !== '') event.module = clip(o.module, 64);
      if (o.currency) event.value = o.value, event.currency = o.currency;
      var hit = buildHit('event', lastPageUrl || loc.href, pageReferrer, document.title);
      hit.event = event;
      return enqueue(hit);
    };

    // ---- single-page apps: a pageview when the router changes the URL
    // One pending view: a redirect counts once, and the site's own pageview() stands for it.
    var pendingUrl = null;
    var spaTimer = null;
    var pageKey = u => spa === 'hash' ? u : String(u).split('#')[0];
    var sendPending = () => {
      clearTimeout(spaTimer);
      if (pendingUrl && pageKey(pendingUrl) !== pageKey(lastPageUrl)) pageview({ url: pendingUrl });
      pendingUrl = null;
    };
    var navigated = safe(before => {
      var b = before && new URL(before);
      if (b && b.pathname === loc.pathname && (spa !== 'hash' || b.hash === loc.hash)) return;
      if (pageKey(loc.href) === pageKey(pendingUrl || lastPageUrl)) return;
      pendingUrl = loc.href;
      clearTimeout(spaTimer);
      spaTimer = setTimeout(safe(sendPending), SPA_DELAY_MS);
    });
    var hook = (method, pathOnly) => {
      var original = history[method];
      history[method] = function () {
        var before = loc.href;
        var result = original.apply(this, arguments); // its errors are the page's
        navigated(pathOnly ? before : null);
        return result;
      };
    };

    // ---- outbound links, downloads, cross-domain decoration
    var onLink = safe(e => {
      var a = e.target;
      while (a && !(a.tagName === 'A' && typeof a.href === 'string' && a.href)) a = a.parentNode;
      if (!a) return;
      var u = new URL(a.href);
      if (!HTTP_RE.test(u.protocol)) return;
      var other = u.hostname !== loc.hostname;
      if (other && listed(u.hostname)) return decorate(a, u);
      if (e.type === 'contextmenu' || (e.type === 'auxclick' && e.button !== 1)) return;
      var ext = (/\.([a-z0-9]+)$/i.exec(u.pathname) || [])[1];
      ext = ext && ext.toLowerCase();
      if (downloadExts.indexOf(ext) >= 0 || (downloadExts.length && a.hasAttribute('download'))) {
        track('file_download', { url: scrub(u.href), extension: ext || '' });
      } else if (other && outbound) {
        track('outbound_link', { url: scrub(u.href) });
      } else {
        return;
      }
      flush(true); // now, with keepalive: the request outlives the page
    });
    ['click', 'auxclick', 'contextmenu'].forEach(type => { document.addEventListener(type, onLink, true); });

    // ---- delivery: a bounded retry queue, mirrored in local storage
    // Entry: {hit, attempts, due, busy}; a retry keeps hit_id, renews sent_at.
    var queue = [];
    var waiting = []; // hits before consent: memory only
    var finished = {};
    var finishedCount = 0;
    var timer = null;
    var leaving = false; // after pagehide, fetches fail (keepalive ones still go)

    var readStored = () => {
      try {
        var stored = JSON.parse(lsGet(QUEUE_KEY) || '[]');
        return Array.isArray(stored) ? stored.filter(e => e && e.hit && e.hit.hit_id) : [];
      } catch (e) {
        return [];
      }
    };

    var persist = () => { // keeps what other tabs stored meanwhile
      if (!storage || state !== 'granted') return;
      var mine = {};
      queue.forEach(e => { mine[e.hit.hit_id] = true; });
      var all = readStored().filter(e => !mine[e.hit.hit_id] && !finished[e.hit.hit_id])
        .concat(queue.map(e => ({ hit: e.hit, attempts: e.attempts })));
      lsSet(QUEUE_KEY, all.length ? JSON.stringify(all.slice(-MAX_QUEUE)) : null);
      if (finishedCount > 1000) {
        finished = {};
        finishedCount = 0;
      }
    };

    var expired = entry => {
      var created = Date.parse(entry.hit.created_at);
      return entry.attempts >= MAX_ATTEMPTS || (created && Date.now() - created > MAX_AGE_MS);
    };

    var finish = entries => {
      entries.forEach(e => {
        finished[e.hit.hit_id] = true;
        finishedCount += 1;
        var i = queue.indexOf(e);
        if (i >= 0) queue.splice(i, 1);
      });
    };

    var enqueue = hit => {
      if (!sendable || state === 'denied') return null;
      if (state === 'pending') {
        if (waiting.push(hit) > MAX_QUEUE) waiting.shift();
        return hit.hit_id;
      }
      hit.guid = currentGuid();
      var u = storage ? lsGet(UID_KEY) : userId; // what the last identify() of any tab said
      if (u) hit.user_id = u;
      if (previousGuid) {
        hit.previous_guid = previousGuid;
        previousGuid = null;
      }
      queue.push({ hit, attempts: 0, due: 0, busy: false });
      if (queue.length > MAX_QUEUE) {
        var dropped = queue.splice(0, queue.length - MAX_QUEUE);
        finish(dropped);
        warn('retry queue full: dropped ' + dropped.length + ' oldest hit(s)');
      }
      persist();
      schedule(0);
      return hit.hit_id;
    };

    // -> {done} (delivered, or refused for good) or {done: false, after: ms}
    var post = (body, useBeacon) => {
      try {
        if (useBeacon && nav.sendBeacon(endpoint, body)) return Promise.resolve({ done: true });
      } catch (e) { /* fall back to fetch */ }
      return window.fetch(endpoint, {
        method: 'POST',
        body, // a string: text/plain, no CORS preflight
        keepalive: body.length <= MAX_BODY,
        credentials: 'omit',
        mode: 'cors'
      }).then(response => {
        var status = response.status;
        if (status >= 200 && status < 300) {
          response.json().then(b => {
            if (b && b.rejected && b.rejected.length) warn('the edge refused ' + b.rejected.length + ' hit(s)', b.rejected);
          }, () => { /* unreadable: fine */ });
          return { done: true };
        }
        if (status === 429 || status === 0 || status >= 500) {
          var after = parseFloat(response.headers.get('Retry-After') || '');
          return { done: false, after: isFinite(after) ? after * 1000 : 0 };
        }
        warn('the edge refused the hits: HTTP ' + status + ' (not retried)');
        return { done: true };
      }, () => ({ done: false }));
    };

    var deliver = entries => {
      var stamp = now();
      entries.forEach(e => {
        e.busy = true;
        e.hit.sent_at = stamp;
      });
      var hits = entries.map(e => e.hit);
      var sending;
      try {
        sending = post(JSON.stringify(hits.length === 1 ? hits[0] : hits), transport === 'beacon');
      } catch (e) {
        sending = Promise.resolve({ done: false });
      }
      return sending.then(result => {
        if (leaving && !result.done) return; // stored for the next page
        entries.forEach(e => { e.busy = false; });
        if (result.done) {
          finish(entries);
        } else {
          var t = Date.now();
          entries.forEach(e => {
            e.attempts += 1;
            var backoff = Math.min(MAX_DELAY_MS, 1000 * Math.pow(2, e.attempts - 1));
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
      }).catch(e => {
        entries.forEach(x => { x.busy = false; });
        warn('internal error while sending', e);
      });
    };

    var flush = force => {
      var t = Date.now();
      var ready = queue.filter(e => !e.busy && (force || e.due <= t));
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

    var schedule = delay => {
      clearTimeout(timer);
      timer = null;
      var next = delay;
      if (next == null) {
        var idle = queue.filter(e => !e.busy);
        if (!idle.length) return;
        next = Math.max(0, Math.min(...idle.map(e => e.due)) - Date.now());
      }
      timer = setTimeout(safe(() => { timer = null; flush(false); }), next);
    };

    // ---- consent
    // Tracking allowed: what earlier pages left unsent, then what this page made meanwhile.
    var start = () => {
      state = 'granted';
      try {
        storage = window.localStorage;
        storage.setItem(OPTOUT_KEY, '0'); // some browsers read but refuse writes
        storage.removeItem(OPTOUT_KEY);
      } catch (e) {
        storage = null;
      }
      adopt();
      cookieSet(currentGuid());
      lsSet(UID_KEY, userId);
      readStored().forEach(e => {
        if (queue.some(q => q.hit.hit_id === e.hit.hit_id)) return;
        var entry = { hit: e.hit, attempts: e.attempts | 0, due: 0, busy: false };
        if (!expired(entry)) queue.push(entry);
        else finish([entry]);
      });
      waiting.splice(0).forEach(enqueue);
      if (queue.length) schedule(0);
    };
    // Not allowed: forget this device. The opt-out is remembered unless consent is required.
    var stop = remember => {
      state = 'denied';
      [GUID_KEY, QUEUE_KEY, CONSENT_KEY, UID_KEY].forEach(k => { lsSet(k, null); });
      cookieSet(null);
      if (remember && !consentRequired) lsSet(OPTOUT_KEY, '1', true);
      guid = previousGuid = linkGuid = userId = null;
      queue = [];
      waiting = [];
      clearTimeout(timer);
    };
    var consent = given => {
      if (!given) return stop(true);
      if (signal) return warn('consent(true) ignored: the browser sends GPC or DNT');
      lsSet(OPTOUT_KEY, null);
      if (consentRequired) lsSet(CONSENT_KEY, 'granted', true);
      if (state !== 'granted') start();
    };

    // Leaving: everything goes now; a hit cut off stays stored for the next page.
    var onHide = safe(() => {
      if (pendingUrl) sendPending();
      persist();
      if (queue.length) flush(true);
    });
    window.addEventListener('pagehide', () => { leaving = true; onHide(); });
    window.addEventListener('pageshow', () => { leaving = false; });
    document.addEventListener('visibilitychange', safe(() => {
      if (document.visibilityState === 'hidden') onHide();
    }));
    window.addEventListener('online', safe(() => { flush(true); }));

    // ---- the public API (replaces the snippet's array)
    var api = {
      __touchstream: true,
      version: VERSION,
      endpoint,
      track: safe(track, null),
      pageview: safe(pageview, null),
      getGuid: safe(() => state === 'granted' ? currentGuid() : null, null),
      flush: safe(() => { flush(true); }),
      consent: safe(consent),
      optOut: safe(() => { stop(true); }),
      identify: safe(identify),
      push: null
    };
    var run = item => {
      if (typeof item === 'function') {
        item(api);
      } else if (item && METHODS.indexOf(item[0]) >= 0) {
        api[item[0]].apply(api, [].slice.call(item, 1));
      } else {
        warn('unknown call: expected [' + METHODS.join('|') + ', ...] or a function', item);
      }
    };
    api.push = safe(function () {
      for (var i = 0; i < arguments.length; i++) {
        try { run(arguments[i]); } catch (e) { warn('a queued call failed', e); }
      }
      return 0;
    }, 0);
    window[NAME] = api;

    if (signal) stop(false);
    else if (lsGet(OPTOUT_KEY)) state = 'denied';
    else if (consentRequired && lsGet(CONSENT_KEY) !== 'granted') state = 'pending';
    else start();
    if (spa !== 'off') {
      hook('pushState');
      hook('replaceState', true);
      window.addEventListener('popstate', () => { navigated(); });
      if (spa === 'hash') window.addEventListener('hashchange', () => { navigated(); });
    }
    if (autoPageview) api.pageview();
    if (previous && typeof previous.length === 'number') { // the snippet's calls, in order
      for (var i = 0; i < previous.length; i++) api.push(previous[i]);
    }
  } catch (e) {
    try { console.warn('[touchstream] failed to start', e); } catch (e2) { /* give up quietly */ }
  }
}(window, document));
