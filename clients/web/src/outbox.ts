// The sends not yet acknowledged. A send is kept, in memory and in the outbox store, from the
// moment the app makes it until the server acknowledges it or refuses it for good. Until then it
// goes on the wire on every connection with the same client message id, so the server makes one
// entry of it however often it arrives. A passing refusal (a rate limit) holds it back, and the
// sends after it, for the delay the server asked for or a growing one; any other refusal fails it.
//
// Nothing here touches the socket: the client writes what nextDue gives and hands back answers.

import { retryDelay } from "./backoff.js";
import { ErrorCode } from "./gen/im/v1/errors_pb.js";
import { ProtocolError } from "./protocol-error.js";
import type { Sent } from "./types.js";

/** A send waiting for its acknowledgement, as the outbox store keeps it. */
export interface Outgoing {
  /** The idempotency key: every resend carries the same one. */
  readonly clientMsgId: string;
  readonly conversationId: string;
  /** The encoded `im.v1.MessageBody`. */
  readonly body: Uint8Array;
}

/**
 * Where unacknowledged sends are kept. In memory by default; a persistent store (IndexedDB, say)
 * makes sends survive a reload: they are loaded when the client starts and resent with their ids.
 */
export interface OutboxStore {
  /** Every send kept, oldest first. */
  load(): Promise<Outgoing[]>;
  /** Keeps a send (before it first goes out); a send with a kept id is left as it is. */
  put(outgoing: Outgoing): Promise<void>;
  /** Forgets an acknowledged (or finally refused) send. */
  remove(clientMsgId: string): Promise<void>;
}

export class MemoryOutbox implements OutboxStore {
  private readonly kept: Outgoing[] = [];

  async load(): Promise<Outgoing[]> {
    return [...this.kept];
  }

  async put(outgoing: Outgoing): Promise<void> {
    if (!this.kept.some((o) => o.clientMsgId === outgoing.clientMsgId)) this.kept.push(outgoing);
  }

  async remove(clientMsgId: string): Promise<void> {
    const at = this.kept.findIndex((o) => o.clientMsgId === clientMsgId);
    if (at >= 0) this.kept.splice(at, 1);
  }
}

/** Who waits for a send's acknowledgement. */
export interface SendWaiter {
  resolve(sent: Sent): void;
  reject(error: ProtocolError): void;
}

interface Pending {
  outgoing: Outgoing;
  /** The app's call, and any repeat of it with the same id; none for a send restored from the store. */
  waiters: SendWaiter[];
  /** False until the store has it: a send never goes out before it is kept. */
  stored: boolean;
  /** The request id of the copy on the wire. */
  inFlight?: bigint;
  /** Not to be sent again before this (after a passing refusal). */
  notBefore?: number;
  /** Passing refusals so far: the wait before the next try grows with them. */
  refusals: number;
}

export class Sends {
  private readonly pending: Pending[] = [];

  constructor(private readonly store: OutboxStore) {}

  /**
   * Takes in the store's outbox (when the client starts): resent on the first connection, ahead
   * of the sends made meanwhile, since they were made before them.
   */
  async restore(): Promise<void> {
    const restored: Pending[] = [];
    for (const outgoing of await this.store.load()) {
      if (!this.find(outgoing.clientMsgId)) restored.push({ outgoing, waiters: [], stored: true, refusals: 0 });
    }
    this.pending.unshift(...restored);
  }

  get size(): number {
    return this.pending.length;
  }

  /** Adds a send; a repeat of a pending id waits for the same acknowledgement. */
  async enqueue(outgoing: Outgoing, waiter: SendWaiter): Promise<void> {
    const known = this.find(outgoing.clientMsgId);
    if (known) {
      known.waiters.push(waiter);
      return;
    }
    const pending: Pending = { outgoing, waiters: [waiter], stored: false, refusals: 0 };
    this.pending.push(pending);
    try {
      await this.store.put(outgoing);
      pending.stored = true;
    } catch (cause) {
      this.drop(pending);
      const error = new ProtocolError(ErrorCode.INTERNAL, `the outbox could not keep the send: ${String(cause)}`, { cause });
      for (const w of pending.waiters) w.reject(error);
    }
  }

  /**
   * The oldest send not on the wire, if it may go at `now`. None goes past a send the store has
   * not kept yet, nor past one waiting out a refusal: the server orders entries as they arrive,
   * and the app's order is the one to keep.
   */
  nextDue(now: number): Outgoing | undefined {
    for (const p of this.pending) {
      if (!p.stored || (p.notBefore ?? 0) > now) return undefined;
      if (p.inFlight === undefined) return p.outgoing;
    }
    return undefined;
  }

  /** Whether a send waits out a refusal: something to come back to later. */
  get waiting(): boolean {
    return this.pending.some((p) => p.notBefore !== undefined);
  }

  /** The send went on the wire under `requestId`. */
  onWire(clientMsgId: string, requestId: bigint): void {
    const pending = this.find(clientMsgId);
    if (pending) {
      pending.inFlight = requestId;
      pending.notBefore = undefined;
    }
  }

  /**
   * The server acknowledged the send: its waiters resolve, the store forgets it. Returns the
   * send, for the sender's own entry to take its place (undefined if it was no longer pending).
   */
  onAck(sent: Sent): Outgoing | undefined {
    const pending = this.find(sent.clientMsgId);
    if (!pending) return undefined;
    this.forget(pending);
    for (const w of pending.waiters) w.resolve(sent);
    return pending.outgoing;
  }

  /** The server refused the send: a passing refusal holds it back, any other fails it. */
  onRefused(clientMsgId: string, error: ProtocolError, now: number): void {
    const pending = this.find(clientMsgId);
    if (!pending) return;
    if (error.retryable) {
      pending.inFlight = undefined;
      pending.refusals += 1;
      pending.notBefore = now + retryDelay(pending.refusals, error.retryAfterMs);
    } else {
      this.fail(clientMsgId, error);
    }
  }

  /** Drops a send refused for good (or too large to send at all): its waiters learn why. */
  fail(clientMsgId: string, error: ProtocolError): void {
    const pending = this.find(clientMsgId);
    if (!pending) return;
    this.forget(pending);
    for (const w of pending.waiters) w.reject(error);
  }

  /** The connection is gone: every send goes on the wire again on the next one, with its id. */
  connectionLost(): void {
    for (const p of this.pending) p.inFlight = undefined;
  }

  /** The client stops: every waiter learns why; the store keeps the sends, for the next start. */
  stop(error: ProtocolError): void {
    for (const p of this.pending.splice(0)) {
      for (const w of p.waiters) w.reject(error);
    }
  }

  private find(clientMsgId: string): Pending | undefined {
    return this.pending.find((p) => p.outgoing.clientMsgId === clientMsgId);
  }

  private drop(pending: Pending): void {
    const at = this.pending.indexOf(pending);
    if (at >= 0) this.pending.splice(at, 1);
  }

  private forget(pending: Pending): void {
    this.drop(pending);
    // A failed removal only means the send goes out once more after a restart, and the server
    // answers it as a duplicate: not worth failing anything for.
    this.store.remove(pending.outgoing.clientMsgId).catch(() => undefined);
  }
}
