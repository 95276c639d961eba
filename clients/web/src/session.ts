// One authenticated connection, from the Welcome until it ends. It catches up (the sync, the
// pending sends, the calls made offline, the presence watched), keeps the connection's
// liveness (heartbeat.ts), batches delivery acknowledgements, and turns what the server sends
// into events: each conversation's entries once and in order, through the Timeline, pulling
// what a gap or a sync says is missing (a few pulls at a time, pulls.ts). A refused sync page
// or pull goes again on this connection after a wait: reconnecting would not help, and would
// bring the client back at once. What outlives the connection (the timeline, the outbox, the
// calls, the conversations: LastingState) is the client's, handed to its sessions in turn.

import { create, fromBinary } from "@bufbuild/protobuf";
import { MAX_RETRY_MS, retryDelay, serverDelay } from "./backoff.js";
import type { CancelTimer, Clock } from "./clock.js";
import type { Conversations } from "./conversations.js";
import type { Emitter } from "./emitter.js";
import { report } from "./env.js";
import { errorCodeName } from "./errors.js";
import { ErrorCode } from "./gen/im/v1/errors_pb.js";
import { PingSchema, type ServerFrame } from "./gen/im/v1/frames_pb.js";
import {
  DeliveryAckSchema,
  MessageBodySchema,
  PresenceSubscribeSchema,
  PullRequestSchema,
  SendRequestSchema,
  SyncRequestSchema,
  type ConversationState,
  type MessageBody,
  type SendAck,
} from "./gen/im/v1/messaging_pb.js";
import { Heartbeat, heartbeatSettings } from "./heartbeat.js";
import { PullQueue } from "./pulls.js";
import type { Link, LinkClosed } from "./link.js";
import type { Sends } from "./outbox.js";
import { ProtocolError } from "./protocol-error.js";
import type { Call, ClientBody, Request, Requests, ServerBody } from "./requests.js";
import type { Timeline, TimelineAction } from "./timeline.js";
import type { TypingLapse } from "./typing.js";
import {
  bodyFromWire,
  conversationFromWire,
  entryFromWire,
  pageFromWire,
  presenceFromWire,
  type Entry,
  type Sent,
} from "./types.js";

/** Why a session ended, and so what the client does next. */
export type Ended =
  | { kind: "closed" }
  | { kind: "token_expired"; reason: string }
  | { kind: "lost"; reason: string; atLeastMs: number }
  | { kind: "fatal"; error: ProtocolError };

/** What outlives a connection: the client's, handed to each session in turn. */
export interface LastingState {
  readonly timeline: Timeline;
  readonly sends: Sends;
  readonly requests: Requests;
  readonly conversations: Conversations;
  /** Conversations whose progress the server has not been told. */
  readonly unacked: Set<string>;
  /** Users whose presence the app watches: subscribed again on every connection. */
  readonly watched: ReadonlySet<string>;
  readonly typing: TypingLapse;
  readonly events: Emitter;
}

export interface SessionSettings {
  readonly deviceId: string;
  readonly clock: Clock;
  /** Delivery acknowledgements go this long after the entries they cover. */
  readonly ackDelayMs: number;
  readonly requestTimeoutMs: number;
  /** A ping not followed by any frame within this long ends the connection. */
  readonly pongTimeoutMs: number;
  /** A send or a call waits out a refusal: the client must come back to it. */
  readonly onRetryLater: () => void;
}

/**
 * Whether a refusal ends the client for good: a retry cannot fix it, and reconnecting would be
 * wrong (a newer session of the device took over) or useless (a bad token).
 */
export function isFatal(code: number): boolean {
  switch (code) {
    case ErrorCode.SESSION_REPLACED:
    case ErrorCode.TOKEN_REVOKED:
    case ErrorCode.USER_DISABLED:
    case ErrorCode.UNAUTHENTICATED:
    case ErrorCode.UNSUPPORTED_VERSION:
    case ErrorCode.INVALID_ARGUMENT:
      return true;
    default:
      return false;
  }
}

