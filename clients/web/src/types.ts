// The client's plain types: what apps read and write, with seqs and times as numbers rather
// than the wire's bigints, and enums by short lower-case name. Conversions to and from the
// generated protocol types live here too.

import { create, type DescEnum, type DescEnumValue } from "@bufbuild/protobuf";
import {
  ConversationTypeSchema,
  MediaKindSchema,
  MessageBodySchema,
  NoticeKindSchema,
  PlatformSchema,
  PresenceStatusSchema,
  type ConversationState,
  type Content as WireContent,
  type MediaRef,
  type Message as WireMessage,
  type MessageBody,
  type MessagePage,
  type Presence as WirePresence,
} from "./gen/im/v1/messaging_pb.js";

/** A media reference as a message carries it (`im.v1.MediaRef`). */
export interface Attachment {
  /** "image", "video", "audio", "file" ("unspecified" when unknown). */
  kind: string;
  mediaId: string;
  mimeType: string;
  sizeBytes: number;
  fileName: string;
  width: number;
  height: number;
  durationMs: number;
  thumbnailMediaId: string;
  caption: string;
}

/** An app-defined payload the server relays unread. */
export interface Custom {
  type: string;
  data: Uint8Array;
  fallbackText: string;
}

/** What a user says: one of text, media or custom (none: a kind newer than this build). */
export interface Content {
  text?: string;
  media?: Attachment;
  custom?: Custom;
  mentions: string[];
  mentionAll: boolean;
  /** The seq of the entry this one replies to; 0 for none. */
  replyToSeq: number;
}

/** Content to send: the same, with every field optional. */
export interface ContentInit {
  text?: string;
  media?: Partial<Attachment> & { mediaId: string };
  custom?: Custom;
  mentions?: string[];
  mentionAll?: boolean;
  replyToSeq?: number;
}

/** A notice the server wrote (members added, removed, ...). */
export interface Notice {
  /** "group_created", "members_added", "members_removed", "member_left", ... */
  kind: string;
  actorUserId: string;
  targetUserIds: string[];
  /** A human-readable fallback, for kinds an app does not know. */
  text: string;
}

/** What an entry of a conversation does. */
export type EntryBody =
  | { kind: "content"; content: Content }
  | { kind: "edit"; targetSeq: number; content: Content }
  | { kind: "recall"; targetSeq: number }
  | { kind: "delete"; targetSeq: number }
  | { kind: "reaction"; targetSeq: number; key: string; remove: boolean }
  | { kind: "notice"; notice: Notice }
  /** No body: a recalled or deleted entry, as pages return it. */
  | { kind: "empty" }
  /** A kind newer than this build. */
  | { kind: "unknown" };

/** What an app may send. */
export type SendBody =
  | { kind: "content"; content: ContentInit }
  | { kind: "edit"; targetSeq: number; content: ContentInit }
  | { kind: "recall"; targetSeq: number }
  | { kind: "delete"; targetSeq: number }
  | { kind: "reaction"; targetSeq: number; key: string; remove?: boolean };

/**
 * What later entries did to an entry, as a page (history, pull) reports it. Entries up to
 * `asOfSeq` are reflected already: apply a change event to this entry only when the change's
 * seq is above `asOfSeq`, so that nothing counts twice.
 */
export interface EntryState {
  asOfSeq: number;
  editedSeq: number;
  recalledSeq: number;
  deletedSeq: number;
  reactions: { key: string; count: number; mine: boolean }[];
}

/** One entry of a conversation. */
export interface Entry {
  conversationId: string;
  seq: number;
  serverMsgId: string;
  /** Empty for system notices. */
  senderUserId: string;
  senderDeviceId: string;
  clientMsgId: string;
  serverTimeMs: number;
  body: EntryBody;
  /** Set in pages; absent in live entries. */
  state?: EntryState;
}

/** A page of entries (history or pull). */
export interface Page {
  conversationId: string;
  /** Ascending seq order, no gaps inside. */
  entries: Entry[];
  hasMore: boolean;
  lastSeq: number;
  visibleFromSeq: number;
}

/** A conversation as the user sees it. */
export interface Conversation {
  conversationId: string;
  /** "direct", "group" or "channel". */
  type: string;
  lastSeq: number;
  readSeq: number;
  unreadCount: number;
  /** False once the user left or was removed. */
  active: boolean;
}

/** The user's read state in a conversation. */
export interface ReadState {
  readSeq: number;
  unreadCount: number;
}

