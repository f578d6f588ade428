// Node.js (with @roamhq/wrtc) ↔ native CLI in a network namespace: a stream
// on the relay first, then on the WebRTC data channel, byte-exact.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { Node } from "../../index.js";
import { data, deviceId, run, sha256, startServer, until } from "../harness.mjs";

const SIZE = Number(process.env.PEERPIPE_WEB_TEST_MIB ?? 64) << 20;

test("Node.js → native: relay first, then the data channel", async () => {
  const server = await startServer();
  try {
    const token = server.token("alice");
    const identity = join(mkdtempSync(join(tmpdir(), "pp-id-")), "id");
    const native = deviceId(identity);
    const listening = run(["listen", "-v", "--server", server.url, "--token", token, "--identity", identity], { ms: 120_000 });
    const node = await Node.bind({ server: server.url, token, label: "node" });
    await until(async () => (await node.onlinePeers()).some((p) => p.id === native), 10_000, "the native listener");
    const conn = await node.connect(native);
    assert.equal(conn.path, "relay");
    const { writable } = await conn.openStream();
    const writer = writable.getWriter();
    const payload = data(SIZE, 5);
    // A first part on the relay, the rest once the data channel carries it.
    await writer.write(payload.subarray(0, 1 << 20));
    await until(() => conn.path === "webrtc", 15_000, "the data channel");
    for (let off = 1 << 20; off < payload.length; off += 256 * 1024) {
      await writer.write(payload.subarray(off, off + 256 * 1024));
    }
    await writer.close();
    await conn.close();
    const out = await listening;
    assert.equal(out.code, 0, out.stderr);
    assert.equal(sha256(out.stdout), sha256(payload));
    assert.match(out.stderr, /path to \S+: direct/, "the native side reports the data channel");
    node.shutdown();
  } finally {
    server.close();
  }
});
