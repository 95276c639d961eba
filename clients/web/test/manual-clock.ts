// A clock that moves only when the test says: every wait of the client (backoff, the server's
// hints, heartbeats, deadlines) is then exact, and a test checks what happens before and after
// a moment instead of measuring real time.

import type { CancelTimer, Clock } from "@im/web";

interface Timer {
  at: number;
  order: number;
  f: () => void;
}

export class ManualClock implements Clock {
  private time = 0;
  private order = 0;
  private timers: Timer[] = [];

  now(): number {
    return this.time;
  }

  /** How many timers are set: what the client still means to do. */
  get pending(): number {
    return this.timers.length;
  }

  after(ms: number, f: () => void): CancelTimer {
    const timer: Timer = { at: this.time + Math.max(ms, 0), order: this.order++, f };
    this.timers.push(timer);
    return () => {
      this.timers = this.timers.filter((t) => t !== timer);
    };
  }

  /** Moves time on by `ms`, firing the timers due on the way in order, letting the client react to each. */
  async advance(ms: number): Promise<void> {
    const target = this.time + ms;
    await settle();
    for (let next = this.due(target); next; next = this.due(target)) {
      this.timers = this.timers.filter((t) => t !== next);
      this.time = next.at;
      next.f();
      await settle();
    }
    this.time = target;
  }

  private due(target: number): Timer | undefined {
    let first: Timer | undefined;
    for (const t of this.timers) {
      if (t.at <= target && (!first || t.at < first.at || (t.at === first.at && t.order < first.order))) first = t;
    }
    return first;
  }
}

/** Lets pending promise continuations run (a few turns of the event loop). */
export async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
}
