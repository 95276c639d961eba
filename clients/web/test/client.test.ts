// The client against an in-process fake gateway, on a manual clock: the handshake, the sync
// after every Welcome, sends and their outbox across a reconnect, gaps pulled (in turn, paced,
// refusals retried on the connection), the server's waits (GoAway, Resync, retry_after_ms)
// and what may not cut them, backoff across connections that fail after their Welcome, token
// refresh, fatal refusals, a dead connection found by its unanswered pings whatever the socket
// says, calls and their errors, business calls without the socket, timers only while needed.

import assert from "node:assert/strict";
import { test } from "node:test";
import {
  Client,
  ClientFeature,
  ErrorCode,
  MemoryOutbox,
  PresenceStatus,
  ProtocolError,
  type ClientEvent,
  type ClientOptions,
  type ConnectionState,
} from "@im/web";
import { FakeServer, type FakeSocket, until } from "./fake-server.js";
import { ManualClock, settle } from "./manual-clock.js";

const CHAT = "d:alice:bob";

/** A client of a fake server on a manual clock, with its events recorded. */
function setup(options: Partial<ClientOptions> = {}) {
  const server = new FakeServer();
  const clock = new ManualClock();
  const client = new Client({
    url: "ws://gateway.test/ws",
    deviceId: "laptop",
    token: "t0",
    WebSocket: server.WebSocket,
    clock,
    // A reconnect waits at most 1 ms of the clock, unless the server asks for more.
    backoff: { minMs: 1, maxMs: 1 },
    ackDelayMs: 10,
    checkOnWake: false,
    ...options,
  });
  const events: ClientEvent[] = [];
  client.on((e) => events.push(e));
  /** Once the client has taken the Welcome in. */
  const online = () => until(() => client.state.state === "connected");
  const states = () => events.flatMap((e) => (e.type === "connection" ? [e.state.state] : []));
  const seqs = (type: "message" | "change") =>
    events.flatMap((e) => (e.type === type && e.entry.conversationId === CHAT ? [e.entry.seq] : []));
  return { server, clock, client, events, states, seqs, online };
}

function message(seq: number, sender = "bob") {
  return {
    conversationId: CHAT,
    seq: BigInt(seq),
    senderUserId: sender,
    clientMsgId: `c${seq}`,
    body: { kind: { case: "content" as const, value: { kind: { case: "text" as const, value: { text: `#${seq}` } } } } },
  };
}

function push(socket: FakeSocket, seq: number, sender = "bob"): void {
  socket.push({ body: { case: "message", value: message(seq, sender) } });
}

function ack(socket: FakeSocket, seq: number, duplicate = false): void {
  const send = socket.lastSent("send");
  socket.push({
    requestId: send.requestId,
    body: { case: "sendAck", value: { conversationId: CHAT, clientMsgId: send.body.value.clientMsgId, seq: BigInt(seq), duplicate } },
  });
}

const isCode = (code: ErrorCode) => (e: unknown) => e instanceof ProtocolError && e.code === code;

test("connects offering im.v1 then im, says Hello with RESYNC, and syncs after the Welcome", async () => {
  const { server, client } = setup();
  const connected = client.connect();
  const socket = await server.connected();
  assert.equal(await connected, "alice");
  assert.deepEqual(socket.protocols, ["im.v1", "im"]);
  const hello = socket.lastSent("hello");
  assert.equal(hello.requestId, 1n);
  assert.deepEqual(hello.body.value.protocolVersions, [1]);
  assert.equal(hello.body.value.token, "t0");
  assert.equal(hello.body.value.deviceId, "laptop");
  assert.deepEqual(hello.body.value.features, [ClientFeature.RESYNC]);
  await until(() => socket.sent("sync").length === 1);
  assert.equal(socket.lastSent("sync").requestId, 2n, "the ids of the connection follow the Hello's");
  await client.close();
  assert.equal(client.state.state, "stopped");
  assert.equal(socket.closedByClient, 1000);
});

test("a send resolves on its ack, shows as the user's own message, and its delivery is acknowledged", async () => {
  const { server, clock, client, seqs } = setup();
  void client.connect();
  const socket = await server.connected();
  const sent = client.sendText(CHAT, "hello");
  await until(() => socket.sent("send").length === 1);
  const id = socket.lastSent("send").body.value.clientMsgId;
  ack(socket, 1);
  const answer = await sent;
  assert.equal(answer.seq, 1);
  assert.equal(answer.clientMsgId, id);
  assert.deepEqual(seqs("message"), [1]);
  assert.equal(socket.sent("deliveryAck").length, 0, "batched: not at once");
  await clock.advance(10);
  assert.deepEqual(
    socket.sent("deliveryAck").flatMap((f) => f.body.value.acks.map((a) => [a.conversationId, a.seq])),
    [[CHAT, 1n]],
  );
  assert.equal(socket.lastSent("deliveryAck").requestId, 0n);
  await client.close();
});

