// The engine behind the Client: one connection at a time, kept up by itself. It connects (the
// subprotocol offer, the Hello with a token from the provider, the Welcome), serves a Session
// until it ends, and reconnects with full-jitter backoff, never sooner than the server asked,
// until the app closes it or the server refuses it for good. Meanwhile it keeps the app's
// sends (the outbox) and calls, on the wire when connected and queued when not.

import { create } from "@bufbuild/protobuf";
import { DEFAULT_BACKOFF, reconnectDelay, serverDelay, type Backoff } from "./backoff.js";
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
import { Session, endedBy, type Ended, type LastingState } from "./session.js";
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

/** A session that lasted this long worked, caught up or not: the backoff starts over after it. */
const STABLE_SESSION_MS = 60_000;

/** How often retries and timeouts are looked at. */
const HOUSEKEEPING_MS = 100;

export class Connection {
  private readonly lasting: LastingState & { readonly watched: Set<string> };
  private current: ConnectionState = { state: "connecting" };
  private me = "";
  private session: Session | undefined;
  private running: Promise<void> | undefined;
  private closing = false;
  private stopped: ProtocolError | undefined;
  /** Gives up the connection attempt under way (the client is closed meanwhile). */
  private cancelOpen: (() => void) | undefined;
  /** Cuts the wait before the next attempt to what the server asked for (or ends it, once closing). */
  private cutPause: (() => void) | undefined;
  private cancelHousekeeping: CancelTimer | undefined;

  constructor(
    private readonly options: ConnectionOptions,
    private readonly events: Emitter,
  ) {
    this.lasting = {
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

  /**
   * The authenticated user, known since the first Welcome and kept across reconnects. Before
   * that it waits for a Welcome, without starting the client, up to the request timeout.
   */
  knownUserId(): Promise<string> {
    if (this.me) return Promise.resolve(this.me);
    if (this.stopped) return Promise.reject(this.stopped);
    return new Promise((resolve, reject) => {
      const settle = (f: () => void) => {
        off();
        cancel();
        f();
      };
      const off = this.events.on((event) => {
        if (event.type !== "connection") return;
        if (event.state.state === "connected") settle(() => resolve(this.me));
        else if (this.stopped) settle(() => reject(this.stopped));
      });
      const unknown = new ProtocolError(ErrorCode.UNAVAILABLE, "the user is not known: not connected before the request timeout");
      const cancel = this.options.clock.after(this.options.requestTimeoutMs ?? 30_000, () => settle(() => reject(unknown)));
    });
  }

  async close(): Promise<void> {
    this.closing = true;
    this.session?.end({ kind: "closed" });
    this.cancelOpen?.();
    this.cutPause?.();
    if (this.running) await this.running;
    else this.stop(closedError());
  }

  /**
   * Checks the connection now instead of trusting the socket: the server must answer a ping
   * within `timeoutMs`, or the connection is replaced at once. While the client waits to
   * reconnect, it skips the rest of its backoff, never the wait the server asked for. True when
   * the server answered.
   */
  checkConnection(timeoutMs: number): Promise<boolean> {
    const session = this.session;
    if (session && !session.isOver) return session.probe(timeoutMs);
    this.cutPause?.();
    return Promise.resolve(false);
  }

  /** A send, resolved on the server's ack; kept and resent until then. */
  send(outgoing: Outgoing): Promise<Sent> {
    if (this.stopped) return Promise.reject(this.stopped);
    return new Promise((resolve, reject) => {
      void this.lasting.sends.enqueue(outgoing, { resolve, reject }).then(() => this.session?.flushSends());
    });
  }

  /** A request with an answer; queued while offline, until its timeout. */
  call(body: ClientBody): Promise<ServerBody> {
    if (this.stopped) return Promise.reject(this.stopped);
    return new Promise((resolve, reject) => {
      const deadline = this.options.clock.now() + (this.options.requestTimeoutMs ?? 30_000);
      const call: Call = { body, resolve, reject, deadline };
      this.needHousekeeping();
      const session = this.session;
      if (session && !session.isOver) session.sendCall(call);
      else this.lasting.requests.queue(call);
    });
  }

  /** A frame without an answer (typing): dropped while offline, which is what it is worth then. */
  notify(body: ClientBody): void {
    this.session?.notify(body);
  }

  /** Users to subscribe to again on every connection (their presence belongs to a connection). */
  watch(userIds: string[], watching: boolean): void {
    for (const user of userIds) {
      if (watching) this.lasting.watched.add(user);
      else this.lasting.watched.delete(user);
    }
  }

  conversations(): Conversation[] {
    return this.lasting.conversations.list();
  }

  private async run(): Promise<void> {
    try {
      await this.lasting.sends.restore();
    } catch (cause) {
      this.stop(new ProtocolError(ErrorCode.INTERNAL, `the outbox could not be loaded: ${String(cause)}`, { cause }));
      return;
    }
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
        refresh = false;
        const served = await this.serve(link);
        ended = served.ended;
        // Backoff starts over only after a connection that worked: one the server ends right
        // after its Welcome, again and again, must not bring the client back every few ms.
        if (served.worked) attempt = 0;
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
      await this.pause(delay, serverDelay(atLeastMs));
    }
    this.stop(closedError());
  }

  private async open(refresh: boolean): Promise<Link> {
    const connectTimeoutMs = this.options.connectTimeoutMs ?? 10_000;
    const hello = create(HelloSchema, {
      protocolVersions: [...SUPPORTED_VERSIONS],
      token: await this.token(refresh, connectTimeoutMs),
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
        timeoutMs: connectTimeoutMs,
        clock: this.options.clock,
        onCancel: (cancel) => (this.cancelOpen = cancel),
      });
    } finally {
      this.cancelOpen = undefined;
    }
  }

