// Type declarations of @streamedge/client (hand-written; the module is streamedge.js).
// Wire formats: docs/protocol.md (WebSocket) and docs/api.md (HTTP) of the node.

export declare const SUBPROTOCOL: 'streamedge.v1';

// ------------------------------------------------------------------------------ options

/**
 * Returns the caller's access token (a Supabase access token). `force: true` means the
 * node refused the last one (401): refresh it (e.g. `supabase.auth.refreshSession()`).
 * A plain string is accepted where a token never changes.
 */
export type GetToken = ((options: { force: boolean }) => string | Promise<string>) | string;

/** Backoff between reconnect attempts: uniform in [0, min(capMs, baseMs · 2^attempt)]. */
export interface BackoffOptions {
  /** Default 500. */
  baseMs?: number;
  /** Default 30 000. */
  capMs?: number;
  /** A connection open this long resets the attempt count. Default 10 000. */
  resetAfterMs?: number;
}

/** What `localStorage` offers; any object with these three methods will do. */
export interface StorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

export interface ClientOptions {
  /** The node's API URL, e.g. `https://edge.example.com`. Default: the page's origin. */
  baseUrl?: string;
  getToken: GetToken;
  /** Default: the global `fetch`. */
  fetch?: typeof fetch;
}

export interface ConnectOptions extends ClientOptions {
  /**
   * Where unsent messages wait across reloads. Default: `localStorage` when usable;
   * `null` keeps them in memory only.
   */
  storage?: StorageLike | null;
  /** Default: the global `WebSocket` (Node 20: `--experimental-websocket`). */
  WebSocketImpl?: { new (url: string, protocols?: string | string[]): WebSocket };
  backoff?: BackoffOptions;
  /** Start from this seq (the connection opens with `?since_seq=`): every later message follows. */
  sinceSeq?: number;
  /** Ping when nothing arrived for this long. Default 25 000. */
  pingIntervalMs?: number;
  /** A ping unanswered this long ends the socket (then it reconnects). Default 10 000. */
  pongTimeoutMs?: number;
  /** Unsent messages older than this are dropped with `expired` (the node's idempotency window). Default 600 000. */
  queueTtlMs?: number;
  /** Largest `send` frame, in bytes (the node's `ws.max_message_size`). Default 16 384. */
  maxFrameBytes?: number;
  /** Most messages read from the REST history when a resume reaches past the node's history. Default 5 000. */
  maxBackfill?: number;
}

// ------------------------------------------------------------------------------- errors

export declare class StreamedgeError extends Error {
  constructor(
    code: string,
    message?: string,
    extra?: { status?: number; detail?: string; retryAfter?: number; body?: unknown; clientMsgId?: string; cause?: unknown },
  );
  /**
   * The node's stable code (`banned`, `rate_limited`, `slow_mode`, `token_expired`,
   * `stream_not_found`, …) or one of the client's: `closed`, `expired`, `body_too_long`,
   * `invalid_body`, `history_lost`, `network_error` (no HTTP answer), `token_unavailable`, `websocket_unavailable`,
   * `webrtc_unavailable`, `invalid_options`, `http_<status>` (an answer without a body).
   */
  code: string;
  /** HTTP status, for errors from the REST API (and refusals learnt from it). */
  status?: number;
  detail?: string;
  /** Seconds, from `Retry-After` (429, 503). */
  retryAfter?: number;
  /** The problem+json body or the WebSocket error frame. */
  body?: unknown;
  /** The message a chat error is about. */
  clientMsgId?: string;
}

/** An HTTP error answer (RFC 9457 problem+json); `status` is always set. */
export declare class ApiError extends StreamedgeError {
  status: number;
  static from(res: Response): Promise<ApiError>;
}

// ---------------------------------------------------------------------------- resources

export type StreamState = 'idle' | 'live' | 'paused' | 'ended';

export interface ViewerCounts {
  current: number;
  peak: number;
  unique: number;
}

export interface SessionView {
  id: string;
  started_at: string;
  paused_at?: string | null;
  pause_reason?: string | null;
  ended_at?: string | null;
  end_reason?: string | null;
  live_ms: number;
  paused_ms: number;
}

