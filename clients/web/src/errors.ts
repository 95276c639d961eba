// The error-code table of docs/PROTOCOL.md ("Error codes"): each code's name and whether a
// request that failed with it may be retried unchanged.
//
// Names come from the generated ErrorCode enum, so they follow errors.proto. The retryable flag
// is not in the .proto; it is kept here and the tests compare it with
// conformance/vectors/error_codes.json. Nothing is computed at module load, so a bundler drops
// whatever a program does not use.

import type { DescEnumValue } from "@bufbuild/protobuf";
import { ErrorCode, ErrorCodeSchema } from "./gen/im/v1/errors_pb.js";

const PREFIX = "ERROR_CODE_";

/** One row of the error-code table. */
export interface ErrorCodeInfo {
  readonly code: ErrorCode;
  /** The enum name without the `ERROR_CODE_` prefix, e.g. "RATE_LIMITED". */
  readonly name: string;
  readonly retryable: boolean;
}

/**
 * The name of a code: its enum name without the `ERROR_CODE_` prefix ("UNSPECIFIED" for 0), or
 * undefined for a code newer than this build.
 */
export function errorCodeName(code: number): string | undefined {
  return enumValue(code)?.name.slice(PREFIX.length);
}

/** Every code a server may send (all but UNSPECIFIED), in numeric order. */
export function errorCodes(): ErrorCodeInfo[] {
  return ErrorCodeSchema.values
    .filter((v) => v.number !== ErrorCode.UNSPECIFIED)
    .map((v) => ({ code: v.number, name: v.name.slice(PREFIX.length), retryable: knownRetryable(v.number) }))
    .sort((a, b) => a.code - b.code);
}

/**
 * Whether a request that failed with `code` may succeed if sent again unchanged (after
 * `retryAfterMs`, with backoff, or on a new connection). A known code has its table flag; a code
 * this build does not know (or UNSPECIFIED, never sent) is retryable only in the 9xxx (server)
 * range or when the Error carries retry_after_ms > 0.
 */
export function isRetryable(code: number, retryAfterMs: bigint | number = 0): boolean {
  if (code !== ErrorCode.UNSPECIFIED && enumValue(code) !== undefined) {
    return knownRetryable(code);
  }
  return (code >= 9000 && code <= 9999) || retryAfterMs > 0;
}

/** The code of a NAME ("SESSION_REPLACED", as a close reason carries it), or undefined. */
export function errorCodeFromName(name: string): ErrorCode | undefined {
  const value = name ? ErrorCodeSchema.values.find((v) => v.name === PREFIX + name) : undefined;
  return value && value.number !== ErrorCode.UNSPECIFIED ? value.number : undefined;
}

// The enum's value for a number off the wire, which may be one this build does not know.
function enumValue(code: number): DescEnumValue | undefined {
  return (ErrorCodeSchema.value as Record<number, DescEnumValue | undefined>)[code];
}

function knownRetryable(code: ErrorCode): boolean {
  switch (code) {
    case ErrorCode.HEARTBEAT_TIMEOUT:
    case ErrorCode.RATE_LIMITED:
    case ErrorCode.TOO_MANY_CONNECTIONS:
    case ErrorCode.SLOW_CONSUMER:
    case ErrorCode.INTERNAL:
    case ErrorCode.UNAVAILABLE:
    case ErrorCode.TIMEOUT:
    case ErrorCode.SHUTTING_DOWN:
      return true;
    default:
      return false;
  }
}
