// The client's events to the app: listeners, and async iterators over the same stream.

import { report } from "./env.js";
import type { ClientEvent } from "./types.js";

export class Emitter {
  private readonly listeners = new Set<(event: ClientEvent) => void>();
  private ended = false;

  /** Calls `listener` with every event from now on; the returned function stops it. */
  on(listener: (event: ClientEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  emit(event: ClientEvent): void {
    if (event.type === "connection" && event.state.state === "stopped") this.ended = true;
    for (const listener of [...this.listeners]) {
      try {
        listener(event);
      } catch (error) {
        // The app's bug is reported, and the client goes on.
        report(error);
      }
    }
  }

  /** Every event from now on, until the client stops (the `stopped` state is the last one). */
  events(): AsyncIterableIterator<ClientEvent> {
    const queue: ClientEvent[] = [];
    let waiting: ((result: IteratorResult<ClientEvent, undefined>) => void) | undefined;
    let ended = this.ended;
    const finish = () => {
      ended = true;
      off();
    };
    const off = this.on((event) => {
      if (waiting) {
        const w = waiting;
        waiting = undefined;
        w({ value: event, done: false });
      } else {
        queue.push(event);
      }
      if (event.type === "connection" && event.state.state === "stopped") finish();
    });
    const iterator: AsyncIterableIterator<ClientEvent> = {
      next: () => {
        const event = queue.shift();
        if (event) return Promise.resolve({ value: event, done: false });
        if (ended) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => (waiting = resolve));
      },
      return: () => {
        finish();
        queue.length = 0;
        waiting?.({ value: undefined, done: true });
        waiting = undefined;
        return Promise.resolve({ value: undefined, done: true });
      },
      [Symbol.asyncIterator]: () => iterator,
    };
    return iterator;
  }
}
