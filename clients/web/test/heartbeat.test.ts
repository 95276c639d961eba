// Liveness: pings every interval, a ping some frame must follow within its deadline, silence
// past the idle timeout, and the settings taken from a Welcome.

import assert from "node:assert/strict";
import { test } from "node:test";
import { DEFAULT_PONG_TIMEOUT_MS, Heartbeat, heartbeatSettings } from "@im/web";

const settings = { intervalMs: 1000, idleMs: 5000, pongTimeoutMs: 300 };

test("a ping is due every interval, and the next check is at the next ping", () => {
  const heartbeat = new Heartbeat(settings, 0);
  assert.equal(heartbeat.check(999), "alive");
  assert.equal(heartbeat.nextCheckAt(), 1000);
  assert.equal(heartbeat.check(1000), "ping");
  heartbeat.pinged(1000);
  assert.equal(heartbeat.nextCheckAt(), 1300, "the ping's deadline comes first");
  heartbeat.heard(1010);
  assert.equal(heartbeat.check(1999), "alive");
  assert.equal(heartbeat.nextCheckAt(), 2000);
  assert.equal(heartbeat.check(2000), "ping");
});

test("a ping followed by no frame within its deadline means the connection is dead", () => {
  const heartbeat = new Heartbeat(settings, 0);
  heartbeat.pinged(1000);
  assert.equal(heartbeat.check(1299), "alive");
  assert.equal(heartbeat.check(1300), "dead");
});

test("any frame from the server answers the pings sent before it", () => {
  const heartbeat = new Heartbeat(settings, 0);
  heartbeat.pinged(1000);
  heartbeat.pinged(1100);
  heartbeat.heard(1200);
  assert.equal(heartbeat.check(1500), "alive");
});

test("a probe's shorter deadline wins over the pong timeout, and a longer one does not extend it", () => {
  const heartbeat = new Heartbeat(settings, 0);
  heartbeat.pinged(100, 50);
  assert.equal(heartbeat.nextCheckAt(), 150);
  assert.equal(heartbeat.check(150), "dead");
  const other = new Heartbeat(settings, 0);
  other.pinged(100);
  other.pinged(200, 10_000);
  assert.equal(other.check(400), "dead", "the first ping's deadline still holds");
});

test("silence past the idle timeout means the connection is dead, pings or not", () => {
  const heartbeat = new Heartbeat({ intervalMs: 10_000, idleMs: 3000, pongTimeoutMs: 10_000 }, 0);
  assert.equal(heartbeat.nextCheckAt(), 3000);
  assert.equal(heartbeat.check(2999), "alive");
  assert.equal(heartbeat.check(3000), "dead");
});

test("the settings follow the Welcome, within bounds", () => {
  assert.deepEqual(heartbeatSettings(30_000, 90_000), { intervalMs: 30_000, idleMs: 90_000, pongTimeoutMs: DEFAULT_PONG_TIMEOUT_MS });
  assert.deepEqual(heartbeatSettings(1000, 3000, 2000), { intervalMs: 1000, idleMs: 3000, pongTimeoutMs: 2000 });
  assert.deepEqual(heartbeatSettings(10, 10, 0), { intervalMs: 1000, idleMs: 3000, pongTimeoutMs: 1 }, "no busy loops");
  assert.deepEqual(heartbeatSettings(0, 0).intervalMs, 30_000, "an interval not announced");
  assert.deepEqual(heartbeatSettings(0, 0).idleMs, 90_000, "an idle timeout not announced: three intervals");
});
