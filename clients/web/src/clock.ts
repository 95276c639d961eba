// Time as the client sees it: a monotonic "now" and one-shot timers. The host's by default;
// a program (or a test) may pass its own, so that every wait the client makes (backoff, the
// server's hints, heartbeats, deadlines) runs on the clock it is given.

/** Cancels a timer; cancelling one that fired already does nothing. */
export type CancelTimer = () => void;

export interface Clock {
  /** Milliseconds on a clock that does not jump when the wall clock is set. */
  now(): number;
  /** Calls `f` once, `ms` from now. */
  after(ms: number, f: () => void): CancelTimer;
}

interface TimerHost {
  setTimeout(f: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
  performance?: { now(): number };
}

const host = globalThis as unknown as TimerHost;

/** The host's timers and its monotonic clock (Date.now where it has none). */
export const hostClock: Clock = {
  now: () => (host.performance ? host.performance.now() : Date.now()),
  after: (ms, f) => {
    const handle = host.setTimeout(f, ms);
    return () => host.clearTimeout(handle);
  },
};

/** Calls `f` every `ms` until cancelled, each call timed from the end of the one before. */
export function every(clock: Clock, ms: number, f: () => void): CancelTimer {
  let cancel: CancelTimer = () => undefined;
  let stopped = false;
  const arm = () => {
    cancel = clock.after(ms, () => {
      if (stopped) return;
      arm();
      f();
    });
  };
  arm();
  return () => {
    stopped = true;
    cancel();
  };
}
