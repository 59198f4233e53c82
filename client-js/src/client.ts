import { fullJitterDelay } from './backoff.js';
import { CLIENT_NO_PING, CloseCode, closeCodeName, reconnectPolicy } from './codes.js';
import type { ReconnectPolicy } from './codes.js';
import { SUBPROTOCOLS } from './codec.js';
import { Emitter } from './emitter.js';
import { invalidFrameReason } from './frames.js';
import type {
  ClientFrame,
  ConnectedFrame,
  ConnectFrame,
  ErrorFrame,
  NotificationFrame,
  RawFrame,
  ReadFrame,
} from './frames.js';
import { ReadTracker } from './reads.js';
import type { MarkReadOptions } from './reads.js';
import { decodeClaims, refreshDelay } from './jwt.js';
import { BrowserWatch } from './browser.js';
import { MemoryStorage, OffsetTracker, WebStorage } from './offsets.js';
import type { OffsetStorage } from './offsets.js';
import { SseTransport, defaultSseUrl } from './sse-transport.js';
import type { FetchLike } from './sse-transport.js';
import type { Transport, TransportKind } from './transport.js';
import { HubClientError } from './types.js';
import type {
  ConnectionState,
  HubClientEvents,
  HubClientOptions,
  WebSocketConstructor,
} from './types.js';
import { WebSocketTransport } from './ws-transport.js';

type TimerName = 'reconnect' | 'connectTimeout' | 'watchdog' | 'refresh' | 'stable' | 'websocketRetry';

/**
 * A connection to the notification hub that stays connected: it reconnects
 * with backoff, resumes from the last offset seen per topic, drops
 * duplicates, answers pings and refreshes its token in-band.
 *
 * Events: `state`, `connected`, `notification`, `gap`, `disconnected`, `error`.
 */
export class HubClient extends Emitter<HubClientEvents> {
  private readonly opts: Required<
    Omit<HubClientOptions, 'storage' | 'storageKey' | 'WebSocket' | 'watchBrowser' | 'fetch'>
  >;
  private readonly WS: WebSocketConstructor | undefined;
  private readonly fetchFn: FetchLike | undefined;
  private readonly tracker: OffsetTracker;
  private readonly browser: BrowserWatch | null;
  private readonly timers = new Map<TimerName, ReturnType<typeof setTimeout>>();

  private _state: ConnectionState = 'disconnected';
  private active = false;
  private offline = false;
  /** Bumped by every attempt and by disconnect(): stale async results compare it. */
  private epoch = 0;
  private link: Transport | null = null;
  /** SSE instead of WebSocket: chosen (`transport: 'sse'`) or fallen back to (`'auto'`). */
  private useSse = false;
  /** WebSocket attempts in a row that failed before `connected` (the fallback counts them). */
  private wsFailures = 0;
  /** A WebSocket connection has worked in this client: later failures are more likely an outage. */
  private wsWorked = false;
  private probe: { close(): void } | null = null;
  private token: string | null = null;
  private attempts = 0;
  /** One immediate retry (1012, 4001, 4009) is allowed until a connection is stable again. */
  private quickRetryUsed = false;
  private sentSince: string[] = [];
  /** Topics whose resume point was lost before the next `connected` (reported as a gap). */
  private gapTopics: string[] = [];
  private everConnected = false;
  private serverError: ErrorFrame | null = null;
  private pingMs: number | null = null;
  private lastHeard = 0;
  private _connection: ConnectedFrame | null = null;
  private readonly reads = new ReadTracker();

