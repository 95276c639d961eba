// The engine behind the Client: one connection at a time, kept up by itself. It connects (the
// subprotocol offer, the Hello with a token from the provider, the Welcome), serves a Session
// until it ends, and reconnects with full-jitter backoff, never sooner than the server asked,
// until the app closes it or the server refuses it for good. Meanwhile it keeps the app's
// sends (the outbox) and calls, on the wire when connected and queued when not.

import { create } from "@bufbuild/protobuf";
import { DEFAULT_BACKOFF, reconnectDelay, type Backoff } from "./backoff.js";
import { every, type CancelTimer, type Clock } from "./clock.js";
import { Conversations } from "./conversations.js";
import type { Emitter } from "./emitter.js";
import { ErrorCode } from "./gen/im/v1/errors_pb.js";
import { ClientFeature, HelloSchema } from "./gen/im/v1/frames_pb.js";
import { Platform } from "./gen/im/v1/messaging_pb.js";
import { DEFAULT_PONG_TIMEOUT_MS } from "./heartbeat.js";
import { Link, SUPPORTED_VERSIONS, type WebSocketConstructor } from "./link.js";
import { MemoryOutbox, Sends, type Outgoing, type OutboxStore } from "./outbox.js";
import { ProtocolError } from "./protocol-error.js";
import { Requests, type Call, type ClientBody, type ServerBody } from "./requests.js";
import { Session, type Ended, type Shared } from "./session.js";
import { Timeline } from "./timeline.js";
import { TypingLapse } from "./typing.js";
import type { ConnectionState, Conversation, Sent } from "./types.js";

/**
 * Supplies access tokens: asked before every connection (and business API call), with
 * `refresh` true once the server said the last one expired.
 */
export type TokenProvider = (refresh: boolean) => string | Promise<string>;

export interface ConnectionOptions {
  url: string;
  deviceId: string;
  token: string | TokenProvider;
  WebSocket: WebSocketConstructor;
  clock: Clock;
  platform?: Platform;
  outbox?: OutboxStore;
  connectTimeoutMs?: number;
  requestTimeoutMs?: number;
  pongTimeoutMs?: number;
  backoff?: Backoff;
  ackDelayMs?: number;
  maxFrameBytes?: number;
}

export const CLIENT_VERSION = "im-web/0.1.0";

/** How often retries and timeouts are looked at. */
const HOUSEKEEPING_MS = 100;

export class Connection {
  private readonly shared: Shared & { readonly watched: Set<string> };
  private current: ConnectionState = { state: "connecting" };
  private me = "";
  private session: Session | undefined;
  private running: Promise<void> | undefined;
  private closing = false;
  private stopped: ProtocolError | undefined;
  /** Gives up the connection attempt under way (the client is closed meanwhile). */
  private cancelOpen: (() => void) | undefined;
  /** Ends the wait before the next attempt early. */
  private endPause: (() => void) | undefined;
  private cancelHousekeeping: CancelTimer | undefined;

  constructor(
    private readonly options: ConnectionOptions,
    private readonly events: Emitter,
  ) {
    this.shared = {
      timeline: new Timeline(),
      sends: new Sends(options.outbox ?? new MemoryOutbox()),
      requests: new Requests(),
      conversations: new Conversations(),
      unacked: new Set(),
      watched: new Set(),
      typing: new TypingLapse(options.clock, (conversationId, userId) =>
        events.emit({ type: "typing", conversationId, userId, active: false }),
      ),
      events,
    };
  }

  get state(): ConnectionState {
    return this.current;
  }

  get userId(): string {
    return this.me;
  }

  /** Starts (once) and resolves with the authenticated user once connected; rejects if stopped first. */
  connect(): Promise<string> {
    if (!this.running && !this.stopped) this.running = this.run();
    return new Promise((resolve, reject) => {
      const settled = (): boolean => {
        if (this.current.state === "connected") resolve(this.current.userId);
        else if (this.stopped) reject(this.stopped);
        else return false;
        return true;
      };
      if (settled()) return;
      const off = this.events.on((event) => {
        if (event.type === "connection" && settled()) off();
      });
    });
  }

  async close(): Promise<void> {
    this.closing = true;
    this.session?.end({ kind: "closed" });
    this.cancelOpen?.();
    this.endPause?.();
    if (this.running) await this.running;
    else this.stop(closedError());
  }

  /**
   * Checks the connection now instead of trusting the socket: the server must answer a ping
   * within `timeoutMs`, or the connection is replaced at once. While the client waits to
   * reconnect, it stops waiting. True when the server answered.
   */
  checkConnection(timeoutMs: number): Promise<boolean> {
    const session = this.session;
    if (session && !session.isOver) return session.probe(timeoutMs);
    this.endPause?.();
    return Promise.resolve(false);
  }

  /** A send, resolved on the server's ack; kept and resent until then. */
  send(outgoing: Outgoing): Promise<Sent> {
    if (this.stopped) return Promise.reject(this.stopped);
    return new Promise((resolve, reject) => {
      void this.shared.sends.enqueue(outgoing, { resolve, reject }).then(() => this.session?.flushSends());
    });
  }

  /** A request with an answer; queued while offline, until its timeout. */
  call(body: ClientBody): Promise<ServerBody> {
    if (this.stopped) return Promise.reject(this.stopped);
    return new Promise((resolve, reject) => {
      const deadline = this.options.clock.now() + (this.options.requestTimeoutMs ?? 30_000);
      const call: Call = { body, resolve, reject, deadline };
      const session = this.session;
      if (session && !session.isOver) session.sendCall(call);
      else this.shared.requests.queue(call);
    });
  }

