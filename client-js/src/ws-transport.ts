import { SUBPROTOCOLS, codecFor, jsonCodec } from './codec.js';
import type { Codec, Protocol } from './codec.js';
import type { ClientFrame, ConnectFrame } from './frames.js';
import type { Transport, TransportHandlers } from './transport.js';
import type { WebSocketConstructor, WebSocketLike } from './types.js';

const OPEN = 1;

/** Protocol v1 over a WebSocket (docs/protocol.md §3): `connect` is the first frame. */
export class WebSocketTransport implements Transport {
  readonly kind = 'websocket';
  private ws: WebSocketLike | null = null;
  private codec: Codec = jsonCodec;

  constructor(
    private readonly url: string,
    private readonly protocol: Protocol,
    private readonly WS: WebSocketConstructor,
    private readonly on: TransportHandlers,
  ) {}

  /** @throws when the WebSocket constructor does (a bad URL). */
  start(connect: ConnectFrame): void {
    const ws = new this.WS(this.url, [SUBPROTOCOLS[this.protocol]]);
    this.ws = ws;
    ws.binaryType = 'arraybuffer';
    ws.onopen = () => {
      if (ws !== this.ws) return;
      this.codec = codecFor(ws.protocol, this.protocol);
      this.send(connect);
    };
    ws.onmessage = (ev) => {
      if (ws !== this.ws) return;
      let frame;
      try {
        frame = this.codec.decode(ev.data);
      } catch (err) {
        this.on.unreadable(err);
        return;
      }
      this.on.frame(frame);
    };
    ws.onclose = (ev) => {
      if (ws !== this.ws) return;
      this.ws = null;
      this.on.closed(ev.code, ev.reason);
    };
    ws.onerror = () => {
      // A close event always follows; the close code says more than the error does.
    };
  }

  send(frame: ClientFrame): void {
    const ws = this.ws;
    if (!ws || ws.readyState !== OPEN) return;
    ws.send(this.codec.encode(frame));
  }

  close(code: number, reason: string): void {
    const ws = this.ws;
    this.ws = null;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onerror = null;
    ws.onclose = null;
    try {
      ws.close(code, reason.slice(0, 120));
    } catch {
      // already closing
    }
  }
}
