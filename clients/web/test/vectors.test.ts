// The golden-vector checks every implementation runs (the Rust ones are im-proto/tests/vectors.rs,
// the Python ones conformance/python/check_vectors.py), here through this package's codec.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { fromJson, toBinary, toJson, type DescMessage } from "@bufbuild/protobuf";
import {
  ClientFrameSchema,
  ErrorCode,
  ProtocolError,
  ServerFrameSchema,
  decodeClientFrame,
  decodeServerFrame,
  encodeClientFrame,
  encodeServerFrame,
  errorCodeName,
  errorCodes,
  isRetryable,
  type ClientFrame,
  type ServerFrame,
} from "@im/web";
import { frameFiles, fromHex, readJson, toHex, type ErrorCodeRow, type FrameFile, type MalformedCase } from "./vectors.js";

const DIRECTIONS = [
  {
    dir: "client",
    schema: ClientFrameSchema,
    decode: decodeClientFrame,
    encode: (f: ClientFrame | ServerFrame) => encodeClientFrame(f as ClientFrame),
  },
  {
    dir: "server",
    schema: ServerFrameSchema,
    decode: decodeServerFrame,
    encode: (f: ClientFrame | ServerFrame) => encodeServerFrame(f as ServerFrame),
  },
] as const;

/** The proto names of a frame's `body` variants (file names are these, e.g. "delivery_ack"). */
function bodyVariants(schema: DescMessage): string[] {
  const body = schema.oneofs.find((o) => o.name === "body");
  assert.ok(body, `${schema.typeName} has a body oneof`);
  return body.fields.map((f) => f.name).sort();
}

/** The proto name of the variant a decoded frame carries (its `case` is the camelCase local name). */
function variantOf(schema: DescMessage, frame: ClientFrame | ServerFrame): string | undefined {
  return schema.fields.find((f) => f.oneof?.name === "body" && f.localName === frame.body.case)?.name;
}

for (const { dir, schema, decode, encode } of DIRECTIONS) {
  describe(`${dir} frame vectors`, () => {
    test(`every ${schema.typeName} variant has a file, and every file is a variant`, () => {
      const files = frameFiles(dir).map((f) => f.replace(/\.json$/, ""));
      assert.deepEqual(files, bodyVariants(schema));
    });

    for (const name of frameFiles(dir)) {
      const file = readJson<FrameFile>(`${dir}/${name}`);
      test(`${dir}/${name}: names ${schema.typeName} and a variant, and has cases`, () => {
        assert.equal(file.message, schema.typeName);
        assert.ok(bodyVariants(schema).includes(file.variant), `unknown variant ${file.variant}`);
        assert.ok(file.cases.length > 0, "no cases");
      });
      for (const c of file.cases) {
        test(`${dir}/${name} / ${c.name}`, () => {
          // 1. Canonical JSON -> bytes.
          const parsed = fromJson(schema as DescMessage, c.fields);
          assert.equal(toHex(toBinary(schema as DescMessage, parsed)), c.hex, "JSON -> bytes");
          // 2. Bytes -> frame (through the codec) -> bytes.
          const frame = decode(fromHex(c.hex));
          assert.equal(toHex(encode(frame)), c.hex, "bytes -> frame -> bytes");
          // 3. Bytes -> canonical JSON, with toJson's default options.
          assert.deepEqual(toJson(schema as DescMessage, frame), c.fields, "bytes -> JSON");
          // The case's body is the file's variant.
          assert.equal(variantOf(schema, frame), file.variant, "body variant");
        });
      }
    }
  });
}

/**
 * What a receiver makes of bytes (docs/PROTOCOL.md, "Golden vectors"): the codec's error, or,
 * for a Hello, the version negotiation against the supported versions [1]. Undefined if the
 * frame is accepted.
 */
function receive(message: string, maxFrameBytes: number, bytes: Uint8Array): ProtocolError | undefined {
  try {
    if (message === ClientFrameSchema.typeName) {
      const frame = decodeClientFrame(bytes, maxFrameBytes);
      if (frame.body.case === "hello" && !frame.body.value.protocolVersions.includes(1)) {
        return new ProtocolError(ErrorCode.UNSUPPORTED_VERSION, "no common protocol version", {
          requestId: frame.requestId,
        });
      }
    } else if (message === ServerFrameSchema.typeName) {
      decodeServerFrame(bytes, maxFrameBytes);
    } else {
      assert.fail(`unknown frame type ${message}`);
    }
    return undefined;
  } catch (e) {
    if (e instanceof ProtocolError) return e;
    throw e;
  }
}

describe("malformed vectors", () => {
  const cases = readJson<{ cases: MalformedCase[] }>("malformed.json").cases;

  test("cover every receiver error, in at least 8 cases", () => {
    assert.ok(cases.length >= 8);
    const seen = new Set(cases.map((c) => c.error.name));
    for (const required of ["MALFORMED_FRAME", "FRAME_TOO_LARGE", "UNSUPPORTED_FRAME", "UNSUPPORTED_VERSION"]) {
      assert.ok(seen.has(required), `no malformed vector produces ${required}`);
    }
  });

  for (const c of cases) {
    test(`malformed / ${c.name}`, () => {
      assert.equal(errorCodeName(c.error.code), c.error.name, "the case's code and name agree");
      const error = receive(c.message, c.max_frame_bytes, fromHex(c.hex));
      assert.ok(error, "the frame is rejected");
      assert.deepEqual(
        { code: error.code, name: error.codeName, requestId: error.requestId },
        { code: c.error.code, name: c.error.name, requestId: BigInt(c.error.request_id) },
      );
      if (error.code === ErrorCode.FRAME_TOO_LARGE) {
        assert.equal(error.limit, c.max_frame_bytes, "FRAME_TOO_LARGE carries the limit");
      }
    });
  }
});

describe("error_codes.json", () => {
  const rows = readJson<{ codes: ErrorCodeRow[] }>("error_codes.json").codes;

  test("is the table errorCodes() gives, in order, with the same names and retryable flags", () => {
    assert.deepEqual(
      errorCodes().map(({ code, name, retryable }) => ({ code, name, retryable })),
      rows.map(({ code, name, retryable }) => ({ code, name, retryable })),
    );
  });

  test("names each code by its ErrorCode enum name without ERROR_CODE_, and isRetryable agrees", () => {
    for (const row of rows) {
      assert.equal(errorCodeName(row.code), row.name, `${row.code}`);
      assert.equal(isRetryable(row.code), row.retryable, `${row.code} ${row.name}`);
    }
  });
});