/** A user's presence. */
export interface UserPresence {
  userId: string;
  /** "offline", "online", "away", "busy" ("unspecified" when unknown). */
  status: string;
  statusText: string;
  /** Platforms of the user's online devices: "web", "ios", ... */
  platforms: string[];
  /** When the user was last online, if offline now (Unix ms; 0: not said). */
  lastSeenMs: number;
}

/** The server's acknowledgement of a send: the entry is durable and has its place. */
export interface Sent {
  conversationId: string;
  clientMsgId: string;
  seq: number;
  serverMsgId: string;
  serverTimeMs: number;
  /** The server had accepted this id before (a resend). */
  duplicate: boolean;
}

/** The connection's state. */
export type ConnectionState =
  | { state: "connecting" }
  | { state: "connected"; userId: string; sessionId: string }
  | { state: "reconnecting"; reason: string; retryInMs: number }
  | { state: "stopped"; reason: string };

/** Everything the client tells the app. Entries of one conversation come in seq order, each once. */
export type ClientEvent =
  /** A new message (the user's own included, once acknowledged). */
  | { type: "message"; entry: Entry }
  /** An entry that edits, recalls, deletes or reacts to an earlier one, or a notice. */
  | { type: "change"; entry: Entry }
  /** The user's read cursor moved (on this device or another). */
  | { type: "read_state"; conversationId: string; readSeq: number; unreadCount: number }
  /** Another member read up to `readSeq`. */
  | { type: "receipt"; conversationId: string; userId: string; readSeq: number }
  /** Someone is typing, or stopped (said so, or sent nothing for 6 s: the client reports the lapse). */
  | { type: "typing"; conversationId: string; userId: string; active: boolean }
  /** A watched user's presence changed (or was fetched again after a reconnect). */
  | { type: "presence"; presence: UserPresence }
  /** A conversation's state changed (after a sync, or when the user joined or left). */
  | { type: "conversation"; conversation: Conversation }
  | { type: "connection"; state: ConnectionState };

/** An enum value's name without its prefix, in lower case ("members_added"). */
export function enumName(schema: DescEnum, value: number, prefix: string): string {
  const known = (schema.value as Record<number, DescEnumValue | undefined>)[value];
  return known ? known.name.slice(prefix.length).toLowerCase() : "unspecified";
}

/** The enum value of a short name, or 0 (UNSPECIFIED). */
export function enumValue(schema: DescEnum, name: string, prefix: string): number {
  return schema.values.find((v) => v.name === prefix + name.toUpperCase())?.number ?? 0;
}

function attachmentFromWire(m: MediaRef): Attachment {
  return {
    kind: enumName(MediaKindSchema, m.kind, "MEDIA_KIND_"),
    mediaId: m.mediaId,
    mimeType: m.mimeType,
    sizeBytes: Number(m.sizeBytes),
    fileName: m.fileName,
    width: m.width,
    height: m.height,
    durationMs: m.durationMs,
    thumbnailMediaId: m.thumbnailMediaId,
    caption: m.caption,
  };
}

function contentFromWire(c: WireContent | undefined): Content {
  const content: Content = {
    mentions: c ? [...c.mentions] : [],
    mentionAll: c?.mentionAll ?? false,
    replyToSeq: Number(c?.replyToSeq ?? 0n),
  };
  switch (c?.kind.case) {
    case "text":
      content.text = c.kind.value.text;
      break;
    case "media":
      content.media = attachmentFromWire(c.kind.value);
      break;
    case "custom":
      content.custom = { type: c.kind.value.type, data: c.kind.value.data, fallbackText: c.kind.value.fallbackText };
      break;
  }
  return content;
}

export function bodyFromWire(body: MessageBody | undefined): EntryBody {
  const kind = body?.kind;
  switch (kind?.case) {
    case "content":
      return { kind: "content", content: contentFromWire(kind.value) };
    case "edit":
      return { kind: "edit", targetSeq: Number(kind.value.targetSeq), content: contentFromWire(kind.value.content) };
    case "recall":
      return { kind: "recall", targetSeq: Number(kind.value.targetSeq) };
    case "delete":
      return { kind: "delete", targetSeq: Number(kind.value.targetSeq) };
    case "reaction":
      return { kind: "reaction", targetSeq: Number(kind.value.targetSeq), key: kind.value.key, remove: kind.value.remove };
    case "notice":
      return {
        kind: "notice",
        notice: {
          kind: enumName(NoticeKindSchema, kind.value.kind, "NOTICE_KIND_"),
          actorUserId: kind.value.actorUserId,
          targetUserIds: [...kind.value.targetUserIds],
          text: kind.value.text,
        },
      };
    default:
      // A body with fields this build does not know is a newer kind; none at all is empty.
      return body?.$unknown?.length ? { kind: "unknown" } : { kind: "empty" };
  }
}

