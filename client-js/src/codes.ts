/**
 * WebSocket close codes of protocol v1 (docs/protocol.md §3).
 *
 * This is the twin of the server's `hub/codes.py`: change one only together
 * with the other.
 */
export const CloseCode = {
  /** Normal closure (RFC 6455). */
  NORMAL: 1000,
  /** Going away: the peer went silent (ping timeout) or the server left (RFC 6455). */
  GOING_AWAY: 1001,
  /** No close frame was received: the connection dropped (RFC 6455; client-side only, never on the wire). */
  ABNORMAL: 1006,
  /** A frame was larger than the hub accepts. */
  FRAME_TOO_BIG: 1009,
  /** The hub hit an unexpected error (RFC 6455). */
  INTERNAL_ERROR: 1011,
  /** The replica is restarting or draining: reconnect (elsewhere) at once. */
  SERVICE_RESTART: 1012,
  /** The replica is overloaded: reconnect later, with backoff. */
  TRY_AGAIN_LATER: 1013,
  /** Bad or missing token. */
  BAD_TOKEN: 4001,
  /** Protocol error: a frame the hub could not understand. */
  PROTOCOL_ERROR: 4002,
  /** A topic was not allowed for this token. */
  FORBIDDEN: 4003,
  /** Frame rate or connections-per-user limit reached. */
  LIMIT: 4008,
  /** The token expired (and was not refreshed in time). */
  TOKEN_EXPIRED: 4009,
} as const;

export type CloseCodeName = keyof typeof CloseCode;
export type CloseCodeValue = (typeof CloseCode)[CloseCodeName];

/** Close code the client itself uses when its watchdog gives up on a silent socket. */
export const CLIENT_NO_PING = 4000;

/**
 * What the client does after a close with a given code.
 *
 * - `now`: reconnect at once (a restarting replica; the load balancer picks another).
 * - `backoff`: reconnect after a full-jitter backoff delay.
 * - `slow`: reconnect after a backoff delay drawn from a wider window (overload, limits).
 * - `token`: the token was refused; fetch a new one (getToken) and reconnect.
 * - `stop`: do not reconnect; the application has to act.
 */
export type ReconnectPolicy = 'now' | 'backoff' | 'slow' | 'token' | 'stop';

/** Maps a close code to the client's reconnect policy. Unknown codes back off. */
export function reconnectPolicy(code: number): ReconnectPolicy {
  switch (code) {
    case CloseCode.SERVICE_RESTART:
      return 'now';
    case CloseCode.TRY_AGAIN_LATER:
    case CloseCode.LIMIT:
      return 'slow';
    case CloseCode.BAD_TOKEN:
    case CloseCode.TOKEN_EXPIRED:
      return 'token';
    case CloseCode.FORBIDDEN:
      return 'stop';
    default:
      return 'backoff';
  }
}

/** A readable name for a close code, for logs and error messages. */
export function closeCodeName(code: number): string {
  for (const [name, value] of Object.entries(CloseCode)) {
    if (value === code) return name;
  }
  if (code === CLIENT_NO_PING) return 'CLIENT_NO_PING';
  return `CODE_${code}`;
}
