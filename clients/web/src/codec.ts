// One frame per binary WebSocket message (docs/PROTOCOL.md, "Transport" and "Versioning and
// compatibility"): decoding under a size limit with typed errors, and encoding under the
// limit the other side announced.

import { fromBinary, toBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { ErrorCode } from "./gen/im/v1/errors_pb.js";
import { ClientFrameSchema, ServerFrameSchema, type ClientFrame, type ServerFrame } from "./gen/im/v1/frames_pb.js";
import { ProtocolError } from "./protocol-error.js";

/** The limit that applies when a side announces none (or 0): 1 MiB. */
export const DEFAULT_MAX_FRAME_BYTES = 1024 * 1024;

/** The frame limit a peer announced (`Hello.max_frame_bytes`, `ServerLimits.max_frame_bytes`): 0 means the default. */
export function frameLimit(announced: number | undefined): number {
  return announced ? announced : DEFAULT_MAX_FRAME_BYTES;
}

type FrameSchema = typeof ClientFrameSchema | typeof ServerFrameSchema;

/** Encodes a frame for the server, refusing one larger than the server's limit. */
export function encodeClientFrame(frame: ClientFrame, maxFrameBytes = DEFAULT_MAX_FRAME_BYTES): Uint8Array {
  return encode(ClientFrameSchema, frame, maxFrameBytes);
}

/** Encodes a server frame (for tests and test servers), refusing one larger than the client's limit. */
export function encodeServerFrame(frame: ServerFrame, maxFrameBytes = DEFAULT_MAX_FRAME_BYTES): Uint8Array {
  return encode(ServerFrameSchema, frame, maxFrameBytes);
}

/** Decodes a frame from the server under this client's limit; throws ProtocolError. */
export function decodeServerFrame(bytes: Uint8Array, maxFrameBytes = DEFAULT_MAX_FRAME_BYTES): ServerFrame {
  return decode(ServerFrameSchema, bytes, maxFrameBytes);
}

/** Decodes a client frame (for tests and test servers) under the server's limit; throws ProtocolError. */
export function decodeClientFrame(bytes: Uint8Array, maxFrameBytes = DEFAULT_MAX_FRAME_BYTES): ClientFrame {
  return decode(ClientFrameSchema, bytes, maxFrameBytes);
}

function encode<S extends FrameSchema>(schema: S, frame: MessageShape<S>, maxFrameBytes: number): Uint8Array {
  const bytes = toBinary(schema as DescMessage, frame);
  if (bytes.length > maxFrameBytes) {
    throw tooLarge(bytes.length, maxFrameBytes, frame.requestId);
  }
  return bytes;
}

function decode<S extends FrameSchema>(schema: S, bytes: Uint8Array, maxFrameBytes: number): MessageShape<S> {
  // Size first: a receiver never parses a frame above its limit.
  if (bytes.length > maxFrameBytes) {
    throw tooLarge(bytes.length, maxFrameBytes, 0n);
  }
  let frame: MessageShape<S>;
  try {
    frame = fromBinary(schema as DescMessage, bytes) as MessageShape<S>;
  } catch (cause) {
    throw new ProtocolError(ErrorCode.MALFORMED_FRAME, `malformed frame: ${String(cause)}`, { cause });
  }
  if (frame.body.case !== undefined) {
    return frame;
  }
  // No body we know. As in the reference codec, re-encoding without unknown fields tells an
  // unknown variant (the input was longer: it held fields we do not know) from a missing body.
  if (toBinary(schema as DescMessage, frame, { writeUnknownFields: false }).length < bytes.length) {
    throw new ProtocolError(
      ErrorCode.UNSUPPORTED_FRAME,
      `frame body is of a variant this receiver does not know (request ${frame.requestId})`,
      { requestId: frame.requestId },
    );
  }
  throw new ProtocolError(ErrorCode.MALFORMED_FRAME, "frame has no body");
}

function tooLarge(size: number, limit: number, requestId: bigint): ProtocolError {
  return new ProtocolError(ErrorCode.FRAME_TOO_LARGE, `frame of ${size} bytes exceeds the limit of ${limit} bytes`, {
    requestId,
    limit,
  });
}
