// The outbox: sends kept until acknowledged, in order, once per connection, resent with their
// ids after a lost connection, held back after a passing refusal, failed after any other.

import assert from "node:assert/strict";
import { test } from "node:test";
import { ErrorCode, MemoryOutbox, ProtocolError, Sends, type Outgoing, type Sent } from "@im/web";

function outgoing(id: string): Outgoing {
  return { clientMsgId: id, conversationId: "d:alice:bob", body: new Uint8Array() };
}

function ack(id: string, seq: number): Sent {
  return { conversationId: "d:alice:bob", clientMsgId: id, seq, serverMsgId: `s${seq}`, serverTimeMs: 1, duplicate: false };
}

/** A waiter that records what it was told. */
function waiter() {
  const told: { sent?: Sent; error?: ProtocolError } = {};
  return { told, resolve: (sent: Sent) => (told.sent = sent), reject: (error: ProtocolError) => (told.error = error) };
}

async function kept(store: MemoryOutbox): Promise<string[]> {
  return (await store.load()).map((o) => o.clientMsgId);
}

test("sends go on the wire in order, each once per connection, and again after it is lost", async () => {
  const store = new MemoryOutbox();
  await store.put(outgoing("m1"));
  const sends = new Sends(store);
  await sends.restore();
  await sends.enqueue(outgoing("m2"), waiter());
  assert.deepEqual(await kept(store), ["m1", "m2"]);
  for (const [id, expected] of [[2n, "m1"], [3n, "m2"]] as const) {
    const next = sends.nextDue(0);
    assert.equal(next?.clientMsgId, expected);
    sends.onWire(expected, id);
  }
  assert.equal(sends.nextDue(0), undefined, "both on the wire");
  sends.connectionLost();
  assert.equal(sends.nextDue(0)?.clientMsgId, "m1", "resent with its id, oldest first");
});

test("a repeated id waits for the same ack, which empties the outbox", async () => {
  const store = new MemoryOutbox();
  const sends = new Sends(store);
  const first = waiter();
  const again = waiter();
  await sends.enqueue(outgoing("m1"), first);
  sends.onWire("m1", 2n);
  await sends.enqueue(outgoing("m1"), again);
  assert.deepEqual(await kept(store), ["m1"], "kept once");
  assert.equal(sends.onAck(ack("m1", 7))?.clientMsgId, "m1", "the send, for the own entry");
  assert.equal(first.told.sent?.seq, 7);
  assert.equal(again.told.sent?.seq, 7);
  assert.deepEqual(await kept(store), []);
  assert.equal(sends.nextDue(0), undefined);
  assert.equal(sends.onAck(ack("m1", 7)), undefined, "a second ack finds nothing");
});

test("a passing refusal holds the send back for the delay the server asked for", async () => {
  const store = new MemoryOutbox();
  const sends = new Sends(store);
  const w = waiter();
  await sends.enqueue(outgoing("m1"), w);
  sends.onWire("m1", 2n);
  sends.onRefused("m1", new ProtocolError(ErrorCode.RATE_LIMITED, "slow down", { retryAfterMs: 5000 }), 1000);
  assert.equal(sends.nextDue(5999), undefined);
  assert.equal(sends.nextDue(6000)?.clientMsgId, "m1");
  assert.deepEqual(w.told, {}, "still waiting");
  assert.deepEqual(await kept(store), ["m1"]);
});

test("a refusal a retry cannot fix fails the send and the store forgets it", async () => {
  const store = new MemoryOutbox();
  const sends = new Sends(store);
  const w = waiter();
  await sends.enqueue(outgoing("m1"), w);
  sends.onWire("m1", 2n);
  sends.onRefused("m1", new ProtocolError(ErrorCode.NOT_A_MEMBER, "no"), 0);
  assert.equal(w.told.error?.code, ErrorCode.NOT_A_MEMBER);
  assert.deepEqual(await kept(store), []);
  assert.equal(sends.nextDue(0), undefined);
});

