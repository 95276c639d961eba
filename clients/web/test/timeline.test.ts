// The ordering of each conversation's entries (docs/PROTOCOL.md, "Delivery"): repeats dropped,
// gaps buffered and pulled, runs released in order, the floor below visible_from_seq.

import assert from "node:assert/strict";
import { test } from "node:test";
import { Timeline, type Entry, type EntryBody, type TimelineAction } from "@im/web";

const CHAT = "d:alice:bob";

function entry(seq: number, sender = "bob", body: EntryBody = text(`#${seq}`), conversationId = CHAT): Entry {
  return {
    conversationId,
    seq,
    serverMsgId: `s${seq}`,
    senderUserId: sender,
    senderDeviceId: "phone",
    clientMsgId: `c${seq}`,
    serverTimeMs: 1_764_000_000_000 + seq,
    body,
  };
}

function text(t: string): EntryBody {
  return { kind: "content", content: { text: t, mentions: [], mentionAll: false, replyToSeq: 0 } };
}

/** Alice's timeline, held up to `held` in the chat. */
function heldAt(held: number): Timeline {
  const timeline = new Timeline([[CHAT, held]]);
  timeline.setUser("alice");
  return timeline;
}

/** The actions of a run of entries shown together: held moved to the last, then each shown. */
function shown(run: Entry[], fromOthers: number[]): TimelineAction[] {
  return [
    { type: "advance", conversationId: CHAT, held: run[run.length - 1]!.seq, fromOthers },
    ...run.map((e): TimelineAction => ({ type: "show", entry: e })),
  ];
}

const pull = (afterSeq: number): TimelineAction => ({ type: "pull", conversationId: CHAT, afterSeq });

test("entries in order are shown once each and move held", () => {
  const timeline = heldAt(0);
  for (const seq of [1, 2, 3]) {
    assert.deepEqual(timeline.onEntry(entry(seq)), shown([entry(seq)], [seq]));
    assert.equal(timeline.heldOf(CHAT), seq);
  }
});

test("repeats are dropped", () => {
  const timeline = heldAt(0);
  timeline.onEntry(entry(1));
  assert.deepEqual(timeline.onEntry(entry(1)), [], "the same push again");
  timeline.onEntry(entry(2));
  assert.deepEqual(timeline.onEntry(entry(1)), [], "an older one, late");
  assert.equal(timeline.heldOf(CHAT), 2);
});

test("a resumed timeline starts from its held seqs", () => {
  const timeline = heldAt(5);
  assert.deepEqual(timeline.onEntry(entry(5)), []);
  assert.deepEqual(timeline.onEntry(entry(6)), shown([entry(6)], [6]));
});

test("a gap buffers the entry and asks for one pull at a time", () => {
  const timeline = heldAt(1);
  assert.deepEqual(timeline.onEntry(entry(3)), [pull(1)]);
  assert.deepEqual(timeline.onEntry(entry(4)), [], "a pull is on the wire already");
  assert.deepEqual(timeline.onEntry(entry(3)), [], "a buffered entry again");
  assert.equal(timeline.heldOf(CHAT), 1, "nothing shown, held stays");
});

test("the page fills the gap and releases the buffered run in order", () => {
  const timeline = heldAt(1);
  timeline.onEntry(entry(3));
  timeline.onEntry(entry(4));
  const paged = { ...entry(2), state: { asOfSeq: 4, editedSeq: 0, recalledSeq: 0, deletedSeq: 0, reactions: [] } };
  assert.deepEqual(timeline.onPage(CHAT, [paged], 4, 1), shown([paged, entry(3), entry(4)], [2, 3, 4]));
  assert.equal(timeline.heldOf(CHAT), 4);
  assert.deepEqual(timeline.onEntry(entry(3)), [], "released entries are repeats now");
});

test("entries a page repeats from the buffer are shown once", () => {
  const timeline = heldAt(0);
  timeline.onEntry(entry(2));
  assert.deepEqual(timeline.onPage(CHAT, [entry(1), entry(2), entry(3)], 3, 1), [
    ...shown([entry(1), entry(2)], [1, 2]),
    ...shown([entry(3)], [3]),
  ]);
});