  constructor(options: HubClientOptions) {
    super();
    if (!options || typeof options.url !== 'string' || typeof options.getToken !== 'function') {
      throw new TypeError('HubClient: expected options {url: string, getToken: () => Promise<string>}');
    }
    this.opts = {
      url: options.url,
      getToken: options.getToken,
      protocol: options.protocol ?? 'json',
      reconnectBaseMs: options.reconnectBaseMs ?? 500,
      reconnectMaxMs: options.reconnectMaxMs ?? 20_000,
      minUptimeMs: options.minUptimeMs ?? 5_000,
      connectTimeoutMs: options.connectTimeoutMs ?? 10_000,
      refreshLeadMs: options.refreshLeadMs ?? 30_000,
      random: options.random ?? Math.random,
      transport: options.transport ?? 'auto',
      sseUrl: options.sseUrl ?? defaultSseUrl(options.url),
      sseFallbackAfter: options.sseFallbackAfter ?? 2,
      websocketRetryMs: options.websocketRetryMs ?? 300_000,
    };
    if (!['auto', 'websocket', 'sse'].includes(this.opts.transport)) {
      throw new TypeError(`HubClient: expected transport 'auto', 'websocket' or 'sse', got ${String(options.transport)}`);
    }
    this.useSse = this.opts.transport === 'sse';
    if (this.opts.protocol !== 'json' && this.opts.protocol !== 'msgpack') {
      throw new TypeError(`HubClient: expected protocol 'json' or 'msgpack', got ${String(options.protocol)}`);
    }
    this.WS = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    const globalFetch = (globalThis as { fetch?: FetchLike }).fetch;
    this.fetchFn = options.fetch ?? (globalFetch ? (input, init) => globalFetch(input, init) : undefined);
    this.tracker = new OffsetTracker(makeStorage(options.storage, options.storageKey ?? `notification-hub:${options.url}`));
    const watch = options.watchBrowser ?? typeof window !== 'undefined';
    this.browser = watch
      ? new BrowserWatch({
          online: () => this.onOnline(),
          offline: () => this.onOffline(),
          visible: () => this.onVisible(),
        })
      : null;
  }

  /** The current connection state. */
  get state(): ConnectionState {
    return this._state;
  }

  /** The `connected` frame of the current connection, or null when not connected. */
  get connection(): ConnectedFrame | null {
    return this._connection;
  }

  /** What carries the current connection (`websocket` or `sse`), or null when there is none. */
  get transport(): TransportKind | null {
    return this.link?.kind ?? null;
  }

  /** The last offset seen per topic (the resume point of the next reconnect). */
  get offsets(): Record<string, string> {
    return this.tracker.snapshot();
  }

  /** Unread count per topic (docs/protocol.md §9); empty until connected to a hub that keeps read state. */
  get unread(): Record<string, number> {
    return this.reads.unread;
  }

  /** Whether a notification is known to be read (in this tab or another one of the user). */
  isRead(notification: { topic: string; offset?: string }): boolean {
    return this.reads.isRead(notification.topic, notification.offset);
  }

  /**
   * Marks notifications read: everything of `topic` (default: the user's own) up to `upTo`,
   * and/or single `offsets` (at most 100), or one notification. Every tab and device of the
   * user then gets a `read` event with the new count. Returns false when not connected (or the
   * hub keeps no read state: history off);
   * throws TypeError for input the hub would refuse (more than 100 offsets, nothing to mark).
   */
  markRead(target: MarkReadOptions | { topic: string; offset?: string; id: string }): boolean {
    const own = this._connection ? `user.${this._connection.user}` : null;
    const options: MarkReadOptions =
      'id' in target ? { topic: target.topic, offsets: target.offset ? [target.offset] : [] } : target;
    if (this._state !== 'connected' || !this.reads.supported || (own === null && options.topic === undefined)) return false;
    const frame = this.reads.request(options, own);
    this.send(frame);
    return true;
  }

  /** Starts connecting (and staying connected). Does nothing if already started. */
  connect(): void {
    if (this.active) return;
    this.active = true;
    this.attempts = 0;
    this.quickRetryUsed = false;
    this.browser?.attach();
    this.offline = this.browser?.isOffline() ?? false;
    // Fallen back to SSE before a disconnect(): keep probing WebSocket (disconnect() cleared the timer).
    if (this.useSse && this.opts.transport === 'auto') {
      this.setTimer('websocketRetry', this.opts.websocketRetryMs, () => this.retryWebSocket());
    }
    this.open();
  }

