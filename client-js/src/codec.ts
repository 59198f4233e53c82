import { decode as mpDecode, encode as mpEncode } from '@msgpack/msgpack';
import type { ClientFrame, RawFrame } from './frames.js';

/** Wire format of a connection. */
export type Protocol = 'json' | 'msgpack';

/** The WebSocket subprotocol names of protocol v1. */
export const SUBPROTOCOLS: Record<Protocol, string> = {
  json: 'hub.v1.json',
  msgpack: 'hub.v1.msgpack',
};

/** Turns frames into WebSocket payloads and back. */
export interface Codec {
  readonly protocol: Protocol;
  encode(frame: ClientFrame): string | Uint8Array;
  /** @throws Error when the payload is not one map with a `type`. */
  decode(payload: unknown): RawFrame;
}

const textDecoder = new TextDecoder();

function asBytes(payload: unknown): Uint8Array | null {
  if (payload instanceof Uint8Array) return payload;
  if (payload instanceof ArrayBuffer) return new Uint8Array(payload);
  if (ArrayBuffer.isView(payload)) {
    return new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength);
  }
  return null;
}

function asFrame(value: unknown, what: string): RawFrame {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new Error(`expected a map frame, got ${what} ${Array.isArray(value) ? 'array' : typeof value}`);
  }
  if (typeof (value as RawFrame).type !== 'string') {
    throw new Error(`expected a frame with a string "type", got ${what} map without one`);
  }
  return value as RawFrame;
}

/** `hub.v1.json`: text frames holding one JSON object. */
export const jsonCodec: Codec = {
  protocol: 'json',
  encode: (frame) => JSON.stringify(frame),
  decode(payload) {
    const bytes = asBytes(payload);
    const text = bytes ? textDecoder.decode(bytes) : payload;
    if (typeof text !== 'string') throw new Error(`expected a text frame, got ${typeof payload}`);
    return asFrame(JSON.parse(text), 'JSON');
  },
};

/** `hub.v1.msgpack`: binary frames holding one msgpack map (same keys as JSON). */
export const msgpackCodec: Codec = {
  protocol: 'msgpack',
  encode: (frame) => mpEncode(frame),
  decode(payload) {
    // A text frame on a msgpack connection is read as JSON rather than refused.
    if (typeof payload === 'string') return jsonCodec.decode(payload);
    const bytes = asBytes(payload);
    if (!bytes) throw new Error(`expected a binary frame, got ${typeof payload}`);
    return asFrame(mpDecode(bytes), 'msgpack');
  },
};

/**
 * The codec for the subprotocol the server selected. Browsers fail a
 * handshake whose response does not echo a requested subprotocol, so an
 * empty selection only happens with non-browser WebSocket implementations.
 */
export function codecFor(selected: string, requested: Protocol): Codec {
  if (selected === SUBPROTOCOLS.msgpack) return msgpackCodec;
  if (selected === SUBPROTOCOLS.json) return jsonCodec;
  // Some servers (and fakes) accept without echoing a subprotocol: use the requested codec.
  return selected === '' && requested === 'msgpack' ? msgpackCodec : jsonCodec;
}
