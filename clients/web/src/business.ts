// Groups, membership and media through the business service's HTTP API, with the user's own
// token (the user acts for itself: its rights in each group apply). Answers are read into plain
// objects holding the fields this client uses; a field missing from an answer fails the call
// with INTERNAL naming it, never a silent empty value.

import { ErrorCode } from "./gen/im/v1/errors_pb.js";
import { ProtocolError } from "./protocol-error.js";
import type { Attachment } from "./types.js";
import { randomId, utf8 } from "./env.js";

/** The part of `fetch` the client uses (the browser's, Node's, or a test's). */
export type FetchLike = (
  url: string,
  init: { method: string; headers: Record<string, string>; body?: string | Uint8Array },
) => Promise<{ status: number; ok: boolean; arrayBuffer(): Promise<ArrayBuffer> }>;

export interface Group {
  groupId: string;
  name: string;
  ownerUserId: string;
  /** "group" or "channel". */
  kind: string;
  memberCount: number;
}

export interface Member {
  userId: string;
  /** "owner", "admin" or "member". */
  role: string;
}

/** What adding members did: who joined, and who was invited (they join once they accept). */
export interface Added {
  added: string[];
  invited: string[];
}

export interface Invitation {
  groupId: string;
  inviterUserId: string;
  createdAtMs: number;
}

/** An uploaded object as the business API knows it. */
export interface Media {
  mediaId: string;
  /** "pending", "processing", "ready", "quarantined", "rejected", "aborted" or "deleted". */
  state: string;
  /** "image", "video", "audio" or "file". */
  kind: string;
  /** The type sniffed from the bytes once completed (the declared one before). */
  mimeType: string;
  sizeBytes: number;
  fileName: string;
  width: number;
  height: number;
  animated: boolean;
  /** Base64 ThumbHash of an image, a placeholder until a thumbnail loads ("" when none). */
  thumbhash: string;
  variants: { name: string; mimeType: string; width: number; height: number; sizeBytes: number }[];
}

/** What to upload. */
export interface NewUpload {
  kind: "image" | "video" | "audio" | "file";
  /** The declared type; the type sniffed from the bytes wins. */
  mimeType: string;
  bytes: Uint8Array;
  fileName?: string;
  /** Uploading again with the same id resumes the same upload (one media, charged once). */
  clientUploadId?: string;
}

type Json = Record<string, unknown>;

/** The reference a message carries for uploaded media. */
export function attachmentOf(media: Media, caption = ""): Attachment {
  return {
    kind: media.kind,
    mediaId: media.mediaId,
    mimeType: media.mimeType,
    sizeBytes: media.sizeBytes,
    fileName: media.fileName,
    width: media.width,
    height: media.height,
    durationMs: 0,
    thumbnailMediaId: "",
    caption,
  };
}

export class BusinessApi {
  private readonly base: string;

  /**
   * @param base `http://host:port` of the business API
   * @param token the user's access token (the one its Hello carries), fresh when `refresh`
   * @param me the authenticated user's id (known once connected)
   */
  constructor(
    base: string,
    private readonly token: (refresh: boolean) => Promise<string>,
    private readonly me: () => Promise<string>,
    private readonly fetch: FetchLike,
  ) {
    this.base = base.replace(/\/+$/, "");
  }

  /** Creates a group the user owns, with `members` besides the user. */
  async createGroup(name: string, members: string[]): Promise<Group> {
    return group(await this.call("POST", "/v1/groups", { name, member_user_ids: members }));
  }

  async group(groupId: string): Promise<Group> {
    return group(await this.call("GET", `/v1/groups/${enc(groupId)}`));
  }

  /** Every member of a group the user is in. */
  async members(groupId: string): Promise<Member[]> {
    const members: Member[] = [];
    let token = "";
    do {
      const page = await this.call("GET", `/v1/groups/${enc(groupId)}/members?page_token=${enc(token)}`);
      for (const m of field<Json[]>(page, "members", "object")) {
        members.push({ userId: field(m, "user_id", "string"), role: field(m, "role", "string") });
      }
      token = field(page, "next_page_token", "string");
    } while (token);
    return members;
  }

  /** Adds members, as the user's role allows: those who let the user add them join, the others are invited. */
  async addMembers(groupId: string, userIds: string[]): Promise<Added> {
    const answer = await this.call("POST", `/v1/groups/${enc(groupId)}/members`, { user_ids: userIds });
    return { added: field(answer, "added_user_ids", "object"), invited: field(answer, "invited_user_ids", "object") };
  }