test("an unacknowledged send goes out again with the same id after a reconnect, after the sync", async () => {
  const { server, clock, client, seqs } = setup();
  void client.connect();
  const first = await server.connected();
  push(first, 1);
  const sent = client.sendText(CHAT, "lost?");
  await until(() => first.sent("send").length === 1);
  const id = first.lastSent("send").body.value.clientMsgId;
  first.drop();
  await clock.advance(1);
  const second = await server.connected();
  await until(() => second.sent("send").length === 1);
  const sync = second.lastSent("sync");
  assert.deepEqual(sync.body.value.held.map((h) => [h.conversationId, h.seq]), [[CHAT, 1n]]);
  const again = second.lastSent("send");
  assert.equal(again.body.value.clientMsgId, id);
  assert.ok(second.received.indexOf(sync) < second.received.indexOf(again), "the sync goes first");
  ack(second, 2, true);
  assert.equal((await sent).duplicate, true);
  assert.deepEqual(seqs("message"), [1, 2]);
  await client.close();
});

test("a send whose entry a pull brought first is shown once, when its duplicate ack comes", async () => {
  const { server, clock, client, seqs } = setup();
  void client.connect();
  const first = await server.connected();
  const sent = client.sendText(CHAT, "mine");
  await until(() => first.sent("send").length === 1);
  first.drop();
  await clock.advance(1);
  const second = await server.connected();
  await until(() => second.sent("send").length === 1);
  // The first copy had been stored: the sync reports it and the pull brings it.
  second.push({
    requestId: second.lastSent("sync").requestId,
    body: { case: "sync", value: { conversations: [{ conversationId: CHAT, lastSeq: 1n, active: true, visibleFromSeq: 1n }] } },
  });
  await until(() => second.sent("pull").length === 1);
  second.push({
    requestId: second.lastSent("pull").requestId,
    body: { case: "messages", value: { conversationId: CHAT, messages: [message(1, "alice")], lastSeq: 1n } },
  });
  ack(second, 1, true);
  await sent;
  assert.deepEqual(seqs("message"), [1]);
  await client.close();
});

test("a push that jumps ahead is held back while the gap is pulled, and each entry shows once", async () => {
  const { server, client, seqs } = setup();
  void client.connect();
  const socket = await server.connected();
  push(socket, 1);
  push(socket, 3);
  await until(() => socket.sent("pull").length === 1);
  const pull = socket.lastSent("pull");
  assert.equal(pull.body.value.afterSeq, 1n);
  assert.deepEqual(seqs("message"), [1], "3 waits for 2");
  push(socket, 4);
  assert.equal(socket.sent("pull").length, 1, "one pull at a time");
  socket.push({
    requestId: pull.requestId,
    body: { case: "messages", value: { conversationId: CHAT, messages: [message(2), message(3)], lastSeq: 4n } },
  });
  push(socket, 3);
  assert.deepEqual(seqs("message"), [1, 2, 3, 4]);
  await client.close();
});

test("the sync's conversations are pulled from what is held, and pages carry on while behind", async () => {
  const { server, client, seqs } = setup();
  void client.connect();
  const socket = await server.connected();
  await until(() => socket.sent("sync").length === 1);
  socket.push({
    requestId: socket.lastSent("sync").requestId,
    body: {
      case: "sync",
      value: { conversations: [{ conversationId: CHAT, lastSeq: 3n, readSeq: 1n, unreadCount: 2n, active: true, visibleFromSeq: 1n }] },
    },
  });
  await until(() => socket.sent("pull").length === 1);
  socket.push({
    requestId: socket.lastSent("pull").requestId,
    body: { case: "messages", value: { conversationId: CHAT, messages: [message(1)], lastSeq: 3n, hasMore: true } },
  });
  await until(() => socket.sent("pull").length === 2);
  assert.equal(socket.lastSent("pull").body.value.afterSeq, 1n);
  assert.deepEqual(seqs("message"), [1]);
  assert.deepEqual(
    client.conversations().map((c) => [c.conversationId, c.unreadCount, c.lastSeq]),
    [[CHAT, 2, 3]],
    "the sync's counts, not counted again by the pulled entries",
  );
  await client.close();
});

test("a sync of several pages asks for each with the page token", async () => {
  const { server, client } = setup();
  void client.connect();
  const socket = await server.connected();
  await until(() => socket.sent("sync").length === 1);
  socket.push({ requestId: socket.lastSent("sync").requestId, body: { case: "sync", value: { nextPageToken: "p2" } } });
  await until(() => socket.sent("sync").length === 2);
  assert.equal(socket.lastSent("sync").body.value.pageToken, "p2");
  await client.close();
});