  /** Closes the connection and stops reconnecting. `connect()` starts again. */
  disconnect(): void {
    const wasActive = this.active;
    this.active = false;
    this.epoch++;
    this.browser?.detach();
    this.closeSocket(CloseCode.NORMAL, 'client disconnect');
    this.closeProbe();
    this.clearTimers();
    if (wasActive) {
      this.emit('disconnected', { code: CloseCode.NORMAL, reason: 'client disconnect', reconnect: false, delayMs: null });
    }
    this.setState('disconnected');
  }

  /** Forgets the stored offsets: the next connection gets only new notifications. */
  resetOffsets(): void {
    this.tracker.reset();
  }

  // -- connecting ---------------------------------------------------------

  private open(): void {
    this.clearTimer('reconnect');
    if (!this.active) return;
    this.setState('connecting');
    if (this.offline) return; // onOnline() resumes.
    const epoch = ++this.epoch;
    this.setTimer('connectTimeout', this.opts.connectTimeoutMs, () => {
      this.emit('error', new HubClientError('timeout', `no 'connected' frame within ${this.opts.connectTimeoutMs} ms`));
      this.drop(CloseCode.ABNORMAL, 'connect timeout');
    });
    let tokenPromise: Promise<string>;
    try {
      tokenPromise = Promise.resolve(this.opts.getToken());
    } catch (err) {
      tokenPromise = Promise.reject(err);
    }
    tokenPromise.then(
      (token) => {
        if (epoch !== this.epoch || !this.active) return;
        if (typeof token !== 'string' || token === '') {
          this.failAttempt(new HubClientError('token', `getToken() must resolve to a non-empty string, got ${typeof token}`));
          return;
        }
        this.token = token;
        this.openSocket(token);
      },
      (err: unknown) => {
        if (epoch !== this.epoch || !this.active) return;
        this.failAttempt(new HubClientError('token', `getToken() failed: ${describe(err)}`, null, false, { cause: err }));
      },
    );
  }

  private openSocket(token: string): void {
    const handlers = {
      frame: (frame: RawFrame) => {
        if (link === this.link) this.onFrame(frame);
      },
      unreadable: (err: unknown) => {
        if (link === this.link) {
          this.emit('error', new HubClientError('protocol', `unreadable frame from hub: ${describe(err)}`, null, false, { cause: err }));
        }
      },
      closed: (code: number, reason: string) => {
        if (link !== this.link) return;
        this.link = null;
        this.onClose(code, reason, link.kind);
      },
    };
    let link: Transport;
    if (this.useSse) {
      if (!this.fetchFn) {
        this.failAttempt(new HubClientError('transport', 'no fetch implementation for SSE: pass options.fetch'));
        return;
      }
      link = new SseTransport(this.opts.sseUrl, this.fetchFn, handlers);
    } else {
      if (!this.WS) {
        this.failAttempt(new HubClientError('transport', 'no WebSocket implementation: pass options.WebSocket'));
        return;
      }
      link = new WebSocketTransport(this.opts.url, this.opts.protocol, this.WS, handlers);
    }
    this.link = link;
    this.serverError = null;
    this.lastHeard = Date.now();
    try {
      link.start(this.connectFrame(token));
    } catch (err) {
      this.link = null;
      this.failAttempt(new HubClientError('transport', `cannot open ${this.opts.url}: ${describe(err)}`, null, false, { cause: err }));
    }
  }

  private connectFrame(token: string): ConnectFrame {
    const claims = decodeClaims(token);
    if (claims?.sub !== undefined && this.tracker.owner !== null && this.tracker.owner !== claims.sub) {
      this.tracker.reset(); // another user logged in in this tab
    }
    let since = this.tracker.snapshot();
    if (claims?.sub !== undefined) {
      // Only resume topics this token may read: a stale entry must not get us closed with 4003.
      const allowed = new Set([`user.${claims.sub}`, ...(claims.topics ?? [])]);
      since = Object.fromEntries(Object.entries(since).filter(([topic]) => allowed.has(topic)));
    }
    this.sentSince = Object.keys(since);
    return this.sentSince.length > 0 ? { type: 'connect', token, since } : { type: 'connect', token };
  }

  // -- receiving ------------------------------------------------------------

