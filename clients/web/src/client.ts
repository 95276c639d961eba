// The Client: what an app holds. It connects in the background and stays connected by itself
// (connection.ts, session.ts), and offers sends that resolve on the server's ack, the
// protocol's calls (each answered, or failed with a typed ProtocolError), the events, and, with
// a business API URL, groups and media over HTTP with the user's own token.

import { create, toBinary } from "@bufbuild/protobuf";
import type { Backoff } from "./backoff.js";
import { BusinessApi, attachmentOf, type FetchLike, type Media } from "./business.js";
import { hostClock, type Clock } from "./clock.js";
import { Connection, type TokenProvider } from "./connection.js";
import { Emitter } from "./emitter.js";
import { hostGlobal, onHostWake, randomId } from "./env.js";
import { ErrorCode } from "./gen/im/v1/errors_pb.js";
import {
  HistoryRequestSchema,
  MarkReadSchema,
  MessageBodySchema,
  PresenceStatus,
  PresenceStatusSchema,
  PresenceSubscribeSchema,
  PresenceUnsubscribeSchema,
  PullRequestSchema,
  ReadCursorsRequestSchema,
  SetPresenceSchema,
  TypingSchema,
  type Platform,
} from "./gen/im/v1/messaging_pb.js";
import type { WebSocketConstructor } from "./link.js";
import type { OutboxStore } from "./outbox.js";
import { ProtocolError } from "./protocol-error.js";
import type { ServerBody } from "./requests.js";
import {
  bodyToWire,
  pageFromWire,
  enumValue,
  presenceFromWire,
  type ClientEvent,
  type ConnectionState,
  type Conversation,
  type Page,
  type ReadState,
  type SendBody,
  type Sent,
  type UserPresence,
} from "./types.js";

export interface ClientOptions {
  /** The gateway: `wss://host/ws` (or `ws://` for local development). */
  url: string;
  /** Stable per installation, chosen by the app (docs/PROTOCOL.md, "Identifiers"). */
  deviceId: string;
  /** A token, or a provider of tokens (asked again with `refresh` true after TOKEN_EXPIRED). */
  token: string | TokenProvider;
  /** The WebSocket constructor; the host's own (`globalThis.WebSocket`) when absent. */
  WebSocket?: WebSocketConstructor;
  /** The business service's HTTP API (`https://host`), for groups and media. */
  businessApi?: string;
  /** The fetch function for the business API; the host's own when absent. */
  fetch?: FetchLike;
  /** Announced in the Hello (default WEB). */
  platform?: Platform;
  /** Where unacknowledged sends are kept (default: in memory). */
  outbox?: OutboxStore;
  /** Opening a connection (upgrade, Hello, Welcome) may take this long (default 10 s). */
  connectTimeoutMs?: number;
  /** A call may wait this long for its answer, connected or not (default 30 s). */
  requestTimeoutMs?: number;
  /** Reconnect backoff (default: 250 ms doubling up to 30 s, full jitter). */
  backoff?: Backoff;
  /** Delivery acknowledgements go this long after the entries they cover (default 100 ms). */
  ackDelayMs?: number;
  /** The largest frame this client accepts (announced in the Hello; 0: 1 MiB). */
  maxFrameBytes?: number;
  /**
   * A ping not followed by any frame from the server within this long ends the connection,
   * which is then replaced (default 10 s): an open socket is no proof of a live one.
   */
  pongTimeoutMs?: number;
  /**
   * Check the connection (`checkConnection`) whenever the host says the network is back or
   * the page is shown again (a browser's `online` and `visibilitychange` events; default true).
   */
  checkOnWake?: boolean;
  /** The clock every wait and deadline runs on (default: the host's timers). */
  clock?: Clock;
}

/** How long `checkConnection` waits for the server by default. */
const CHECK_TIMEOUT_MS = 5_000;

export class Client {
  private readonly emitter = new Emitter();
  private readonly connection: Connection;
  private readonly businessApi: BusinessApi | undefined;
  private readonly stopWatchingHost: () => void;