test("GoAway's reconnect_after_ms is waited out before reconnecting", async () => {
  const { server, clock, client, events } = setup();
  void client.connect();
  const socket = await server.connected();
  socket.push({ body: { case: "goAway", value: { code: ErrorCode.SHUTTING_DOWN, reconnectAfterMs: 300n } } });
  await until(() => client.state.state === "reconnecting");
  const reconnecting = events.flatMap((e) => (e.type === "connection" && e.state.state === "reconnecting" ? [e.state] : []));
  assert.equal((reconnecting[0] as Extract<ConnectionState, { state: "reconnecting" }>).retryInMs, 300);
  await clock.advance(299);
  assert.equal(server.sockets.length, 1, "not before the server's wait");
  await clock.advance(1);
  await server.opened();
  await client.close();
});

test("a refusal's retry_after_ms is waited out before connecting again", async () => {
  const { server, clock, client } = setup();
  const connected = client.connect();
  const socket = await server.next();
  socket.push({ requestId: 1n, body: { case: "error", value: { code: ErrorCode.TOO_MANY_CONNECTIONS, retryAfterMs: 500n } } });
  await until(() => client.state.state === "reconnecting");
  await clock.advance(499);
  assert.equal(server.sockets.length, 1);
  await clock.advance(1);
  await server.opened();
  await client.close();
  await assert.rejects(connected, isCode(ErrorCode.UNAVAILABLE), "closed before it ever connected");
});

test("Resync asks for a sync on the same connection once sync_after_ms has passed", async () => {
  const { server, clock, client } = setup();
  void client.connect();
  const socket = await server.connected();
  await until(() => socket.sent("sync").length === 1);
  socket.push({ body: { case: "resync", value: { syncAfterMs: 80n } } });
  await clock.advance(79);
  assert.equal(socket.sent("sync").length, 1, "not before the wait");
  await clock.advance(1);
  assert.equal(socket.sent("sync").length, 2);
  assert.equal(server.sockets.length, 1, "on the same connection");
  await client.close();
});

test("after TOKEN_EXPIRED (answering the Hello, or as a GoAway) the provider is asked for a fresh token", async () => {
  const asked: boolean[] = [];
  const { server, clock, client } = setup({
    token: (refresh) => {
      asked.push(refresh);
      return refresh ? "fresh" : "stale";
    },
  });
  const connected = client.connect();
  const first = await server.next();
  first.push({ requestId: 1n, body: { case: "error", value: { code: ErrorCode.TOKEN_EXPIRED } } });
  await clock.advance(1);
  const second = await server.connected();
  assert.equal(await connected, "alice");
  assert.equal(second.lastSent("hello").body.value.token, "fresh");
  second.push({ body: { case: "goAway", value: { code: ErrorCode.TOKEN_EXPIRED } } });
  await clock.advance(1);
  const third = await server.next();
  assert.equal(third.lastSent("hello").body.value.token, "fresh");
  assert.deepEqual(asked, [false, true, true]);
  await client.close();
});

test("a refusal a retry cannot fix stops the client, and what waits learns why", async () => {
  const { server, clock, client, states } = setup();
  const connected = client.connect();
  const socket = await server.next();
  const sent = client.sendText(CHAT, "never");
  socket.push({ requestId: 1n, body: { case: "error", value: { code: ErrorCode.UNAUTHENTICATED, message: "bad token" } } });
  await assert.rejects(connected, isCode(ErrorCode.UNAUTHENTICATED));
  await assert.rejects(sent, isCode(ErrorCode.UNAUTHENTICATED));
  assert.deepEqual(states(), ["connecting", "stopped"]);
  await clock.advance(60_000);
  assert.equal(server.sockets.length, 1, "no reconnect");
});

test("SESSION_REPLACED ends the client for good, as a GoAway and as a close reason", async () => {
  for (const end of ["goAway", "close"] as const) {
    const { server, clock, client, states } = setup();
    void client.connect();
    const socket = await server.connected();
    if (end === "goAway") {
      socket.push({ body: { case: "goAway", value: { code: ErrorCode.SESSION_REPLACED } } });
    } else {
      socket.drop(1008, "SESSION_REPLACED");
    }
    await until(() => client.state.state === "stopped");
    assert.deepEqual(states(), ["connecting", "connected", "stopped"], end);
    await clock.advance(60_000);
    assert.equal(server.sockets.length, 1, `${end}: no reconnect`);
  }
});

test("a lost connection reconnects, and one that fails before the upgrade is tried again", async () => {
  const { server, clock, client, states, online } = setup();
  void client.connect();
  const first = await server.connected();
  first.drop();
  await clock.advance(1);
  const refused = await server.opened();
  refused.refuse();
  await clock.advance(1);
  await server.connected();
  await online();
  assert.deepEqual(states(), ["connecting", "connected", "reconnecting", "connecting", "reconnecting", "connecting", "connected"]);
  await client.close();
});