test("a page that ends below the last seq asks for the next, and the last asks for nothing", () => {
  const timeline = heldAt(0);
  assert.deepEqual(timeline.onPage(CHAT, [entry(1), entry(2)], 5, 1), [
    ...shown([entry(1)], [1]),
    ...shown([entry(2)], [2]),
    pull(2),
  ]);
  const last = timeline.onPage(CHAT, [entry(3), entry(4), entry(5)], 5, 1);
  assert.ok(!last.some((a) => a.type === "pull"), "at the end: no more pulls");
  assert.equal(timeline.heldOf(CHAT), 5);
});

test("an empty page asks for nothing more, and the next gap asks again", () => {
  const timeline = heldAt(1);
  timeline.onEntry(entry(3));
  assert.deepEqual(timeline.onPage(CHAT, [], 3, 1), [], "pulling again would bring the same empty page, forever");
  assert.deepEqual(timeline.onEntry(entry(4)), [pull(1)]);
});

test("visible_from_seq moves the floor and drops buffered entries below it", () => {
  const timeline = heldAt(0);
  timeline.onEntry(entry(3));
  timeline.onEntry(entry(6));
  timeline.onVisibleFrom(CHAT, 5);
  assert.equal(timeline.heldOf(CHAT), 4, "what is below the first visible seq counts as held");
  assert.deepEqual(timeline.onEntry(entry(4)), [], "below the floor");
  assert.deepEqual(timeline.onPage(CHAT, [entry(5), entry(6)], 6, 5), shown([entry(5), entry(6)], [5, 6]), "3 was dropped");
  timeline.onVisibleFrom(CHAT, 2);
  assert.equal(timeline.heldOf(CHAT), 6, "the floor never moves back");
});

test("a page moves the floor before its entries", () => {
  const timeline = heldAt(0);
  assert.deepEqual(timeline.onPage(CHAT, [entry(8), entry(9)], 9, 8), [
    ...shown([entry(8)], [8]),
    ...shown([entry(9)], [9]),
  ]);
});

test("a pull refused for good drops the buffered entries", () => {
  const timeline = heldAt(1);
  timeline.onEntry(entry(3));
  timeline.onPullRefused(CHAT);
  assert.deepEqual(timeline.onEntry(entry(2)), shown([entry(2)], [2]), "3 is gone");
  assert.deepEqual(timeline.onEntry(entry(4)), [pull(2)], "and may be pulled again");
});

test("a lost connection forgets the pulls on it", () => {
  const timeline = heldAt(1);
  assert.deepEqual(timeline.onEntry(entry(3)), [pull(1)]);
  timeline.connectionLost();
  assert.deepEqual(timeline.onEntry(entry(4)), [pull(1)]);
});

test("own sends count as entries but not as unread, after a gap too", () => {
  const timeline = heldAt(0);
  assert.deepEqual(timeline.onEntry(entry(1, "alice")), shown([entry(1, "alice")], []));
  assert.deepEqual(timeline.onEntry(entry(3, "alice")), [pull(1)]);
  assert.deepEqual(timeline.onPage(CHAT, [entry(2)], 3, 1), shown([entry(2), entry(3, "alice")], [2]));
});

test("only content from others counts as unread", () => {
  const timeline = heldAt(0);
  const reaction = entry(2, "bob", { kind: "reaction", targetSeq: 1, key: "+1", remove: false });
  const notice = entry(3, "", {
    kind: "notice",
    notice: { kind: "members_added", actorUserId: "bob", targetUserIds: ["cy"], text: "bob added cy" },
  });
  timeline.onEntry(notice);
  timeline.onEntry(reaction);
  assert.deepEqual(timeline.onEntry(entry(1)), shown([entry(1), reaction, notice], [1]));
});

test("the last seq of a conversation asks for a pull only when behind", () => {
  const timeline = heldAt(3);
  assert.deepEqual(timeline.onLastSeq(CHAT, 3), []);
  assert.deepEqual(timeline.onLastSeq(CHAT, 5), [pull(3)]);
  assert.deepEqual(timeline.onLastSeq(CHAT, 6), [], "one pull at a time");
  assert.deepEqual(timeline.onLastSeq("g:new", 1), [{ type: "pull", conversationId: "g:new", afterSeq: 0 }], "a conversation never seen is held at 0");
});

test("conversations are ordered apart", () => {
  const timeline = heldAt(0);
  assert.deepEqual(timeline.onEntry(entry(2)), [pull(0)]);
  timeline.onEntry(entry(1, "bob", text("x"), "g:team"));
  assert.equal(timeline.heldOf("g:team"), 1);
  assert.equal(timeline.heldOf(CHAT), 0, "the chat still waits for its pull");
});
