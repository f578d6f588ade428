// A code connection (two users' Node.js devices) survives a server restart
// mid-stream: the accepting side allows the route again after it reconnects,
// the dialing side asks again until the server lets it, nothing is lost.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Node } from "../index.js";
import { data, sha256, startServer, until } from "./harness.mjs";

const SIZE = 16 << 20;
const CHUNK = 256 * 1024;

test("a code connection survives a server restart", async () => {
  const server = await startServer();
  try {
    const alice = await Node.bind({ server: server.url, token: server.token("alice"), label: "alice", direct: false });
    const bob = await Node.bind({ server: server.url, token: server.token("bob"), label: "bob", direct: false });
    const offer = await alice.offerCode();
    const [accepted, dialed] = await Promise.all([offer.accept(), bob.claimCode(offer.code)]);
    const got = new Promise((resolve) =>
      accepted.addEventListener("stream", async (s) => {
        const parts = [];
        for await (const c of s.readable) parts.push(c);
        resolve(Buffer.concat(parts));
      }),
    );
    const reconnected = Promise.all(
      [alice, bob].map((n) => new Promise((resolve) => n.addEventListener("reconnected", resolve, { once: true }))),
    );
    const payload = data(SIZE, 21);
    const { writable } = await dialed.openStream();
    const writer = writable.getWriter();
    let off = 0;
    for (; off < SIZE / 4; off += CHUNK) await writer.write(payload.subarray(off, off + CHUNK));
    await server.restart();
    await until(async () => (await Promise.race([reconnected.then(() => true), new Promise((r) => setTimeout(() => r(false), 50))])), 20_000, "both reconnected");
    for (; off < SIZE; off += CHUNK) await writer.write(payload.subarray(off, off + CHUNK));
    await writer.close();
    const bytes = await Promise.race([got, new Promise((_, reject) => setTimeout(() => reject(new Error("the stream did not complete in 30 s")), 30_000))]);
    assert.equal(bytes.length, SIZE);
    assert.equal(sha256(bytes), sha256(payload), "nothing lost or repeated");
    assert.equal(dialed.path, "relay");
    await dialed.close();
    alice.shutdown();
    bob.shutdown();
  } finally {
    server.close();
  }
});
