// An in-process stand-in for the gateway: a WebSocket class whose sockets the test drives,
// decoding what the client sends and pushing the frames the test builds. Like a browser's, a
// socket closed by the client reports its close a moment later, not within the call; a socket
// whose network went away stays OPEN and silent.

import { create, type MessageInitShape } from "@bufbuild/protobuf";
import {
  ServerFrameSchema,
  decodeClientFrame,
  encodeServerFrame,
  type ClientFrame,
  type WebSocketConstructor,
  type WebSocketLike,
} from "@im/web";

type ServerInit = MessageInitShape<typeof ServerFrameSchema>;
type FrameKind = NonNullable<ClientFrame["body"]["case"]>;
/** A client frame whose body is of one kind. */
type FrameOf<C extends FrameKind> = ClientFrame & { body: Extract<ClientFrame["body"], { case: C }> };

export class FakeSocket implements WebSocketLike {
  binaryType = "blob";
  protocol = "";
  readyState = 0;
  onopen: ((event: unknown) => void) | null = null;
  onmessage: ((event: { data: unknown }) => void) | null = null;
  onclose: ((event: { code: number; reason: string }) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;
  /** What the client sent, decoded. */
  readonly received: ClientFrame[] = [];
  /** The close code the client used, if it closed the socket. */
  closedByClient: number | undefined;

  constructor(
    readonly url: string,
    readonly protocols: string[],
  ) {}

  send(data: Uint8Array): void {
    if (this.readyState !== 1) throw new Error("not open");
    this.received.push(decodeClientFrame(data));
  }

  close(code = 1005): void {
    if (this.readyState >= 2) return;
    // Browsers let a page close with 1000 or 3000-4999 only, and throw otherwise.
    if (code !== 1000 && (code < 3000 || code > 4999)) throw new Error(`InvalidAccessError: close code ${code}`);
    this.closedByClient = code;
    this.readyState = 2;
    queueMicrotask(() => this.drop(code, ""));
  }

  /** The upgrade succeeds, with the first subprotocol offered. */
  accept(): void {
    this.protocol = this.protocols[0] ?? "";
    this.readyState = 1;
    this.onopen?.({});
  }

  /** The connection fails before the upgrade, as a browser reports it: an error, then a close. */
  refuse(): void {
    this.onerror?.({});
    this.drop(1006, "");
  }

  push(frame: ServerInit): void {
    this.pushBytes(encodeServerFrame(create(ServerFrameSchema, frame)));
  }

  pushBytes(bytes: Uint8Array): void {
    this.onmessage?.({ data: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) });
  }

  welcome(user = "alice", heartbeatIntervalMs = 60_000, idleTimeoutMs = 180_000): void {
    this.push({
      requestId: 1n,
      body: {
        case: "welcome",
        value: { protocolVersion: 1, userId: user, sessionId: `s-${user}`, heartbeatIntervalMs, idleTimeoutMs },
      },
    });
  }

  /** The connection ends (without a close frame unless a reason is given). */
  drop(code = 1006, reason = ""): void {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }

  /** The client's frames of one kind. */
  sent<C extends FrameKind>(kind: C): FrameOf<C>[] {
    return this.received.filter((f): f is FrameOf<C> => f.body.case === kind);
  }

  /** The last frame of one kind the client sent. */
  lastSent<C extends FrameKind>(kind: C): FrameOf<C> {
    const frames = this.sent(kind);
    const last = frames[frames.length - 1];
    if (!last) throw new Error(`the client sent no ${kind}`);
    return last;
  }
}

export class FakeServer {
  readonly sockets: FakeSocket[] = [];
  readonly WebSocket: WebSocketConstructor;
  /** How many sockets the test was handed. */
  private handed = 0;

  constructor() {
    const sockets = this.sockets;
    this.WebSocket = class extends FakeSocket {
      constructor(url: string, protocols: string[]) {
        super(url, protocols);
        sockets.push(this);
      }
    };
  }

  /** The next socket the client opens (or opened) that the test was not handed yet, not accepted. */
  async opened(): Promise<FakeSocket> {
    const count = ++this.handed;
    await until(() => this.sockets.length >= count);
    return this.sockets[count - 1]!;
  }

  /** The next socket the client opens, accepted, once its Hello came. */
  async next(): Promise<FakeSocket> {
    const socket = await this.opened();
    socket.accept();
    await until(() => socket.sent("hello").length === 1);
    return socket;
  }

  /** The next socket, through the Hello and the Welcome. */
  async connected(user = "alice", heartbeatIntervalMs?: number, idleTimeoutMs?: number): Promise<FakeSocket> {
    const socket = await this.next();
    socket.welcome(user, heartbeatIntervalMs, idleTimeoutMs);
    return socket;
  }
}

/** Waits until `condition` holds, failing after `ms` (only a test that is broken waits that long). */
export async function until(condition: () => boolean, ms = 2000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error("timed out waiting");
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}
