// Reconnect delays: full-jitter exponential backoff, never shorter than what the server asked
// for (GoAway.reconnect_after_ms, Error.retry_after_ms).

export interface Backoff {
  /** The cap of the first attempt's delay; it doubles per failed attempt. */
  readonly minMs: number;
  /** The largest cap. */
  readonly maxMs: number;
}

export const DEFAULT_BACKOFF: Backoff = { minMs: 250, maxMs: 30_000 };

/** The longest wait a server may ask for; anything above is taken as this (an hour). */
export const MAX_SERVER_DELAY_MS = 3_600_000;

/**
 * The delay before reconnect attempt `attempt` (0 for the first after a connection was lost):
 * uniform in [0, min(maxMs, minMs * 2^attempt)] ("full jitter"), so that the clients a server
 * dropped at once do not come back at once.
 */
export function backoffDelay(attempt: number, backoff: Backoff = DEFAULT_BACKOFF, random: () => number = Math.random): number {
  const cap = Math.min(backoff.maxMs, backoff.minMs * 2 ** Math.min(Math.max(attempt, 0), 30));
  return Math.floor(random() * (cap + 1));
}

/** A delay the server asked for, within reason (negative, NaN or huge values are clamped). */
export function serverDelay(ms: number | bigint): number {
  const n = Number(ms);
  return Number.isFinite(n) && n > 0 ? Math.min(n, MAX_SERVER_DELAY_MS) : 0;
}

/** The wait before attempt `attempt`: the jittered backoff, but at least `atLeastMs`. */
export function reconnectDelay(
  attempt: number,
  atLeastMs: number | bigint,
  backoff: Backoff = DEFAULT_BACKOFF,
  random: () => number = Math.random,
): number {
  return Math.max(backoffDelay(attempt, backoff, random), serverDelay(atLeastMs));
}

/** The first wait before a refused request goes again, when the server named none; it doubles per refusal. */
export const FIRST_RETRY_MS = 200;
/** The longest wait between retries of a refused request (and the wait after a refusal a retry cannot fix). */
export const MAX_RETRY_MS = 30_000;

/**
 * The wait before a refused request (a send, a call, a sync page, a pull) goes again after its
 * `refusals`-th refusal in a row (1 for the first): doubling from 200 ms up to 30 s, and never
 * below the server's `retry_after_ms`.
 */
export function retryDelay(refusals: number, retryAfterMs: number | bigint): number {
  const growing = Math.min(MAX_RETRY_MS, FIRST_RETRY_MS * 2 ** Math.min(Math.max(refusals - 1, 0), 30));
  return Math.max(growing, serverDelay(retryAfterMs));
}