test("pings go out every heartbeat interval, and answered ones keep the connection", async () => {
  const { server, clock, client } = setup();
  void client.connect();
  const socket = await server.connected("alice", 1000, 3000);
  for (let n = 1; n <= 5; n++) {
    await clock.advance(1000);
    assert.equal(socket.sent("ping").length, n);
    socket.push({ requestId: socket.lastSent("ping").requestId, body: { case: "pong", value: {} } });
  }
  assert.equal(server.sockets.length, 1);
  await client.close();
});

test("a ping left unanswered past its deadline replaces the connection, though the socket says OPEN", async () => {
  const { server, clock, client, states, online } = setup({ pongTimeoutMs: 2000 });
  void client.connect();
  const socket = await server.connected("alice", 10_000, 60_000);
  await clock.advance(10_000);
  assert.equal(socket.sent("ping").length, 1);
  await clock.advance(1999);
  assert.equal(socket.closedByClient, undefined, "within the deadline");
  await clock.advance(1);
  assert.equal(socket.closedByClient, 1000, "taken for dead and closed by the client");
  await clock.advance(1);
  await server.connected();
  await online();
  assert.deepEqual(states().slice(0, 5), ["connecting", "connected", "reconnecting", "connecting", "connected"]);
  await client.close();
});

test("checkConnection answers whether the server is there, and replaces a dead connection at once", async () => {
  const { server, clock, client, online } = setup();
  void client.connect();
  const socket = await server.connected();
  await online();
  const alive = client.checkConnection(500);
  await until(() => socket.sent("ping").length === 1);
  socket.push({ requestId: socket.lastSent("ping").requestId, body: { case: "pong", value: {} } });
  assert.equal(await alive, true);

  const dead = client.checkConnection(500);
  await clock.advance(500);
  assert.equal(await dead, false);
  assert.equal(socket.closedByClient, 1000);
  await clock.advance(1);
  await server.connected();
  await client.close();
});

test("checkConnection while waiting to reconnect tries again at once", async () => {
  const { server, client } = setup({ backoff: { minMs: 60_000, maxMs: 60_000 } });
  void client.connect();
  const first = await server.connected();
  first.drop();
  await until(() => client.state.state === "reconnecting");
  assert.equal(await client.checkConnection(), false);
  await server.opened();
  await client.close();
});

test("a send refused for a passing reason goes again, with its id, after the wait asked for", async () => {
  const { server, clock, client } = setup();
  void client.connect();
  const socket = await server.connected();
  const sent = client.sendText(CHAT, "soon");
  await until(() => socket.sent("send").length === 1);
  const first = socket.lastSent("send");
  socket.push({
    requestId: first.requestId,
    body: { case: "error", value: { code: ErrorCode.RATE_LIMITED, retryAfterMs: 500n } },
  });
  await clock.advance(400);
  assert.equal(socket.sent("send").length, 1);
  await clock.advance(200);
  assert.equal(socket.sent("send").length, 2);
  assert.equal(socket.lastSent("send").body.value.clientMsgId, first.body.value.clientMsgId);
  ack(socket, 1);
  assert.equal((await sent).seq, 1);
  await client.close();
});

test("calls made offline wait for the connection; refusals are typed; unanswered calls time out", async () => {
  const { server, clock, client } = setup({ requestTimeoutMs: 300 });
  const marked = client.markRead(CHAT, 5);
  void client.connect();
  const socket = await server.connected();
  await until(() => socket.sent("markRead").length === 1);
  socket.push({
    requestId: socket.lastSent("markRead").requestId,
    body: { case: "error", value: { code: ErrorCode.NOT_A_MEMBER, message: "no" } },
  });
  await assert.rejects(marked, (e: unknown) => e instanceof ProtocolError && e.codeName === "NOT_A_MEMBER");

  const read = client.markRead(CHAT, 6);
  await until(() => socket.sent("markRead").length === 2);
  socket.push({
    requestId: socket.lastSent("markRead").requestId,
    body: { case: "readState", value: { conversationId: CHAT, readSeq: 6n, unreadCount: 1n } },
  });
  assert.deepEqual(await read, { readSeq: 6, unreadCount: 1 });
  assert.equal(client.conversations()[0]?.readSeq, 6, "the device's own mark_read moves its list");

  const timedOut = assert.rejects(client.history(CHAT), isCode(ErrorCode.TIMEOUT));
  await clock.advance(300);
  await timedOut;
  await client.close();
});

