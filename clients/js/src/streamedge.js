// @streamedge/client — the reference JavaScript client of a streamedge node.
//
// One dependency-free ES2022 module that runs unchanged in browsers and in Node 20+
// (Node 20 needs `--experimental-websocket`, or pass `WebSocketImpl`). It owns:
//
//   errors        StreamedgeError (code, status, detail, retryAfter) for REST and chat
//   Emitter       on/off/once + addEventListener/removeEventListener
//   HTTP          authorised fetch, problem+json errors, one token refresh on 401
//   Client        REST helpers: streams, sessions, RTC tokens (renewed before expiry),
//                 history, moderation, viewers, exports; connect/publish/play shortcuts
//   Outbox        unsent chat messages, persisted in a Storage (localStorage by default)
//   Connection    the stream WebSocket: resume by seq, exactly-once ordered messages,
//                 idempotent sends, reconnects with backoff and full jitter
//   media         WHIP publish / WHEP play over RTCPeerConnection (non-trickle)
//
// The wire contracts are docs/protocol.md (WebSocket) and docs/api.md (HTTP) of the node.

export const SUBPROTOCOL = 'streamedge.v1';
const TOKEN_SUBPROTOCOL_PREFIX = 'access_token.';

/** Chat error codes after which the same send is retried (same `client_msg_id`). */
const RETRYABLE_SEND_CODES = new Set(['unavailable', 'persistence_backlog']);

const DEFAULT_BACKOFF = Object.freeze({ baseMs: 500, capMs: 30_000, resetAfterMs: 10_000 });

// ---------------------------------------------------------------------------------- errors

/** Every error this library raises: `code` is the node's stable code (or one of ours). */
export class StreamedgeError extends Error {
  constructor(code, message, { status, detail, retryAfter, body, clientMsgId, cause } = {}) {
    super(message || code, cause === undefined ? undefined : { cause });
    this.name = 'StreamedgeError';
    this.code = code;
    this.status = status;
    this.detail = detail ?? message;
    this.retryAfter = retryAfter;
    this.body = body;
    this.clientMsgId = clientMsgId;
  }
}

/** An HTTP error answer of the node (RFC 9457 problem+json). */
export class ApiError extends StreamedgeError {
  constructor(status, problem, retryAfter) {
    const code = problem?.code ?? `http_${status}`;
    const detail = problem?.detail ?? problem?.title ?? `HTTP ${status}`;
    super(code, `${status} ${code}: ${detail}`, { status, detail, retryAfter, body: problem });
    this.name = 'ApiError';
  }

  static async from(res) {
    let problem = null;
    const type = res.headers.get('content-type') ?? '';
    try {
      if (type.includes('json')) problem = await res.json();
      else await res.arrayBuffer();
    } catch {
      problem = null;
    }
    return new ApiError(res.status, problem, parseRetryAfter(res.headers.get('retry-after')));
  }
}

/** Seconds from a `Retry-After` header (delta-seconds or an HTTP date), or undefined. */
function parseRetryAfter(value) {
  if (value == null || value === '') return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim());
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, Math.ceil((at - Date.now()) / 1000));
}

// ------------------------------------------------------------------------------- utilities

/** Exponential backoff with full jitter: uniform in [0, min(cap, base·2^attempt)]. */
export function backoffDelay(attempt, { baseMs, capMs } = DEFAULT_BACKOFF) {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.floor(Math.random() * ceiling);
}

/** A `client_msg_id`: 1–64 characters of `A-Z a-z 0-9 - _ . :` (a UUID here). */
export function newClientMsgId() {
  const c = globalThis.crypto;
  // randomUUID exists only in secure contexts (https, localhost); getRandomValues everywhere.
  if (typeof c?.randomUUID === 'function') return c.randomUUID();
  const bytes = new Uint8Array(16);
  if (typeof c?.getRandomValues === 'function') c.getRandomValues(bytes);
  else for (let i = 0; i < 16; i++) bytes[i] = Math.floor(Math.random() * 256);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** The `sub` of a JWT (not verified: only used to keep users' outboxes apart). */
function tokenSubject(token) {
  try {
    const part = String(token).split('.')[1];
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/');
    const json = decodeURIComponent(
      Array.from(atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4)), (ch) =>
        `%${ch.charCodeAt(0).toString(16).padStart(2, '0')}`,
      ).join(''),
    );
    const sub = JSON.parse(json).sub;
    return typeof sub === 'string' && sub ? sub : 'anonymous';
  } catch {
    return 'anonymous';
  }
}

function defaultBaseUrl() {
  const origin = globalThis.location?.origin;
  if (origin && origin !== 'null') return origin;
  throw new StreamedgeError('invalid_options', 'baseUrl is required outside a browser page');
}

function trimBase(baseUrl) {
  return String(baseUrl ?? defaultBaseUrl()).replace(/\/+$/, '');
}

function defaultStorage() {
  try {
    const s = globalThis.localStorage;
    if (!s) return null;
    const probe = '__streamedge_probe__';
    s.setItem(probe, '1');
    s.removeItem(probe);
    return s;
  } catch {
    return null; // disabled or private-mode storage: keep the outbox in memory
  }
}

function report(err) {
  if (typeof globalThis.reportError === 'function') globalThis.reportError(err);
  else console.error(err);
}

// --------------------------------------------------------------------------------- Emitter

/** A small event emitter; listeners receive the event's payload. */
export class Emitter {
  #listeners = new Map();

