// kpi-analytics.js: send the kpi-exporter event vocabulary from a web page as OTLP/HTTP JSON.
//
// No build step and no dependencies: an ES module using fetch(). Events are queued and sent
// in batches (every few seconds, when the batch is full, and when the page is hidden). A
// batch that cannot be delivered (network error, exporter down, 429 or 5xx) goes back to the
// front of the queue and is retried with backoff; the queue is bounded, oldest dropped first.
//
// Web analytics (docs/browser.md): every event carries the browser's user agent (a resource
// attribute); every page view carries the page's referrer, its URL without query or fragment,
// the campaign parameters of its query (utm_*, gclid, msclkid, ref, source: nothing else of
// the query leaves the page) and the screen class (mobile, tablet, desktop). A session ends
// after 30 minutes without events (sessionTimeoutMs), as in Plausible and PostHog; a new one
// then starts, and the old one's end is sent as app.session.end.
//
//   import { createAnalytics } from './kpi-analytics.js';
//   const analytics = createAnalytics({ endpoint: 'https://otlp.example.com', serviceName: 'web' });
//   analytics.identify({ userId: 'u-123' });
//   analytics.trackPageView('/workouts/:id');
//   analytics.trackFeature('workout', 'create');
//
// The exporter must list this page's origin in server.cors.allowed_origins (see docs/browser.md).

const SCOPE = { name: 'kpi-analytics-browser', version: '0.2.0' };
const SESSION_KEY = 'kpi-analytics.session';
// the query parameters that say where a visit came from; every other one stays in the page
const CAMPAIGN_PARAMS = ['utm_source', 'utm_medium', 'utm_campaign', 'utm_content', 'utm_term',
  'gclid', 'msclkid', 'ref', 'source'];
const RETRYABLE = new Set([408, 429, 500, 502, 503, 504]);
// keepalive requests (used while the page is being hidden) may carry at most 64 KiB
const KEEPALIVE_LIMIT = 60 * 1024;

function anyValue(v) {
  if (typeof v === 'string') return { stringValue: v };
  if (typeof v === 'boolean') return { boolValue: v };
  if (typeof v === 'number') {
    // OTLP JSON carries 64-bit integers as decimal strings
    return Number.isInteger(v) ? { intValue: String(v) } : { doubleValue: v };
  }
  if (Array.isArray(v)) return { arrayValue: { values: v.map(anyValue) } };
  return { stringValue: String(v) };
}

function keyValues(obj) {
  const out = [];
  for (const [key, value] of Object.entries(obj)) {
    if (value !== undefined && value !== null) out.push({ key, value: anyValue(value) });
  }
  return out;
}

function nowUnixNano() {
  // Date.now() is in ms; nanoseconds exceed Number's safe integers, so build the string
  return `${Date.now()}000000`;
}

function randomId() {
  if (globalThis.crypto && crypto.randomUUID) return crypto.randomUUID().replaceAll('-', '');
  return Array.from({ length: 32 }, () => Math.floor(Math.random() * 16).toString(16)).join('');
}

// One session per tab (it survives reloads, other tabs have their own), with the time of its
// last event: { id, last } in sessionStorage, or in memory where storage is refused.
let memorySession = null;

function loadSession() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(SESSION_KEY) || 'null');
    if (saved && typeof saved.id === 'string' && typeof saved.last === 'number') return saved;
  } catch { /* private mode, or an old format */ }
  return memorySession;
}

function saveSession(session) {
  memorySession = session;
  try { sessionStorage.setItem(SESSION_KEY, JSON.stringify(session)); } catch { /* private mode */ }
}

function screenClass() {
  // Plausible's breakpoints, by the window's CSS width
  const w = typeof innerWidth === 'number' ? innerWidth : 1024;
  return w < 576 ? 'mobile' : w < 992 ? 'tablet' : 'desktop';
}

function pageAttributes() {
  if (typeof location === 'undefined') return {};
  const params = new URLSearchParams(location.search);
  const kept = new URLSearchParams();
  for (const key of CAMPAIGN_PARAMS) {
    if (params.has(key)) kept.set(key, params.get(key));
  }
  const query = kept.toString();
  return {
    'url.full': location.origin + location.pathname,
    'url.query': query || undefined,
    'app.referrer': (typeof document !== 'undefined' && document.referrer) || undefined,
    'app.screen.class': screenClass(),
  };
}

