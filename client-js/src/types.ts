import type { Protocol } from './codec.js';
import type { ConnectedFrame, NotificationFrame, ReadFrame } from './frames.js';
import type { UnreadEvent } from './reads.js';
import type { OffsetStorage } from './offsets.js';

/** Which transports the client may use (see {@link HubClientOptions.transport}). */
export type TransportChoice = 'auto' | 'websocket' | 'sse';

/** The client's connection state. `connecting` also covers waiting to reconnect. */
export type ConnectionState = 'disconnected' | 'connecting' | 'connected';

/** The part of the browser's WebSocket the client uses; tests inject a fake. */
export interface WebSocketLike {
  readonly readyState: number;
  readonly protocol: string;
  binaryType: BinaryType;
  onopen: ((ev: Event) => unknown) | null;
  onmessage: ((ev: MessageEvent) => unknown) | null;
  onclose: ((ev: CloseEvent) => unknown) | null;
  onerror: ((ev: Event) => unknown) | null;
  send(data: string | ArrayBufferLike | ArrayBufferView): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

export interface HubClientOptions {
  /** The hub's WebSocket endpoint, e.g. `wss://hub.example.com/ws`. */
  url: string;
  /**
   * Returns a token (JWT) for the hub. Called before every connection attempt
   * and before the current token expires; may return a cached token while it
   * is still fresh. A rejection is reported as an `error` event and retried
   * with backoff.
   */
  getToken: () => Promise<string> | string;
  /** Wire format: `json` (default) or `msgpack`. */
  protocol?: Protocol;
  /**
   * Where the last offset per topic is kept: `memory` (default; survives
   * reconnects) or `session` (sessionStorage; also survives a page reload),
   * or your own {@link OffsetStorage}.
   */
  storage?: 'memory' | 'session' | OffsetStorage;
  /** sessionStorage key; default `notification-hub:<url>`. */
  storageKey?: string;
  /** First backoff window, ms (default 500). */
  reconnectBaseMs?: number;
  /** Largest backoff window, ms (default 20000). */
  reconnectMaxMs?: number;
  /** A connection must stay up this long (ms) before the retry count resets (default 5000). */
  minUptimeMs?: number;
  /** Deadline for token + handshake + `connected` frame, ms (default 10000). */
  connectTimeoutMs?: number;
  /** Refresh the token this long before its `exp`, ms (default 30000; at most half its life). */
  refreshLeadMs?: number;
  /**
   * What carries the connection: `auto` (default) uses WebSocket and falls back to
   * Server-Sent Events after `sseFallbackAfter` failed upgrades in a row (a proxy
   * that refuses WebSockets), trying WebSocket again every `websocketRetryMs`;
   * `websocket` or `sse` use only that one. The app sees the same events either way.
   */
  transport?: TransportChoice;
  /** The hub's SSE endpoint (default: `url` with `ws(s)` → `http(s)` and a last path segment `ws` → `sse`). */
  sseUrl?: string;
  /**
   * Failed WebSocket attempts in a row (before `connected`) that make `auto` switch to SSE
   * (default 2; ten times that once a WebSocket connection has worked in this client).
   */
  sseFallbackAfter?: number;
  /** After falling back to SSE, try WebSocket again after this long, ms (default 300000). */
  websocketRetryMs?: number;
  /** fetch implementation for SSE (default: the global `fetch`). */
  fetch?: (input: string, init?: RequestInit) => Promise<Response>;
  /** WebSocket implementation (default: the global `WebSocket`). */
  WebSocket?: WebSocketConstructor;
  /** Follow `online`/`offline` and page visibility (default: true where `window` exists). */
  watchBrowser?: boolean;
  /** Random source in [0, 1) for backoff jitter (tests). */
  random?: () => number;
}

/** A notification as delivered to the application. */
export type HubNotification<T = unknown> = Omit<NotificationFrame<T>, 'type'>;

export interface StateChange {
  state: ConnectionState;
  previous: ConnectionState;
}

/** `recovered: false`: some notifications may be missing; the app should refetch. */
export interface GapEvent {
  /** The topics the client asked to resume. */
  topics: string[];
  connected: ConnectedFrame;
}

export interface DisconnectEvent {
  code: number;
  reason: string;
  /** Whether the client will reconnect by itself. */
  reconnect: boolean;
  /** Delay before the next attempt, ms, when `reconnect` (null while offline). */
  delayMs: number | null;
}

export type HubErrorKind = 'token' | 'server' | 'protocol' | 'transport' | 'timeout' | 'closed';

/** An error the client reports; `fatal` means it stopped and will not reconnect. */
export class HubClientError extends Error {
  constructor(
    readonly kind: HubErrorKind,
    message: string,
    readonly code: number | string | null = null,
    readonly fatal = false,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'HubClientError';
  }
}

export interface HubClientEvents {
  state: StateChange;
  connected: ConnectedFrame;
  notification: HubNotification;
  gap: GapEvent;
  disconnected: DisconnectEvent;
  error: HubClientError;
  /** The user's read state of a topic changed (here, in another tab or device, or over HTTP). */
  read: Omit<ReadFrame, 'type'>;
  /** A topic's unread count changed (from `connected`, a new notification or a `read`). */
  unread: UnreadEvent;
}
