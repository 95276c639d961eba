import { ErrorCode } from "./gen/im/v1/errors_pb.js";
import { errorCodeName } from "./errors.js";

/**
 * A protocol error found by this side (a frame it cannot accept or send), typed by the
 * ErrorCode a receiver answers with.
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

  constructor(
    code: ErrorCode,
    message: string,
    options: { requestId?: bigint; limit?: number; cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.codeName = errorCodeName(code) ?? String(code);
    this.requestId = options.requestId ?? 0n;
    this.limit = options.limit;
  }
}
