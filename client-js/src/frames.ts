/** Frames of WebSocket protocol v1 (docs/protocol.md §3). Every frame is one map with a `type`. */

/** `connect`: must be the first frame the client sends. */
export interface ConnectFrame {
  type: 'connect';
  token: string;
  /** Last offset seen per topic; asks the hub to replay what came after. */
  since?: Record<string, string>;
}

/** `refresh`: replaces an expiring token without reconnecting. */
export interface RefreshFrame {
  type: 'refresh';
  token: string;
}

/** `pong`: the answer to a `ping`. */
export interface PongFrame {
  type: 'pong';
}

/** `read`: mark notifications of a topic read, up to an offset and/or one by one (§9). */
export interface ReadRequestFrame {
  type: 'read';
  topic: string;
  up_to?: string;
  offsets?: string[];
}

export type ClientFrame = ConnectFrame | RefreshFrame | PongFrame | ReadRequestFrame;

/** `connected`: the hub accepted the connection. */
export interface ConnectedFrame {
  type: 'connected';
  conn_id: string;
  user: string;
  topics: string[];
  replica: string;
  /** Seconds between the hub's pings. */
  ping_interval: number;
  /** False when a `since` offset was older than the retained history: the app should refetch. */
  recovered: boolean;
  /** The latest offset per topic at connect time. */
  offsets: Record<string, string>;
  /** Unread count per topic (§9); absent when the hub keeps no read state (history off). */
  unread?: Record<string, number>;
}

/** `read`: the user's read state of a topic changed (in any tab or device, or over HTTP). */
export interface ReadFrame {
  type: 'read';
  topic: string;
  /** Everything up to this offset is read (`0-0`: nothing). */
  up_to: string;
  /** Notifications after `up_to` read one by one. */
  offsets: string[];
  /** The topic's unread count after the change. */
  unread: number;
}

/** `notification`: one notification for the user (or a granted topic). */
export interface NotificationFrame<T = unknown> {
  type: 'notification';
  id: string;
  topic: string;
  /** `<ms>-<seq>`; absent when history is off on the hub. */
  offset?: string;
  /** Milliseconds since the epoch, when the hub accepted it. */
  ts: number;
  /** The published payload. */
  data: T;
}

/** `ping`: the hub is alive; answer with `pong`. */
export interface PingFrame {
  type: 'ping';
}

/** `error`: sent before a close that has a reason. */
export interface ErrorFrame {
  type: 'error';
  code: number | string;
  message: string;
}

export type ServerFrame = ConnectedFrame | NotificationFrame | PingFrame | ErrorFrame | ReadFrame;

/** An untyped frame as it came off the wire, before validation. */
export type RawFrame = { type?: unknown } & Record<string, unknown>;

/** Checks the shape of a decoded frame; returns a reason when it is not usable, else null. */
export function invalidFrameReason(frame: RawFrame): string | null {
  switch (frame.type) {
    case 'connected':
      if (typeof frame['conn_id'] !== 'string') return 'connected: expected string conn_id';
      if (typeof frame['user'] !== 'string') return 'connected: expected string user';
      return null;
    case 'notification':
      if (typeof frame['topic'] !== 'string') return 'notification: expected string topic';
      if ('offset' in frame && frame['offset'] != null && typeof frame['offset'] !== 'string') {
        return `notification: expected string offset, got ${typeof frame['offset']}`;
      }
      return null;
    case 'read':
      return invalidReadFrame(frame);
    case 'ping':
    case 'error':
      return null;
    default:
      return `unknown frame type ${JSON.stringify(frame.type)}`;
  }
}

/** Checks a `read` frame's shape; a reason when it is not usable, else null. */
function invalidReadFrame(frame: RawFrame): string | null {
  if (typeof frame['topic'] !== 'string') return 'read: expected string topic';
  if (typeof frame['up_to'] !== 'string') return 'read: expected string up_to';
  if (!Array.isArray(frame['offsets']) || !frame['offsets'].every((o) => typeof o === 'string')) return 'read: expected offsets, a list of strings';
  if (typeof frame['unread'] !== 'number') return 'read: expected number unread';
  return null;
}
