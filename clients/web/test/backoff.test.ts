// Reconnect delays: full jitter under a doubling cap, and never below what the server asked.

import assert from "node:assert/strict";
import { test } from "node:test";
import { backoffDelay, reconnectDelay, serverDelay } from "@im/web";

const backoff = { minMs: 250, maxMs: 30_000 };

test("the cap doubles per attempt up to the largest, and the delay is drawn below it", () => {
  const highest = (attempt: number) => backoffDelay(attempt, backoff, () => 0.999_999_999);
  assert.deepEqual([0, 1, 2, 3].map(highest), [250, 500, 1000, 2000]);
  assert.equal(highest(7), 30_000, "250 * 2^7 is above the largest cap");
  assert.equal(highest(1000), 30_000, "no overflow however many attempts");
  assert.equal(backoffDelay(5, backoff, () => 0), 0, "full jitter: as low as zero");
});

test("delays are spread over the whole range", () => {
  const seen = Array.from({ length: 2000 }, () => backoffDelay(3, backoff));
  assert.ok(seen.every((d) => d >= 0 && d <= 2000));
  assert.ok(Math.min(...seen) < 200 && Math.max(...seen) > 1800, "both ends of [0, 2000] are reached");
});

test("the server's wait is a floor, within reason", () => {
  assert.equal(reconnectDelay(0, 4000, backoff, () => 0.5), 4000, "GoAway.reconnect_after_ms wins over a shorter backoff");
  assert.equal(reconnectDelay(10, 100, backoff, () => 0.5), 15_000, "a longer backoff wins over a short wait");
  assert.equal(reconnectDelay(0, 0n, backoff, () => 0), 0);
  assert.equal(serverDelay(10n ** 12n), 3_600_000, "an absurd wait is capped at an hour");
  assert.equal(serverDelay(-5), 0);
  assert.equal(serverDelay(Number.NaN), 0);
});