test("a call on a connection that is lost is asked again on the next one", async () => {
  const { server, clock, client } = setup();
  void client.connect();
  const first = await server.connected();
  const page = client.history(CHAT, 0, 20);
  await until(() => first.sent("history").length === 1);
  first.drop();
  await clock.advance(1);
  const second = await server.connected();
  await until(() => second.sent("history").length === 1);
  assert.equal(second.lastSent("history").body.value.limit, 20);
  second.push({
    requestId: second.lastSent("history").requestId,
    body: { case: "messages", value: { conversationId: CHAT, messages: [message(1)], lastSeq: 1n, visibleFromSeq: 1n } },
  });
  const answer = await page;
  assert.deepEqual(answer.entries.map((e) => [e.seq, e.state?.asOfSeq]), [[1, 1]]);
  await client.close();
});

test("watched users are subscribed again after a reconnect, and their fresh presence reported", async () => {
  const { server, clock, client, events } = setup();
  void client.connect();
  const first = await server.connected();
  const watched = client.subscribePresence(["bob"]);
  await until(() => first.sent("presenceSubscribe").length === 1);
  first.push({
    requestId: first.lastSent("presenceSubscribe").requestId,
    body: { case: "presences", value: { presences: [{ userId: "bob", status: PresenceStatus.ONLINE }] } },
  });
  assert.deepEqual((await watched).map((p) => [p.userId, p.status]), [["bob", "online"]]);
  first.drop();
  await clock.advance(1);
  const second = await server.connected();
  await until(() => second.sent("presenceSubscribe").length === 1);
  assert.deepEqual(second.lastSent("presenceSubscribe").body.value.userIds, ["bob"]);
  second.push({
    requestId: second.lastSent("presenceSubscribe").requestId,
    body: { case: "presences", value: { presences: [{ userId: "bob", status: PresenceStatus.AWAY }] } },
  });
  assert.deepEqual(
    events.flatMap((e) => (e.type === "presence" ? [e.presence.status] : [])),
    ["away"],
  );
  await client.close();
});

test("a push of a variant this build does not know is ignored, and the connection lives on", async () => {
  const { server, client, seqs } = setup();
  const connected = client.connect();
  const socket = await server.connected();
  await connected;
  // request_id 0, then field 999 (a frame variant from a newer server), empty.
  socket.pushBytes(Uint8Array.from([0xba, 0x3e, 0x00]));
  push(socket, 1);
  assert.deepEqual(seqs("message"), [1]);
  assert.equal(socket.closedByClient, undefined);
  await client.close();
});

test("events() yields the events in order and ends once the client stops", async () => {
  const { server, client } = setup();
  const seen: string[] = [];
  const reading = (async () => {
    for await (const event of client.events()) {
      seen.push(event.type === "connection" ? event.state.state : event.type);
    }
  })();
  void client.connect();
  const socket = await server.connected();
  push(socket, 1);
  await until(() => seen.includes("message"));
  await client.close();
  await reading;
  assert.deepEqual(seen, ["connecting", "connected", "message", "stopped"]);
});

test("closing while connecting gives up the attempt and stops", async () => {
  const { server, client, states } = setup();
  const connected = client.connect();
  await server.opened();
  await client.close();
  await assert.rejects(connected, isCode(ErrorCode.UNAVAILABLE));
  assert.deepEqual(states(), ["connecting", "stopped"]);
  await settle();
  assert.equal(server.sockets.length, 1);
});

test("bytes from the server that are no frame end the connection, closed as a browser allows", async () => {
  const { server, clock, client, online } = setup();
  void client.connect();
  const socket = await server.connected();
  await online();
  socket.pushBytes(Uint8Array.from([0xff, 0xff, 0xff]));
  await until(() => client.state.state === "reconnecting");
  assert.equal(socket.closedByClient, 1000);
  await clock.advance(1);
  await server.connected();
  await online();
  await client.close();
});

test("a connection the server closes right after its Welcome is lost, not left hanging", async () => {
  const { server, clock, client } = setup();
  void client.connect();
  const socket = await server.connected();
  // Before the client has taken the Welcome in.
  socket.drop(1001, "SHUTTING_DOWN");
  await until(() => client.state.state === "reconnecting");
  await clock.advance(1);
  await server.opened();
  await client.close();
});

test("a typist who sends nothing more for 6 s is reported stopped; a renewal or a stop cancels the lapse", async () => {
  const { server, clock, client, events, online } = setup();
  void client.connect();
  const socket = await server.connected();
  await online();
  const typing = (active: boolean, userId = "bob") =>
    socket.push({ body: { case: "typing", value: { conversationId: CHAT, userId, active } } });
  const seen = () => events.flatMap((e) => (e.type === "typing" ? [`${e.userId}:${e.active}`] : []));
  typing(true);
  await clock.advance(3000);
  typing(true);
  await clock.advance(5999);
  assert.deepEqual(seen(), ["bob:true", "bob:true"], "renewed at 3 s: not lapsed at 8999 ms");
  await clock.advance(1);
  assert.deepEqual(seen(), ["bob:true", "bob:true", "bob:false"]);
  typing(true, "cy");
  typing(false, "cy");
  await clock.advance(10_000);
  assert.deepEqual(seen().slice(3), ["cy:true", "cy:false"], "a stop said is not reported twice");
  await client.close();
});

