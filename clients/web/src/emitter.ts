// The client's events to the app: listeners, and async iterators over the same stream.

import { report } from "./env.js";
import type { ClientEvent } from "./types.js";

export class Emitter {
  private readonly listeners = new Set<(event: ClientEvent) => void>();
  private ended = false;

  /** How many listeners there are (iterators included). */
  get listenerCount(): number {
    return this.listeners.size;
  }

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
    /** Callers of next() waiting for an event, in the order they called. */
    const waiting: ((result: IteratorResult<ClientEvent, undefined>) => void)[] = [];
    let ended = this.ended;
    const finish = () => {
      ended = true;
      off();
      for (const w of waiting.splice(0)) w({ value: undefined, done: true });
    };
    // A client that stopped already has nothing more to say: no listener to leave behind.
    const off = ended
      ? () => undefined
      : this.on((event) => {
          const w = waiting.shift();
          if (w) w({ value: event, done: false });
          else queue.push(event);
          if (event.type === "connection" && event.state.state === "stopped") finish();
        });
    const iterator: AsyncIterableIterator<ClientEvent> = {
      next: () => {
        const event = queue.shift();
        if (event) return Promise.resolve({ value: event, done: false });
        if (ended) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => waiting.push(resolve));
      },
      return: () => {
        queue.length = 0;
        finish();
        return Promise.resolve({ value: undefined, done: true });
      },
      [Symbol.asyncIterator]: () => iterator,
    };
    return iterator;
  }
}
