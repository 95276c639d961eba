// The web client behind the JSON-lines driver protocol (docs/CONFORMANCE.md): commands arrive
// on stdin, one JSON object per line; answers and events leave on stdout, one per line. The
// commands and answers are those of the reference driver, conformance/src/bin/im-driver-rust.rs.

import { createInterface } from "node:readline";
import WebSocket from "ws";
import {
  CLIENT_VERSION,
  Client,
  ProtocolError,
  errorCodeName,
  type ClientEvent,
  type Entry,
  type NewUpload,
  type SendBody,
} from "@im/web";

type Json = Record<string, unknown>;

const sessions = new Map<string, Client>();

function emit(line: Json): void {
  // A pipe's writes are synchronous on Linux: each line leaves whole, at once.
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

/** A failure as the driver protocol answers it: the protocol's code and name. */
class Failure {
  constructor(readonly error: Json) {}
}

function errorJson(error: unknown): Json {
  if (error instanceof Failure) return error.error;
  if (error instanceof ProtocolError) {
    return { code: error.code, name: errorCodeName(error.code) ?? "UNKNOWN", message: error.message };
  }
  return { code: 0, name: "DRIVER_ERROR", message: String(error) };
}

const text = (v: Json, key: string): string => (typeof v[key] === "string" ? (v[key] as string) : "");
const num = (v: Json, key: string): number => (typeof v[key] === "number" ? (v[key] as number) : 0);

function mediaJson(entry: Entry): Json | null {
  const media = entry.body.kind === "content" ? entry.body.content.media : undefined;
  if (!media) return null;
  return {
    media_id: media.mediaId,
    mime_type: media.mimeType,
    size_bytes: media.sizeBytes,
    file_name: media.fileName,
    caption: media.caption,
  };
}

function textOf(entry: Entry): string | null {
  return entry.body.kind === "content" ? (entry.body.content.text ?? null) : null;
}

function eventJson(session: string, event: ClientEvent): Json {
  let v: Json;
  switch (event.type) {
    case "message": {
      const m = event.entry;
      v = {
        type: "message",
        conversation: m.conversationId,
        seq: m.seq,
        from: m.senderUserId,
        from_device: m.senderDeviceId,
        client_msg_id: m.clientMsgId,
        text: textOf(m),
        media: mediaJson(m),
      };
      break;
    }
    case "change": {
      const m = event.entry;
      const b = m.body;
      const [kind, target, key, remove] =
        b.kind === "edit" || b.kind === "recall" || b.kind === "delete"
          ? [b.kind, b.targetSeq, null, false]
          : b.kind === "reaction"
            ? ["reaction", b.targetSeq, b.key, b.remove]
            : b.kind === "notice"
              ? ["notice", 0, null, false]
              : ["unknown", 0, null, false];
      v = { type: "change", kind, conversation: m.conversationId, seq: m.seq, from: m.senderUserId, target, key, remove };
      if (b.kind === "notice") {
        v.notice = b.notice.kind;
        v.targets = b.notice.targetUserIds;
      }
      break;
    }
    case "read_state":
      v = { type: "read_state", conversation: event.conversationId, read_seq: event.readSeq, unread_count: event.unreadCount };
      break;
    case "receipt":
      v = { type: "receipt", conversation: event.conversationId, user: event.userId, read_seq: event.readSeq };
      break;
    case "typing":
      v = { type: "typing", conversation: event.conversationId, user: event.userId, active: event.active };
      break;
    case "presence":
      v = { type: "presence", user: event.presence.userId, status: event.presence.status, status_text: event.presence.statusText };
      break;
    case "conversation": {
      const c = event.conversation;
      v = {
        type: "conversation",
        conversation: c.conversationId,
        active: c.active,
        last_seq: c.lastSeq,
        read_seq: c.readSeq,
        unread_count: c.unreadCount,
      };
      break;
    }
    case "connection":
      v = { type: "connection", state: event.state.state };
      break;
  }
  return { event: { ...v, session } };
}

function bodyOf(v: Json): SendBody {
  const targetSeq = num(v, "target");
  switch (v.kind) {
    case "edit":
      return { kind: "edit", targetSeq, content: { text: text(v, "text") } };
    case "recall":
      return { kind: "recall", targetSeq };
    case "delete":
      return { kind: "delete", targetSeq };
    case "reaction":
      return { kind: "reaction", targetSeq, key: text(v, "key"), remove: v.remove === true };
    default:
      return { kind: "content", content: { text: text(v, "text"), replyToSeq: num(v, "reply_to") } };
  }
}

function sentJson(sent: { seq: number; duplicate: boolean; clientMsgId: string }): Json {
  return { seq: sent.seq, duplicate: sent.duplicate, client_msg_id: sent.clientMsgId };
}

function fromHex(hex: string): Uint8Array {
  if (hex.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(hex)) {
    throw new Failure({ code: 0, name: "MALFORMED_COMMAND", message: "data_hex is not hex" });
  }
  return Uint8Array.from(hex.match(/../g) ?? [], (b) => parseInt(b, 16));
}

function toHex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function handle(command: Json): Promise<Json> {
  const name = text(command, "session");
  const need = (): Client => {
    const client = sessions.get(name);
    if (!client) throw new Failure({ code: 0, name: "NO_SESSION" });
    return client;
  };
  switch (command.cmd) {
    case "hello":
      return { implementation: "web", client: CLIENT_VERSION, node: process.versions.node };
    case "connect": {
      // A session connected again is a new client: the old one goes first.
      await sessions.get(name)?.close();
      const client = new Client({
        url: text(command, "url"),
        deviceId: text(command, "device"),
        token: text(command, "token"),
        WebSocket,
        ...(typeof command.api === "string" ? { businessApi: command.api } : {}),
      });
      client.on((event) => emit(eventJson(name, event)));
      sessions.set(name, client);
      try {
        return { user: await client.connect() };
      } catch (error) {
        sessions.delete(name);
        throw error;
      }
    }
    case "close": {
      // Closing a session that is closed already (or never was) is no error.
      const client = sessions.get(name);
      sessions.delete(name);
      await client?.close();
      return {};
    }
    case "send": {
      const client = need();
      const body = (command.body ?? {}) as Json;
      const conversation = text(command, "conversation");
      if (body.kind === "media") {
        const media = await client.business.media(text(body, "media_id"));
        return sentJson(await client.sendMedia(conversation, media, text(body, "caption")));
      }
      const id = typeof command.client_msg_id === "string" ? command.client_msg_id : undefined;
      return sentJson(await client.send(conversation, bodyOf(body), id));
    }
    case "history": {
      const page = await need().history(text(command, "conversation"), num(command, "before"), num(command, "limit"));
      const messages = page.entries.map((m) => {
        const s = m.state ?? { editedSeq: 0, recalledSeq: 0, deletedSeq: 0, reactions: [] };
        return {
          seq: m.seq,
          from: m.senderUserId,
          text: textOf(m),
          notice: m.body.kind === "notice" ? m.body.notice.kind : null,
          edited_seq: s.editedSeq,
          recalled_seq: s.recalledSeq,
          deleted_seq: s.deletedSeq,
          reactions: s.reactions.map((r) => ({ key: r.key, count: r.count, mine: r.mine })),
        };
      });
      return { messages, has_more: page.hasMore, last_seq: page.lastSeq, visible_from_seq: page.visibleFromSeq };
    }
    case "mark_read": {
      const state = await need().markRead(text(command, "conversation"), num(command, "seq"));
      return { read_seq: state.readSeq, unread_count: state.unreadCount };
    }
    case "typing":
      need().typing(text(command, "conversation"), command.active !== false);
      return {};
    case "subscribe_presence": {
      const users = Array.isArray(command.users) ? command.users.filter((u): u is string => typeof u === "string") : [];
      const list = await need().subscribePresence(users);
      return { presences: list.map((p) => ({ user: p.userId, status: p.status })) };
    }
    case "set_presence": {
      const status = command.status === "away" || command.status === "busy" ? command.status : "online";
      await need().setPresence(status, text(command, "text"));
      return {};
    }
    case "conversations":
      return {
        conversations: need()
          .conversations()
          .map((c) => ({
            conversation: c.conversationId,
            unread_count: c.unreadCount,
            read_seq: c.readSeq,
            last_seq: c.lastSeq,
            active: c.active,
          })),
      };
    case "create_group": {
      const members = Array.isArray(command.members) ? command.members.filter((u): u is string => typeof u === "string") : [];
      const group = await need().business.createGroup(text(command, "name"), members);
      return { group_id: group.groupId };
    }
    case "upload": {
      const kinds = ["image", "video", "audio"] as const;
      const kind = kinds.find((k) => k === command.kind) ?? "file";
      const upload: NewUpload = {
        kind,
        mimeType: text(command, "mime_type"),
        bytes: fromHex(text(command, "data_hex")),
        fileName: text(command, "file_name"),
      };
      const media = await need().business.upload(upload);
      return { media_id: media.mediaId, state: media.state, mime_type: media.mimeType, size_bytes: media.sizeBytes };
    }
    case "download": {
      const bytes = await need().business.download(text(command, "media_id"), text(command, "conversation"), num(command, "seq"));
      return { data_hex: toHex(bytes) };
    }
    case "leave_group":
      await need().business.leaveGroup(text(command, "group"));
      return {};
    default:
      throw new Failure({ code: 0, name: "UNKNOWN_COMMAND", message: String(command.cmd) });
  }
}

// Commands run concurrently: a send waiting for its ack does not hold up the others.
const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
lines.on("line", (line) => {
  let command: Json;
  try {
    const parsed: unknown = JSON.parse(line);
    if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) throw new Error("not an object");
    command = parsed as Json;
  } catch {
    emit({ ok: false, error: { name: "MALFORMED_COMMAND", message: line } });
    return;
  }
  handle(command).then(
    (answer) => emit({ ...answer, id: command.id, ok: true }),
    (error: unknown) => emit({ id: command.id, ok: false, error: errorJson(error) }),
  );
});
// The runner is done: close every client (their sockets with them), then go.
lines.on("close", () => {
  void Promise.allSettled([...sessions.values()].map((client) => client.close())).then(() => process.exit(0));
});