test("the wait an Error about the connection asks for holds when the close follows", async () => {
  const { server, clock, client, online } = setup();
  void client.connect();
  const socket = await server.connected();
  await online();
  socket.push({ body: { case: "error", value: { code: ErrorCode.SLOW_CONSUMER, retryAfterMs: 700n } } });
  assert.equal(client.state.state, "connected", "the Error alone does not end the connection");
  socket.drop(1013, "SLOW_CONSUMER");
  await until(() => client.state.state === "reconnecting");
  await clock.advance(699);
  assert.equal(server.sockets.length, 1);
  await clock.advance(1);
  await server.opened();
  await client.close();
});

test("a server with no version in common stops the client with a typed refusal naming its versions", async () => {
  const { server, clock, client } = setup();
  const connected = client.connect();
  const socket = await server.next();
  socket.push({
    requestId: 1n,
    body: { case: "error", value: { code: ErrorCode.UNSUPPORTED_VERSION, supportedVersions: [2, 3] } },
  });
  await assert.rejects(connected, (e: unknown) => {
    assert.ok(e instanceof ProtocolError);
    assert.equal(e.codeName, "UNSUPPORTED_VERSION");
    assert.deepEqual(e.supportedVersions, [2, 3]);
    return true;
  });
  await clock.advance(60_000);
  assert.equal(server.sockets.length, 1, "no reconnect");
});

test("a wake-up check while waiting out a GoAway's reconnect_after_ms cuts only the backoff", async () => {
  const { server, clock, client } = setup({ backoff: { minMs: 60_000, maxMs: 60_000 } });
  void client.connect();
  const socket = await server.connected();
  socket.push({ body: { case: "goAway", value: { code: ErrorCode.SHUTTING_DOWN, reconnectAfterMs: 30_000n } } });
  await until(() => client.state.state === "reconnecting");
  assert.equal(await client.checkConnection(), false);
  await settle();
  assert.equal(server.sockets.length, 1, "not before the server's wait");
  await clock.advance(29_999);
  assert.equal(server.sockets.length, 1);
  await clock.advance(1);
  await server.opened();
  await client.close();
});

test("close() from a reconnecting listener does not wait out the pause", async () => {
  const { server, client, states } = setup({ backoff: { minMs: 60_000, maxMs: 60_000 } });
  let closed: Promise<void> | undefined;
  client.on((e) => {
    if (e.type === "connection" && e.state.state === "reconnecting") closed ??= client.close();
  });
  void client.connect();
  const socket = await server.connected();
  socket.drop();
  await until(() => closed !== undefined);
  await closed;
  assert.equal(states().at(-1), "stopped");
  assert.equal(server.sockets.length, 1);
});

test("a token provider that never answers gives way to the connect timeout and to close()", async () => {
  let asked = 0;
  const { server, clock, client } = setup({
    connectTimeoutMs: 1_000,
    token: () => {
      asked += 1;
      return new Promise<string>(() => undefined);
    },
  });
  const connected = client.connect();
  await until(() => asked === 1);
  await clock.advance(999);
  assert.equal(asked, 1);
  await clock.advance(2);
  await until(() => asked === 2);
  assert.equal(client.state.state, "connecting", "asked again after a backoff");
  await client.close();
  await assert.rejects(connected, isCode(ErrorCode.UNAVAILABLE));
  assert.equal(server.sockets.length, 0);
});

/** The server answers the last sync with `conversations` behind by `lastSeq`, on one page. */
function answerSync(socket: FakeSocket, ids: string[], lastSeq = 3n): void {
  socket.push({
    requestId: socket.lastSent("sync").requestId,
    body: {
      case: "sync",
      value: { conversations: ids.map((conversationId) => ({ conversationId, lastSeq, active: true, visibleFromSeq: 1n })) },
    },
  });
}

test("connections the server ends right after the Welcome back off more each time, until one catches up", async () => {
  const random = Math.random;
  Math.random = () => 0.999_999;
  try {
    const { server, clock, client, events } = setup({ backoff: { minMs: 100, maxMs: 100_000 } });
    const delays = () =>
      events.flatMap((e) => (e.type === "connection" && e.state.state === "reconnecting" ? [e.state.retryInMs] : []));
    void client.connect();
    for (let i = 0; i < 3; i++) {
      const socket = await server.connected();
      await until(() => socket.sent("sync").length === 1);
      socket.drop();
      await until(() => delays().length === i + 1);
      await clock.advance(delays()[i]!);
    }
    assert.deepEqual(delays(), [100, 200, 400]);
    const synced = await server.connected();
    await until(() => synced.sent("sync").length === 1);
    answerSync(synced, []);
    await settle();
    synced.drop();
    await until(() => delays().length === 4);
    assert.equal(delays()[3], 100, "after a connection that caught up, the backoff starts over");
    await client.close();
  } finally {
    Math.random = random;
  }
});

