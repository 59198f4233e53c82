export { HubClient } from './client.js';
export { HubClientError } from './types.js';
export type {
  ConnectionState,
  DisconnectEvent,
  GapEvent,
  HubClientEvents,
  HubClientOptions,
  HubErrorKind,
  HubNotification,
  StateChange,
  TransportChoice,
  WebSocketConstructor,
  WebSocketLike,
} from './types.js';
export { CLIENT_NO_PING, CloseCode, closeCodeName, reconnectPolicy } from './codes.js';
export type { CloseCodeName, CloseCodeValue, ReconnectPolicy } from './codes.js';
export { SUBPROTOCOLS, jsonCodec, msgpackCodec } from './codec.js';
export type { Codec, Protocol } from './codec.js';
export { fullJitterDelay } from './backoff.js';
export { compareOffsets, MemoryStorage, WebStorage } from './offsets.js';
export type { OffsetStorage, StoredOffsets } from './offsets.js';
export { decodeClaims } from './jwt.js';
export { MAX_READ_OFFSETS, ReadTracker } from './reads.js';
export type { MarkReadOptions, ReadMarks, UnreadEvent } from './reads.js';
export type { TokenClaims } from './jwt.js';
export type {
  ClientFrame,
  ConnectedFrame,
  ConnectFrame,
  ErrorFrame,
  NotificationFrame,
  PingFrame,
  PongFrame,
  ReadFrame,
  ReadRequestFrame,
  RefreshFrame,
  ServerFrame,
} from './frames.js';
export type { Transport, TransportHandlers, TransportKind } from './transport.js';
export { WebSocketTransport } from './ws-transport.js';
export { SseTransport, defaultSseUrl, eventId } from './sse-transport.js';
export type { FetchLike } from './sse-transport.js';
