import { CloseCode } from './codes.js';
import type { ClientFrame, ConnectFrame, RawFrame } from './frames.js';
import { describe } from './transport.js';
import type { Transport, TransportHandlers } from './transport.js';

/** The part of `fetch` the SSE transport uses; tests may inject one. */
export type FetchLike = (input: string, init?: RequestInit) => Promise<Response>;

/** Where a stream's client frames go: `POST <sseUrl>/<stream>` with its secret (the `hub.stream` event). */
interface PostTarget {
  url: string;
  secret: string;
}

/** The close code a refused ticket or stream stands for, when its body does not name one. */
function statusCode(status: number): number {
  switch (status) {
    case 401:
      return CloseCode.BAD_TOKEN;
    case 403:
      return CloseCode.FORBIDDEN;
    case 400:
      return CloseCode.PROTOCOL_ERROR;
    case 413:
      return CloseCode.FRAME_TOO_BIG;
    case 429:
      return CloseCode.LIMIT;
    default:
      return CloseCode.TRY_AGAIN_LATER;
  }
}

/** The SSE endpoint next to a WebSocket endpoint: `wss://h/ws` → `https://h/sse`. */
export function defaultSseUrl(wsUrl: string): string {
  const url = wsUrl.replace(/^ws(s?):/i, 'http$1:').replace(/[?#].*$/, '');
  return url.replace(/\/ws\/?$/, '/sse');
}

/** `Last-Event-ID` for a `since` map: `topic:offset` pairs, sorted, joined by `,` (docs/protocol.md §10). */
export function eventId(since: Record<string, string>): string {
  return Object.keys(since)
    .sort()
    .map((topic) => `${topic}:${since[topic]}`)
    .join(',');
}

/**
 * Protocol v1 over Server-Sent Events (docs/protocol.md §10), read with `fetch` so that
 * the hub's ping comments are seen (the client's watchdog) and `Last-Event-ID` can be
 * sent on a new stream: the token buys a single-use ticket (`POST <sseUrl>/ticket`),
 * the ticket opens `GET <sseUrl>?ticket=…`, and client frames go by `POST` to the
 * stream. Refusals (an HTTP status, or an `event: close`) become the same close codes
 * a WebSocket would carry.
 */
export class SseTransport implements Transport {
  readonly kind = 'sse';
  private abort: AbortController | null = null;
  private post: PostTarget | null = null;
  private done = false;

  constructor(
    private readonly url: string,
    private readonly fetchFn: FetchLike,
    private readonly on: TransportHandlers,
  ) {}

  start(connect: ConnectFrame): void {
    const controller = new AbortController();
    this.abort = controller;
    this.run(connect, controller.signal).then(
      () => this.finish(CloseCode.ABNORMAL, 'the stream ended'),
      (err: unknown) => this.finish(CloseCode.ABNORMAL, `stream failed: ${describe(err)}`),
    );
  }

  send(frame: ClientFrame): void {
    const post = this.post;
    if (frame.type === 'pong' || !post || this.done) return; // the hub takes a written ping as life
    this.fetchFn(post.url, {
      method: 'POST',
      headers: { authorization: `Bearer ${post.secret}`, 'content-type': 'text/plain;charset=UTF-8' },
      body: JSON.stringify(frame),
    }).then(
      async (response) => {
        // 404: the stream ended; its end reaches us on the stream itself.
        if (!response.ok && response.status !== 404 && !this.done) {
          this.on.unreadable(new Error(`POST ${frame.type} answered ${response.status}: ${await errorText(response)}`));
        }
      },
      (err: unknown) => {
        if (!this.done) this.on.unreadable(new Error(`POST ${frame.type} failed: ${describe(err)}`));
      },
    );
  }

  close(_code: number, _reason: string): void {
    this.done = true;
    this.abort?.abort();
    this.abort = null;
  }

  private finish(code: number, reason: string): void {
    if (this.done) return;
    this.done = true;
    this.abort?.abort();
    this.abort = null;
    this.on.closed(code, reason);
  }

  private async run(connect: ConnectFrame, signal: AbortSignal): Promise<void> {
    const ticketResponse = await this.fetchFn(`${this.url}/ticket`, {
      method: 'POST',
      headers: { authorization: `Bearer ${connect.token}` },
      signal,
    });
    if (!ticketResponse.ok) return this.refused(ticketResponse);
    const { ticket } = (await ticketResponse.json()) as { ticket: string };
    const headers: Record<string, string> = { accept: 'text/event-stream' };
    if (connect.since && Object.keys(connect.since).length > 0) headers['last-event-id'] = eventId(connect.since);
    const response = await this.fetchFn(`${this.url}?ticket=${encodeURIComponent(ticket)}`, {
      headers,
      cache: 'no-store',
      signal,
    });
    if (!response.ok || !response.body) return this.refused(response);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    let event = 'message';
    let data: string[] = [];
    for (;;) {
      const { value, done } = await reader.read();
      if (done || this.done) return;
      buffer += value;
      let newline: number;
      while ((newline = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, newline).replace(/\r$/, '');
        buffer = buffer.slice(newline + 1);
        if (line === '') {
          if (data.length > 0) this.dispatch(event, data.join('\n'));
          if (this.done) return;
          event = 'message';
          data = [];
        } else if (line.startsWith(':')) {
          this.on.frame({ type: 'ping' }); // a ping comment: the hub is there
        } else {
          const colon = line.indexOf(':');
          const name = colon < 0 ? line : line.slice(0, colon);
          const field = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
          if (name === 'data') data.push(field);
          else if (name === 'event') event = field;
        }
      }
    }
  }

  private dispatch(event: string, data: string): void {
    let value: unknown;
    try {
      value = JSON.parse(data);
    } catch (err) {
      this.on.unreadable(err);
      return;
    }
    if (event === 'hub.stream') {
      const hello = value as { stream?: unknown; secret?: unknown };
      if (typeof hello.stream === 'string' && typeof hello.secret === 'string') {
        this.post = { url: `${this.url}/${hello.stream}`, secret: hello.secret };
      }
    } else if (event === 'close') {
      const close = value as { code?: unknown; reason?: unknown };
      this.finish(typeof close.code === 'number' ? close.code : CloseCode.ABNORMAL, String(close.reason ?? ''));
    } else if (event === 'message') {
      if (typeof value !== 'object' || value === null || typeof (value as RawFrame).type !== 'string') {
        this.on.unreadable(new Error('expected a frame with a string "type"'));
        return;
      }
      this.on.frame(value as RawFrame);
    }
  }

  private async refused(response: Response): Promise<void> {
    let code = statusCode(response.status);
    let reason = `HTTP ${response.status}`;
    try {
      const body = (await response.json()) as { error?: unknown; code?: unknown };
      if (typeof body.code === 'number') code = body.code;
      if (typeof body.error === 'string') reason = body.error;
    } catch {
      // not JSON: the status says it
    }
    this.finish(code, reason);
  }
}

async function errorText(response: Response): Promise<string> {
  try {
    return await response.text();
  } catch {
    return '';
  }
}
