// Pulls in turn: a few on the wire at once, paced within the server's frame rate, and all
// held while the server asks for a wait, the refused one going first after it.

import assert from "node:assert/strict";
import { test } from "node:test";
import { MAX_PULLS_IN_FLIGHT, PullQueue } from "@im/web";

function drain(pulls: PullQueue, now: number): string[] {
  const taken: string[] = [];
  for (let id = pulls.next(now); id !== undefined; id = pulls.next(now)) taken.push(id);
  return taken;
}

test("no more than a few pulls are on the wire at once; an answer frees a place", () => {
  const pulls = new PullQueue();
  for (let i = 0; i < 20; i++) pulls.add(`c${i}`);
  assert.equal(drain(pulls, 0).length, MAX_PULLS_IN_FLIGHT);
  assert.equal(pulls.wakeAt(0), undefined, "answers must come first");
  pulls.answered();
  assert.deepEqual(drain(pulls, 0), [`c${MAX_PULLS_IN_FLIGHT}`]);
});

test("pulls keep within their pace: a burst, then one per share of a second", () => {
  const pulls = new PullQueue(4);
  for (let i = 0; i < 6; i++) pulls.add(`c${i}`);
  assert.deepEqual(drain(pulls, 0), ["c0", "c1", "c2", "c3"]);
  for (let i = 0; i < 4; i++) pulls.answered();
  assert.equal(pulls.wakeAt(0), 250);
  assert.deepEqual(drain(pulls, 249), []);
  assert.deepEqual(drain(pulls, 250), ["c4"]);
});

test("a refused pull holds every pull until the wait is over, then goes first", () => {
  const pulls = new PullQueue();
  pulls.add("a");
  pulls.add("b");
  assert.deepEqual(drain(pulls, 0), ["a", "b"]);
  pulls.answered();
  pulls.retry("a", 300);
  pulls.add("c");
  assert.deepEqual(drain(pulls, 299), []);
  assert.equal(pulls.wakeAt(299), 300);
  assert.deepEqual(drain(pulls, 300), ["a", "c"]);
});