/** What the server's word (a GoAway, an Error push, a close reason) means for the session. */
export function endedBy(code: number, message: string, atLeastMs: number): Ended {
  const reason = `${errorCodeName(code) ?? code}: ${message}`;
  if (code === ErrorCode.TOKEN_EXPIRED) return { kind: "token_expired", reason };
  if (isFatal(code)) return { kind: "fatal", error: new ProtocolError(code, message || reason) };
  return { kind: "lost", reason, atLeastMs };
}

export class Session {
  /** Resolves once, when the session is over. */
  readonly ended: Promise<Ended>;
  private resolveEnded!: (ended: Ended) => void;
  private done = false;
  private readonly heartbeat: Heartbeat;
  private cancelLiveness: CancelTimer | undefined;
  private cancelAck: CancelTimer | undefined;
  private cancelResync: CancelTimer | undefined;
  /** checkConnection callers, told whether the server answered. */
  private probes: ((alive: boolean) => void)[] = [];
  /** Retries of refused sync pages, on this connection. */
  private readonly retries = new Set<CancelTimer>();
  private readonly pulls: PullQueue;
  private cancelPullWake: CancelTimer | undefined;
  /** Refusals in a row: of the sync, and of pulls. */
  private syncRefusals = 0;
  private pullRefusals = 0;
  private syncDone = false;
  /** What the server's last Error about the connection said: the close that follows means it. */
  private connectionError: { code: number; message: string; retryAfterMs: number } | undefined;

  constructor(
    private readonly link: Link,
    private readonly lasting: LastingState,
    private readonly settings: SessionSettings,
  ) {
    this.ended = new Promise((resolve) => (this.resolveEnded = resolve));
    const welcome = link.welcome;
    this.heartbeat = new Heartbeat(
      heartbeatSettings(welcome.heartbeatIntervalMs, welcome.idleTimeoutMs, settings.pongTimeoutMs),
      settings.clock.now(),
    );
    this.pulls = new PullQueue(pullsPerSecond(welcome.limits?.maxFramesPerSecond ?? 0));
    lasting.timeline.setUser(welcome.userId);
    lasting.requests.connected();
  }

  get userId(): string {
    return this.link.welcome.userId;
  }

  get isOver(): boolean {
    return this.done;
  }

  /** Whether a sync ran to its last page on this connection: the client is caught up. */
  get synced(): boolean {
    return this.syncDone;
  }

  /** Catches up and serves the connection until it ends. */
  start(): void {
    if (this.done) return;
    this.link.serve(
      (frame) => this.onFrame(frame),
      (closed) => this.end(this.closedBy(closed)),
    );
    this.guard(() => {
      // The sync first, as after every Welcome; then what the last connection left unanswered.
      this.sync();
      this.flushSends();
      for (const call of this.lasting.requests.takeQueued()) this.sendCall(call);
      this.watchAgain();
    });
    this.armLiveness();
  }

  /** Ends the session (once): what was on the wire is asked again on the next connection. */
  end(ended: Ended): void {
    if (this.done) return;
    this.done = true;
    for (const cancel of [this.cancelLiveness, this.cancelAck, this.cancelResync, this.cancelPullWake, ...this.retries]) {
      cancel?.();
    }
    this.retries.clear();
    this.lasting.requests.connectionLost();
    this.lasting.sends.connectionLost();
    this.lasting.timeline.connectionLost();
    this.link.close();
    for (const probe of this.probes.splice(0)) probe(false);
    this.resolveEnded(ended);
  }

  /**
   * Checks that the server is there: a ping some frame must follow within `timeoutMs`. False
   * (and the session ends, to be replaced) when none does.
   */
  probe(timeoutMs: number): Promise<boolean> {
    if (this.done) return Promise.resolve(false);
    return new Promise((resolve) => {
      this.probes.push(resolve);
      this.guard(() => this.ping(timeoutMs));
      this.armLiveness();
    });
  }