  async removeMembers(groupId: string, userIds: string[]): Promise<void> {
    await this.call("POST", `/v1/groups/${enc(groupId)}/members/remove`, { user_ids: userIds });
  }

  async leaveGroup(groupId: string): Promise<void> {
    await this.call("POST", `/v1/groups/${enc(groupId)}/leave`, { user_id: await this.me() });
  }

  /** The user's pending invitations, oldest first. */
  async invitations(): Promise<Invitation[]> {
    const answer = await this.call("GET", `/v1/users/${enc(await this.me())}/invitations`);
    return field<Json[]>(answer, "invitations", "object").map((i) => ({
      groupId: field(i, "group_id", "string"),
      inviterUserId: field(i, "inviter_user_id", "string"),
      createdAtMs: field(i, "created_at_ms", "number"),
    }));
  }

  async acceptInvitation(groupId: string): Promise<Group> {
    const me = await this.me();
    return group(await this.call("POST", `/v1/groups/${enc(groupId)}/invitations/${enc(me)}/accept`));
  }

  async declineInvitation(groupId: string): Promise<void> {
    await this.call("DELETE", `/v1/groups/${enc(groupId)}/invitations/${enc(await this.me())}`);
  }

  /**
   * Uploads media: created on the business API, its bytes PUT straight to the object store at
   * the signed URL, then completed, once the server has checked and kept them (bytes that
   * contradict the declared type are MEDIA_REJECTED).
   */
  async upload(upload: NewUpload): Promise<Media> {
    const created = await this.call("POST", "/v1/media/uploads", {
      user_id: await this.me(),
      kind: upload.kind,
      mime_type: upload.mimeType,
      size_bytes: upload.bytes.length,
      file_name: upload.fileName ?? "",
      client_upload_id: upload.clientUploadId ?? randomId(),
    });
    const media = mediaOf(field(created, "media", "object"));
    if (media.state !== "pending") {
      // Completed before (a resumed upload): nothing to send again.
      if (media.state === "ready" || media.state === "processing") return media;
      throw new ProtocolError(ErrorCode.CONFLICT, `the upload is ${media.state}`);
    }
    // One PUT carries the whole body; in parts, part n (from 1) carries bytes
    // [(n - 1) * part_size_bytes, n * part_size_bytes).
    const parts = field<Json[]>(created, "parts", "object");
    const total = upload.bytes.length;
    const partSize = typeof created.part_size_bytes === "number" && created.part_size_bytes > 0 && parts.length > 1
      ? created.part_size_bytes
      : total;
    for (const [n, part] of parts.entries()) {
      const method = field<string>(part, "method", "string");
      if (method !== "PUT") {
        throw new ProtocolError(ErrorCode.INTERNAL, `the signed upload request is a ${method}, not a PUT`);
      }
      const start = Math.min(n * partSize, total);
      const bytes = upload.bytes.subarray(start, Math.min(start + partSize, total));
      await this.request(method, field(part, "url", "string"), signedHeaders(part), bytes);
    }
    return mediaOf(await this.call("POST", `/v1/media/${enc(media.mediaId)}/complete`));
  }

  /** The user's own media as the server has it now. */
  async media(mediaId: string): Promise<Media> {
    return mediaOf(await this.call("GET", `/v1/media/${enc(mediaId)}`));
  }

  /**
   * A short-lived URL of media, for `<img>` and players. Others' media is named with the message
   * that shows it (`conversationId`, `seq`), which the user must be able to read now; the user's
   * own with "" and 0. `variant` names a rendition (`thumb_320`), "" the original.
   */
  async downloadUrl(mediaId: string, conversationId = "", seq = 0, variant = ""): Promise<string> {
    const answer = await this.call("POST", `/v1/media/${enc(mediaId)}/download`, {
      variant,
      conversation_id: conversationId,
      seq,
    });
    return field(answer, "url", "string");
  }

  /** The bytes of media, authorized as downloadUrl says. */
  async download(mediaId: string, conversationId = "", seq = 0, variant = ""): Promise<Uint8Array> {
    const url = await this.downloadUrl(mediaId, conversationId, seq, variant);
    return this.request("GET", url, {});
  }

