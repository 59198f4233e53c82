/** What the client reads from a JWT, without verifying it (the hub does that). */
export interface TokenClaims {
  /** Expiry, seconds since the epoch. */
  exp?: number;
  /** The user id. */
  sub?: string;
  /** Extra topics granted to the connection. */
  topics?: string[];
}

function base64UrlDecode(segment: string): string {
  const b64 = segment.replace(/-/g, '+').replace(/_/g, '/');
  const padded = b64 + '='.repeat((4 - (b64.length % 4)) % 4);
  const binary = atob(padded);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return new TextDecoder().decode(bytes);
}

/**
 * Reads the payload of a JWT (base64url JSON, the middle segment).
 * Returns null for anything that is not a readable JWT: the caller then
 * simply cannot schedule a refresh from it.
 */
export function decodeClaims(token: string): TokenClaims | null {
  const parts = token.split('.');
  if (parts.length !== 3 || !parts[1]) return null;
  try {
    const payload: unknown = JSON.parse(base64UrlDecode(parts[1]));
    if (typeof payload !== 'object' || payload === null) return null;
    const p = payload as Record<string, unknown>;
    const claims: TokenClaims = {};
    if (typeof p['exp'] === 'number' && Number.isFinite(p['exp'])) claims.exp = p['exp'];
    if (typeof p['sub'] === 'string') claims.sub = p['sub'];
    else if (typeof p['sub'] === 'number') claims.sub = String(p['sub']);
    if (Array.isArray(p['topics'])) {
      claims.topics = p['topics'].filter((t): t is string => typeof t === 'string');
    }
    return claims;
  } catch {
    return null;
  }
}

/**
 * When to refresh a token, in milliseconds from `nowMs`: `leadMs` before its
 * expiry, but never earlier than half of its remaining life (a short-lived
 * token is not refreshed in a tight loop), and never negative.
 *
 * @returns null when the token carries no readable `exp`.
 */
export function refreshDelay(token: string, nowMs: number, leadMs: number): number | null {
  const claims = decodeClaims(token);
  if (claims?.exp === undefined) return null;
  const remaining = claims.exp * 1000 - nowMs;
  if (remaining <= 0) return 0;
  const lead = Math.min(leadMs, remaining / 2);
  return Math.max(0, Math.floor(remaining - lead));
}
