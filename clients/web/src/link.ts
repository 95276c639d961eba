// The socket of one connection: the upgrade offering the protocol versions this client speaks
// (highest first, then the bare `im` for a typed refusal), the Hello and the server's Welcome,
// then frames to and from it. What the frames mean is the session's business; here they are
// only encoded under the server's limit and decoded under ours.

import { create } from "@bufbuild/protobuf";
import { DEFAULT_MAX_FRAME_BYTES, decodeServerFrame, encodeClientFrame, frameLimit } from "./codec.js";
import type { Clock } from "./clock.js";
import { errorCodeFromName } from "./errors.js";
import { ErrorCode } from "./gen/im/v1/errors_pb.js";
import { ClientFrameSchema, type Hello, type ServerFrame, type Welcome } from "./gen/im/v1/frames_pb.js";
import { ProtocolError } from "./protocol-error.js";
import { HELLO_REQUEST_ID, type ClientBody } from "./requests.js";

/** The part of the WebSocket API the client uses: the browser's, `ws`'s in Node, or a test's. */
export interface WebSocketLike {
  binaryType: string;
  readonly protocol: string;
  readonly readyState: number;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
}

export type WebSocketConstructor = new (url: string, protocols: string[]) => WebSocketLike;

/** The versions this client speaks, highest first. */
export const SUPPORTED_VERSIONS: readonly number[] = [1];
/** The subprotocols offered: every version, highest first, then the bare name (docs/PROTOCOL.md, "Version names and negotiation"). */
export const SUBPROTOCOLS: readonly string[] = [...SUPPORTED_VERSIONS.map((v) => `im.v${v}`), "im"];

const OPEN = 1;
/** Browsers let a page close with 1000 or 3000-4999 only; the server reads the close, not its code. */
const NORMAL_CLOSURE = 1000;

/** How a connection ended: why, and the error code its close reason names, if any. */
export interface LinkClosed {
  reason: string;
  code?: ErrorCode;
}

export interface OpenOptions {
  /** The Hello's frame limit, ours (0: 1 MiB). */
  maxFrameBytes: number;
  /** The upgrade, Hello and Welcome must take no longer. */
  timeoutMs: number;
  clock: Clock;
  /** Receives the function that gives up the attempt (when the client is closed meanwhile). */
  onCancel?: (cancel: () => void) => void;
}

export class Link {
  private handler: ((frame: ServerFrame) => void) | undefined;
  /** Frames that came after the Welcome but before the handler was set. */
  private readonly early: ServerFrame[] = [];
  private onClose: ((closed: LinkClosed) => void) | undefined;
  /** How the connection ended, if it did before anyone was told. */
  private endedEarly: LinkClosed | undefined;
  private ended = false;

  private constructor(
    private readonly ws: WebSocketLike,
    readonly welcome: Welcome,
    /** The server's frame limit, from its Welcome. */
    private readonly serverLimit: number,
  ) {}