  private onFrame(frame: RawFrame): void {
    this.lastHeard = Date.now();
    const invalid = invalidFrameReason(frame);
    if (invalid !== null) {
      // Unknown frame types are ignored so that the hub can add some.
      if (frame.type === 'connected' || frame.type === 'notification') {
        this.emit('error', new HubClientError('protocol', `bad frame from hub: ${invalid}`));
      }
      return;
    }
    switch (frame.type) {
      case 'connected':
        this.onConnected(frame as unknown as ConnectedFrame);
        break;
      case 'notification':
        this.onNotification(frame as unknown as NotificationFrame);
        break;
      case 'read':
        this.onRead(frame as unknown as ReadFrame);
        break;
      case 'ping':
        this.send({ type: 'pong' });
        break;
      case 'error': {
        const err = frame as unknown as ErrorFrame;
        this.serverError = err;
        this.emit('error', new HubClientError('server', `hub error ${String(err.code)}: ${String(err.message)}`, err.code ?? null));
        break;
      }
    }
  }

  private onConnected(frame: ConnectedFrame): void {
    this.clearTimer('connectTimeout');
    this._connection = frame;
    if (this.link?.kind === 'websocket') {
      this.wsFailures = 0;
      this.wsWorked = true;
    }
    this.tracker.setOwner(frame.user);
    if (frame.offsets && typeof frame.offsets === 'object') this.tracker.seed(frame.offsets);
    this.pingMs = typeof frame.ping_interval === 'number' && frame.ping_interval > 0 ? frame.ping_interval * 1000 : null;
    this.armWatchdog();
    this.setTimer('stable', this.opts.minUptimeMs, () => {
      this.attempts = 0;
      this.quickRetryUsed = false;
    });
    if (this.token) this.scheduleRefresh(this.token);
    this.setState('connected');
    this.emit('connected', frame);
    for (const topic of this.reads.connected(frame)) this.emitUnread(topic);
    const gap = frame.recovered === false ? [...this.sentSince] : [];
    if (this.everConnected && Array.isArray(frame.topics)) {
      // A reconnect without a resume point for a topic (history off on the hub: no offsets)
      // cannot replay what was missed meanwhile: that is a gap too.
      for (const topic of frame.topics) if (!this.sentSince.includes(topic)) this.gapTopics.push(topic);
    }
    this.everConnected = true;
    for (const topic of this.gapTopics) if (!gap.includes(topic)) gap.push(topic);
    this.gapTopics = [];
    if (gap.length > 0) this.emit('gap', { topics: gap, connected: frame });
  }

  private onNotification(frame: NotificationFrame): void {
    if (!this.tracker.accept(frame.topic, frame.offset)) return; // duplicate
    const { type: _type, ...notification } = frame;
    this.emit('notification', notification);
    if (this.reads.notified(frame.topic, frame.offset)) this.emitUnread(frame.topic);
  }

  private onRead(frame: ReadFrame): void {
    this.reads.read(frame);
    const { type: _type, ...read } = frame;
    this.emit('read', read);
    this.emitUnread(frame.topic);
  }

  private emitUnread(topic: string): void {
    const counts = this.reads.unread;
    this.emit('unread', { topic, unread: counts[topic] ?? 0, counts });
  }

  // -- closing and reconnecting -----------------------------------------

  private onClose(code: number, reason: string, kind: TransportKind | null = null): void {
    this.epoch++; // results of this connection's pending getToken() calls are stale now
    if (kind === 'websocket' && this._connection === null) this.websocketFailed(code);
    this.clearSocketTimers();
    this._connection = null;
    if (!this.active) {
      this.setState('disconnected');
      return;
    }
    const policy = reconnectPolicy(code);
    const serverError = this.serverError;
    this.serverError = null;
    if (policy === 'stop') {
      this.active = false;
      this.browser?.detach();
      this.clearTimers();
      this.emit('disconnected', { code, reason, reconnect: false, delayMs: null });
      const detail = serverError ? `: ${serverError.message}` : reason ? `: ${reason}` : '';
      this.emit('error', new HubClientError('closed', `closed by hub with ${code} ${closeCodeName(code)}${detail}; not reconnecting`, code, true));
      this.setState('disconnected');
      return;
    }
    if (code === CloseCode.PROTOCOL_ERROR && this._state !== 'connected' && this.sentSince.length > 0) {
      // The hub refused our connect frame; a bad stored offset must not make that a loop.
      // Resume without `since` and tell the app (via `gap`) that it may have missed some.
      this.gapTopics = [...this.sentSince];
      this.tracker.reset();
    }
    const delay = this.offline ? null : this.nextDelay(policy);
    this.emit('disconnected', { code, reason, reconnect: true, delayMs: delay });
    this.setState('connecting');
    if (delay !== null) this.setTimer('reconnect', delay, () => this.open());
  }