export interface Stream {
  id: string;
  owner_id: string;
  title: string;
  state: StreamState;
  created_at: string;
  updated_at: string;
  version: number;
  session?: SessionView | null;
  viewers?: ViewerCounts | null;
}

export interface StreamPage {
  streams: Stream[];
  next_cursor?: string;
}

export type SessionAction = 'start' | 'pause' | 'resume' | 'end' | 'heartbeat';

export interface Transition {
  from: StreamState;
  to: StreamState;
  kind: string;
  cause: string;
  version: number;
  [field: string]: unknown;
}

export interface SessionCommandResult {
  stream: Stream;
  /** Absent when the call changed nothing (a repeat, a heartbeat). */
  transition?: Transition;
}

export interface SessionSummary {
  session_id: string;
  started_at: string;
  ended_at?: string | null;
  end_reason?: string | null;
  duration_ms?: number;
  live_ms: number;
  paused_ms: number;
  peak_viewers: number;
  unique_viewers: number;
  chat_messages?: number;
  [field: string]: unknown;
}

export interface RtcToken {
  /** Agora AccessToken2 (`007…`). */
  token: string;
  app_id: string;
  channel: string;
  uid: number | string;
  role: 'publisher' | 'subscriber';
  expires_at: string;
  privilege_expires_at: string;
  /** With `media.enabled`: a token for the node's WHIP/WHEP endpoints. */
  media_token?: string;
  media_token_expires_at?: string;
}

export interface HistoryMessage {
  seq: number;
  id: string;
  user: string;
  body: string;
  ts: string;
}

export interface HistoryPage {
  /** Newest first. */
  messages: HistoryMessage[];
  next_before_seq?: number;
}

export interface ViewerPage {
  viewers: string[];
  next_cursor?: string;
}

export interface BanResult {
  user_id: string;
  expires_in_secs?: number;
}

export interface ChatSettings {
  slow_mode_secs: number;
}

export interface SessionExport {
  summary: SessionSummary;
  messages: Array<{ seq: number; id: string; user: string; body: string; sent_at: string; deleted: boolean }>;
}

// ------------------------------------------------------------------------------- events

export interface MessageEvent {
  type: 'message';
  seq: number;
  id: string;
  user: string;
  body: string;
  ts: string;
  client_msg_id?: string;
}

export interface DeletedEvent {
  type: 'deleted';
  stream: string;
  seq: number;
}

export interface StateEvent {
  type: 'state';
  stream: string;
  session_id: string | null;
  state: StreamState;
  /** `start`, `pause`, `resume`, `end`, `auto_pause`, `auto_resume`, `auto_end`; `sync` when read from a `welcome`. */
  kind: string;
  from?: StreamState;
  cause?: string;
  at?: string;
  version: number;
}

export interface ViewersEvent extends ViewerCounts {
  type: 'viewers';
  stream: string;
}

export interface WelcomeEvent {
  type: 'welcome';
  stream: string;
  node: string;
  conn_id: number;
  protocol: string;
  state: StreamState;
  session_id: string | null;
  version: number;
  last_seq: number;
  viewers?: ViewerCounts;
}

export type ConnectionStatus = 'connecting' | 'open' | 'offline' | 'resumed' | 'closed';

export interface ConnectionEvent {
  /**
   * `connecting`: an attempt starts. `open`: the first connection is live. `offline`:
   * the socket is gone and the next attempt waits `delay` ms (`code`/`reason` of the
   * close; 1006 when the connection failed). `resumed`: a later connection caught up
   * from `since_seq`. `closed`: for good (`close()`, or a refusal in `error`).
   */
  status: ConnectionStatus;
  attempt?: number;
  delay?: number;
  code?: number;
  reason?: string;
  since_seq?: number;
  last_seq?: number;
  recovered?: boolean;
  error?: StreamedgeError;
}

export interface AckEvent {
  client_msg_id: string;
  seq: number;
  body: string;
}

