// The retry rule for codes this build does not know (docs/PROTOCOL.md, "Versioning and
// compatibility"); the known codes are checked against error_codes.json in vectors.test.ts.

import assert from "node:assert/strict";
import { test } from "node:test";
import { ErrorCode, errorCodeName, isRetryable } from "@im/web";

test("known codes keep their flag whatever retry_after_ms says", () => {
  assert.equal(isRetryable(ErrorCode.RATE_LIMITED), true);
  assert.equal(isRetryable(ErrorCode.NOT_A_MEMBER), false);
  assert.equal(isRetryable(ErrorCode.NOT_A_MEMBER, 250n), false);
});

test("unknown codes are retryable only in the 9xxx range or with retry_after_ms > 0", () => {
  assert.equal(isRetryable(9999), true, "unknown 9xxx");
  assert.equal(isRetryable(9000 + 77), true);
  assert.equal(isRetryable(3999), false);
  assert.equal(isRetryable(10000), false);
  assert.equal(isRetryable(5999, 250n), true, "retry_after_ms makes an unknown code retryable");
  assert.equal(isRetryable(5999, 250), true, "a number works as well as a bigint");
  assert.equal(isRetryable(5999, 0n), false);
  // UNSPECIFIED is never sent; it is judged like an unknown code.
  assert.equal(isRetryable(ErrorCode.UNSPECIFIED), false);
  assert.equal(isRetryable(ErrorCode.UNSPECIFIED, 1n), true);
});

test("a code's name is its enum name without ERROR_CODE_", () => {
  assert.equal(errorCodeName(ErrorCode.SESSION_REPLACED), "SESSION_REPLACED");
  assert.equal(errorCodeName(0), "UNSPECIFIED");
  assert.equal(errorCodeName(1999), undefined);
});