  constructor(options: ClientOptions) {
    const WebSocket = options.WebSocket ?? hostGlobal<WebSocketConstructor>("WebSocket");
    if (!WebSocket) {
      throw new ProtocolError(ErrorCode.INVALID_ARGUMENT, "no WebSocket: pass ClientOptions.WebSocket (in Node, the ws package)");
    }
    this.connection = new Connection({ ...options, WebSocket, clock: options.clock ?? hostClock }, this.emitter);
    if (options.businessApi) {
      // The host's fetch must be called on the global object (browsers throw "Illegal invocation").
      const fetch = options.fetch ?? hostGlobal<FetchLike>("fetch")?.bind(globalThis);
      if (!fetch) throw new ProtocolError(ErrorCode.INVALID_ARGUMENT, "no fetch: pass ClientOptions.fetch");
      const token = options.token;
      this.businessApi = new BusinessApi(
        options.businessApi,
        async (refresh) => (typeof token === "string" ? token : token(refresh)),
        () => this.connection.knownUserId(),
        fetch,
      );
    }
    this.stopWatchingHost =
      options.checkOnWake === false ? () => undefined : onHostWake(() => void this.checkConnection());
  }

  /** The connection's state now. */
  get state(): ConnectionState {
    return this.connection.state;
  }

  /** The user the server authenticated ("" before the first connection). */
  get userId(): string {
    return this.connection.userId;
  }

  /** Groups and media through the business API (needs ClientOptions.businessApi). */
  get business(): BusinessApi {
    if (!this.businessApi) {
      throw new ProtocolError(ErrorCode.INVALID_ARGUMENT, "no business API: set ClientOptions.businessApi");
    }
    return this.businessApi;
  }

  /** Calls `listener` with every event from now on; the returned function stops it. */
  on(listener: (event: ClientEvent) => void): () => void {
    return this.emitter.on(listener);
  }

  /** Every event from now on, until the client stops (the `stopped` state is the last one). */
  events(): AsyncIterableIterator<ClientEvent> {
    return this.emitter.events();
  }

  /**
   * Starts the client (once) and resolves with the authenticated user once connected; rejects
   * if the client stops first. It stays connected by itself afterwards.
   */
  connect(): Promise<string> {
    return this.connection.connect();
  }

  /** Closes the connection and stops the client; unacknowledged sends stay in the outbox store. */
  close(): Promise<void> {
    this.stopWatchingHost();
    return this.connection.close();
  }

  /**
   * Checks the connection now rather than trusting the socket's state: the server must answer
   * a ping within `timeoutMs`, or the connection is taken for dead and replaced at once (a
   * client waiting to reconnect tries again at once). Resolves true when the server answered.
   * Worth calling when the app has reason to doubt the network (the client does so itself on
   * the host's wake-up events unless `checkOnWake` is false).
   */
  checkConnection(timeoutMs = CHECK_TIMEOUT_MS): Promise<boolean> {
    return this.connection.checkConnection(timeoutMs);
  }

  /**
   * Sends an entry with a client message id (fresh unless given; never reuse one for another
   * message) and resolves with the server's ack. Until then the send is in the outbox, resent
   * with the same id after every reconnect, so exactly one entry results.
   */
  send(conversationId: string, body: SendBody, clientMsgId: string = randomId()): Promise<Sent> {
    return this.connection.send({ clientMsgId, conversationId, body: toBinary(MessageBodySchema, bodyToWire(body)) });
  }

  sendText(conversationId: string, text: string): Promise<Sent> {
    return this.send(conversationId, { kind: "content", content: { text } });
  }

  /** Sends uploaded media (completed: ready, or still being processed) with a caption. */
  sendMedia(conversationId: string, media: Media, caption = ""): Promise<Sent> {
    return this.send(conversationId, { kind: "content", content: { media: attachmentOf(media, caption) } });
  }