export interface ConnectionEvents {
  message: MessageEvent;
  deleted: DeletedEvent;
  state: StateEvent;
  viewers: ViewersEvent;
  connection: ConnectionEvent;
  ack: AckEvent;
  welcome: WelcomeEvent;
  error: StreamedgeError;
}

export declare class Emitter<Events extends object = Record<string, unknown>> {
  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof Events>(type: K, fn: (event: Events[K]) => void): () => void;
  off<K extends keyof Events>(type: K, fn: (event: Events[K]) => void): void;
  once<K extends keyof Events>(type: K, fn: (event: Events[K]) => void): () => void;
  addEventListener<K extends keyof Events>(type: K, fn: (event: Events[K]) => void): void;
  removeEventListener<K extends keyof Events>(type: K, fn: (event: Events[K]) => void): void;
  emit<K extends keyof Events>(type: K, event: Events[K]): void;
}

// --------------------------------------------------------------------------- Connection

export interface PendingMessage {
  client_msg_id: string;
  body: string;
  /** When it was first sent (ms since the epoch). */
  ts: number;
}

/**
 * The stream WebSocket: each chat message once and in seq order (duplicates dropped, a
 * hole in the live feed rewound, a resume past the node's history backfilled from the
 * REST history), reconnects with exponential backoff and full jitter (at once after
 * 1012), `since_seq` resume, one token refresh after a refused upgrade, and an outbox
 * of unacknowledged sends retried with the same `client_msg_id`.
 */
export declare class Connection extends Emitter<ConnectionEvents> {
  constructor(streamId: string, options: ConnectOptions);
  readonly streamId: string;
  /** The last seq delivered (before any message: the stream's `last_seq` at the first welcome). */
  lastSeq: number | null;
  state: { state: StreamState; version: number; session_id: string | null } | null;
  viewers: ViewerCounts | null;
  status: 'idle' | 'connecting' | 'open' | 'offline' | 'closed';
  /** Messages waiting for their ack, oldest first. */
  readonly pending: PendingMessage[];
  /** Resolves when the connection is (next) open or resumed; rejects if it closes for good. */
  ready(): Promise<this>;
  /**
   * Resolves with the message's `seq` once acknowledged; rejects with a StreamedgeError
   * with the node's code (`banned`, `rate_limited`, `slow_mode`, `empty_body`, …), or
   * `closed` / `expired`. Offline, the message waits in the outbox.
   */
  send(body: string, options?: { clientMsgId?: string }): Promise<number>;
  /** Ends the connection for good; unsent messages stay in storage unless `discard`. */
  close(options?: { discard?: boolean }): void;
}

export declare function connect(streamId: string, options: ConnectOptions): Connection;

// ------------------------------------------------------------------------------- media

export interface MediaOptions {
  iceServers?: RTCIceServer[];
  /** Bearer for the WHIP/WHEP requests (e.g. `media_token`); default: the access token. */
  token?: string;
  /** Longest wait for ICE gathering before the offer goes anyway. Default 5 000. */
  gatherTimeoutMs?: number;
  RTCPeerConnectionImpl?: typeof RTCPeerConnection;
  /** WHIP: publish the video in simulcast layers — `true` for three (rids q, h, f), or
   * your own `sendEncodings`. */
  simulcast?: boolean | RTCRtpEncodingParameters[];
  /** WHEP: the highest simulcast layer to receive (`low`, `mid`, `high` or a rid). */
  maxLayer?: string;
}

/** A WHEP viewer's simulcast layer (`GET`/`POST …/whep/{resource}/layer`). */
export interface ViewerLayer {
  max_layer: string;
  layer?: 'low' | 'mid' | 'high' | 'single';
  rid?: string;
  layers?: number;
  estimate_bps?: number;
}

export interface MediaHandle {
  pc: RTCPeerConnection;
  /** The session resource (absolute URL). */
  location: string;
  /** From the answer's `Link: <…>; rel="ice-server"` headers. */
  iceServers: RTCIceServer[];
  /** Closes the peer connection and DELETEs the resource; safe to call twice. */
  stop(): Promise<void>;
}

