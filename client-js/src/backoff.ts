/**
 * Full-jitter exponential backoff: a delay drawn uniformly from
 * `[0, min(max, base * 2^attempt))`.
 *
 * Full jitter spreads a crowd of clients that lost the same replica over the
 * whole window instead of letting them return in synchronised waves.
 *
 * @param attempt - 0 for the first retry; negative values count as 0. The
 *   exponent is capped, so a huge attempt count never overflows.
 * @param baseMs - the first window, in milliseconds (> 0).
 * @param maxMs - the cap on the window, in milliseconds (>= baseMs).
 * @param random - a source of numbers in [0, 1); injectable for tests.
 * @returns an integer number of milliseconds in `[0, min(maxMs, baseMs * 2^attempt))`.
 */
export function fullJitterDelay(
  attempt: number,
  baseMs: number,
  maxMs: number,
  random: () => number = Math.random,
): number {
  const exponent = Math.min(Math.max(0, Math.floor(attempt)), 30);
  const window = Math.min(maxMs, baseMs * 2 ** exponent);
  const r = Math.min(Math.max(random(), 0), 1 - Number.EPSILON);
  return Math.floor(r * window);
}