  /**
   * Connects and sends the Hello (its request id is set here); the link once the server's
   * Welcome came. Rejects with the server's refusal (a typed Error frame, or the error code
   * its close reason names), or UNAVAILABLE when the connection fails, takes longer than
   * `timeoutMs` or is cancelled.
   */
  static open(WebSocket: WebSocketConstructor, url: string, hello: Hello, options: OpenOptions): Promise<Link> {
    return new Promise((resolveOpen, rejectOpen) => {
      let ws: WebSocketLike;
      try {
        ws = new WebSocket(url, [...SUBPROTOCOLS]);
      } catch (cause) {
        rejectOpen(new ProtocolError(ErrorCode.INVALID_ARGUMENT, `${url}: ${String(cause)}`, { cause }));
        return;
      }
      ws.binaryType = "arraybuffer";
      let link: Link | undefined;
      let settled = false;
      const settle = () => {
        settled = true;
        cancelTimeout();
      };
      const fail = (error: ProtocolError) => {
        if (settled) return;
        settle();
        rejectOpen(error);
        // After the rejection: the close it causes must not be taken for the reason.
        closeQuietly(ws);
      };
      const cancelTimeout = options.clock.after(options.timeoutMs, () =>
        fail(new ProtocolError(ErrorCode.UNAVAILABLE, "connecting timed out")),
      );
      options.onCancel?.(() => fail(new ProtocolError(ErrorCode.UNAVAILABLE, "cancelled")));
      const ourLimit = frameLimit(options.maxFrameBytes);

      ws.onopen = () => {
        const frame = create(ClientFrameSchema, { requestId: HELLO_REQUEST_ID, body: { case: "hello", value: hello } });
        try {
          // Sent before the server's limit is known: within the default.
          ws.send(encodeClientFrame(frame, DEFAULT_MAX_FRAME_BYTES));
        } catch (error) {
          fail(asProtocolError(error, "the Hello could not be sent"));
        }
      };
      ws.onmessage = (event) => {
        const bytes = toBytes(event.data);
        if (!bytes) return; // a text message carries nothing for the client
        let frame: ServerFrame;
        try {
          frame = decodeServerFrame(bytes, ourLimit);
        } catch (error) {
          // A push this build does not know is ignored; bytes that are no frame end the connection.
          if (error instanceof ProtocolError && error.code === ErrorCode.UNSUPPORTED_FRAME) return;
          const reason = `a frame from the server did not decode: ${String(error)}`;
          if (link) link.lost({ reason });
          else fail(new ProtocolError(ErrorCode.UNAVAILABLE, reason));
          return;
        }
        if (link) {
          link.deliver(frame);
        } else if (frame.body.case === "welcome") {
          settle();
          const welcome = frame.body.value;
          link = new Link(ws, welcome, frameLimit(welcome.limits?.maxFrameBytes));
          resolveOpen(link);
        } else if (frame.body.case === "error") {
          fail(ProtocolError.fromWire(frame.body.value, frame.requestId));
        }
        // Anything else before the Welcome means nothing yet.
      };
      ws.onclose = (event) => {
        const closed = closedBy(event.code, event.reason);
        if (link) link.lost(closed);
        else fail(new ProtocolError(closed.code ?? ErrorCode.UNAVAILABLE, `${closed.reason} before the Welcome`));
      };
      // Browsers follow an error with a close; not every WebSocket implementation does.
      ws.onerror = () => {
        if (link) link.lost({ reason: "the socket failed" });
        else fail(new ProtocolError(ErrorCode.UNAVAILABLE, "the connection failed"));
      };
    });
  }

  /** Frames go to `handler` (those that came already first); `onClose` learns once how the connection ended. */
  serve(handler: (frame: ServerFrame) => void, onClose: (closed: LinkClosed) => void): void {
    this.handler = handler;
    this.onClose = onClose;
    for (const frame of this.early.splice(0)) handler(frame);
    if (this.endedEarly) onClose(this.endedEarly);
  }

  /**
   * Writes a frame (request id 0: one with no answer). A frame too large for the server is
   * FRAME_TOO_LARGE and nothing is written; a socket no longer open is UNAVAILABLE.
   */
  write(requestId: bigint, body: ClientBody): void {
    const bytes = encodeClientFrame(create(ClientFrameSchema, { requestId, body }), this.serverLimit);
    // An open socket may still be dead (heartbeat.ts tells); one that is not open surely is.
    if (this.ws.readyState !== OPEN) {
      throw new ProtocolError(ErrorCode.UNAVAILABLE, "the connection is not open");
    }
    this.ws.send(bytes);
  }

  /** Closes the connection; `onClose` is not called. */
  close(): void {
    this.ended = true;
    closeQuietly(this.ws);
  }

  private deliver(frame: ServerFrame): void {
    if (this.ended) return;
    if (this.handler) this.handler(frame);
    else this.early.push(frame);
  }

  private lost(closed: LinkClosed): void {
    if (this.ended) return;
    this.ended = true;
    closeQuietly(this.ws);
    if (this.onClose) this.onClose(closed);
    else this.endedEarly = closed;
  }
}

/** A close as the client reads it: by the error name in its reason, never by its code alone. */
function closedBy(code: number, reason: string): LinkClosed {
  const closed: LinkClosed = { reason: reason ? `closed (${code} ${reason})` : `closed (${code})` };
  const named = errorCodeFromName(reason);
  if (named !== undefined) closed.code = named;
  return closed;
}

function closeQuietly(ws: WebSocketLike): void {
  try {
    ws.close(NORMAL_CLOSURE);
  } catch {
    // closing a socket that is closing already
  }
}

function asProtocolError(error: unknown, what: string): ProtocolError {
  return error instanceof ProtocolError
    ? error
    : new ProtocolError(ErrorCode.UNAVAILABLE, `${what}: ${String(error)}`, { cause: error });
}

function toBytes(data: unknown): Uint8Array | undefined {
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return undefined;
}