  /**
   * A token from the provider, within the connect timeout: a provider that never answers must
   * not hold up the reconnects, nor `close()`.
   */
  private token(refresh: boolean, timeoutMs: number): Promise<string> {
    const token = this.options.token;
    if (typeof token === "string") return Promise.resolve(token);
    return new Promise<string>((resolve, reject) => {
      let settled = false;
      const settle = (f: () => void) => {
        if (settled) return;
        settled = true;
        cancelTimer();
        this.cancelOpen = undefined;
        f();
      };
      const cancelTimer = this.options.clock.after(timeoutMs, () =>
        settle(() => reject(new ProtocolError(ErrorCode.TIMEOUT, "the token provider did not answer in time"))),
      );
      this.cancelOpen = () => settle(() => reject(closedError()));
      Promise.resolve()
        .then(() => token(refresh))
        .then(
          (value) => settle(() => resolve(value)),
          (error: unknown) => settle(() => reject(error)),
        );
    });
  }

  /**
   * Waits `ms`; less if the client is closed meanwhile, or asked to check its connection: then
   * only until `serverWaitMs` from now, the server's wait, which nothing but closing cuts.
   */
  private pause(ms: number, serverWaitMs: number): Promise<void> {
    const clock = this.options.clock;
    const serverReadyAt = clock.now() + serverWaitMs;
    return new Promise((resolve) => {
      // Closed by a listener of the "reconnecting" state, before this wait began.
      if (this.closing) return resolve();
      const done = () => {
        cancel();
        this.cutPause = undefined;
        resolve();
      };
      let cancel = clock.after(ms, done);
      this.cutPause = () => {
        const left = serverReadyAt - clock.now();
        if (this.closing || left <= 0) return done();
        cancel();
        cancel = clock.after(left, done);
      };
    });
  }

  /** One authenticated connection, until it ends; it worked if it caught up or lasted. */
  private async serve(link: Link): Promise<{ ended: Ended; worked: boolean }> {
    const startedAt = this.options.clock.now();
    const session = new Session(link, this.lasting, {
      deviceId: this.options.deviceId,
      clock: this.options.clock,
      ackDelayMs: this.options.ackDelayMs ?? 100,
      onRetryLater: () => this.needHousekeeping(),
      requestTimeoutMs: this.options.requestTimeoutMs ?? 30_000,
      pongTimeoutMs: this.options.pongTimeoutMs ?? DEFAULT_PONG_TIMEOUT_MS,
    });
    this.session = session;
    this.me = session.userId;
    this.setState({ state: "connected", userId: session.userId, sessionId: link.welcome.sessionId });
    // The app may have closed the client on hearing it was connected: then the session is over already.
    session.start();
    // Sends held back on the last connection wait out their refusal on this one.
    if (this.lasting.sends.waiting) this.needHousekeeping();
    const ended = await session.ended;
    if (this.session === session) this.session = undefined;
    return { ended, worked: session.synced || this.options.clock.now() - startedAt >= STABLE_SESSION_MS };
  }

  /** Looks at retries and timeouts from now on, until none is left (an idle client keeps no timer). */
  private needHousekeeping(): void {
    if (this.cancelHousekeeping || this.stopped) return;
    this.cancelHousekeeping = every(this.options.clock, HOUSEKEEPING_MS, () => this.housekeeping());
  }

  /** Retries and timeouts, connected or not. */
  private housekeeping(): void {
    const { requests, sends } = this.lasting;
    requests.expire(this.options.clock.now());
    const session = this.session;
    const connected = session !== undefined && !session.isOver;
    if (connected) session.tick();
    // A held-back send matters only while connected: a new connection looks at it again.
    if (!requests.waiting && !(connected && sends.waiting)) {
      this.cancelHousekeeping?.();
      this.cancelHousekeeping = undefined;
    }
  }

  private stop(error: ProtocolError): void {
    if (this.stopped) return;
    this.stopped = error;
    this.cancelHousekeeping?.();
    this.cancelHousekeeping = undefined;
    this.lasting.typing.clear();
    this.lasting.sends.stop(error);
    this.lasting.requests.stop(error);
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

/**
 * What a failed connection attempt means: refresh the token, stop, or try again later. The
 * rules are those for the server's word after the Welcome (`endedBy`): only the codes of
 * `isFatal` stop the client; any other refusal is tried again, with growing backoff.
 */
function refusal(error: ProtocolError): Ended {
  const ended = endedBy(error.code, error.message, error.retryAfterMs);
  // The refusal itself, with what it carries (the server's versions, say).
  return ended.kind === "fatal" ? { kind: "fatal", error } : ended;
}