  /** Puts every send that is not on the wire (nor waiting out a refusal) on it, oldest first. */
  flushSends(): void {
    this.guard(() => {
      const { sends, requests } = this.lasting;
      for (let next = sends.nextDue(this.now()); next; next = sends.nextDue(this.now())) {
        let body: MessageBody;
        try {
          body = fromBinary(MessageBodySchema, next.body);
        } catch (cause) {
          // A body the store kept damaged can never go out: only this send fails.
          const error = new ProtocolError(ErrorCode.INVALID_ARGUMENT, `the send's body does not decode: ${String(cause)}`, {
            cause,
          });
          sends.fail(next.clientMsgId, error);
          continue;
        }
        const id = requests.register({ kind: "send", clientMsgId: next.clientMsgId });
        sends.onWire(next.clientMsgId, id);
        const { clientMsgId, conversationId } = next;
        const value = create(SendRequestSchema, { clientMsgId, conversationId, body });
        try {
          this.link.write(id, { case: "send", value });
        } catch (error) {
          // Too large for any frame: only this send fails, for good.
          if (!isTooLarge(error)) throw error;
          requests.take(id);
          sends.fail(next.clientMsgId, error);
        }
      }
    });
  }

  /** Puts a call on the wire; once the session is over, back in the queue for the next one. */
  sendCall(call: Call): void {
    if (this.done) return this.lasting.requests.queue(call);
    this.guard(() => {
      const id = this.lasting.requests.register({ kind: "call", call });
      try {
        this.link.write(id, call.body);
      } catch (error) {
        // Too large to send at all: only this call fails.
        if (!isTooLarge(error)) throw error;
        this.lasting.requests.take(id);
        call.reject(error);
      }
    });
  }

  /** A frame with no answer (typing): best effort. */
  notify(body: ClientBody): void {
    this.guard(() => this.link.write(0n, body));
  }

  /** Retries whose time has come. */
  tick(): void {
    this.flushSends();
    for (const call of this.lasting.requests.due(this.now())) this.sendCall(call);
  }

  private now(): number {
    return this.settings.clock.now();
  }

  /** Runs `f`; a failure ends the session (and the client reconnects). */
  private guard(f: () => void): void {
    if (this.done) return;
    try {
      f();
    } catch (error) {
      if (!(error instanceof ProtocolError)) report(error);
      const e = error instanceof ProtocolError ? error : new ProtocolError(ErrorCode.INTERNAL, String(error));
      this.end({ kind: "lost", reason: `${e.codeName}: ${e.message}`, atLeastMs: e.retryAfterMs });
    }
  }

  /** Writes a request whose answer goes to `request`. */
  private transmit(request: Request, body: ClientBody): void {
    this.link.write(this.lasting.requests.register(request), body);
  }

  /** How a close ends the session: by the error its reason names, or the Error that came before it. */
  private closedBy(closed: LinkClosed): Ended {
    const said = this.connectionError;
    if (closed.code !== undefined) return endedBy(closed.code, closed.reason, said?.retryAfterMs ?? 0);
    if (said) return endedBy(said.code, `${said.message} (${closed.reason})`, said.retryAfterMs);
    return { kind: "lost", reason: closed.reason, atLeastMs: 0 };
  }

  // ---- liveness

  /** One timer, for whatever the heartbeat says comes next. */
  private armLiveness(): void {
    if (this.done) return;
    this.cancelLiveness?.();
    const wait = Math.max(this.heartbeat.nextCheckAt() - this.now(), 0);
    this.cancelLiveness = this.settings.clock.after(wait, () => {
      switch (this.heartbeat.check(this.now())) {
        case "dead":
          this.end({ kind: "lost", reason: "the server stopped answering", atLeastMs: 0 });
          return;
        case "ping":
          this.guard(() => this.ping());
          break;
        case "alive":
          break;
      }
      this.armLiveness();
    });
  }