test("a sync refused for good is asked again afresh on the same connection, rarely, not by reconnecting", async () => {
  const { server, clock, client } = setup();
  void client.connect();
  const socket = await server.connected();
  await until(() => socket.sent("sync").length === 1);
  socket.push({ requestId: socket.lastSent("sync").requestId, body: { case: "sync", value: { nextPageToken: "p2" } } });
  await until(() => socket.sent("sync").length === 2);
  socket.push({ requestId: socket.lastSent("sync").requestId, body: { case: "error", value: { code: ErrorCode.INVALID_ARGUMENT } } });
  await clock.advance(29_999);
  assert.equal(socket.sent("sync").length, 2);
  assert.equal(server.sockets.length, 1, "no reconnect");
  assert.equal(client.state.state, "connected");
  await clock.advance(1);
  assert.equal(socket.sent("sync").length, 3);
  assert.equal(socket.lastSent("sync").body.value.pageToken, "", "from the first page, not the refused token");
  await client.close();
});

test("a pull or a sync page refused for a passing reason goes again on the same connection after the wait", async () => {
  const { server, clock, client } = setup();
  void client.connect();
  const socket = await server.connected();
  await until(() => socket.sent("sync").length === 1);
  socket.push({
    requestId: socket.lastSent("sync").requestId,
    body: { case: "error", value: { code: ErrorCode.RATE_LIMITED, retryAfterMs: 700n } },
  });
  await clock.advance(699);
  assert.equal(socket.sent("sync").length, 1);
  await clock.advance(1);
  assert.equal(socket.sent("sync").length, 2);
  answerSync(socket, [CHAT]);
  await until(() => socket.sent("pull").length === 1);
  socket.push({
    requestId: socket.lastSent("pull").requestId,
    body: { case: "error", value: { code: ErrorCode.RATE_LIMITED, retryAfterMs: 300n } },
  });
  await clock.advance(299);
  assert.equal(socket.sent("pull").length, 1);
  await clock.advance(1);
  assert.equal(socket.sent("pull").length, 2);
  assert.equal(socket.lastSent("pull").body.value.conversationId, CHAT);
  assert.equal(server.sockets.length, 1, "no reconnect");
  // Without a wait named, it doubles per refusal in a row (the second, then the third here).
  for (const wait of [400, 800]) {
    const before = socket.sent("pull").length;
    socket.push({ requestId: socket.lastSent("pull").requestId, body: { case: "error", value: { code: ErrorCode.UNAVAILABLE } } });
    await clock.advance(wait - 1);
    assert.equal(socket.sent("pull").length, before);
    await clock.advance(1);
    assert.equal(socket.sent("pull").length, before + 1);
  }
  await client.close();
});

test("pulls after a sync go a few at a time, each when one before is answered", async () => {
  const { server, client } = setup();
  void client.connect();
  const socket = await server.connected();
  await until(() => socket.sent("sync").length === 1);
  const ids = Array.from({ length: 20 }, (_, i) => `g:${i}`);
  answerSync(socket, ids);
  await settle();
  assert.equal(socket.sent("pull").length, 8);
  const first = socket.sent("pull")[0]!;
  socket.push({
    requestId: first.requestId,
    body: { case: "messages", value: { conversationId: first.body.value.conversationId, messages: [], lastSeq: 3n } },
  });
  await settle();
  assert.equal(socket.sent("pull").length, 9);
  assert.equal(socket.lastSent("pull").body.value.conversationId, "g:8");
  await client.close();
});

test("a kept send whose body does not decode fails alone, and the connection and later sends go on", async () => {
  const outbox = new MemoryOutbox();
  await outbox.put({ clientMsgId: "damaged", conversationId: CHAT, body: new Uint8Array([0x0a, 0x05]) });
  const { server, clock, client } = setup({ outbox });
  void client.connect();
  const socket = await server.connected();
  const sent = client.sendText(CHAT, "fine");
  await until(() => socket.sent("send").length === 1);
  assert.notEqual(socket.lastSent("send").body.value.clientMsgId, "damaged");
  ack(socket, 1);
  await sent;
  await clock.advance(1_000);
  assert.equal(server.sockets.length, 1, "no reconnect");
  assert.deepEqual(await outbox.load(), [], "the damaged send is forgotten");
  await client.close();
});

