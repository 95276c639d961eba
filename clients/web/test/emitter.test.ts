// The events: iterators over the stream end with the client, leave nothing behind, and answer
// every waiting next() in turn.

import assert from "node:assert/strict";
import { test } from "node:test";
import { Emitter, type ClientEvent } from "@im/web";

const stopped: ClientEvent = { type: "connection", state: { state: "stopped", reason: "closed" } };
const connecting: ClientEvent = { type: "connection", state: { state: "connecting" } };

test("events() after the client stopped ends at once and adds no listener", async () => {
  const emitter = new Emitter();
  emitter.emit(stopped);
  const events = emitter.events();
  assert.equal(emitter.listenerCount, 0);
  assert.deepEqual(await events.next(), { value: undefined, done: true });
});

test("concurrent next() calls are each answered, in order, and the rest end with the client", async () => {
  const emitter = new Emitter();
  const events = emitter.events();
  const first = events.next();
  const second = events.next();
  const third = events.next();
  emitter.emit(connecting);
  emitter.emit(stopped);
  assert.deepEqual(await first, { value: connecting, done: false });
  assert.deepEqual(await second, { value: stopped, done: false });
  assert.deepEqual(await third, { value: undefined, done: true });
  assert.equal(emitter.listenerCount, 0);
});
