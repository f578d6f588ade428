// Node.js ↔ native CLI: a stream each way over the relay, byte-exact.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { Node } from "../index.js";
import { data, deviceId, run, sha256, startServer, until } from "./harness.mjs";

const MIB = 1 << 20;
const SIZE = Number(process.env.PEERPIPE_WEB_TEST_MIB ?? 32) * MIB;

test("a stream from Node.js to the native listener arrives byte-exact", async () => {
  const server = await startServer();
  try {
    const token = server.token("alice");
    const identity = join(mkdtempSync(join(tmpdir(), "pp-id-")), "id");
    const native = deviceId(identity);
    const listening = run(["listen", "--server", server.url, "--token", token, "--identity", identity, "--relay-only"], {
      ms: 120_000,
    });
    const node = await Node.bind({ server: server.url, token, label: "node" });
    await until(async () => (await node.onlinePeers()).some((p) => p.id === native), 10_000, "the native listener");
    const conn = await node.connect(native);
    assert.equal(conn.path, "relay");
    const { writable } = await conn.openStream();
    const payload = data(SIZE, 7);
    const writer = writable.getWriter();
    for (let off = 0; off < payload.length; off += 256 * 1024) {
      await writer.ready;
      await writer.write(payload.subarray(off, off + 256 * 1024));
    }
    await writer.close();
    const out = await listening;
    assert.equal(out.code, 0, out.stderr);
    assert.equal(out.stdout.length, payload.length);
    assert.equal(sha256(out.stdout), sha256(payload));
    await conn.close();
    node.shutdown();
  } finally {
    server.close();
  }
});

test("a stream from the native CLI to Node.js arrives byte-exact", async () => {
  const server = await startServer();
  try {
    const token = server.token("alice");
    const node = await Node.bind({ server: server.url, token, label: "node" });
    const got = new Promise((resolve, reject) => {
      node.addEventListener("incomingconnection", async (e) => {
        try {
          const conn = await e.accept();
          conn.addEventListener("stream", async (s) => {
            const chunks = [];
            let n = 0;
            for await (const chunk of s.readable) {
              chunks.push(chunk);
              n += chunk.length;
            }
            // Like `peerpipe listen`: the receiver ends the connection.
            await conn.close();
            resolve({ conn, bytes: Buffer.concat(chunks, n) });
          });
        } catch (err) {
          reject(err);
        }
      });
    });
    const identity = join(mkdtempSync(join(tmpdir(), "pp-id-")), "id");
    const payload = data(SIZE, 9);
    const sent = run(["connect", node.id, "--server", server.url, "--token", token, "--identity", identity, "--relay-only"], {
      stdin: Buffer.from(payload.buffer),
      ms: 120_000,
    });
    const { conn, bytes } = await got;
    const out = await sent;
    assert.equal(out.code, 0, out.stderr);
    assert.equal(bytes.length, payload.length);
    assert.equal(sha256(bytes), sha256(payload));
    assert.equal(conn.path, "relay");
    node.shutdown();
  } finally {
    server.close();
  }
});
