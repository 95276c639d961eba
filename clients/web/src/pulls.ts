// The pulls a session has to make, in turn: at most a few on the wire at once, paced within
// the frame rate the server announced, and all held back while the server asks for a wait. A
// client behind in many conversations (after a long time offline, say) then stays within the
// server's limits instead of being refused, again and again, until it is dropped. Nothing here
// touches the socket or a timer: the session writes what `next` gives, reports each answer,
// and comes back at `wakeAt`.

/** Pulls on the wire at once, at most. */
export const MAX_PULLS_IN_FLIGHT = 8;

export class PullQueue {
  private readonly waiting: string[] = [];
  private onWire = 0;
  /** Pulls that may go now by the rate (a token bucket, full at the start). */
  private allowance: number;
  private refilledAt: number | undefined;
  private heldUntil = 0;

  /**
   * @param perSecond pulls per second at most, 0 for no pace (the server announced no frame
   *   rate); as many may go at once, in a burst
   */
  constructor(
    private readonly perSecond = 0,
    private readonly limit = MAX_PULLS_IN_FLIGHT,
  ) {
    this.allowance = perSecond;
  }

  /** A conversation to pull (the timeline asks for one pull per conversation at a time). */
  add(conversationId: string): void {
    this.waiting.push(conversationId);
  }

  /** A refused pull, to go again first once the wait is over. */
  retry(conversationId: string, notBefore: number): void {
    this.waiting.unshift(conversationId);
    this.heldUntil = Math.max(this.heldUntil, notBefore);
  }

  /** The next conversation whose pull may go on the wire at `now`, counted as on it. */
  next(now: number): string | undefined {
    if (this.waiting.length === 0 || this.onWire >= this.limit || now < this.heldUntil) return undefined;
    if (this.perSecond > 0) {
      this.refill(now);
      if (this.allowance < 1) return undefined;
      this.allowance -= 1;
    }
    this.onWire += 1;
    return this.waiting.shift();
  }

  /** A pull on the wire was answered, whatever the answer: its place is free. */
  answered(): void {
    this.onWire = Math.max(this.onWire - 1, 0);
  }

  /**
   * When a waiting pull may go, if only time stands in its way (the server's wait, or the
   * pace); undefined when none waits, or the pulls on the wire must be answered first.
   */
  wakeAt(now: number): number | undefined {
    if (this.waiting.length === 0 || this.onWire >= this.limit) return undefined;
    if (now < this.heldUntil) return this.heldUntil;
    if (this.perSecond > 0) {
      this.refill(now);
      if (this.allowance < 1) return now + Math.ceil(((1 - this.allowance) * 1000) / this.perSecond);
    }
    return undefined;
  }

  private refill(now: number): void {
    if (this.refilledAt !== undefined) {
      this.allowance = Math.min(this.perSecond, this.allowance + ((now - this.refilledAt) * this.perSecond) / 1000);
    }
    this.refilledAt = now;
  }
}