  private ping(timeoutMs?: number): void {
    const value = create(PingSchema, { clientTimeMs: BigInt(Date.now()) });
    this.transmit({ kind: "ping" }, { case: "ping", value });
    this.heartbeat.pinged(this.now(), timeoutMs);
  }

  // ---- catching up

  /** Asks what moved while the client was away, from what it holds and has read. */
  private sync(): void {
    const cursors = (map: ReadonlyMap<string, number>) =>
      [...map].map(([conversationId, seq]) => ({ conversationId, seq: BigInt(seq) }));
    const value = create(SyncRequestSchema, {
      held: cursors(this.lasting.timeline.heldSeqs()),
      read: cursors(this.lasting.conversations.readCursors()),
    });
    this.transmit({ kind: "sync", pageToken: "" }, { case: "sync", value });
  }

  /** Asks for a page of the sync under way (a fresh sync for the first page). */
  private syncPage(pageToken: string): void {
    if (!pageToken) return this.sync();
    this.transmit({ kind: "sync", pageToken }, { case: "sync", value: create(SyncRequestSchema, { pageToken }) });
  }

  /** Runs `f` on this connection after `ms`, unless it ends first. */
  private retryLater(ms: number, f: () => void): void {
    const cancel = this.settings.clock.after(ms, () => {
      this.retries.delete(cancel);
      this.guard(f);
    });
    this.retries.add(cancel);
  }

  /** Puts the pulls whose turn has come on the wire; comes back when the others' time comes. */
  private sendPulls(): void {
    const now = this.now();
    for (let conversationId = this.pulls.next(now); conversationId !== undefined; conversationId = this.pulls.next(now)) {
      // From what is held by now: pushes may have moved it since the pull was asked for.
      const afterSeq = BigInt(this.lasting.timeline.heldOf(conversationId));
      const value = create(PullRequestSchema, { conversationId, afterSeq });
      this.transmit({ kind: "pull", conversationId }, { case: "pull", value });
    }
    const wakeAt = this.pulls.wakeAt(now);
    if (wakeAt === undefined || this.cancelPullWake) return;
    this.cancelPullWake = this.settings.clock.after(wakeAt - now, () => {
      this.cancelPullWake = undefined;
      this.guard(() => this.sendPulls());
    });
  }

  /** Presence subscriptions belong to a connection: the watched users again, for a fresh snapshot. */
  private watchAgain(): void {
    if (this.lasting.watched.size === 0) return;
    const value = create(PresenceSubscribeSchema, { userIds: [...this.lasting.watched] });
    this.sendCall({
      body: { case: "presenceSubscribe", value },
      resolve: (answer) => {
        if (answer.case !== "presences") return;
        for (const p of answer.value.presences) {
          this.lasting.events.emit({ type: "presence", presence: presenceFromWire(p) });
        }
      },
      reject: () => undefined,
      deadline: this.now() + this.settings.requestTimeoutMs,
    });
  }

  /** Tells the server how far the conversations that moved are held, batched. */
  private scheduleAck(): void {
    if (this.cancelAck) return;
    this.cancelAck = this.settings.clock.after(this.settings.ackDelayMs, () => {
      this.cancelAck = undefined;
      this.guard(() => {
        const { unacked, timeline } = this.lasting;
        const acks = [...unacked].map((conversationId) => ({
          conversationId,
          seq: BigInt(timeline.heldOf(conversationId)),
        }));
        unacked.clear();
        if (acks.length > 0) this.link.write(0n, { case: "deliveryAck", value: create(DeliveryAckSchema, { acks }) });
      });
    });
  }

  // ---- what the server sends

  private onFrame(frame: ServerFrame): void {
    if (this.done) return;
    this.heartbeat.heard(this.now());
    for (const probe of this.probes.splice(0)) probe(true);
    let ended: Ended | undefined;
    this.guard(() => (ended = this.handle(frame)));
    if (ended) this.end(ended);
  }