/**
 * Creates an analytics client.
 * @param {object} options
 * @param {string} [options.endpoint='http://localhost:4318'] OTLP/HTTP base URL of the exporter
 * @param {string} [options.serviceName='web'] service.name resource attribute
 * @param {object} [options.resourceAttributes] more resource attributes
 * @param {object} [options.headers] extra request headers (e.g. Authorization)
 * @param {number} [options.flushIntervalMs=5000] how often to send queued events
 * @param {number} [options.maxBatch=100] events per request
 * @param {number} [options.maxQueue=1000] events held while the exporter is unreachable
 * @param {number} [options.sessionTimeoutMs=1800000] inactivity after which a new session starts
 */
export function createAnalytics(options = {}) {
  const endpoint = (options.endpoint || 'http://localhost:4318').replace(/\/+$/, '') + '/v1/logs';
  const resource = {
    attributes: keyValues({
      'service.name': options.serviceName || 'web',
      'telemetry.sdk.name': SCOPE.name,
      'telemetry.sdk.language': 'webjs',
      // on every event, so that the exporter tells bots from people whatever they send
      'user_agent.original': typeof navigator !== 'undefined' ? navigator.userAgent : undefined,
      ...(options.resourceAttributes || {}),
    }),
  };
  const headers = { 'Content-Type': 'application/json', ...(options.headers || {}) };
  const flushIntervalMs = options.flushIntervalMs ?? 5000;
  const maxBatch = options.maxBatch ?? 100;
  const maxQueue = options.maxQueue ?? 1000;
  const sessionTimeoutMs = options.sessionTimeoutMs ?? 30 * 60 * 1000;

  let queue = [];
  let session = loadSession();
  let identity = { userId: null, sessionId: session ? session.id : null };
  let sending = null;
  let backoffUntil = 0;
  let backoffMs = 0;
  const stats = { queued: 0, sent: 0, dropped: 0, rejected: 0, failedRequests: 0, lastStatus: null, lastError: null };

  function enqueue(records, front) {
    queue = front ? records.concat(queue) : queue.concat(records);
    if (queue.length > maxQueue) {
      const over = queue.length - maxQueue;
      queue.splice(0, over); // oldest first
      stats.dropped += over;
    }
    stats.queued = queue.length;
  }

  function body(records) {
    return JSON.stringify({ resourceLogs: [{ resource, scopeLogs: [{ scope: SCOPE, logRecords: records }] }] });
  }

  async function sendBatch(records, keepalive) {
    let response;
    try {
      response = await fetch(endpoint, { method: 'POST', headers, body: body(records), keepalive, mode: 'cors' });
    } catch (err) {
      // network error, exporter down, or CORS refused: keep the events for a retry
      stats.failedRequests += 1;
      stats.lastError = String(err && err.message ? err.message : err);
      stats.lastStatus = null;
      return 'retry';
    }
    stats.lastStatus = response.status;
    if (response.ok) {
      stats.sent += records.length;
      stats.lastError = null;
      return 'ok';
    }
    stats.failedRequests += 1;
    stats.lastError = `HTTP ${response.status}: ${await response.text().catch(() => '')}`;
    if (RETRYABLE.has(response.status)) return 'retry';
    stats.rejected += records.length; // the exporter will never accept these as they are
    return 'drop';
  }

  async function drain(keepalive) {
    while (queue.length) {
      let n = Math.min(maxBatch, queue.length);
      if (keepalive) {
        while (n > 1 && body(queue.slice(0, n)).length > KEEPALIVE_LIMIT) n = Math.ceil(n / 2);
      }
      const records = queue.splice(0, n);
      stats.queued = queue.length;
      const outcome = await sendBatch(records, keepalive);
      if (outcome === 'retry') {
        enqueue(records, true);
        backoffMs = Math.min(backoffMs ? backoffMs * 2 : 1000, 60000);
        backoffUntil = Date.now() + backoffMs;
        return false;
      }
      backoffMs = 0;
    }
    return true;
  }

  /** Sends everything queued now; resolves to true when the queue is empty afterwards. */
  function flush({ keepalive = false } = {}) {
    if (!sending) {
      sending = drain(keepalive).finally(() => { sending = null; });
    }
    return sending;
  }

  function record(eventName, attrs) {
    const t = nowUnixNano();
    return { timeUnixNano: t, observedTimeUnixNano: t, eventName, attributes: keyValues(attrs) };
  }

  function endSession(reason) {
    // the end of the current session, sent as its own event (the exporter closes the visit)
    if (!identity.sessionId) return;
    const attrs = { 'session.id': identity.sessionId, 'app.session.end_reason': reason };
    if (identity.userId) attrs['user.id'] = identity.userId;
    enqueue([record('app.session.end', attrs)], false);
  }

  function startSession(now) {
    identity.sessionId = randomId();
    session = { id: identity.sessionId, last: now };
    saveSession(session);
  }

  function touchSession() {
    // a session idle for the timeout is over: it ends, and a new one starts
    const now = Date.now();
    if (!identity.sessionId) {
      startSession(now);
    } else if (session && session.id === identity.sessionId && now - session.last > sessionTimeoutMs) {
      endSession('timeout');
      startSession(now);
    } else {
      session = { id: identity.sessionId, last: now };
      saveSession(session);
    }
  }

  function emit(eventName, attributes) {
    touchSession();
    const attrs = { ...attributes };
    if (identity.userId) attrs['user.id'] = identity.userId;
    attrs['session.id'] = identity.sessionId;
    enqueue([record(eventName, attrs)], false);
    if (queue.length >= maxBatch && Date.now() >= backoffUntil) flush();
  }

  const timer = setInterval(() => {
    if (queue.length && Date.now() >= backoffUntil) flush();
  }, flushIntervalMs);

  // the last events of a page visit: send them while the page can still send
  const onHide = () => { if (queue.length) flush({ keepalive: true }); };
  if (typeof document !== 'undefined') {
    document.addEventListener('visibilitychange', () => { if (document.visibilityState === 'hidden') onHide(); });
    addEventListener('pagehide', onHide);
  }

  return {
    /** Any event of the vocabulary (or your own): name plus attributes. */
    track(eventName, attributes = {}) { emit(eventName, attributes); },
    /** app.page_view for a route template such as '/workouts/:id' (never the concrete path),
     * with the page's referrer, URL, campaign parameters and screen class. */
    trackPageView(route, attributes = {}) {
      emit('app.page_view', { ...pageAttributes(), ...attributes, 'url.path': route });
    },
    /** app.feature_used: feature (workout, nutrition, ...) and action (view, create, ...). */
    trackFeature(feature, action, attributes = {}) {
      emit('app.feature_used', { ...attributes, 'app.feature': feature, 'app.action': action });
    },
    /** app.conversion of a type (purchase, subscribe, ...) with optional value and currency. */
    trackConversion(type, value, currency, attributes = {}) {
      const attrs = { ...attributes, 'app.conversion.type': type };
      if (value !== undefined && value !== null) attrs['app.conversion.value'] = Number(value);
      if (currency) attrs['app.conversion.currency'] = String(currency).toUpperCase();
      emit('app.conversion', attrs);
    },
    /** Sets user.id (e.g. after login) and, optionally, replaces the tab's session.id. */
    identify({ userId, sessionId } = {}) {
      if (userId !== undefined) identity.userId = userId;
      if (sessionId !== undefined) {
        identity.sessionId = sessionId;
        session = { id: sessionId, last: Date.now() };
        saveSession(session);
      }
    },
    /** Ends the current session now (app.session.end); the next event starts a new one. */
    endSession() {
      endSession('ended');
      identity.sessionId = null;
      session = null;
      try { sessionStorage.removeItem(SESSION_KEY); } catch { /* private mode */ }
      memorySession = null;
    },
    /** Forgets the user (e.g. on logout): the session ends and a new one starts. */
    reset() {
      endSession('reset');
      identity = { userId: null, sessionId: null };
      startSession(Date.now());
    },
    flush,
    /** Stops the timer; call flush() first to send what is queued. */
    close() { clearInterval(timer); },
    stats,
    get identity() { return { ...identity }; },
  };
}
