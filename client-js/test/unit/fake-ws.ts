// A fake WebSocket (and the hub behind it) for unit tests: the test plays the server.
import { decode as mpDecode, encode as mpEncode } from '@msgpack/msgpack';
import type { WebSocketLike } from '../../src/types.js';

export class FakeSocket implements WebSocketLike {
  static instances: FakeSocket[] = [];
  static reset(): void {
    FakeSocket.instances = [];
  }
  static get last(): FakeSocket {
    const ws = FakeSocket.instances.at(-1);
    if (!ws) throw new Error('expected a socket to have been opened, got none');
    return ws;
  }

  readyState = 0;
  protocol = '';
  binaryType: BinaryType = 'blob';
  onopen: ((ev: Event) => unknown) | null = null;
  onmessage: ((ev: MessageEvent) => unknown) | null = null;
  onclose: ((ev: CloseEvent) => unknown) | null = null;
  onerror: ((ev: Event) => unknown) | null = null;
  /** Raw payloads the client sent. */
  readonly raw: unknown[] = [];
  closedByClient: { code?: number | undefined; reason?: string | undefined } | null = null;

  constructor(
    readonly url: string,
    readonly protocols?: string | string[],
  ) {
    FakeSocket.instances.push(this);
  }

  /** Frames the client sent, decoded. */
  get sent(): Record<string, unknown>[] {
    return this.raw.map((p) =>
      typeof p === 'string' ? JSON.parse(p) : (mpDecode(p as Uint8Array) as Record<string, unknown>),
    );
  }

  send(data: string | ArrayBufferLike | ArrayBufferView): void {
    if (this.readyState !== 1) throw new Error(`send() on a socket in state ${this.readyState}`);
    this.raw.push(data);
  }

  close(code?: number, reason?: string): void {
    this.closedByClient = { code, reason };
    this.readyState = 3;
  }

  // -- the server's side --

  /** Accepts the upgrade, selecting the first offered subprotocol. */
  accept(): void {
    const offered = typeof this.protocols === 'string' ? [this.protocols] : (this.protocols ?? []);
    this.protocol = offered[0] ?? '';
    this.readyState = 1;
    this.onopen?.({} as Event);
  }

  /** Sends a frame to the client, encoded as the negotiated subprotocol does. */
  push(frame: Record<string, unknown>): void {
    const data = this.protocol === 'hub.v1.msgpack' ? toArrayBuffer(mpEncode(frame)) : JSON.stringify(frame);
    this.onmessage?.({ data } as MessageEvent);
  }

  pushRaw(data: unknown): void {
    this.onmessage?.({ data } as MessageEvent);
  }

  /** Closes from the server's side (or the network's). */
  serverClose(code: number, reason = ''): void {
    this.readyState = 3;
    this.onclose?.({ code, reason, wasClean: code !== 1006 } as CloseEvent);
  }

  /** Accepts and answers the connect frame with `connected`. */
  handshake(extra: Partial<Record<string, unknown>> = {}): void {
    this.accept();
    this.push({
      type: 'connected',
      conn_id: `c${FakeSocket.instances.indexOf(this)}`,
      user: '42',
      topics: ['user.42'],
      replica: 'r1',
      ping_interval: 25,
      recovered: true,
      offsets: {},
      ...extra,
    });
  }
}

function toArrayBuffer(u8: Uint8Array): ArrayBuffer {
  return u8.buffer.slice(u8.byteOffset, u8.byteOffset + u8.byteLength) as ArrayBuffer;
}

/** A JWT-shaped token (unsigned: the client never verifies). */
export function fakeJwt(claims: Record<string, unknown>): string {
  const b64 = (o: unknown): string => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}.c2ln`;
}

/** Lets pending promise callbacks (getToken) run; setImmediate is not faked. */
export function flush(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

export function notification(offset: string | undefined, data: unknown = {}, topic = 'user.42'): Record<string, unknown> {
  const frame: Record<string, unknown> = { type: 'notification', id: `n-${offset ?? Math.random()}`, topic, ts: 1, data };
  if (offset !== undefined) frame['offset'] = offset;
  return frame;
}
