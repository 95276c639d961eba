// @im/web: the IM protocol v1 for TypeScript clients. This slice: the generated protocol types,
// the frame codec and the error-code table.

export {
  DEFAULT_MAX_FRAME_BYTES,
  decodeClientFrame,
  decodeServerFrame,
  encodeClientFrame,
  encodeServerFrame,
  frameLimit,
} from "./codec.js";
export { ProtocolError } from "./protocol-error.js";
export { errorCodeName, errorCodes, isRetryable, type ErrorCodeInfo } from "./errors.js";

// The messages a client sends and receives (frames.proto and what it imports). The business,
// admin and bus APIs are server-side and stay out of the public surface.
export * from "./gen/im/v1/errors_pb.js";
export * from "./gen/im/v1/frames_pb.js";
export * from "./gen/im/v1/messaging_pb.js";