  // -- falling back to SSE and back -------------------------------------

  /**
   * A WebSocket attempt ended before `connected`. With `transport: 'auto'`, the
   * `sseFallbackAfter`-th such failure in a row (upgrades refused by a proxy: 1006)
   * switches to SSE; WebSocket is tried again after `websocketRetryMs`. A browser cannot
   * tell a refused upgrade from a hub that is down, so once WebSocket has worked in this
   * client it takes ten times as many failures (a restart is ridden out over WebSocket;
   * a move into a network that blocks WebSockets is still caught).
   */
  private websocketFailed(code: number): void {
    if (this.opts.transport !== 'auto' || (code !== CloseCode.ABNORMAL && code !== CLIENT_NO_PING)) return;
    this.wsFailures++;
    const needed = this.wsWorked ? 10 * this.opts.sseFallbackAfter : this.opts.sseFallbackAfter;
    if (this.wsFailures < needed) return;
    this.useSse = true;
    this.attempts = 0;
    this.setTimer('websocketRetry', this.opts.websocketRetryMs, () => this.retryWebSocket());
  }

  /** Probe WebSocket again; once an upgrade succeeds, move the connection over (it resumes from its offsets). */
  private retryWebSocket(): void {
    const WS = this.WS;
    if (!this.active || !WS) return;
    let probe;
    try {
      probe = new WS(this.opts.url, [SUBPROTOCOLS[this.opts.protocol]]);
    } catch {
      this.setTimer('websocketRetry', this.opts.websocketRetryMs, () => this.retryWebSocket());
      return;
    }
    this.probe = probe;
    probe.onopen = () => {
      probe.onclose = null;
      probe.close(CloseCode.NORMAL, 'probe');
      this.probe = null;
      if (!this.active) return;
      this.useSse = false;
      this.wsFailures = 0;
      if (this.link?.kind === 'sse') {
        this.closeSocket(CloseCode.NORMAL, 'moving to WebSocket');
        this.open();
      }
    };
    probe.onclose = () => {
      this.probe = null;
      if (this.active) this.setTimer('websocketRetry', this.opts.websocketRetryMs, () => this.retryWebSocket());
    };
  }

  /** An attempt failed before a socket existed (token, constructor): back off and retry. */
  private failAttempt(error: HubClientError): void {
    this.emit('error', error);
    this.drop(CloseCode.ABNORMAL, error.message);
  }

  /** Closes the current socket (if any) from our side and goes through the close path at once. */
  private drop(code: number, reason: string): void {
    const kind = this.link?.kind ?? null;
    this.closeSocket(code === CLIENT_NO_PING ? CLIENT_NO_PING : CloseCode.NORMAL, reason);
    this.onClose(code, reason, kind);
  }

  private closeSocket(code: number, reason: string): void {
    const link = this.link;
    this.link = null;
    this.clearSocketTimers();
    this._connection = null;
    link?.close(code, reason);
  }

  private nextDelay(policy: ReconnectPolicy): number {
    if ((policy === 'now' || policy === 'token') && !this.quickRetryUsed) {
      this.quickRetryUsed = true;
      return 0;
    }
    const attempt = policy === 'slow' ? Math.max(this.attempts, 3) : this.attempts;
    this.attempts++;
    return fullJitterDelay(attempt, this.opts.reconnectBaseMs, this.opts.reconnectMaxMs, this.opts.random);
  }

  // -- liveness and token refresh ---------------------------------------