  /** Handles a frame; what ends the session, if it must end. */
  private handle(frame: ServerFrame): Ended | undefined {
    const body = frame.body;
    if (body.case === undefined) return undefined;
    if (frame.requestId !== 0n) {
      this.onAnswer(frame.requestId, body);
      return undefined;
    }
    const events = this.lasting.events;
    switch (body.case) {
      case "message":
        this.applyTimeline(this.lasting.timeline.onEntry(entryFromWire(body.value)));
        break;
      case "readState": {
        const { conversationId, readSeq, unreadCount } = body.value;
        this.lasting.conversations.onRead(conversationId, Number(readSeq), Number(unreadCount));
        events.emit({ type: "read_state", conversationId, readSeq: Number(readSeq), unreadCount: Number(unreadCount) });
        break;
      }
      case "readReceipt": {
        const { conversationId, userId, readSeq } = body.value;
        events.emit({ type: "receipt", conversationId, userId, readSeq: Number(readSeq) });
        break;
      }
      case "typing": {
        const { conversationId, userId, active } = body.value;
        this.lasting.typing.onTyping(conversationId, userId, active);
        events.emit({ type: "typing", conversationId, userId, active });
        break;
      }
      case "presence":
        events.emit({ type: "presence", presence: presenceFromWire(body.value) });
        break;
      case "conversation":
        this.onConversation(body.value);
        break;
      case "resync":
        // Pushes may have been lost: sync on this connection once the server's wait is over.
        this.cancelResync?.();
        this.cancelResync = this.settings.clock.after(serverDelay(body.value.syncAfterMs), () => {
          this.cancelResync = undefined;
          this.guard(() => {
            this.sync();
            this.watchAgain();
          });
        });
        break;
      case "goAway":
        return endedBy(body.value.code, body.value.message, serverDelay(body.value.reconnectAfterMs));
      case "error":
        if (body.value.code === ErrorCode.TOKEN_EXPIRED || isFatal(body.value.code)) {
          return endedBy(body.value.code, body.value.message, 0);
        }
        // Others come before the close that ends the session; their wait holds for the reconnect.
        this.connectionError = {
          code: body.value.code,
          message: body.value.message,
          retryAfterMs: serverDelay(body.value.retryAfterMs),
        };
        break;
      // Other pushes (answers' bodies sent as pushes among them) mean nothing to the client.
    }
    return undefined;
  }

  private onAnswer(requestId: bigint, body: ServerBody): void {
    const { requests, sends, conversations } = this.lasting;
    const request = requests.take(requestId);
    switch (request?.kind) {
      case "send":
        if (body.case === "sendAck") this.onSendAck(request.clientMsgId, body.value);
        else if (body.case === "error") {
          sends.onRefused(request.clientMsgId, ProtocolError.fromWire(body.value, requestId), this.now());
          this.settings.onRetryLater();
        }
        break;
      case "call":
        if (body.case === "error") {
          requests.refused(request.call, ProtocolError.fromWire(body.value, requestId), this.now());
          this.settings.onRetryLater();
        } else {
          // The device's own mark_read moves its conversation list too.
          if (body.case === "readState") {
            conversations.onRead(body.value.conversationId, Number(body.value.readSeq), Number(body.value.unreadCount));
          }
          request.call.resolve(body);
        }
        break;
      case "sync":
        this.onSync(request.pageToken, body);
        break;
      case "pull":
        this.onPull(request.conversationId, body);
        break;
      // A ping's answer only shows the server is there; an answer to an expired call finds nothing.
    }
  }