test("a send goes out only once the store has it; a store that fails fails the send", async () => {
  let release!: () => void;
  const slow = new MemoryOutbox();
  const put = slow.put.bind(slow);
  slow.put = (o) => new Promise((resolve) => (release = () => void put(o).then(resolve)));
  const sends = new Sends(slow);
  const kept = sends.enqueue(outgoing("m1"), waiter());
  assert.equal(sends.nextDue(0), undefined, "not stored yet");
  release();
  await kept;
  assert.equal(sends.nextDue(0)?.clientMsgId, "m1");

  const broken = new MemoryOutbox();
  broken.put = () => Promise.reject(new Error("quota"));
  const failing = new Sends(broken);
  const w = waiter();
  await failing.enqueue(outgoing("m2"), w);
  assert.equal(w.told.error?.code, ErrorCode.INTERNAL);
  assert.equal(failing.size, 0);
});

test("stopping tells every waiter and keeps the outbox for the next start", async () => {
  const store = new MemoryOutbox();
  const sends = new Sends(store);
  const w = waiter();
  await sends.enqueue(outgoing("m1"), w);
  sends.stop(new ProtocolError(ErrorCode.UNAVAILABLE, "the client was closed"));
  assert.equal(w.told.error?.code, ErrorCode.UNAVAILABLE);
  assert.deepEqual(await kept(store), ["m1"]);
  const next = new Sends(store);
  await next.restore();
  assert.equal(next.nextDue(0)?.clientMsgId, "m1", "a new client resends it");
});

test("a later send never overtakes one the store is still keeping", async () => {
  const releases: (() => void)[] = [];
  const slow = new MemoryOutbox();
  const put = slow.put.bind(slow);
  let first = true;
  slow.put = (o) => {
    if (!first) return put(o);
    first = false;
    return new Promise((resolve) => releases.push(() => void put(o).then(resolve)));
  };
  const sends = new Sends(slow);
  const keeping = sends.enqueue(outgoing("m1"), waiter());
  await sends.enqueue(outgoing("m2"), waiter());
  assert.equal(sends.nextDue(0), undefined, "m2 is kept, but m1 goes first");
  releases[0]!();
  await keeping;
  assert.equal(sends.nextDue(0)?.clientMsgId, "m1");
  sends.onWire("m1", 2n);
  assert.equal(sends.nextDue(0)?.clientMsgId, "m2");
});

test("a send waiting out a refusal holds back the later ones, so they leave in the order made", async () => {
  const sends = new Sends(new MemoryOutbox());
  await sends.enqueue(outgoing("a"), waiter());
  await sends.enqueue(outgoing("b"), waiter());
  sends.onWire("a", 2n);
  sends.onRefused("a", new ProtocolError(ErrorCode.RATE_LIMITED, "slow down", { retryAfterMs: 500 }), 0);
  assert.equal(sends.nextDue(499), undefined, "b does not overtake a");
  assert.equal(sends.nextDue(500)?.clientMsgId, "a");
});

test("without a wait named, each passing refusal of a send doubles its wait", async () => {
  const sends = new Sends(new MemoryOutbox());
  await sends.enqueue(outgoing("a"), waiter());
  let now = 0;
  for (const wait of [200, 400, 800]) {
    sends.onWire("a", 2n);
    sends.onRefused("a", new ProtocolError(ErrorCode.UNAVAILABLE, "busy"), now);
    assert.equal(sends.nextDue(now + wait - 1), undefined);
    assert.equal(sends.nextDue(now + wait)?.clientMsgId, "a");
    now += wait;
  }
});

test("sends restored from the store go ahead of those made while it loaded", async () => {
  const store = new MemoryOutbox();
  await store.put(outgoing("old"));
  const sends = new Sends(store);
  await sends.enqueue(outgoing("new"), waiter());
  await sends.restore();
  assert.equal(sends.nextDue(0)?.clientMsgId, "old");
  sends.onWire("old", 2n);
  assert.equal(sends.nextDue(0)?.clientMsgId, "new");
});
