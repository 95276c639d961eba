// Calls and request ids: ids per connection after the Hello's, calls queued while offline and
// asked again after a lost connection, timeouts, passing refusals retried.

import assert from "node:assert/strict";
import { test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { ErrorCode, MarkReadSchema, ProtocolError, Requests, type Call } from "@im/web";

function call(deadline: number) {
  const told: { answered?: boolean; error?: ProtocolError } = {};
  const c: Call = {
    body: { case: "markRead", value: create(MarkReadSchema, { conversationId: "d:alice:bob", seq: 1n }) },
    resolve: () => (told.answered = true),
    reject: (error) => (told.error = error),
    deadline,
  };
  return { call: c, told };
}

test("the ids of a connection follow the Hello's and find their request once", () => {
  const requests = new Requests();
  requests.connected();
  assert.equal(requests.register({ kind: "sync", pageToken: "" }), 2n);
  assert.equal(requests.register({ kind: "pull", conversationId: "g:team" }), 3n);
  assert.deepEqual(requests.take(3n), { kind: "pull", conversationId: "g:team" });
  assert.equal(requests.take(3n), undefined, "an answer is taken once");
  requests.connectionLost();
  requests.connected();
  assert.equal(requests.register({ kind: "ping" }), 2n, "each connection starts over");
});

test("a call queued offline fails as UNAVAILABLE at its deadline", () => {
  const requests = new Requests();
  const { call: c, told } = call(1000);
  requests.queue(c);
  requests.expire(999);
  assert.deepEqual(told, {});
  requests.expire(1000);
  assert.equal(told.error?.code, ErrorCode.UNAVAILABLE);
  assert.deepEqual(requests.takeQueued(), []);
});

test("a call on the wire fails as TIMEOUT at its deadline, and its late answer finds nothing", () => {
  const requests = new Requests();
  requests.connected();
  const { call: c, told } = call(1000);
  const id = requests.register({ kind: "call", call: c });
  const sync = requests.register({ kind: "sync", pageToken: "" });
  requests.expire(1000);
  assert.equal(told.error?.code, ErrorCode.TIMEOUT);
  assert.equal(requests.take(id), undefined);
  assert.deepEqual(requests.take(sync), { kind: "sync", pageToken: "" }, "only calls expire");
});

test("a lost connection queues its calls again and forgets the other requests", () => {
  const requests = new Requests();
  requests.connected();
  const { call: c } = call(1000);
  const id = requests.register({ kind: "call", call: c });
  requests.register({ kind: "send", clientMsgId: "m1" });
  requests.connectionLost();
  assert.equal(requests.take(id), undefined);
  assert.deepEqual(requests.takeQueued(), [c], "only the call");
});

test("a passing refusal queues the call until the delay asked for; others reach the caller", () => {
  const requests = new Requests();
  const waiting = call(60_000);
  requests.refused(waiting.call, new ProtocolError(ErrorCode.RATE_LIMITED, "slow down", { retryAfterMs: 5000 }), 0);
  assert.deepEqual(requests.due(4999), []);
  assert.deepEqual(requests.due(5000), [waiting.call]);
  assert.deepEqual(waiting.told, {});

  const short = call(1000);
  requests.refused(short.call, new ProtocolError(ErrorCode.RATE_LIMITED, "slow down", { retryAfterMs: 5000 }), 0);
  assert.equal(short.told.error?.code, ErrorCode.RATE_LIMITED, "the caller would not wait that long");

  const forGood = call(60_000);
  requests.refused(forGood.call, new ProtocolError(ErrorCode.NOT_A_MEMBER, "no"), 0);
  assert.equal(forGood.told.error?.code, ErrorCode.NOT_A_MEMBER);
});

test("stopping answers every call, queued or on the wire", () => {
  const requests = new Requests();
  requests.connected();
  const queued = call(1000);
  const onWire = call(1000);
  requests.queue(queued.call);
  requests.register({ kind: "call", call: onWire.call });
  requests.stop(new ProtocolError(ErrorCode.UNAVAILABLE, "the client was closed"));
  assert.equal(queued.told.error?.code, ErrorCode.UNAVAILABLE);
  assert.equal(onWire.told.error?.code, ErrorCode.UNAVAILABLE);
});

test("a call sent, then queued again after a lost connection, fails as TIMEOUT at its deadline", () => {
  const requests = new Requests();
  requests.connected();
  const sent = call(1000);
  requests.register({ kind: "call", call: sent.call });
  requests.connectionLost();
  requests.expire(1000);
  assert.equal(sent.told.error?.code, ErrorCode.TIMEOUT);
});

test("without a wait named, each passing refusal of a call doubles its wait", () => {
  const requests = new Requests();
  const waiting = call(60_000);
  let now = 0;
  for (const wait of [200, 400]) {
    requests.refused(waiting.call, new ProtocolError(ErrorCode.UNAVAILABLE, "busy"), now);
    assert.deepEqual(requests.due(now + wait - 1), []);
    assert.deepEqual(requests.due(now + wait), [waiting.call]);
    now += wait;
  }
});