  /** Once acknowledged, the sender's own entry takes its place in the conversation like any other. */
  private onSendAck(clientMsgId: string, ack: SendAck): void {
    const sent: Sent = {
      conversationId: ack.conversationId,
      clientMsgId,
      seq: Number(ack.seq),
      serverMsgId: ack.serverMsgId,
      serverTimeMs: Number(ack.serverTimeMs),
      duplicate: ack.duplicate,
    };
    const outgoing = this.lasting.sends.onAck(sent);
    if (!outgoing) return;
    const own: Entry = {
      conversationId: sent.conversationId,
      seq: sent.seq,
      serverMsgId: sent.serverMsgId,
      senderUserId: this.userId,
      senderDeviceId: this.settings.deviceId,
      clientMsgId,
      serverTimeMs: sent.serverTimeMs,
      body: bodyFromWire(fromBinary(MessageBodySchema, outgoing.body)),
    };
    this.applyTimeline(this.lasting.timeline.onEntry(own));
  }

  private onSync(pageToken: string, body: ServerBody): void {
    if (body.case === "error") {
      // Without the sync the client would miss what moved: the page goes again on this
      // connection, after the server's wait or a growing one. A refusal a retry cannot fix
      // (a page token gone stale, say) starts a fresh sync, and only rarely: a reconnect would
      // be refused the same way, at once.
      const error = ProtocolError.fromWire(body.value);
      this.syncRefusals += 1;
      const wait = retryDelay(this.syncRefusals, error.retryAfterMs);
      if (error.retryable) this.retryLater(wait, () => this.syncPage(pageToken));
      else this.retryLater(Math.max(wait, MAX_RETRY_MS), () => this.sync());
      return;
    }
    if (body.case !== "sync") return;
    this.syncRefusals = 0;
    for (const state of body.value.conversations) this.onConversation(state);
    const next = body.value.nextPageToken;
    if (next) this.syncPage(next);
    else this.syncDone = true;
  }

  private onPull(conversationId: string, body: ServerBody): void {
    this.pulls.answered();
    if (body.case === "messages") {
      this.pullRefusals = 0;
      const page = pageFromWire(body.value);
      this.applyTimeline(this.lasting.timeline.onPage(conversationId, page.entries, page.lastSeq, page.visibleFromSeq));
    } else if (body.case === "error" && ProtocolError.fromWire(body.value).retryable) {
      // A passing refusal (a rate limit): every pull waits, then this one goes again first,
      // on this connection.
      this.pullRefusals += 1;
      this.pulls.retry(conversationId, this.now() + retryDelay(this.pullRefusals, body.value.retryAfterMs));
    } else {
      // Refused for good (the user left, say).
      this.lasting.timeline.onPullRefused(conversationId);
    }
    this.sendPulls();
  }

  private onConversation(state: ConversationState): void {
    const { timeline, conversations, events } = this.lasting;
    const conversation = conversations.onState(conversationFromWire(state));
    // Out of the conversation: what the client holds stays, and nothing more is pulled.
    if (state.active) timeline.onVisibleFrom(state.conversationId, Number(state.visibleFromSeq));
    events.emit({ type: "conversation", conversation });
    if (state.active) this.applyTimeline(timeline.onLastSeq(state.conversationId, conversation.lastSeq));
  }

  /** Carries out the timeline's actions in order. */
  private applyTimeline(actions: TimelineAction[]): void {
    for (const action of actions) {
      switch (action.type) {
        case "advance":
          this.lasting.conversations.onHeld(action.conversationId, action.held, action.fromOthers);
          this.lasting.unacked.add(action.conversationId);
          this.scheduleAck();
          break;
        case "show":
          this.lasting.events.emit({
            type: action.entry.body.kind === "content" ? "message" : "change",
            entry: action.entry,
          });
          break;
        case "pull":
          this.pulls.add(action.conversationId);
          break;
      }
    }
    this.sendPulls();
  }
}

/**
 * The pace of pulls within the server's frame rate (0: none announced): half of it, so that
 * sends, calls and pings have their room too.
 */
function pullsPerSecond(maxFramesPerSecond: number): number {
  return maxFramesPerSecond > 0 ? Math.max(Math.floor(maxFramesPerSecond / 2), 1) : 0;
}

function isTooLarge(error: unknown): error is ProtocolError {
  return error instanceof ProtocolError && error.code === ErrorCode.FRAME_TOO_LARGE;
}