  /** A frame without an answer (typing): dropped while offline, which is what it is worth then. */
  notify(body: ClientBody): void {
    this.session?.notify(body);
  }

  /** Users to subscribe to again on every connection (their presence belongs to a connection). */
  watch(userIds: string[], watching: boolean): void {
    for (const user of userIds) {
      if (watching) this.shared.watched.add(user);
      else this.shared.watched.delete(user);
    }
  }

  conversations(): Conversation[] {
    return this.shared.conversations.list();
  }

  private async run(): Promise<void> {
    try {
      await this.shared.sends.restore();
    } catch (cause) {
      this.stop(new ProtocolError(ErrorCode.INTERNAL, `the outbox could not be loaded: ${String(cause)}`, { cause }));
      return;
    }
    this.cancelHousekeeping = every(this.options.clock, HOUSEKEEPING_MS, () => this.housekeeping());
    let attempt = 0;
    let refresh = false;
    while (!this.closing) {
      this.setState({ state: "connecting" });
      let ended: Ended;
      try {
        const link = await this.open(refresh);
        if (this.closing) {
          link.close();
          break;
        }
        attempt = 0;
        refresh = false;
        ended = await this.serve(link);
      } catch (error) {
        ended = refusal(asProtocolError(error));
      }
      if (ended.kind === "closed" || this.closing) break;
      if (ended.kind === "fatal") {
        this.stop(ended.error);
        return;
      }
      refresh = ended.kind === "token_expired";
      const atLeastMs = ended.kind === "lost" ? ended.atLeastMs : 0;
      const delay = reconnectDelay(attempt, atLeastMs, this.options.backoff ?? DEFAULT_BACKOFF);
      attempt += 1;
      this.setState({ state: "reconnecting", reason: ended.reason, retryInMs: delay });
      await this.pause(delay);
    }
    this.stop(closedError());
  }

  private async open(refresh: boolean): Promise<Link> {
    const hello = create(HelloSchema, {
      protocolVersions: [...SUPPORTED_VERSIONS],
      token: await this.token(refresh),
      deviceId: this.options.deviceId,
      platform: this.options.platform ?? Platform.WEB,
      clientVersion: CLIENT_VERSION,
      maxFrameBytes: this.options.maxFrameBytes ?? 0,
      features: [ClientFeature.RESYNC],
    });
    if (this.closing) throw closedError();
    try {
      return await Link.open(this.options.WebSocket, this.options.url, hello, {
        maxFrameBytes: this.options.maxFrameBytes ?? 0,
        timeoutMs: this.options.connectTimeoutMs ?? 10_000,
        clock: this.options.clock,
        onCancel: (cancel) => (this.cancelOpen = cancel),
      });
    } finally {
      this.cancelOpen = undefined;
    }
  }

  private async token(refresh: boolean): Promise<string> {
    const token = this.options.token;
    return typeof token === "string" ? token : token(refresh);
  }

  /** Waits `ms`, or less if the client is closed or asked to check its connection meanwhile. */
  private pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        cancel();
        this.endPause = undefined;
        resolve();
      };
      const cancel = this.options.clock.after(ms, done);
      this.endPause = done;
    });
  }

  /** One authenticated connection, until it ends. */
  private serve(link: Link): Promise<Ended> {
    const session = new Session(link, this.shared, {
      deviceId: this.options.deviceId,
      clock: this.options.clock,
      ackDelayMs: this.options.ackDelayMs ?? 100,
      requestTimeoutMs: this.options.requestTimeoutMs ?? 30_000,
      pongTimeoutMs: this.options.pongTimeoutMs ?? DEFAULT_PONG_TIMEOUT_MS,
    });
    this.session = session;
    this.me = session.userId;
    this.setState({ state: "connected", userId: session.userId, sessionId: link.welcome.sessionId });
    // The app may have closed the client on hearing it was connected: then the session is over already.
    session.start();
    return session.ended.finally(() => {
      if (this.session === session) this.session = undefined;
    });
  }

  /** Retries and timeouts, connected or not. */
  private housekeeping(): void {
    this.shared.requests.expire(this.options.clock.now());
    const session = this.session;
    if (session && !session.isOver) session.tick();
  }

  private stop(error: ProtocolError): void {
    if (this.stopped) return;
    this.stopped = error;
    this.cancelHousekeeping?.();
    this.shared.typing.clear();
    this.shared.sends.stop(error);
    this.shared.requests.stop(error);
    this.setState({ state: "stopped", reason: `${error.codeName}: ${error.message}` });
  }

  private setState(state: ConnectionState): void {
    this.current = state;
    this.events.emit({ type: "connection", state });
  }
}

function closedError(): ProtocolError {
  return new ProtocolError(ErrorCode.UNAVAILABLE, "the client was closed");
}

function asProtocolError(error: unknown): ProtocolError {
  return error instanceof ProtocolError
    ? error
    : new ProtocolError(ErrorCode.UNAVAILABLE, String(error), { cause: error });
}

/** What a failed connection attempt means: refresh the token, stop, or try again later. */
function refusal(error: ProtocolError): Ended {
  const reason = `${error.codeName}: ${error.message}`;
  if (error.code === ErrorCode.TOKEN_EXPIRED) return { kind: "token_expired", reason };
  // A refusal a retry cannot fix ends the client (a bad token, a version gap).
  if (!error.retryable) return { kind: "fatal", error };
  return { kind: "lost", reason, atLeastMs: error.retryAfterMs };
}