  /** Adds a listener; returns a function that removes it. */
  on(type, fn) {
    if (!this.#listeners.has(type)) this.#listeners.set(type, new Set());
    this.#listeners.get(type).add(fn);
    return () => this.off(type, fn);
  }

  off(type, fn) {
    this.#listeners.get(type)?.delete(fn);
  }

  once(type, fn) {
    const off = this.on(type, (v) => {
      off();
      fn(v);
    });
    return off;
  }

  addEventListener(type, fn) {
    this.on(type, fn);
  }

  removeEventListener(type, fn) {
    this.off(type, fn);
  }

  emit(type, value) {
    for (const fn of [...(this.#listeners.get(type) ?? [])]) {
      try {
        fn(value);
      } catch (e) {
        report(e); // a listener's bug must not break the connection
      }
    }
  }
}

// -------------------------------------------------------------------------------- HTTP core

/** The token source and fetch shared by the REST helpers and the connections. */
class Http {
  #getToken;
  #refreshing = null;

  constructor({ baseUrl, getToken, fetch: fetchImpl }) {
    if (getToken == null) throw new StreamedgeError('invalid_options', 'getToken is required');
    this.baseUrl = trimBase(baseUrl);
    this.#getToken = typeof getToken === 'function' ? getToken : () => getToken;
    this.fetch = fetchImpl ?? globalThis.fetch?.bind(globalThis);
  }

  /** The access token; `force` asks the app for a new one (the node refused the last). */
  async token(force = false) {
    if (!force) return this.#getToken({ force: false });
    // One refresh at a time, shared by every caller that saw the 401.
    this.#refreshing ??= Promise.resolve()
      .then(() => this.#getToken({ force: true }))
      .finally(() => {
        this.#refreshing = null;
      });
    return this.#refreshing;
  }

  url(path, query) {
    const u = new URL(/^[a-z][a-z0-9+.-]*:/i.test(path) ? path : this.baseUrl + path);
    for (const [k, v] of Object.entries(query ?? {})) {
      if (v !== undefined && v !== null) u.searchParams.set(k, String(v));
    }
    return u.toString();
  }

  /** One authorised request; a 401 gets one retry with a refreshed token. */
  async request(method, path, { query, json, body, contentType, token } = {}) {
    let force = false;
    for (;;) {
      const bearer = token ?? (await this.token(force));
      const headers = { Authorization: `Bearer ${bearer}` };
      let payload = body;
      if (json !== undefined) {
        headers['Content-Type'] = 'application/json';
        payload = JSON.stringify(json);
      } else if (contentType) {
        headers['Content-Type'] = contentType;
      }
      let res;
      try {
        res = await this.fetch(this.url(path, query), { method, headers, body: payload });
      } catch (e) {
        throw new StreamedgeError('network_error', `${method} ${path}: ${e?.message ?? e}`, { cause: e });
      }
      if (res.status === 401 && !force && token === undefined) {
        await res.arrayBuffer().catch(() => {});
        force = true;
        continue;
      }
      if (!res.ok) throw await ApiError.from(res);
      return res;
    }
  }

  async json(method, path, opts) {
    const res = await this.request(method, path, opts);
    if (res.status === 204) return null;
    const text = await res.text();
    return text ? JSON.parse(text) : null;
  }
}

const streamPath = (id) => `/v1/streams/${encodeURIComponent(id)}`;

// ---------------------------------------------------------------------------------- Client

/**
 * The REST helpers, and the shortcuts that share its base URL and token source:
 * `connect`, `publish`, `play`.
 */
export class Client {
  #http;
  #defaults;
  #rtc = new Map(); // stream id → { value, renewAt, expiresAt } | { pending }

  constructor(options = {}) {
    this.#http = new Http(options);
    this.#defaults = options;
  }

  get baseUrl() {
    return this.#http.baseUrl;
  }

  // Streams ------------------------------------------------------------------------------

  /** `POST /v1/streams` (sellers). A client-chosen `id` makes retries safe. */
  createStream({ title, id } = {}) {
    return this.#http.json('POST', '/v1/streams', { json: id ? { title, id } : { title } });
  }

  getStream(streamId) {
    return this.#http.json('GET', streamPath(streamId));
  }

  /** One page: `{streams, next_cursor?}`. */
  listStreams({ state, limit, cursor } = {}) {
    return this.#http.json('GET', '/v1/streams', { query: { state, limit, cursor } });
  }

  /** Every stream (optionally of one state), newest first, following the cursors. */
  async *streams({ state, limit } = {}) {
    let cursor;
    do {
      const page = await this.listStreams({ state, limit, cursor });
      yield* page.streams;
      cursor = page.next_cursor;
    } while (cursor);
  }

  /** Live streams, following the cursors. */
  liveStreams({ limit } = {}) {
    return this.streams({ state: 'live', limit });
  }

  // Sessions -----------------------------------------------------------------------------

  /** `start`, `pause`, `resume`, `end` or `heartbeat` → `{stream, transition?}`. */
  sessionCommand(streamId, action) {
    return this.#http.json('POST', `${streamPath(streamId)}/session/${encodeURIComponent(action)}`);
  }

  startSession(streamId) {
    return this.sessionCommand(streamId, 'start');
  }

  pauseSession(streamId) {
    return this.sessionCommand(streamId, 'pause');
  }

  resumeSession(streamId) {
    return this.sessionCommand(streamId, 'resume');
  }

  endSession(streamId) {
    return this.sessionCommand(streamId, 'end');
  }

  heartbeat(streamId) {
    return this.sessionCommand(streamId, 'heartbeat');
  }

  getSession(streamId, sessionId) {
    return this.#http.json('GET', `${streamPath(streamId)}/sessions/${encodeURIComponent(sessionId)}`);
  }

  /** The session's summary and transcript: an object for `json`, text for `csv`. */
  async exportSession(streamId, sessionId, { format = 'json' } = {}) {
    const path = `${streamPath(streamId)}/sessions/${encodeURIComponent(sessionId)}/export`;
    const res = await this.#http.request('GET', path, { query: { format } });
    return format === 'csv' ? res.text() : res.json();
  }

  // RTC tokens ---------------------------------------------------------------------------

  /**
   * The stream's RTC token (`POST …/rtc-token`), cached and fetched again once it is
   * within `renewAheadMs` of expiring (default: a fifth of its lifetime, at most a minute).
   * The answer's `expires_at` (and `media_token_expires_at`) are the node's clock; a
   * client clock more than 2 s off (seen from the `Date` header) is corrected for.
   */
  async rtcToken(streamId, { force = false, renewAheadMs } = {}) {
    const cached = this.#rtc.get(streamId);
    if (!force && cached?.value && Date.now() < cached.renewAt) return cached.value;
    if (!force && cached?.pending) return cached.pending;
    const pending = (async () => {
      const res = await this.#http.request('POST', `${streamPath(streamId)}/rtc-token`);
      const value = await res.json();
      const now = Date.now();
      const serverNow = Date.parse(res.headers.get('date') ?? '');
      const skew = Number.isNaN(serverNow) || Math.abs(serverNow - now) < 2000 ? 0 : serverNow - now;
      const expiries = [value.expires_at, value.privilege_expires_at, value.media_token_expires_at]
        .filter(Boolean)
        .map((t) => Date.parse(t) - skew)
        .filter((t) => !Number.isNaN(t));
      const expiresAt = expiries.length ? Math.min(...expiries) : now + 3_600_000;
      const lifetime = Math.max(0, expiresAt - now);
      const ahead = renewAheadMs ?? Math.min(60_000, lifetime / 5);
      this.#rtc.set(streamId, { value, expiresAt, renewAt: expiresAt - ahead });
      return value;
    })();
    this.#rtc.set(streamId, { ...cached, pending });
    try {
      return await pending;
    } catch (e) {
      if (this.#rtc.get(streamId)?.pending === pending) this.#rtc.delete(streamId);
      throw e;
    }
  }

  /**
   * Keeps a stream's RTC token fresh: `onToken(token)` now and again before each expiry
   * (e.g. `agoraClient.renewToken(t.token)`). Failures go to `onError` and are retried with
   * backoff, except refusals that will not change (banned, ended, not found).
   * Returns `{stop()}`.
   */
  keepRtcToken(streamId, onToken, { onError, renewAheadMs, backoff } = {}) {
    let stopped = false;
    let timer = null;
    let failures = 0;
    const schedule = (ms, force) => {
      if (!stopped) timer = setTimeout(() => run(force), Math.max(0, ms));
    };
    const run = async (force) => {
      try {
        const token = await this.rtcToken(streamId, { force, renewAheadMs });
        if (stopped) return;
        failures = 0;
        onToken(token);
        schedule(this.#rtc.get(streamId).renewAt - Date.now(), true);
      } catch (e) {
        if (stopped) return;
        onError?.(e);
        const permanent = e.status >= 400 && e.status < 500 && e.status !== 429 && e.status !== 401;
        if (permanent) return;
        const delay = Math.max(backoffDelay(failures++, { ...DEFAULT_BACKOFF, ...backoff }), (e.retryAfter ?? 0) * 1000);
        schedule(delay, true);
      }
    };
    run(false);
    return {
      stop() {
        stopped = true;
        clearTimeout(timer);
      },
    };
  }

  // Chat history and moderation -----------------------------------------------------------

  /** One history page, newest first: `{messages, next_before_seq?}`. */
  messages(streamId, { beforeSeq, limit } = {}) {
    return this.#http.json('GET', `${streamPath(streamId)}/messages`, {
      query: { before_seq: beforeSeq, limit },
    });
  }

  /** Pages of history, newest first, until its start. */
  async *history(streamId, { beforeSeq, limit } = {}) {
    let before = beforeSeq;
    for (;;) {
      const page = await this.messages(streamId, { beforeSeq: before, limit });
      yield page.messages;
      if (page.next_before_seq == null) return;
      before = page.next_before_seq;
    }
  }

  async deleteMessage(streamId, seq) {
    await this.#http.request('DELETE', `${streamPath(streamId)}/messages/${encodeURIComponent(seq)}`);
  }

  /** A ban until lifted, or a timeout with `durationSecs`: `{user_id, expires_in_secs?}`. */
  ban(streamId, userId, { durationSecs } = {}) {
    const path = `${streamPath(streamId)}/bans/${encodeURIComponent(userId)}`;
    return durationSecs == null
      ? this.#http.json('PUT', path)
      : this.#http.json('PUT', path, { json: { duration_secs: durationSecs } });
  }

  timeout(streamId, userId, durationSecs) {
    return this.ban(streamId, userId, { durationSecs });
  }

  async unban(streamId, userId) {
    await this.#http.request('DELETE', `${streamPath(streamId)}/bans/${encodeURIComponent(userId)}`);
  }

  /** `PUT …/chat-settings`, e.g. `{slow_mode_secs: 10}`. */
  chatSettings(streamId, settings) {
    return this.#http.json('PUT', `${streamPath(streamId)}/chat-settings`, { json: settings });
  }

  /** Slow mode: one message per `secs` per user; 0 turns it off. */
  setSlowMode(streamId, secs) {
    return this.chatSettings(streamId, { slow_mode_secs: secs });
  }

  /** Who is watching (the seller): `{viewers, next_cursor?}`. */
  viewers(streamId, { limit, cursor } = {}) {
    return this.#http.json('GET', `${streamPath(streamId)}/viewers`, { query: { limit, cursor } });
  }

  // Shortcuts ----------------------------------------------------------------------------

  /** The stream WebSocket, with this client's base URL and tokens. */
  connect(streamId, options = {}) {
    return new Connection(streamId, { ...this.#defaults, ...options, http: this.#http, client: this });
  }

  publish(streamId, mediaStream, options = {}) {
    return publishWhip(this.#http, streamId, mediaStream, options);
  }

  play(streamId, videoElement, options = {}) {
    return playWhep(this.#http, streamId, videoElement, options);
  }
}

/** `createClient({baseUrl, getToken, fetch?})`: the REST helpers. */
export function createClient(options) {
  return new Client(options);
}

// ---------------------------------------------------------------------------------- Outbox

/**
 * Chat messages not acknowledged yet, persisted as JSON under one Storage key per stream
 * and user, so a reload (a new Connection with the same storage) sends them again with
 * the same `client_msg_id`. Every change re-reads the key, so two instances sharing it
 * (tabs) add and remove their own entries without dropping each other's.
 */
class Outbox {
  constructor(storage, key) {
    this.storage = storage;
    this.key = key;
  }

  read() {
    if (!this.storage) return [];
    try {
      const items = JSON.parse(this.storage.getItem(this.key) ?? '[]');
      return Array.isArray(items) ? items.filter((i) => i && typeof i.id === 'string') : [];
    } catch {
      return [];
    }
  }

  #write(items) {
    if (!this.storage) return;
    try {
      if (items.length) this.storage.setItem(this.key, JSON.stringify(items));
      else this.storage.removeItem(this.key);
    } catch {
      // Quota exceeded or storage gone: the messages stay queued in memory.
    }
  }

  add({ id, body, ts }) {
    const items = this.read().filter((i) => i.id !== id);
    items.push({ id, body, ts });
    this.#write(items);
  }

  remove(id) {
    const items = this.read();
    const kept = items.filter((i) => i.id !== id);
    if (kept.length !== items.length) this.#write(kept);
  }

  clear() {
    this.#write([]);
  }
}

// ------------------------------------------------------------------------------ Connection

/**
 * The stream WebSocket (`GET /v1/streams/{id}/ws`, subprotocol `streamedge.v1`, the token
 * as the `access_token.<token>` subprotocol entry).
 *
 * Events: `message` (each chat message once, in seq order), `deleted`, `state`, `viewers`,
 * `connection` ({status: connecting | open | offline | resumed | closed, …}), `ack`,
 * `welcome`, `error` (protocol errors; a failed send without a waiting promise; fatal
 * refusals before `closed`).
 */
export class Connection extends Emitter {
  /** Last chat `seq` delivered (or, before any message, the stream's `last_seq`). */
  lastSeq = null;
  /** `{state, version, session_id}` from the last `welcome` or `state` frame. */
  state = null;
  /** Last viewer counts `{current, peak, unique}`. */
  viewers = null;
  /** `idle`, `connecting`, `open`, `offline` or `closed`. */
  status = 'idle';

  #streamId;
  #http;
  #client;
  #WS;
  #opts;
  #backoff;
  #storage;
  #outbox = null;
  #pending = new Map(); // client_msg_id → { id, body, ts, resolve?, reject?, timer? }
  #closed = false;
  #everOpen = false;
  #attempt = 0;
  #wake = null;
  #onOnline = null;
  #fatal = null;

  // The current socket.
  #ws = null;
  #gen = 0;
  #kill = null;
  #live = false; // welcome seen on this socket: sends may go out
  #mode = 'idle'; // awaiting_resumed | live | rewinding | backfilling
  #historyUntil = null; // messages up to this seq come from history (deletions leave holes)
  #rewindRef = null;
  #buffer = [];
  #lastRx = 0;
  #pingSentAt = 0;
  #pingTimer = null;
  #refs = 0;

  constructor(streamId, options = {}) {
    super();
    if (!streamId) throw new StreamedgeError('invalid_options', 'a stream id is required');
    this.#streamId = String(streamId);
    this.#http = options.http ?? new Http(options);
    this.#client = options.client ?? null;
    this.#WS = options.WebSocketImpl ?? globalThis.WebSocket;
    if (typeof this.#WS !== 'function') {
      throw new StreamedgeError(
        'websocket_unavailable',
        'no WebSocket: pass WebSocketImpl (Node 20 needs --experimental-websocket)',
      );
    }
    this.#opts = {
      pingIntervalMs: 25_000,
      pongTimeoutMs: 10_000,
      queueTtlMs: 600_000, // the node's default chat.idempotency_window
      maxFrameBytes: 16_384, // the node's default ws.max_message_size
      maxBackfill: 5_000,
      ...options,
    };
    this.#backoff = { ...DEFAULT_BACKOFF, ...options.backoff };
    this.#storage = options.storage === undefined ? defaultStorage() : options.storage;
    if (options.sinceSeq != null) this.lastSeq = Number(options.sinceSeq);
    const target = globalThis.window ?? null;
    if (target?.addEventListener) {
      this.#onOnline = () => this.#wake?.();
      target.addEventListener('online', this.#onOnline);
    }
    // Started after the caller had a chance to add listeners: every event is seen.
    queueMicrotask(() =>
      this.#run().catch((e) => {
        report(e);
        this.#fail(new StreamedgeError('internal', `connection loop failed: ${e?.message}`, { cause: e }));
      }),
    );
  }

  get streamId() {
    return this.#streamId;
  }

  /** Messages waiting for their ack, oldest first: `[{client_msg_id, body, ts}]`. */
  get pending() {
    return [...this.#pending.values()].map((p) => ({ client_msg_id: p.id, body: p.body, ts: p.ts }));
  }

  /** Resolves when the connection is (next) open or resumed. */
  ready() {
    if (this.status === 'open') return Promise.resolve(this);
    if (this.status === 'closed') return Promise.reject(this.#fatal ?? new StreamedgeError('closed', 'the connection is closed'));
    return new Promise((resolve, reject) => {
      const off = this.on('connection', (e) => {
        if (e.status === 'open' || e.status === 'resumed') {
          off();
          resolve(this);
        } else if (e.status === 'closed') {
          off();
          reject(e.error ?? new StreamedgeError('closed', 'the connection was closed'));
        }
      });
    });
  }

  /**
   * Sends a chat message: resolves with its `seq` once acknowledged, rejects with a
   * StreamedgeError carrying the node's code (`banned`, `rate_limited`, `slow_mode`, …).
   * Offline, the message waits in the outbox (persisted) and goes out after reconnecting;
   * a retry always uses the same `client_msg_id`, so it is never published twice.
   */
  send(body, { clientMsgId } = {}) {
    if (this.#closed) return Promise.reject(new StreamedgeError('closed', 'the connection is closed'));
    if (typeof body !== 'string') {
      return Promise.reject(new StreamedgeError('invalid_body', 'a chat body is a string'));
    }
    const id = clientMsgId ?? newClientMsgId();
    const frameBytes = new TextEncoder().encode(JSON.stringify({ type: 'send', client_msg_id: id, body })).length;
    if (frameBytes > this.#opts.maxFrameBytes) {
      return Promise.reject(
        new StreamedgeError('body_too_long', `the frame is ${frameBytes} bytes, over ${this.#opts.maxFrameBytes}`, {
          clientMsgId: id,
        }),
      );
    }
    return new Promise((resolve, reject) => {
      const prior = this.#pending.get(id);
      if (prior) {
        // The same id again: one message, both callers get its answer.
        const [res, rej] = [prior.resolve, prior.reject];
        prior.resolve = (seq) => (res?.(seq), resolve(seq));
        prior.reject = (err) => (rej?.(err), reject(err));
        return;
      }
      const item = { id, body, ts: Date.now(), resolve, reject };
      this.#pending.set(id, item);
      this.#outbox?.add(item);
      if (this.#live) this.#transmit(item);
    });
  }

  /**
   * Closes the connection for good. Unsent messages stay in the storage for the next
   * Connection to this stream (their promises here reject with `closed`), unless
   * `{discard: true}`.
   */
  close({ discard = false } = {}) {
    if (this.#closed) return;
    this.#closed = true;
    this.#wake?.();
    this.#kill?.(1000, 'closed by the client');
    this.#detachOnline();
    for (const p of this.#pending.values()) {
      clearTimeout(p.timer);
      p.reject?.(new StreamedgeError('closed', 'the connection was closed', { clientMsgId: p.id }));
    }
    this.#pending.clear();
    if (discard) this.#outbox?.clear();
    this.#setStatus('closed', {});
  }

  // The reconnect loop ---------------------------------------------------------------------

  async #run() {
    let force = false;
    while (!this.#closed) {
      this.#setStatus('connecting', { attempt: this.#attempt });
      let token;
      try {
        token = await this.#http.token(force);
      } catch (e) {
        this.emit('error', new StreamedgeError('token_unavailable', `getToken failed: ${e?.message}`, { cause: e }));
        await this.#pause(backoffDelay(this.#attempt++, this.#backoff), {});
        continue;
      }
      if (this.#closed) break;
      this.#bindOutbox(token);
      const forced = force;
      force = false;
      const end = await this.#socket(token);
      if (this.#closed) break;

      let delay = null;
      if (end.opened) {
        if (Date.now() - end.openedAt >= this.#backoff.resetAfterMs) this.#attempt = 0;
        if (end.code === 1012) delay = 0; // the node is draining: reconnect at once
      } else {
        // A browser sees no HTTP status for a refused upgrade: ask the REST API why.
        const why = await this.#probe(token);
        if (this.#closed) break;
        if (why.status === 401) {
          if (forced) {
            this.#fail(why.error);
            break;
          }
          force = true; // refresh the token once, then retry
          delay = 0;
        } else if (why.status === 400 || why.status === 403 || why.status === 404) {
          this.#fail(why.error);
          break;
        } else if (why.error?.retryAfter != null) {
          delay = Math.max(why.error.retryAfter * 1000, backoffDelay(this.#attempt, this.#backoff));
        }
      }
      delay ??= backoffDelay(this.#attempt, this.#backoff);
      this.#attempt++;
      await this.#pause(delay, { code: end.code, reason: end.reason });
    }
  }

  async #pause(delay, detail) {
    if (this.#closed) return;
    this.#setStatus('offline', { ...detail, delay, attempt: this.#attempt });
    await new Promise((resolve) => {
      const timer = setTimeout(done, delay);
      const self = this;
      function done() {
        clearTimeout(timer);
        self.#wake = null;
        resolve();
      }
      this.#wake = done;
    });
  }

  /** Why an upgrade failed, from `GET /v1/streams/{id}` with the same token. */
  async #probe(token) {
    try {
      const res = await this.#http.request('GET', streamPath(this.#streamId), { token });
      await res.arrayBuffer().catch(() => {});
      return { status: res.status };
    } catch (e) {
      if (e instanceof ApiError) return { status: e.status, error: e };
      return { status: 0 };
    }
  }

  #detachOnline() {
    if (this.#onOnline) globalThis.window?.removeEventListener?.('online', this.#onOnline);
    this.#onOnline = null;
  }

  #fail(error) {
    this.#fatal = error;
    this.emit('error', error);
    this.#closed = true;
    this.#kill?.(1000, 'closing');
    this.#detachOnline();
    for (const p of this.#pending.values()) {
      clearTimeout(p.timer);
      p.reject?.(
        new StreamedgeError(error.code, error.message, {
          status: error.status,
          detail: error.detail,
          retryAfter: error.retryAfter,
          body: error.body,
          clientMsgId: p.id,
          cause: error,
        }),
      );
    }
    this.#pending.clear();
    this.#setStatus('closed', { error, code: error.code });
  }

  #setStatus(status, detail) {
    this.status = status === 'resumed' ? 'open' : status;
    this.emit('connection', { status, ...detail });
  }

  #bindOutbox(token) {
    if (this.#outbox) return;
    const key = `streamedge:outbox:v1:${this.#streamId}:${tokenSubject(token)}`;
    this.#outbox = new Outbox(this.#storage, key);
    // Stored messages (an earlier page) go first, then those sent before the token came.
    const waiting = [...this.#pending.values()];
    this.#pending.clear();
    for (const s of this.#outbox.read()) {
      if (typeof s.body === 'string') this.#pending.set(s.id, { id: s.id, body: s.body, ts: s.ts ?? Date.now() });
    }
    for (const p of waiting) {
      const stored = this.#pending.get(p.id);
      if (stored) Object.assign(stored, { resolve: p.resolve, reject: p.reject });
      else this.#pending.set(p.id, p);
      this.#outbox.add(p);
    }
  }

  // One socket -----------------------------------------------------------------------------

  #wsUrl() {
    const u = new URL(this.#http.url(`${streamPath(this.#streamId)}/ws`));
    u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    if (this.lastSeq != null) u.searchParams.set('since_seq', String(this.lastSeq));
    return u.toString();
  }

  /** Opens one socket and resolves `{opened, openedAt, code, reason}` when it is gone. */
  #socket(token) {
    return new Promise((resolve) => {
      const gen = ++this.#gen;
      const resuming = this.lastSeq != null;
      let opened = false;
      let openedAt = 0;
      let finished = false;
      let errTimer = null;
      let ws;
      const finish = (code, reason) => {
        if (finished) return;
        finished = true;
        clearTimeout(errTimer);
        clearInterval(this.#pingTimer);
        this.#ws = null;
        this.#kill = null;
        this.#live = false;
        this.#mode = 'idle';
        this.#buffer = [];
        for (const p of this.#pending.values()) clearTimeout(p.timer);
        try {
          if (ws && ws.readyState < 2) ws.close(code >= 4000 || code === 1000 ? code : 1000, reason?.slice(0, 120));
        } catch {
          // already closing
        }
        resolve({ opened, openedAt, code, reason });
      };
      try {
        ws = new this.#WS(this.#wsUrl(), [SUBPROTOCOL, TOKEN_SUBPROTOCOL_PREFIX + token]);
      } catch (e) {
        finish(1006, String(e?.message ?? e));
        return;
      }
      this.#ws = ws;
      this.#kill = finish;
      this.#mode = resuming ? 'awaiting_resumed' : 'welcome';
      this.#lastRx = Date.now();
      this.#pingSentAt = 0;
      ws.onmessage = (ev) => {
        if (finished) return;
        this.#lastRx = Date.now();
        let frame;
        try {
          frame = JSON.parse(typeof ev.data === 'string' ? ev.data : '');
        } catch {
          this.emit('error', new StreamedgeError('invalid_frame', 'the node sent a frame that is not JSON'));
          return;
        }
        if (frame?.type === 'welcome' && !opened) {
          opened = true;
          openedAt = Date.now();
        }
        this.#onFrame(frame, gen, resuming);
      };
      ws.onopen = () => {
        if (finished) return;
        this.#lastRx = Date.now();
        const tick = Math.max(50, Math.min(this.#opts.pingIntervalMs, this.#opts.pongTimeoutMs) / 2);
        this.#pingTimer = setInterval(() => this.#keepalive(), tick);
      };
      // Browsers follow `error` with `close`; Node 20's WebSocket does not after a failed
      // upgrade, so an `error` without a `close` soon after ends the socket too.
      ws.onerror = () => {
        errTimer ??= setTimeout(() => finish(1006, 'connection failed'), 250);
      };
      ws.onclose = (ev) => finish(ev.code, ev.reason);
    });
  }

  /** An application ping when the socket has been quiet; a socket silent after it is dead. */
  #keepalive() {
    const now = Date.now();
    if (this.#pingSentAt && this.#lastRx < this.#pingSentAt) {
      if (now - this.#pingSentAt >= this.#opts.pongTimeoutMs) this.#kill?.(4000, 'no answer to ping');
      return;
    }
    if (now - this.#lastRx >= this.#opts.pingIntervalMs) {
      this.#pingSentAt = now;
      this.#write({ type: 'ping', ref: `p${++this.#refs}` });
    }
  }

  #write(frame) {
    try {
      this.#ws?.send(JSON.stringify(frame));
      return true;
    } catch {
      return false;
    }
  }

  #transmit(item) {
    clearTimeout(item.timer);
    if (Date.now() - item.ts > this.#opts.queueTtlMs) {
      this.#settle(item, new StreamedgeError('expired', 'the message waited longer than queueTtlMs', { clientMsgId: item.id }));
      return;
    }
    this.#write({ type: 'send', client_msg_id: item.id, body: item.body });
  }

  /** Removes a message from the outbox with its seq or an error. */
  #settle(item, error, seq) {
    clearTimeout(item.timer);
    this.#pending.delete(item.id);
    this.#outbox?.remove(item.id);
    if (error) {
      if (item.reject) item.reject(error);
      else this.emit('error', error);
    } else {
      item.resolve?.(seq);
      this.emit('ack', { client_msg_id: item.id, seq, body: item.body });
    }
  }

  // Frames -----------------------------------------------------------------------------------

  #onFrame(f, gen, resuming) {
    switch (f?.type) {
      case 'welcome':
        return this.#onWelcome(f, resuming);
      case 'resumed':
        return this.#onResumed(f, gen);
      case 'message':
        return this.#onMessage(f);
      case 'ack': {
        const item = this.#pending.get(f.client_msg_id);
        if (item) this.#settle(item, null, f.seq);
        return;
      }
      case 'error':
        return this.#onError(f, gen);
      case 'state':
        if (this.state && f.version <= this.state.version) return; // seen (or older)
        this.state = { state: f.state, version: f.version, session_id: f.session_id ?? null };
        return this.emit('state', f);
      case 'viewers':
        this.viewers = { current: f.current, peak: f.peak, unique: f.unique };
        return this.emit('viewers', f);
      case 'deleted':
        return this.emit('deleted', f);
      default:
        return; // pong, and frames of later protocol versions
    }
  }

  #onWelcome(f, resuming) {
    this.emit('welcome', f);
    if (!this.state || this.state.version !== f.version) {
      this.state = { state: f.state, version: f.version, session_id: f.session_id ?? null };
      this.emit('state', {
        type: 'state',
        kind: 'sync',
        stream: f.stream,
        state: f.state,
        session_id: f.session_id ?? null,
        version: f.version,
      });
    }
    if (f.viewers) {
      this.viewers = { ...f.viewers };
      this.emit('viewers', { type: 'viewers', stream: f.stream, ...f.viewers });
    }
    if (!resuming) {
      this.lastSeq = f.last_seq;
      this.#historyUntil = null;
      this.#mode = 'live';
      this.#opened('open', {});
    }
    this.#live = true;
    for (const item of [...this.#pending.values()]) this.#transmit(item);
  }

  #opened(status, detail) {
    const first = !this.#everOpen;
    this.#everOpen = true;
    this.#setStatus(first ? 'open' : status === 'open' ? 'resumed' : status, detail);
  }

  #onResumed(f, gen) {
    const viaUrl = this.#mode === 'awaiting_resumed';
    if (!viaUrl && !(this.#mode === 'rewinding' && f.ref === this.#rewindRef)) return;
    this.#rewindRef = null;
    this.#historyUntil = f.last_seq;
    if (f.recovered === false) {
      this.#mode = 'backfilling';
      this.#backfill(f.since_seq, f.last_seq, gen);
    } else {
      this.#mode = 'live';
    }
    if (viaUrl) {
      this.#opened('resumed', { since_seq: f.since_seq, last_seq: f.last_seq, recovered: f.recovered });
    }
  }

  #onMessage(m) {
    if (this.#mode === 'backfilling') {
      this.#buffer.push(m);
      return;
    }
    // Before `resumed` (or after a rewind was asked), messages come again afterwards.
    if (this.#mode !== 'live') return;
    this.#accept(m);
  }

  /** Delivers a message once and in order; a hole in the live feed asks for a rewind. */
  #accept(m) {
    const seq = m.seq;
    if (typeof seq !== 'number') return;
    if (this.lastSeq != null && seq <= this.lastSeq) return; // already delivered
    const fromHistory = this.#historyUntil != null && seq <= this.#historyUntil;
    const expected = Math.max(this.lastSeq ?? 0, this.#historyUntil ?? 0) + 1;
    if (!fromHistory && this.lastSeq != null && seq !== expected) {
      this.#rewind();
      return;
    }
    this.lastSeq = seq;
    this.emit('message', m);
  }

  /** A `resume` frame on the open socket: everything after lastSeq comes again. */
  #rewind() {
    this.#rewindRef = `r${++this.#refs}`;
    this.#mode = 'rewinding';
    if (!this.#write({ type: 'resume', since_seq: this.lastSeq, ref: this.#rewindRef })) {
      this.#kill?.(4000, 'resume failed');
    }
  }

  /**
   * `resumed.recovered === false`: the node's history no longer reaches back to
   * `since`. Older messages are read from the REST history (PostgreSQL, when the node
   * persists) before the buffered feed continues; what nobody holds any more is reported
   * as an `error` with code `history_lost`.
   */
  async #backfill(since, until, gen) {
    const got = [];
    let covered = false;
    let failure = null;
    const client = this.#client ?? new Client({ baseUrl: this.#http.baseUrl, getToken: (o) => this.#http.token(o?.force) });
    try {
      let before = until + 1;
      while (got.length < this.#opts.maxBackfill) {
        const page = await client.messages(this.#streamId, { beforeSeq: before, limit: 200 });
        for (const m of page.messages) {
          if (m.seq > since) got.push(m);
          else covered = true;
        }
        if (covered || page.next_before_seq == null) {
          covered ||= since === 0 && page.next_before_seq == null;
          break;
        }
        before = page.next_before_seq;
      }
    } catch (e) {
      failure = e;
    }
    if (gen !== this.#gen || this.#closed || this.#mode !== 'backfilling') return;
    if (!covered) {
      // What the node replayed after `resumed` counts as held too: the REST page is read
      // later, and a live message may have pushed the oldest of them out of history since.
      const held = [...got, ...this.#buffer].map((m) => m.seq).filter((seq) => seq > since);
      const first = Math.min(until + 1, ...held);
      this.emit(
        'error',
        new StreamedgeError('history_lost', `messages after ${since} and before ${first} are no longer held`, {
          detail: failure?.message,
          body: { since_seq: since, first_seq: first },
          cause: failure ?? undefined,
        }),
      );
    }
    // The replay buffered meanwhile may start before the REST page does (see above):
    // both are merged by seq, and a message in both is delivered once.
    const merged = [...got.map((m) => ({ type: 'message', ...m })), ...this.#buffer];
    merged.sort((a, b) => a.seq - b.seq);
    this.#buffer = [];
    this.#mode = 'live';
    for (const m of merged) this.#onMessage(m);
  }

  #onError(f, gen) {
    const item = f.ref != null ? this.#pending.get(f.ref) : undefined;
    if (!item) {
      this.emit('error', new StreamedgeError(f.code ?? 'error', f.message, { detail: f.message, body: f }));
      return;
    }
    if (RETRYABLE_SEND_CODES.has(f.code)) {
      item.retries = (item.retries ?? 0) + 1;
      item.timer = setTimeout(() => {
        if (gen === this.#gen && this.#live && this.#pending.get(item.id) === item) this.#transmit(item);
      }, backoffDelay(item.retries, this.#backoff));
      return;
    }
    this.#settle(item, new StreamedgeError(f.code, f.message, { detail: f.message, body: f, clientMsgId: item.id }));
  }
}

/** `connect(streamId, {baseUrl, getToken, storage?, WebSocketImpl?, backoff?, sinceSeq?})`. */
export function connect(streamId, options) {
  return new Connection(streamId, options);
}

// ----------------------------------------------------------------------------------- media

/** Resolves once ICE gathering is complete (non-trickle), or after `timeoutMs`. */
function gatheringComplete(pc, timeoutMs) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', onState);
      pc.removeEventListener('icecandidate', onCandidate);
      resolve();
    };
    const onState = () => pc.iceGatheringState === 'complete' && done();
    const onCandidate = (e) => e.candidate == null && done();
    const timer = setTimeout(done, timeoutMs);
    pc.addEventListener('icegatheringstatechange', onState);
    pc.addEventListener('icecandidate', onCandidate);
  });
}

/** `Link: <stun:…>; rel="ice-server"` entries as RTCIceServer objects. */
function iceServersFromLinks(header) {
  if (!header) return [];
  return header
    .split(/,(?=\s*<)/)
    .map((part) => {
      const m = /<([^>]+)>\s*;(.*)/.exec(part.trim());
      if (!m || !/rel="?ice-server"?/i.test(m[2])) return null;
      const server = { urls: m[1] };
      const user = /username="([^"]*)"/i.exec(m[2]);
      const cred = /credential="([^"]*)"/i.exec(m[2]);
      if (user) server.username = user[1];
      if (cred) server.credential = cred[1];
      return server;
    })
    .filter(Boolean);
}

/**
 * Offers `pc`'s SDP once gathering is complete, applies the answer, and returns the
 * handle; `stop()` closes the peer connection and DELETEs the resource (its `Location`).
 */
async function negotiate(http, kind, streamId, pc, { token, gatherTimeoutMs = 5_000, query }) {
  try {
    await pc.setLocalDescription(await pc.createOffer());
    await gatheringComplete(pc, gatherTimeoutMs);
    const res = await http.request('POST', `${streamPath(streamId)}/${kind}`, {
      query,
      body: pc.localDescription.sdp,
      contentType: 'application/sdp',
      token,
    });
    // The Location is an absolute path on the node: keep the base URL's prefix, if any.
    const loc = res.headers.get('location') ?? '';
    const location = loc.startsWith('/') ? http.baseUrl + loc : new URL(loc, `${http.baseUrl}/`).toString();
    const iceServers = iceServersFromLinks(res.headers.get('link'));
    await pc.setRemoteDescription({ type: 'answer', sdp: await res.text() });
    let stopping = null;
    return {
      pc,
      location,
      iceServers,
      /** Ends the session: closes the peer connection and DELETEs the resource. */
      stop() {
        stopping ??= (async () => {
          pc.close();
          try {
            await http.request('DELETE', location, { token });
          } catch (e) {
            if (e.code !== 'media_session_not_found') throw e;
          }
        })();
        return stopping;
      },
    };
  } catch (e) {
    pc.close();
    throw e;
  }
}

/**
 * WHIP: publishes `mediaStream`'s tracks to the stream (its seller). Options:
 * `iceServers`, `token` (e.g. the rtc-token answer's `media_token`; default: the access
 * token), `gatherTimeoutMs`, `RTCPeerConnectionImpl`.
 */
async function publishWhip(http, streamId, mediaStream, options = {}) {
  const PC = options.RTCPeerConnectionImpl ?? globalThis.RTCPeerConnection;
  if (typeof PC !== 'function') throw new StreamedgeError('webrtc_unavailable', 'RTCPeerConnection is not available');
  const pc = new PC({ iceServers: options.iceServers ?? [] });
  for (const track of mediaStream.getTracks()) {
    const init = { direction: 'sendonly', streams: [mediaStream] };
    if (options.simulcast && track.kind === 'video') init.sendEncodings = simulcastEncodings(options.simulcast);
    pc.addTransceiver(track, init);
  }
  const handle = await negotiate(http, 'whip', streamId, pc, options);
  return handle;
}

/**
 * The `sendEncodings` of a simulcast publish: `true` for three layers (rids q, h, f at a
 * quarter, half and full size; 150 kbit/s, 500 kbit/s, 1.5 Mbit/s), or the caller's own.
 */
function simulcastEncodings(simulcast) {
  if (Array.isArray(simulcast)) return simulcast;
  return [
    { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000 },
    { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
    { rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 1_500_000 },
  ];
}

/**
 * WHEP: plays the stream in `videoElement` (receive-only audio and video). The handle has
 * `stream` (the MediaStream), `pc`, `location`, `stop()`, and `setMaxLayer(layer)` /
 * `layer()` for the simulcast layer (`maxLayer` in the options caps it from the start).
 */
async function playWhep(http, streamId, videoElement, options = {}) {
  const PC = options.RTCPeerConnectionImpl ?? globalThis.RTCPeerConnection;
  if (typeof PC !== 'function') throw new StreamedgeError('webrtc_unavailable', 'RTCPeerConnection is not available');
  const pc = new PC({ iceServers: options.iceServers ?? [] });
  pc.addTransceiver('video', { direction: 'recvonly' });
  pc.addTransceiver('audio', { direction: 'recvonly' });
  const stream = new globalThis.MediaStream();
  pc.addEventListener('track', (e) => {
    stream.addTrack(e.track);
    if (videoElement && videoElement.srcObject !== stream) videoElement.srcObject = stream;
  });
  const query = options.maxLayer ? { max_layer: options.maxLayer } : undefined;
  const handle = await negotiate(http, 'whep', streamId, pc, { ...options, query });
  const token = options.token;
  return Object.assign(handle, {
    stream,
    /** Caps the simulcast layer while playing (`low`, `mid`, `high`, a rid, or null). */
    setMaxLayer(layer) {
      return http.json('POST', `${handle.location}/layer`, { json: { max_layer: layer ?? null }, token });
    },
    /** The cap and the layer being received. */
    layer() {
      return http.json('GET', `${handle.location}/layer`, { token });
    },
  });
}

/** `publish(streamId, mediaStream, {baseUrl, getToken, iceServers?, token?})` (WHIP). */
export function publish(streamId, mediaStream, options) {
  return publishWhip(new Http(options), streamId, mediaStream, options);
}

/** `play(streamId, videoElement, {baseUrl, getToken, iceServers?, token?})` (WHEP). */
export function play(streamId, videoElement, options) {
  return playWhep(new Http(options), streamId, videoElement, options);
}
