// Two Node.js devices: confirmed messages, a stream, and typed errors.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Node } from "../index.js";
import { data, sha256, startServer, until } from "./harness.mjs";

async function pair(server, user = "alice") {
  const token = server.token(user);
  const a = await Node.bind({ server: server.url, token, label: "a" });
  const b = await Node.bind({ server: server.url, token, label: "b" });
  const incoming = new Promise((resolve) => b.addEventListener("incomingconnection", (e) => resolve(e.accept()), { once: true }));
  await until(async () => (await a.onlinePeers()).some((p) => p.id === b.id), 5_000, "b online");
  const ab = await a.connect(b.id);
  const ba = await incoming;
  return { a, b, ab, ba };
}

test("confirmed messages and a stream between two Node.js devices", async () => {
  const server = await startServer();
  try {
    const { a, b, ab, ba } = await pair(server);
    const received = [];
    ba.addEventListener("message", (e) => received.push(e.text()));
    for (let i = 0; i < 50; i++) {
      await ab.sendConfirmed(`hello ${i}`);
      assert.equal(received.length, i + 1, "confirmed means the peer's application took it");
    }
    assert.deepEqual(received.slice(0, 2), ["hello 0", "hello 1"]);
    const payload = data(4 << 20, 3);
    const got = new Promise((resolve) =>
      ab.addEventListener("stream", async (s) => {
        const parts = [];
        for await (const c of s.readable) parts.push(c);
        resolve(Buffer.concat(parts));
      }),
    );
    const { writable } = await ba.openStream();
    const w = writable.getWriter();
    await w.write(payload);
    await w.close();
    assert.equal(sha256(await got), sha256(payload));
    const closed = new Promise((resolve) => b.addEventListener("connectionclosed", resolve, { once: true }));
    await ab.close();
    const e = await closed;
    assert.equal(e.peer.id, a.id);
    assert.equal(e.reason.code, "PeerClosed", e.reason.message);
    a.shutdown();
    b.shutdown();
  } finally {
    server.close();
  }
});

test("wrong token, another user's device and an oversized message are typed errors", async () => {
  const server = await startServer();
  try {
    await assert.rejects(Node.bind({ server: server.url, token: "not-a-token" }), (e) => e.code === "BadToken");
    const alice = await Node.bind({ server: server.url, token: server.token("alice") });
    const bob = await Node.bind({ server: server.url, token: server.token("bob") });
    await assert.rejects(alice.connect(bob.id), (e) => e.code === "NotFound");
    await assert.rejects(alice.connect("nonsense"), (e) => e.code === "NotFound");
    const { a, b, ab } = await pair(server, "carol");
    await assert.rejects(ab.send(new Uint8Array((16 << 20) + 1)), (e) => e.code === "MessageTooLarge");
    await ab.sendConfirmed("still fine");
    for (const n of [alice, bob, a, b]) n.shutdown();
  } finally {
    server.close();
  }
});
