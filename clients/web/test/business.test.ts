// The business API over HTTP with the user's own token, against a fake fetch: refusals typed
// from the error body, an expired token refreshed once, uploads PUT straight to the signed
// URLs (in parts when the server says so), answers missing a field refused by name.

import assert from "node:assert/strict";
import { test } from "node:test";
import { BusinessApi, ErrorCode, ProtocolError, type FetchLike } from "@im/web";

interface Seen {
  method: string;
  url: string;
  headers: Record<string, string>;
  body?: string | Uint8Array;
}

type Answer = { status: number; body: unknown };

/** A fetch that answers from `answers` in turn and records what it was asked. */
function fakeFetch(answers: Answer[]) {
  const seen: Seen[] = [];
  const fetch: FetchLike = async (url, init) => {
    seen.push({ url, ...init });
    const answer = answers.shift();
    if (!answer) throw new Error(`unexpected ${init.method} ${url}`);
    const bytes = answer.body instanceof Uint8Array ? answer.body : new TextEncoder().encode(JSON.stringify(answer.body));
    return {
      status: answer.status,
      ok: answer.status >= 200 && answer.status < 300,
      arrayBuffer: async () => bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer,
    };
  };
  return { fetch, seen };
}

function api(answers: Answer[], token = async (refresh: boolean) => (refresh ? "fresh" : "stale")) {
  const { fetch, seen } = fakeFetch(answers);
  return { business: new BusinessApi("http://api.test/", token, async () => "alice", fetch), seen };
}

const media = (state: string) => ({
  media_id: "m1",
  state,
  kind: "file",
  mime_type: "text/plain",
  size_bytes: 6,
  file_name: "a.txt",
});

test("calls carry the user's token, and a refusal is typed from the error body", async () => {
  const { business, seen } = api([
    { status: 403, body: { code: 3001, name: "NOT_A_MEMBER", message: "not in team", retry_after_ms: 0 } },
    { status: 429, body: { code: 5000, name: "RATE_LIMITED", message: "slow down", retry_after_ms: 1500 } },
    { status: 502, body: new TextEncoder().encode("<html>bad gateway</html>") },
  ]);
  await assert.rejects(business.members("team"), (e: unknown) => {
    assert.ok(e instanceof ProtocolError);
    assert.equal(e.code, ErrorCode.NOT_A_MEMBER);
    assert.equal(e.message, "not in team");
    return true;
  });
  assert.equal(seen[0]?.url, "http://api.test/v1/groups/team/members?page_token=");
  assert.equal(seen[0]?.headers.authorization, "Bearer stale");
  await assert.rejects(business.group("team"), (e: unknown) => e instanceof ProtocolError && e.retryAfterMs === 1500 && e.retryable);
  await assert.rejects(
    business.group("team"),
    (e: unknown) => e instanceof ProtocolError && e.code === ErrorCode.INTERNAL && e.message.includes("HTTP 502"),
  );
});

test("an expired token is refreshed once and the call made again", async () => {
  const asked: boolean[] = [];
  const { business, seen } = api(
    [
      { status: 401, body: { code: 2001, name: "TOKEN_EXPIRED", message: "expired" } },
      { status: 200, body: {} },
    ],
    async (refresh) => {
      asked.push(refresh);
      return refresh ? "fresh" : "stale";
    },
  );
  await business.leaveGroup("team");
  assert.deepEqual(asked, [false, true]);
  assert.deepEqual(seen.map((s) => s.headers.authorization), ["Bearer stale", "Bearer fresh"]);
  assert.equal(seen[1]?.url, "http://api.test/v1/groups/team/leave");
  assert.equal(seen[1]?.body, JSON.stringify({ user_id: "alice" }));
});

test("an upload in parts PUTs each its slice with the signed headers, then completes", async () => {
  const part = (n: number, length: number) => ({
    url: `http://store.test/part/${n}`,
    method: "PUT",
    headers: [
      { name: "content-type", value: "text/plain" },
      { name: "Content-Length", value: String(length) },
      { name: "x-amz-checksum", value: `c${n}` },
    ],
  });
  const { business, seen } = api([
    { status: 200, body: { media: media("pending"), mode: "multipart", part_size_bytes: 4, parts: [part(1, 4), part(2, 2)] } },
    { status: 200, body: new Uint8Array() },
    { status: 200, body: new Uint8Array() },
    { status: 200, body: media("ready") },
  ]);
  const done = await business.upload({
    kind: "file",
    mimeType: "text/plain",
    bytes: Uint8Array.from([1, 2, 3, 4, 5, 6]),
    fileName: "a.txt",
    clientUploadId: "u1",
  });
  assert.equal(done.state, "ready");
  const created = JSON.parse(String(seen[0]?.body)) as Record<string, unknown>;
  assert.deepEqual(created, {
    user_id: "alice",
    kind: "file",
    mime_type: "text/plain",
    size_bytes: 6,
    file_name: "a.txt",
    client_upload_id: "u1",
  });
  assert.deepEqual(
    seen.slice(1, 3).map((s) => [s.method, s.url, Array.from(s.body as Uint8Array)]),
    [
      ["PUT", "http://store.test/part/1", [1, 2, 3, 4]],
      ["PUT", "http://store.test/part/2", [5, 6]],
    ],
  );
  assert.deepEqual(seen[1]?.headers, { "content-type": "text/plain", "x-amz-checksum": "c1" }, "the length is the runtime's to set");
  assert.ok(!("authorization" in (seen[1]?.headers ?? {})), "no token to the object store");
  assert.equal(seen[3]?.url, "http://api.test/v1/media/m1/complete");
});

test("an upload the server has completed already is not sent again", async () => {
  const { business, seen } = api([{ status: 200, body: { media: media("ready"), parts: [] } }]);
  const done = await business.upload({ kind: "file", mimeType: "text/plain", bytes: new Uint8Array(6) });
  assert.equal(done.mediaId, "m1");
  assert.equal(seen.length, 1);
});

test("an answer missing a field the client needs is refused, naming it", async () => {
  const { business } = api([{ status: 200, body: { group_id: "team", name: "Team", owner_user_id: "alice", kind: "group" } }]);
  await assert.rejects(
    business.group("team"),
    (e: unknown) => e instanceof ProtocolError && e.code === ErrorCode.INTERNAL && e.message.includes("member_count"),
  );
});
