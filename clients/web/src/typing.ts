// Typing signals lapse by themselves (docs/PROTOCOL.md, "Typing"): a typist who sent no
// `active = true` for about 6 seconds has stopped, whether or not an `active = false` came.
// The client reports that stop itself, so an app shows "typing" exactly while it lasts.

import type { CancelTimer, Clock } from "./clock.js";

export const TYPING_LAPSE_MS = 6_000;

export class TypingLapse {
  /** The lapse of each typist, by conversation and user. */
  private readonly lapses = new Map<string, CancelTimer>();

  constructor(
    private readonly clock: Clock,
    /** Called when a typist's signal lapsed. */
    private readonly lapsed: (conversationId: string, userId: string) => void,
  ) {}

  /** A typing push: `active` starts (or renews) the typist's lapse, an end cancels it. */
  onTyping(conversationId: string, userId: string, active: boolean): void {
    const key = `${conversationId}\n${userId}`;
    this.lapses.get(key)?.();
    this.lapses.delete(key);
    if (!active) return;
    this.lapses.set(
      key,
      this.clock.after(TYPING_LAPSE_MS, () => {
        this.lapses.delete(key);
        this.lapsed(conversationId, userId);
      }),
    );
  }

  /** The client stops: no lapse is reported any more. */
  clear(): void {
    for (const cancel of this.lapses.values()) cancel();
    this.lapses.clear();
  }
}