  /** Entries below `beforeSeq` (0: the newest), at most `limit` (0: the server's default). */
  async history(conversationId: string, beforeSeq = 0, limit = 0): Promise<Page> {
    const value = create(HistoryRequestSchema, { conversationId, beforeSeq: BigInt(beforeSeq), limit });
    return pageFromWire(expect(await this.connection.call({ case: "history", value }), "messages"));
  }

  /** Entries above `afterSeq`, at most `limit`. The client pulls gaps by itself; this is for paging forward. */
  async pull(conversationId: string, afterSeq: number, limit = 0): Promise<Page> {
    const value = create(PullRequestSchema, { conversationId, afterSeq: BigInt(afterSeq), limit });
    return pageFromWire(expect(await this.connection.call({ case: "pull", value }), "messages"));
  }

  /** Moves the read cursor forward to `seq`; the user's other devices and the other members are told. */
  async markRead(conversationId: string, seq: number): Promise<ReadState> {
    const value = create(MarkReadSchema, { conversationId, seq: BigInt(seq) });
    const state = expect(await this.connection.call({ case: "markRead", value }), "readState");
    return { readSeq: Number(state.readSeq), unreadCount: Number(state.unreadCount) };
  }

  /** Who has read how far, a page at a time in user id order (members who read nothing are left out). */
  async readCursors(
    conversationId: string,
    pageToken = "",
    limit = 0,
  ): Promise<{ cursors: { userId: string; readSeq: number }[]; nextPageToken: string }> {
    const value = create(ReadCursorsRequestSchema, { conversationId, pageToken, limit });
    const page = expect(await this.connection.call({ case: "readCursors", value }), "readCursors");
    return {
      cursors: page.cursors.map((c) => ({ userId: c.userId, readSeq: Number(c.readSeq) })),
      nextPageToken: page.nextPageToken,
    };
  }

  /** Tells the other members the user is typing (repeat every few seconds while it lasts) or stopped. Dropped while offline. */
  typing(conversationId: string, active: boolean): void {
    this.connection.notify({ case: "typing", value: create(TypingSchema, { conversationId, active }) });
  }

  /**
   * Watches users' presence: their presence now (of those the server's policy shows), then
   * changes as events. Watched users are subscribed again after every reconnect.
   */
  async subscribePresence(userIds: string[]): Promise<UserPresence[]> {
    const value = create(PresenceSubscribeSchema, { userIds });
    const list = expect(await this.connection.call({ case: "presenceSubscribe", value }), "presences");
    this.connection.watch(userIds, true);
    return list.presences.map(presenceFromWire);
  }

  async unsubscribePresence(userIds: string[]): Promise<void> {
    this.connection.watch(userIds, false);
    const value = create(PresenceUnsubscribeSchema, { userIds });
    expect(await this.connection.call({ case: "presenceUnsubscribe", value }), "ok");
  }

  /** Sets the user's status ("online", "away", "busy"; another is INVALID_ARGUMENT) and its text. */
  async setPresence(status: string, statusText = ""): Promise<void> {
    const code = enumValue(PresenceStatusSchema, status, "PRESENCE_STATUS_");
    // Unknown names map to UNSPECIFIED, which the server would take as no status at all.
    if (code === PresenceStatus.UNSPECIFIED) {
      throw new ProtocolError(ErrorCode.INVALID_ARGUMENT, `unknown presence status: ${JSON.stringify(status)}`);
    }
    const value = create(SetPresenceSchema, { status: code, statusText });
    expect(await this.connection.call({ case: "setPresence", value }), "ok");
  }

  /** The conversations known so far (from every sync, push and entry), by id. */
  conversations(): Conversation[] {
    return this.connection.conversations();
  }
}

type AnswerOf<C> = Extract<ServerBody, { case: C }> extends { value: infer V } ? V : never;

function expect<C extends ServerBody["case"]>(answer: ServerBody, expected: C): AnswerOf<C> {
  if (answer.case !== expected) {
    throw new ProtocolError(ErrorCode.INTERNAL, `unexpected answer from the server: ${answer.case}, not ${expected}`);
  }
  return answer.value as AnswerOf<C>;
}