  private armWatchdog(): void {
    const pingMs = this.pingMs;
    if (pingMs === null) return;
    const deadline = 2 * pingMs;
    const wait = Math.max(0, this.lastHeard + deadline - Date.now());
    this.setTimer('watchdog', wait, () => {
      if (Date.now() - this.lastHeard >= deadline) {
        this.emit('error', new HubClientError('timeout', `nothing heard from hub for ${deadline} ms`, CLIENT_NO_PING));
        this.drop(CLIENT_NO_PING, 'no ping from hub');
      } else {
        this.armWatchdog();
      }
    });
  }

  private scheduleRefresh(token: string): void {
    const delay = refreshDelay(token, Date.now(), this.opts.refreshLeadMs);
    if (delay === null) return;
    const epoch = this.epoch;
    this.setTimer('refresh', Math.max(delay, 1000), () => {
      let p: Promise<string>;
      try {
        p = Promise.resolve(this.opts.getToken());
      } catch (err) {
        p = Promise.reject(err);
      }
      p.then(
        (fresh) => {
          if (epoch !== this.epoch || this._state !== 'connected') return;
          if (typeof fresh === 'string' && fresh !== '' && fresh !== this.token) {
            this.token = fresh;
            this.send({ type: 'refresh', token: fresh });
          }
          // A token that did not change is retried later; if it expires, the hub closes with 4009.
          this.scheduleRefresh(this.token ?? fresh);
        },
        (err: unknown) => {
          if (epoch !== this.epoch) return;
          this.emit('error', new HubClientError('token', `token refresh failed: ${describe(err)}`, null, false, { cause: err }));
          if (this.token) this.scheduleRefresh(this.token);
        },
      );
    });
  }

  // -- browser signals --------------------------------------------------

  private onOffline(): void {
    if (this.offline) return;
    this.offline = true;
    if (!this.active) return;
    this.clearTimer('reconnect');
    if (this.link || this.timers.has('connectTimeout')) {
      this.drop(CloseCode.ABNORMAL, 'browser offline');
    }
  }

  private onOnline(): void {
    const wasOffline = this.offline;
    this.offline = false;
    if (!this.active || this.link) return;
    if (wasOffline || this.timers.has('reconnect')) {
      this.attempts = 0;
      this.open();
    }
  }

  private onVisible(): void {
    if (!this.active) return;
    if (this.timers.has('reconnect')) {
      this.open(); // the user is looking: do not make them wait out the backoff
    } else if (this._state === 'connected') {
      this.armWatchdog(); // timers may have been throttled while hidden
    }
  }

  // -- helpers ----------------------------------------------------------

  private closeProbe(): void {
    const probe = this.probe;
    this.probe = null;
    try {
      probe?.close();
    } catch {
      // already closing
    }
  }

  private send(frame: ClientFrame): void {
    try {
      this.link?.send(frame);
    } catch (err) {
      this.emit('error', new HubClientError('transport', `send failed: ${describe(err)}`, null, false, { cause: err }));
    }
  }

  /** Emits `state` only on a real change. */
  private setState(state: ConnectionState): void {
    const previous = this._state;
    if (previous === state) return;
    this._state = state;
    this.emit('state', { state, previous });
  }

  private setTimer(name: TimerName, ms: number, fn: () => void): void {
    this.clearTimer(name);
    const handle = setTimeout(() => {
      this.timers.delete(name);
      fn();
    }, ms);
    this.timers.set(name, handle);
  }

  private clearTimer(name: TimerName): void {
    const handle = this.timers.get(name);
    if (handle !== undefined) clearTimeout(handle);
    this.timers.delete(name);
  }

  private clearSocketTimers(): void {
    for (const name of ['connectTimeout', 'watchdog', 'refresh', 'stable'] as const) this.clearTimer(name);
  }

  private clearTimers(): void {
    for (const name of [...this.timers.keys()]) this.clearTimer(name);
  }
}

function makeStorage(storage: HubClientOptions['storage'], key: string): OffsetStorage {
  if (storage === undefined || storage === 'memory') return new MemoryStorage();
  if (storage === 'session') {
    const ss = (globalThis as { sessionStorage?: Storage }).sessionStorage;
    return ss ? new WebStorage(ss, key) : new MemoryStorage();
  }
  return storage;
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
