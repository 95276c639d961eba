// The requests that wait for an answer. A call (history, mark read, presence, ...) made while
// offline waits in the queue for the next connection, as long as its timeout allows; one the
// server refused for a passing reason waits out the delay asked for and goes again. Whatever is
// on the wire (calls, sends, sync pages, pulls, pings) is kept under its request id until its
// answer comes; when the connection is lost, the calls on it go back to the queue.
//
// Nothing here touches the socket, so the rules are tested on their own.

import { retryDelay } from "./backoff.js";
import { ErrorCode } from "./gen/im/v1/errors_pb.js";
import type { ClientFrame, ServerFrame } from "./gen/im/v1/frames_pb.js";
import { ProtocolError } from "./protocol-error.js";

export type ClientBody = Exclude<ClientFrame["body"], { case: undefined }>;
export type ServerBody = Exclude<ServerFrame["body"], { case: undefined }>;

/** A call waiting for the connection or its answer. */
export interface Call {
  /** Kept to be sent again after a lost connection or a passing refusal. */
  readonly body: ClientBody;
  readonly resolve: (answer: ServerBody) => void;
  readonly reject: (error: ProtocolError) => void;
  /** When the caller stops waiting. */
  readonly deadline: number;
  /** After a passing refusal: not to be sent again before this. */
  notBefore?: number;
  /** Passing refusals so far: the wait before the next try grows with them. */
  refusals?: number;
  /** Whether it went on the wire at least once: its deadline is then a TIMEOUT, not UNAVAILABLE. */
  sent?: boolean;
}

/** What a request on the wire was, so that its answer finds its way. */
export type Request =
  | { kind: "send"; clientMsgId: string }
  | { kind: "call"; call: Call }
  | { kind: "sync"; pageToken: string }
  | { kind: "pull"; conversationId: string }
  | { kind: "ping" };

/** The request id of the Hello; a connection's other requests follow it. */
export const HELLO_REQUEST_ID = 1n;

export class Requests {
  /** Calls made while offline, or waiting out a passing refusal, oldest first. */
  private queued: Call[] = [];
  private readonly onWire = new Map<bigint, Request>();
  private lastId = HELLO_REQUEST_ID;

  /** A connection is authenticated: its ids follow the Hello's. */
  connected(): void {
    this.lastId = HELLO_REQUEST_ID;
  }

  /** Puts a request on the wire under the connection's next id, which its frame must carry. */
  register(request: Request): bigint {
    if (request.kind === "call") request.call.sent = true;
    this.lastId += 1n;
    this.onWire.set(this.lastId, request);
    return this.lastId;
  }

  /** Takes a request off the wire: its answer came, or it could not be written. */
  take(requestId: bigint): Request | undefined {
    const request = this.onWire.get(requestId);
    this.onWire.delete(requestId);
    return request;
  }

  /** Whether a call waits (queued, or on the wire): its deadline or retry is still to come. */
  get waiting(): boolean {
    return this.queued.length > 0 || [...this.onWire.values()].some((r) => r.kind === "call");
  }

  queue(call: Call): void {
    this.queued.push(call);
  }

  /** Every queued call, whatever its retry time: a new connection sends them all. */
  takeQueued(): Call[] {
    return this.queued.splice(0);
  }

  /** The queued calls whose retry time has come at `now`, oldest first; the others stay. */
  due(now: number): Call[] {
    const due = this.queued.filter((c) => (c.notBefore ?? 0) <= now);
    this.queued = this.queued.filter((c) => (c.notBefore ?? 0) > now);
    return due;
  }

  /** The server refused a call: a passing refusal is retried if the caller still waits by then. */
  refused(call: Call, error: ProtocolError, now: number): void {
    const refusals = (call.refusals ?? 0) + 1;
    const retryAt = now + retryDelay(refusals, error.retryAfterMs);
    if (error.retryable && retryAt < call.deadline) {
      call.refusals = refusals;
      call.notBefore = retryAt;
      this.queued.push(call);
    } else {
      call.reject(error);
    }
  }

  /**
   * Fails the calls whose deadline has passed: UNAVAILABLE for those never sent (the client was
   * offline all along), TIMEOUT for those sent (on the wire, or queued again after a lost
   * connection or a refusal; a late answer then finds nothing).
   */
  expire(now: number): void {
    const expired = this.queued.filter((c) => c.deadline <= now);
    this.queued = this.queued.filter((c) => c.deadline > now);
    for (const call of expired) {
      call.reject(
        call.sent
          ? new ProtocolError(ErrorCode.TIMEOUT, "no answer in time")
          : new ProtocolError(ErrorCode.UNAVAILABLE, "not connected before the request timeout"),
      );
    }
    for (const [id, request] of this.onWire) {
      if (request.kind === "call" && request.call.deadline <= now) {
        this.onWire.delete(id);
        request.call.reject(new ProtocolError(ErrorCode.TIMEOUT, "no answer in time", { requestId: id }));
      }
    }
  }

  /**
   * The connection is gone and nothing on it will be answered. Calls go back to the queue for
   * the next connection; the rest is asked again by what made it (sends are resent, the sync
   * and the pulls start over).
   */
  connectionLost(): void {
    for (const request of this.onWire.values()) {
      if (request.kind === "call") this.queued.push(request.call);
    }
    this.onWire.clear();
  }

  /** The client stops: every caller learns why. */
  stop(error: ProtocolError): void {
    const calls = [...this.queued.splice(0)];
    for (const request of this.onWire.values()) {
      if (request.kind === "call") calls.push(request.call);
    }
    this.onWire.clear();
    for (const call of calls) call.reject(error);
  }
}
