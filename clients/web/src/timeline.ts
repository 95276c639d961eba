// The order of each conversation's entries, as a state machine without I/O (docs/PROTOCOL.md,
// "Delivery"). Per conversation the client holds every entry up to `held`. An entry at
// `held + 1` is shown and moves `held`, past any entries buffered after it; one at or below
// `held` is a repeat and is dropped; one further ahead waits in a buffer while a pull from
// `held` fills the gap. Entries below a conversation's `visible_from_seq` count as held. The
// user's own sends count as entries once acknowledged.
//
// The Timeline answers each input with actions, in order; the client carries them out (events,
// pull frames, delivery acknowledgements), so the rules are tested on their own.

import type { Entry } from "./types.js";

export type TimelineAction =
  /** The conversation is held up to `held`: acknowledge delivery, count `fromOthers` as unread. */
  | { type: "advance"; conversationId: string; held: number; fromOthers: number[] }
  /** Show the entry to the app. */
  | { type: "show"; entry: Entry }
  /** Ask for the entries after `afterSeq`; the answer goes to onPage or onPullRefused. */
  | { type: "pull"; conversationId: string; afterSeq: number };

export class Timeline {
  /** The authenticated user: its own entries are never unread. */
  private me = "";
  private readonly held = new Map<string, number>();
  /** Entries that arrived ahead of a gap, by conversation and seq. */
  private readonly buffered = new Map<string, Map<number, Entry>>();
  /** Conversations with a pull on the wire: one at a time each. */
  private readonly pulling = new Set<string>();

  constructor(held: Iterable<[string, number]> = []) {
    for (const [conversation, seq] of held) this.held.set(conversation, seq);
  }

  setUser(userId: string): void {
    this.me = userId;
  }

  /** `held` per conversation, for the sync and delivery acknowledgements. */
  heldSeqs(): ReadonlyMap<string, number> {
    return this.held;
  }

  heldOf(conversationId: string): number {
    return this.held.get(conversationId) ?? 0;
  }

  /** The connection ended: its pulls will not be answered (the next sync pulls again). */
  connectionLost(): void {
    this.pulling.clear();
  }

  /** An entry, pushed by the server or the user's own acknowledged send. */
  onEntry(entry: Entry): TimelineAction[] {
    const actions: TimelineAction[] = [];
    this.place(actions, entry);
    return actions;
  }

  /** The answer to the pull of a conversation: the entries after the `held` it was asked from. */
  onPage(conversationId: string, entries: Entry[], lastSeq: number, visibleFromSeq: number): TimelineAction[] {
    this.pulling.delete(conversationId);
    this.countHiddenAsHeld(conversationId, visibleFromSeq);
    const actions: TimelineAction[] = [];
    for (const entry of entries) this.place(actions, entry);
    // Pull on while behind; but a page that brought nothing would be asked again forever.
    if (entries.length > 0 && this.heldOf(conversationId) < lastSeq) {
      this.pull(actions, conversationId);
    }
    return actions;
  }

  /** The pull was refused for good (the user left, say): what is buffered will never connect. */
  onPullRefused(conversationId: string): void {
    this.pulling.delete(conversationId);
    this.buffered.delete(conversationId);
  }

  /** The first seq the user may see (from a sync or a conversation push). */
  onVisibleFrom(conversationId: string, visibleFromSeq: number): void {
    this.countHiddenAsHeld(conversationId, visibleFromSeq);
  }

  /** The newest seq of a conversation (from a sync or a conversation push): pulls if behind. */
  onLastSeq(conversationId: string, lastSeq: number): TimelineAction[] {
    const actions: TimelineAction[] = [];
    if (lastSeq > this.heldOf(conversationId)) {
      this.pull(actions, conversationId);
    }
    return actions;
  }

  private place(actions: TimelineAction[], entry: Entry): void {
    const conversationId = entry.conversationId;
    let held = this.heldOf(conversationId);
    if (entry.seq <= held) {
      return; // a repeat
    }
    if (entry.seq > held + 1) {
      let buffer = this.buffered.get(conversationId);
      if (!buffer) this.buffered.set(conversationId, (buffer = new Map()));
      buffer.set(entry.seq, entry);
      this.pull(actions, conversationId);
      return;
    }
    const run = [entry];
    held = entry.seq;
    const buffer = this.buffered.get(conversationId);
    for (let next = buffer?.get(held + 1); next; next = buffer?.get(held + 1)) {
      run.push(next);
      held = next.seq;
    }
    this.dropBufferedTo(conversationId, held);
    this.held.set(conversationId, held);
    const fromOthers = run.filter((e) => e.body.kind === "content" && e.senderUserId !== this.me).map((e) => e.seq);
    actions.push({ type: "advance", conversationId, held, fromOthers });
    for (const e of run) actions.push({ type: "show", entry: e });
  }

  /** Entries below `visibleFromSeq` are not the user's to see: they count as held. */
  private countHiddenAsHeld(conversationId: string, visibleFromSeq: number): void {
    const hiddenUpTo = visibleFromSeq - 1;
    if (hiddenUpTo > this.heldOf(conversationId)) {
      this.held.set(conversationId, hiddenUpTo);
      this.dropBufferedTo(conversationId, hiddenUpTo);
    }
  }

  private dropBufferedTo(conversationId: string, seq: number): void {
    const buffer = this.buffered.get(conversationId);
    if (!buffer) return;
    for (const buffered of buffer.keys()) {
      if (buffered <= seq) buffer.delete(buffered);
    }
    if (buffer.size === 0) this.buffered.delete(conversationId);
  }

  /** Asks for what follows `held`, unless a pull of the conversation is on the wire already. */
  private pull(actions: TimelineAction[], conversationId: string): void {
    if (!this.pulling.has(conversationId)) {
      this.pulling.add(conversationId);
      actions.push({ type: "pull", conversationId, afterSeq: this.heldOf(conversationId) });
    }
  }
}