/**
 * An entry off the wire; `asOfSeq` is the last seq of the page it came in (pages only: their
 * entries always have a state, zeros where the server sent none).
 */
export function entryFromWire(m: WireMessage, asOfSeq?: number): Entry {
  const entry: Entry = {
    conversationId: m.conversationId,
    seq: Number(m.seq),
    serverMsgId: m.serverMsgId,
    senderUserId: m.senderUserId,
    senderDeviceId: m.senderDeviceId,
    clientMsgId: m.clientMsgId,
    serverTimeMs: Number(m.serverTimeMs),
    body: bodyFromWire(m.body),
  };
  if (asOfSeq !== undefined || m.state) {
    entry.state = {
      asOfSeq: asOfSeq ?? 0,
      editedSeq: Number(m.state?.editedSeq ?? 0n),
      recalledSeq: Number(m.state?.recalledSeq ?? 0n),
      deletedSeq: Number(m.state?.deletedSeq ?? 0n),
      reactions: (m.state?.reactions ?? []).map((r) => ({ key: r.key, count: r.count, mine: r.mine })),
    };
  }
  return entry;
}

/** A page off the wire; each entry's state is as of the page's last seq. */
export function pageFromWire(page: MessagePage): Page {
  const lastSeq = Number(page.lastSeq);
  return {
    conversationId: page.conversationId,
    entries: page.messages.map((m) => entryFromWire(m, lastSeq)),
    hasMore: page.hasMore,
    lastSeq,
    visibleFromSeq: Number(page.visibleFromSeq),
  };
}

function contentToWire(c: ContentInit) {
  const kind = c.text !== undefined
    ? { case: "text" as const, value: { text: c.text } }
    : c.media
      ? {
          case: "media" as const,
          value: {
            ...c.media,
            kind: enumValue(MediaKindSchema, c.media.kind ?? "", "MEDIA_KIND_"),
            sizeBytes: BigInt(c.media.sizeBytes ?? 0),
          },
        }
      : c.custom
        ? { case: "custom" as const, value: c.custom }
        : { case: undefined };
  return {
    kind,
    mentions: c.mentions ?? [],
    mentionAll: c.mentionAll ?? false,
    replyToSeq: BigInt(c.replyToSeq ?? 0),
  };
}

/** The wire form of what an app sends. */
export function bodyToWire(body: SendBody): MessageBody {
  switch (body.kind) {
    case "content":
      return create(MessageBodySchema, { kind: { case: "content", value: contentToWire(body.content) } });
    case "edit":
      return create(MessageBodySchema, {
        kind: { case: "edit", value: { targetSeq: BigInt(body.targetSeq), content: contentToWire(body.content) } },
      });
    case "recall":
      return create(MessageBodySchema, { kind: { case: "recall", value: { targetSeq: BigInt(body.targetSeq) } } });
    case "delete":
      return create(MessageBodySchema, { kind: { case: "delete", value: { targetSeq: BigInt(body.targetSeq) } } });
    case "reaction":
      return create(MessageBodySchema, {
        kind: {
          case: "reaction",
          value: { targetSeq: BigInt(body.targetSeq), key: body.key, remove: body.remove ?? false },
        },
      });
  }
}

export function conversationFromWire(c: ConversationState): Conversation {
  return {
    conversationId: c.conversationId,
    type: enumName(ConversationTypeSchema, c.type, "CONVERSATION_TYPE_"),
    lastSeq: Number(c.lastSeq),
    readSeq: Number(c.readSeq),
    unreadCount: Number(c.unreadCount),
    active: c.active,
  };
}

export function presenceFromWire(p: WirePresence): UserPresence {
  return {
    userId: p.userId,
    status: enumName(PresenceStatusSchema, p.status, "PRESENCE_STATUS_"),
    statusText: p.statusText,
    platforms: p.platforms.map((x) => enumName(PlatformSchema, x, "PLATFORM_")),
    lastSeenMs: Number(p.lastSeenMs),
  };
}
