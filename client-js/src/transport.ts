import type { ClientFrame, ConnectFrame, RawFrame } from './frames.js';

/** Which transport carries a connection (docs/protocol.md §3 WebSocket, §10 SSE). */
export type TransportKind = 'websocket' | 'sse';

/** What a transport reports to the client; every callback comes from the transport in use only. */
export interface TransportHandlers {
  /** A frame from the hub (SSE pings, which are comments on the wire, come as `{type: 'ping'}`). */
  frame(frame: RawFrame): void;
  /** A payload that could not be read as a frame; the connection stays up. */
  unreadable(error: unknown): void;
  /** The connection ended: a WebSocket close code, or the same code carried by SSE. */
  closed(code: number, reason: string): void;
}

/**
 * The seam between the client and what carries its frames: a WebSocket (`ws-transport.ts`)
 * or Server-Sent Events with client frames sent by POST (`sse-transport.ts`). The client
 * decides; a transport only carries. `start` sends the `connect` frame the way its
 * transport does (the first WebSocket frame; a ticket and `Last-Event-ID` over SSE).
 */
export interface Transport {
  readonly kind: TransportKind;
  /** Open the connection and send `connect`; failures come back through `closed`. */
  start(connect: ConnectFrame): void;
  /** Send a frame once open; frames before that, or after a close, are dropped. */
  send(frame: ClientFrame): void;
  /** Close from our side; no callback follows. */
  close(code: number, reason: string): void;
}

export function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