export interface PlayHandle extends MediaHandle {
  stream: MediaStream;
  /** Caps the simulcast layer while playing; `null` lifts the cap. */
  setMaxLayer(layer: string | null): Promise<ViewerLayer>;
  /** The cap and the layer being received. */
  layer(): Promise<ViewerLayer>;
}

export declare function publish(
  streamId: string,
  mediaStream: MediaStream,
  options: ClientOptions & MediaOptions,
): Promise<MediaHandle>;

export declare function play(
  streamId: string,
  videoElement: HTMLVideoElement | null,
  options: ClientOptions & MediaOptions,
): Promise<PlayHandle>;

// ------------------------------------------------------------------------------- Client

export interface RtcTokenOptions {
  force?: boolean;
  /** Renew this long before expiry. Default: a fifth of the lifetime, at most 60 000. */
  renewAheadMs?: number;
}

export declare class Client {
  constructor(options: ConnectOptions);
  readonly baseUrl: string;

  createStream(stream: { title: string; id?: string }): Promise<Stream>;
  getStream(streamId: string): Promise<Stream>;
  listStreams(query?: { state?: StreamState; limit?: number; cursor?: string }): Promise<StreamPage>;
  /** Every stream (of a state), newest first, across pages. */
  streams(query?: { state?: StreamState; limit?: number }): AsyncGenerator<Stream, void, void>;
  liveStreams(query?: { limit?: number }): AsyncGenerator<Stream, void, void>;

  sessionCommand(streamId: string, action: SessionAction): Promise<SessionCommandResult>;
  startSession(streamId: string): Promise<SessionCommandResult>;
  pauseSession(streamId: string): Promise<SessionCommandResult>;
  resumeSession(streamId: string): Promise<SessionCommandResult>;
  endSession(streamId: string): Promise<SessionCommandResult>;
  heartbeat(streamId: string): Promise<SessionCommandResult>;
  getSession(streamId: string, sessionId: string): Promise<SessionSummary>;
  exportSession(streamId: string, sessionId: string, options?: { format?: 'json' }): Promise<SessionExport>;
  exportSession(streamId: string, sessionId: string, options: { format: 'csv' }): Promise<string>;

  /** Cached; fetched again within `renewAheadMs` of `expires_at`. */
  rtcToken(streamId: string, options?: RtcTokenOptions): Promise<RtcToken>;
  /** Calls `onToken` now and before each expiry until `stop()`. */
  keepRtcToken(
    streamId: string,
    onToken: (token: RtcToken) => void,
    options?: { onError?: (error: StreamedgeError) => void; renewAheadMs?: number; backoff?: BackoffOptions },
  ): { stop(): void };

  messages(streamId: string, query?: { beforeSeq?: number; limit?: number }): Promise<HistoryPage>;
  /** History pages, newest first, until the start. */
  history(streamId: string, query?: { beforeSeq?: number; limit?: number }): AsyncGenerator<HistoryMessage[], void, void>;
  deleteMessage(streamId: string, seq: number): Promise<void>;
  ban(streamId: string, userId: string, options?: { durationSecs?: number }): Promise<BanResult>;
  timeout(streamId: string, userId: string, durationSecs: number): Promise<BanResult>;
  unban(streamId: string, userId: string): Promise<void>;
  chatSettings(streamId: string, settings: ChatSettings): Promise<ChatSettings>;
  setSlowMode(streamId: string, secs: number): Promise<ChatSettings>;
  viewers(streamId: string, query?: { limit?: number; cursor?: string }): Promise<ViewerPage>;

  /** The stream WebSocket with this client's base URL and tokens. */
  connect(streamId: string, options?: Partial<ConnectOptions>): Connection;
  publish(streamId: string, mediaStream: MediaStream, options?: MediaOptions): Promise<MediaHandle>;
  play(streamId: string, videoElement: HTMLVideoElement | null, options?: MediaOptions): Promise<PlayHandle>;
}

export declare function createClient(options: ConnectOptions): Client;

/** Exponential backoff with full jitter. */
export declare function backoffDelay(attempt: number, backoff?: { baseMs: number; capMs: number }): number;

/** A new `client_msg_id`. */
export declare function newClientMsgId(): string;