test("calls queued offline are not lost when the connection fails while they are being sent", async () => {
  const { server, clock, client } = setup();
  const sent = client.sendText(CHAT, "first");
  const marked = client.markRead(CHAT, 5);
  void client.connect();
  const first = await server.next();
  // The socket fails right after the sync goes out: the send and the call find it closed.
  const write = first.send.bind(first);
  first.send = (data: Uint8Array) => {
    write(data);
    if (first.sent("sync").length === 1) first.readyState = 2;
  };
  first.welcome();
  await clock.advance(1);
  const second = await server.connected();
  await until(() => second.sent("markRead").length === 1 && second.sent("send").length === 1);
  second.push({
    requestId: second.lastSent("markRead").requestId,
    body: { case: "readState", value: { conversationId: CHAT, readSeq: 5n, unreadCount: 0n } },
  });
  assert.deepEqual(await marked, { readSeq: 5, unreadCount: 0 });
  ack(second, 1);
  await sent;
  await client.close();
});

test("business calls take the user id known from a Welcome, and never start or wait on the socket", async () => {
  const urls: string[] = [];
  const fetch = async (url: string) => {
    urls.push(url);
    const bytes = new TextEncoder().encode("{}");
    return { status: 200, ok: true, arrayBuffer: async () => bytes.buffer as ArrayBuffer };
  };
  const { server, clock, client } = setup({
    businessApi: "http://api.test",
    fetch,
    requestTimeoutMs: 500,
    backoff: { minMs: 60_000, maxMs: 60_000 },
  });
  const unknown = assert.rejects(client.business.leaveGroup("g:1"), isCode(ErrorCode.UNAVAILABLE));
  await settle();
  assert.equal(server.sockets.length, 0, "the socket is not started");
  await clock.advance(500);
  await unknown;

  void client.connect();
  const socket = await server.connected();
  await until(() => client.state.state === "connected");
  socket.drop();
  await until(() => client.state.state === "reconnecting");
  await client.business.leaveGroup("g:1");
  assert.deepEqual(urls, ["http://api.test/v1/groups/g%3A1/leave"]);
  assert.equal(server.sockets.length, 1, "no reconnect for it");
  await client.close();
});

test("an unknown presence status is refused locally as INVALID_ARGUMENT, and nothing is sent", async () => {
  const { server, client } = setup();
  void client.connect();
  const socket = await server.connected();
  await assert.rejects(client.setPresence("sleeping"), isCode(ErrorCode.INVALID_ARGUMENT));
  await settle();
  assert.equal(socket.sent("setPresence").length, 0);
  await client.close();
});

test("the client keeps a timer for retries and timeouts only while a call or a retry waits", async () => {
  const { server, clock, client } = setup({ backoff: { minMs: 60_000, maxMs: 60_000 }, requestTimeoutMs: 500 });
  void client.connect();
  const socket = await server.connected();
  socket.drop();
  await until(() => client.state.state === "reconnecting");
  assert.equal(clock.pending, 1, "offline and idle: the reconnect wait alone");
  const history = assert.rejects(client.history(CHAT), isCode(ErrorCode.UNAVAILABLE));
  assert.equal(clock.pending, 2, "a call's deadline is looked after");
  await clock.advance(500);
  await history;
  await clock.advance(100);
  assert.equal(clock.pending, 1, "and no longer once it is over");
  await client.close();
});

test("a refusal of the Hello follows the rules of one after the Welcome: only the fatal codes stop", async () => {
  const { server, clock, client } = setup();
  void client.connect();
  const first = await server.next();
  first.push({ requestId: 1n, body: { case: "error", value: { code: ErrorCode.MALFORMED_FRAME, message: "garbled" } } });
  await until(() => client.state.state === "reconnecting");
  await clock.advance(1);
  const second = await server.connected();
  second.push({ body: { case: "error", value: { code: ErrorCode.MALFORMED_FRAME, message: "garbled" } } });
  second.drop(1002, "MALFORMED_FRAME");
  await until(() => client.state.state === "reconnecting");
  await clock.advance(1);
  await server.opened();
  await client.close();
});

test("pulls keep within half the frame rate the Welcome announced", async () => {
  const { server, clock, client } = setup();
  void client.connect();
  const socket = await server.next();
  socket.push({
    requestId: 1n,
    body: {
      case: "welcome",
      value: {
        protocolVersion: 1,
        userId: "alice",
        sessionId: "s",
        heartbeatIntervalMs: 60_000,
        idleTimeoutMs: 180_000,
        limits: { maxFramesPerSecond: 4 },
      },
    },
  });
  await until(() => socket.sent("sync").length === 1);
  answerSync(socket, ["g:0", "g:1", "g:2", "g:3"]);
  await settle();
  assert.equal(socket.sent("pull").length, 2, "a burst of 2");
  await clock.advance(499);
  assert.equal(socket.sent("pull").length, 2);
  await clock.advance(1);
  assert.equal(socket.sent("pull").length, 3, "then 2 a second");
  await client.close();
});