  /** A call of the API as the user; its JSON answer. An expired token is refreshed once. */
  private async call(method: string, path: string, body?: Json): Promise<Json> {
    let bytes: Uint8Array;
    try {
      bytes = await this.callWith(await this.token(false), method, path, body);
    } catch (error) {
      if (!(error instanceof ProtocolError && error.code === ErrorCode.TOKEN_EXPIRED)) throw error;
      bytes = await this.callWith(await this.token(true), method, path, body);
    }
    const text = utf8(bytes);
    try {
      const answer: unknown = text ? JSON.parse(text) : {};
      if (answer && typeof answer === "object" && !Array.isArray(answer)) return answer as Json;
    } catch {
      // not JSON: said below
    }
    throw new ProtocolError(ErrorCode.INTERNAL, `the business API's answer to ${method} ${path} is not a JSON object`);
  }

  private callWith(token: string, method: string, path: string, body?: Json): Promise<Uint8Array> {
    const headers: Record<string, string> = { authorization: `Bearer ${token}` };
    if (body) headers["content-type"] = "application/json";
    return this.request(method, this.base + path, headers, body ? JSON.stringify(body) : undefined);
  }

  /** One HTTP request; the body of a 2xx answer, or the refusal the answer carries. */
  private async request(method: string, url: string, headers: Record<string, string>, body?: string | Uint8Array): Promise<Uint8Array> {
    let response;
    try {
      const fetch = this.fetch; // called as a function: a host's fetch must not get this object as `this`
      response = await fetch(url, body === undefined ? { method, headers } : { method, headers, body });
    } catch (cause) {
      throw new ProtocolError(ErrorCode.UNAVAILABLE, `${method} ${url}: ${String(cause)}`, { cause });
    }
    // A body that cannot be read counts as empty: an answer that needs one fails to parse.
    const bytes = new Uint8Array(await response.arrayBuffer().catch(() => new ArrayBuffer(0)));
    if (!response.ok) throw refusal(response.status, bytes);
    return bytes;
  }
}

/** The refusal in an error answer's body (`{code, name, message}`), or INTERNAL with the status. */
function refusal(status: number, bytes: Uint8Array): ProtocolError {
  try {
    const body = JSON.parse(utf8(bytes)) as Json;
    if (typeof body.code === "number" && typeof body.name === "string") {
      return new ProtocolError(body.code, String(body.message ?? body.name), {
        retryAfterMs: typeof body.retry_after_ms === "number" ? body.retry_after_ms : 0,
        limit: typeof body.limit === "number" ? body.limit : undefined,
      });
    }
  } catch {
    // not the server's error body: said below
  }
  return new ProtocolError(ErrorCode.INTERNAL, `the business API answered HTTP ${status} without an error body`);
}

/** The headers a signed request must carry exactly; the runtime sets the length itself. */
function signedHeaders(part: Json): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const h of field<Json[]>(part, "headers", "object")) {
    const name = field<string>(h, "name", "string");
    if (!["content-length", "host"].includes(name.toLowerCase())) headers[name] = field(h, "value", "string");
  }
  return headers;
}

function group(g: Json): Group {
  return {
    groupId: field(g, "group_id", "string"),
    name: field(g, "name", "string"),
    ownerUserId: field(g, "owner_user_id", "string"),
    kind: field(g, "kind", "string"),
    memberCount: field(g, "member_count", "number"),
  };
}

function mediaOf(m: Json): Media {
  const optional = <T>(key: string, fallback: T): T => (m[key] === undefined ? fallback : (m[key] as T));
  return {
    mediaId: field(m, "media_id", "string"),
    state: field(m, "state", "string"),
    kind: field(m, "kind", "string"),
    mimeType: field(m, "mime_type", "string"),
    sizeBytes: field(m, "size_bytes", "number"),
    fileName: field(m, "file_name", "string"),
    width: optional("width", 0),
    height: optional("height", 0),
    animated: optional("animated", false),
    thumbhash: optional("thumbhash", ""),
    variants: optional<Json[]>("variants", []).map((v) => ({
      name: field(v, "name", "string"),
      mimeType: field(v, "mime_type", "string"),
      width: field(v, "width", "number"),
      height: field(v, "height", "number"),
      sizeBytes: field(v, "size_bytes", "number"),
    })),
  };
}

/** A required field of an answer, of the type named. */
function field<T>(object: Json, key: string, type: "string" | "number" | "object"): T {
  const value = object[key];
  if (typeof value !== type || value === null) {
    throw new ProtocolError(ErrorCode.INTERNAL, `the business API's answer has no ${type} \`${key}\``);
  }
  return value as T;
}

function enc(segment: string): string {
  return encodeURIComponent(segment);
}
