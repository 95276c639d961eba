// The codec's rules beyond the vectors: the size limit at its boundary and on the sending side,
// the unknown-variant rule's edge, and what a ProtocolError carries.

import assert from "node:assert/strict";
import { test } from "node:test";
import { create } from "@bufbuild/protobuf";
import {
  ClientFrameSchema,
  DEFAULT_MAX_FRAME_BYTES,
  ErrorCode,
  ProtocolError,
  ServerFrameSchema,
  decodeClientFrame,
  decodeServerFrame,
  encodeClientFrame,
  encodeServerFrame,
  frameLimit,
  type ClientFrame,
} from "@im/web";
import { fromHex, toHex } from "./vectors.js";

function send(requestId: bigint, clientMsgId: string): ClientFrame {
  return create(ClientFrameSchema, { requestId, body: { case: "send", value: { clientMsgId } } });
}

function thrown(f: () => unknown): ProtocolError {
  try {
    f();
  } catch (e) {
    assert.ok(e instanceof ProtocolError, `a ProtocolError, not ${String(e)}`);
    return e;
  }
  assert.fail("did not throw");
}

test("a frame round-trips through the codec", () => {
  const frame = send(3n, "c-1");
  assert.deepEqual(decodeClientFrame(encodeClientFrame(frame)), frame);
  const ok = create(ServerFrameSchema, { requestId: 5n, body: { case: "ok", value: {} } });
  // An empty variant is still emitted (docs/PROTOCOL.md, "Canonical encoding").
  assert.equal(toHex(encodeServerFrame(ok)), "08057a00");
  assert.deepEqual(decodeServerFrame(fromHex("08057a00")), ok);
});

test("a frame exactly at the limit is accepted; one byte over is FRAME_TOO_LARGE with the limit", () => {
  const frame = send(1n, "x".repeat(100));
  const bytes = encodeClientFrame(frame);
  const size = bytes.length;

  assert.deepEqual(decodeClientFrame(bytes, size), frame);
  assert.deepEqual(encodeClientFrame(frame, size), bytes);

  const received = thrown(() => decodeClientFrame(bytes, size - 1));
  assert.equal(received.code, ErrorCode.FRAME_TOO_LARGE);
  assert.equal(received.codeName, "FRAME_TOO_LARGE");
  assert.equal(received.limit, size - 1);
  assert.equal(received.requestId, 0n, "not decoded, so not attributed");

  // The sender refuses too, naming the request it could not send.
  const sent = thrown(() => encodeClientFrame(frame, size - 1));
  assert.equal(sent.code, ErrorCode.FRAME_TOO_LARGE);
  assert.equal(sent.limit, size - 1);
  assert.equal(sent.requestId, 1n);
});

test("the size is checked before decoding", () => {
  // Garbage over the limit is too large, not malformed.
  const error = thrown(() => decodeServerFrame(new Uint8Array(9).fill(0xff), 8));
  assert.equal(error.code, ErrorCode.FRAME_TOO_LARGE);
});

test("the default limit is 1 MiB, and an announced 0 means the default", () => {
  assert.equal(DEFAULT_MAX_FRAME_BYTES, 1_048_576);
  assert.equal(frameLimit(0), DEFAULT_MAX_FRAME_BYTES);
  assert.equal(frameLimit(undefined), DEFAULT_MAX_FRAME_BYTES);
  assert.equal(frameLimit(4096), 4096);

  const frame = send(1n, "x".repeat(DEFAULT_MAX_FRAME_BYTES));
  assert.equal(thrown(() => encodeClientFrame(frame)).limit, DEFAULT_MAX_FRAME_BYTES);
  const big = new Uint8Array(DEFAULT_MAX_FRAME_BYTES + 1);
  assert.equal(thrown(() => decodeServerFrame(big)).code, ErrorCode.FRAME_TOO_LARGE);
});

test("unknown fields beside a known body are ignored", () => {
  // A ping (request 7) followed by field 999 holding one byte.
  const frame = decodeClientFrame(fromHex("08071a020801ba3e0101"));
  assert.equal(frame.requestId, 7n);
  assert.equal(frame.body.case, "ping");
});

test("a bodiless frame holding an unknown field is UNSUPPORTED_FRAME for its request", () => {
  const error = thrown(() => decodeServerFrame(fromHex("0809ba3e00")));
  assert.equal(error.code, ErrorCode.UNSUPPORTED_FRAME);
  assert.equal(error.codeName, "UNSUPPORTED_FRAME");
  assert.equal(error.requestId, 9n);
});

test("a bodiless frame whose request id is encoded non-minimally counts as an unknown variant", () => {
  // docs/PROTOCOL.md: the reference codec re-encodes, so `08 85 00` (request 5 in two varint
  // bytes) reads as holding something unknown. Agreeing with it keeps implementations alike.
  const error = thrown(() => decodeClientFrame(fromHex("088500")));
  assert.equal(error.code, ErrorCode.UNSUPPORTED_FRAME);
  assert.equal(error.requestId, 5n);
});

test("bytes that do not parse are MALFORMED_FRAME, with the parser's error as the cause", () => {
  const error = thrown(() => decodeClientFrame(fromHex("080122100a")));
  assert.equal(error.code, ErrorCode.MALFORMED_FRAME);
  assert.equal(error.codeName, "MALFORMED_FRAME");
  assert.equal(error.requestId, 0n);
  assert.equal(error.limit, undefined);
  assert.ok(error.cause instanceof Error);
});

test("a ProtocolError is an Error named ProtocolError", () => {
  const error = new ProtocolError(ErrorCode.RATE_LIMITED, "slow down", { requestId: 4n });
  assert.ok(error instanceof Error);
  assert.equal(error.name, "ProtocolError");
  assert.equal(error.message, "slow down");
  assert.equal(error.codeName, "RATE_LIMITED");
  // A code newer than this build keeps its number as its name.
  assert.equal(new ProtocolError(1999 as ErrorCode, "?").codeName, "1999");
});
