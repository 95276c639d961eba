// @im/web: the IM protocol v1 for TypeScript clients: the generated protocol types, the frame
// codec, the error-code table, and the Client that keeps a connection, sends, and orders each
// conversation's entries.

export {
  DEFAULT_MAX_FRAME_BYTES,
  decodeClientFrame,
  decodeServerFrame,
  encodeClientFrame,
  encodeServerFrame,
  frameLimit,
} from "./codec.js";
export { ProtocolError } from "./protocol-error.js";
export { errorCodeFromName, errorCodeName, errorCodes, isRetryable, type ErrorCodeInfo } from "./errors.js";

export { Client, type ClientOptions } from "./client.js";
export { CLIENT_VERSION, type TokenProvider } from "./connection.js";
export { isFatal } from "./session.js";
export { hostClock, type CancelTimer, type Clock } from "./clock.js";
export { DEFAULT_PONG_TIMEOUT_MS, Heartbeat, heartbeatSettings, type HeartbeatSettings, type Verdict } from "./heartbeat.js";
export { DEFAULT_BACKOFF, backoffDelay, reconnectDelay, retryDelay, serverDelay, type Backoff } from "./backoff.js";
export { MemoryOutbox, Sends, type Outgoing, type OutboxStore, type SendWaiter } from "./outbox.js";
export { Timeline, type TimelineAction } from "./timeline.js";
export { Emitter } from "./emitter.js";
export { MAX_PULLS_IN_FLIGHT, PullQueue } from "./pulls.js";
export { Requests, type Call, type ClientBody, type Request, type ServerBody } from "./requests.js";
export { SUBPROTOCOLS, type WebSocketConstructor, type WebSocketLike } from "./link.js";
export {
  BusinessApi,
  attachmentOf,
  type Added,
  type FetchLike,
  type Group,
  type Invitation,
  type Media,
  type Member,
  type NewUpload,
} from "./business.js";
export type {
  Attachment,
  ClientEvent,
  ConnectionState,
  Content,
  ContentInit,
  Conversation,
  Custom,
  Entry,
  EntryBody,
  EntryState,
  Notice,
  Page,
  ReadState as ReadStateInfo,
  SendBody,
  Sent,
  UserPresence,
} from "./types.js";

// The messages a client sends and receives (frames.proto and what it imports). The business,
// admin and bus APIs are server-side and stay out of the public surface.
export * from "./gen/im/v1/errors_pb.js";
export * from "./gen/im/v1/frames_pb.js";
export * from "./gen/im/v1/messaging_pb.js";
