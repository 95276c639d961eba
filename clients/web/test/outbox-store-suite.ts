// What every OutboxStore must do, whatever keeps the sends (memory now; IndexedDB, say, next):
// a store is checked by calling checkOutboxStore with a function that makes an empty one.

import assert from "node:assert/strict";
import { test } from "node:test";
import type { Outgoing, OutboxStore } from "@im/web";

function outgoing(id: string, byte = 1): Outgoing {
  return { clientMsgId: id, conversationId: "d:alice:bob", body: Uint8Array.from([byte, 2, 3]) };
}

export function checkOutboxStore(name: string, make: () => Promise<OutboxStore>): void {
  test(`${name}: keeps sends oldest first, with their bytes, until removed`, async () => {
    const store = await make();
    assert.deepEqual(await store.load(), []);
    await store.put(outgoing("m1"));
    await store.put(outgoing("m2", 9));
    assert.deepEqual(await store.load(), [outgoing("m1"), outgoing("m2", 9)]);
    await store.remove("m1");
    assert.deepEqual(await store.load(), [outgoing("m2", 9)]);
  });

  test(`${name}: a put of a kept id leaves the kept send as it is`, async () => {
    const store = await make();
    await store.put(outgoing("m1", 1));
    await store.put(outgoing("m2"));
    await store.put(outgoing("m1", 7));
    assert.deepEqual(await store.load(), [outgoing("m1", 1), outgoing("m2")]);
  });

  test(`${name}: removing an id it does not keep is no error`, async () => {
    const store = await make();
    await store.remove("never");
    assert.deepEqual(await store.load(), []);
  });
}
