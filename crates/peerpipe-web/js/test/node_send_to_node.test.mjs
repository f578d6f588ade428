// One Node.js device sends a tree by code (`sendFiles`), another receives
// it (`receiveCode`) into a sink: every file arrives equal, both sides end
// well.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { mkdir, open } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { Node } from "../index.js";
import { startServer } from "./harness.mjs";
import { entriesOf, fileHash, listing, makeTree } from "./send_tree.mjs";

/** A sink writing each file under `root`. */
function dirSink(root) {
  return {
    async open(path) {
      const full = join(root, path);
      await mkdir(dirname(full), { recursive: true });
      const fh = await open(full, "w");
      return { write: async (bytes) => void (await fh.write(bytes)), close: () => fh.close(), abort: () => fh.close() };
    },
  };
}

test("Node.js sends a tree to Node.js by code", { timeout: 120_000 }, async () => {
  const server = await startServer();
  const dir = mkdtempSync(join(tmpdir(), "pp-send-node-"));
  let sender;
  let receiver;
  try {
    const src = makeTree(dir, "tree", 16);
    sender = await Node.bind({ server: server.url, token: server.token("alice"), direct: false });
    receiver = await Node.bind({ server: server.url, token: server.token("bob"), direct: false });
    const send = await sender.sendFiles(await entriesOf(src, "tree"));
    const receive = await receiver.receiveCode(send.code);
    assert.equal(receive.total, send.total);
    assert.equal(receive.hash, send.hash);
    assert.deepEqual(receive.files.map((f) => f.path).sort(), send.files.map((f) => f.path).sort());
    const out = join(dir, "out");
    const report = await receive.accept(dirSink(out));
    assert.equal(report.bytes, send.total);
    const sent = await send.finished;
    assert.equal(sent.bytes, send.total);
    assert.deepEqual(listing(join(out, "tree")), listing(src));
    for (const path of Object.keys(listing(src))) {
      assert.equal(await fileHash(join(out, "tree", path)), await fileHash(join(src, path)), path);
    }
  } finally {
    sender?.shutdown();
    receiver?.shutdown();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
