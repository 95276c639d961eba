import { ErrorCode, type Error as WireError } from "./gen/im/v1/errors_pb.js";
import { errorCodeName, isRetryable } from "./errors.js";

/**
 * A protocol error, typed by its ErrorCode: one found by this side (a frame it cannot accept or
 * send), one the server answered a request with, or one the client uses for a local failure
 * (UNAVAILABLE while it cannot reach the server, TIMEOUT when an answer did not come in time).
 */
export class ProtocolError extends Error {
  override readonly name = "ProtocolError";
  /** The numeric ErrorCode. */
  readonly code: ErrorCode;
  /** The code's NAME from the table in docs/PROTOCOL.md, e.g. "FRAME_TOO_LARGE". */
  readonly codeName: string;
  /**
   * The request the error is about: what an answering Error frame carries. 0 when the frame
   * could not be attributed (too large, or it did not parse).
   */
  readonly requestId: bigint;
  /** For FRAME_TOO_LARGE: the limit that was exceeded, in bytes. */
  readonly limit: number | undefined;
  /** Wait at least this long before retrying (0: not said). */
  readonly retryAfterMs: number;
  /** For UNSUPPORTED_VERSION: the versions the server speaks. */
  readonly supportedVersions: readonly number[];

  constructor(
    code: ErrorCode,
    message: string,
    options: {
      requestId?: bigint;
      limit?: number;
      retryAfterMs?: number;
      supportedVersions?: readonly number[];
      cause?: unknown;
    } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.codeName = errorCodeName(code) ?? String(code);
    this.requestId = options.requestId ?? 0n;
    this.limit = options.limit;
    this.retryAfterMs = options.retryAfterMs ?? 0;
    this.supportedVersions = options.supportedVersions ?? [];
  }

  /** The server's Error frame (an answer to `requestId`, or 0 for the connection). */
  static fromWire(error: WireError, requestId = 0n): ProtocolError {
    const name = errorCodeName(error.code) ?? String(error.code);
    return new ProtocolError(error.code, error.message || name, {
      requestId,
      limit: error.limit ? Number(error.limit) : undefined,
      retryAfterMs: Number(error.retryAfterMs),
      supportedVersions: [...error.supportedVersions],
    });
  }

  /** Whether the same request may succeed if sent again unchanged (docs/PROTOCOL.md). */
  get retryable(): boolean {
    return isRetryable(this.code, this.retryAfterMs);
  }
}
