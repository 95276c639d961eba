// The user's conversations as the client knows them: read cursors and unread counts from every
// sync, conversation push and read state, moved on by the entries the timeline shows.

import type { Conversation } from "./types.js";

export class Conversations {
  private readonly known = new Map<string, Conversation>();
  /** The read cursor per conversation, sent with every sync. */
  private readonly read = new Map<string, number>();

  /** Every conversation, by id (copies). */
  list(): Conversation[] {
    return [...this.known.values()]
      .sort((a, b) => (a.conversationId < b.conversationId ? -1 : 1))
      .map((c) => ({ ...c }));
  }

  readCursors(): ReadonlyMap<string, number> {
    return this.read;
  }

  /** The server's state of a conversation (a sync, a push); returns the record. */
  onState(state: Conversation): Conversation {
    if (!state.active) {
      // Out of the conversation: what the client knew of it stays, marked inactive.
      const known = this.known.get(state.conversationId);
      const inactive = known ? { ...known, active: false } : { ...state };
      this.known.set(state.conversationId, inactive);
      return { ...inactive };
    }
    this.read.set(state.conversationId, state.readSeq);
    this.known.set(state.conversationId, { ...state });
    return { ...state };
  }

  /** The user's read cursor moved (this device's mark_read, or another device's). */
  onRead(conversationId: string, readSeq: number, unreadCount: number): void {
    this.read.set(conversationId, readSeq);
    const c = this.touch(conversationId);
    c.readSeq = readSeq;
    c.unreadCount = unreadCount;
  }

  /**
   * The conversation is held up to `held`; `fromOthers` are the seqs of the content entries of
   * others among those just shown. Those newer than what the record counts already are unread.
   */
  onHeld(conversationId: string, held: number, fromOthers: number[]): void {
    const c = this.touch(conversationId);
    c.unreadCount += fromOthers.filter((seq) => seq > c.lastSeq && seq > c.readSeq).length;
    c.lastSeq = Math.max(c.lastSeq, held);
  }

  /** A conversation's record, made if new (a 1:1 conversation starts with its first message). */
  private touch(conversationId: string): Conversation {
    let c = this.known.get(conversationId);
    if (!c) {
      c = {
        conversationId,
        type: conversationId.startsWith("d:") ? "direct" : "group",
        lastSeq: 0,
        readSeq: 0,
        unreadCount: 0,
        active: true,
      };
      this.known.set(conversationId, c);
    }
    return c;
  }
}
