// Sending files by code from the JavaScript package: `Node.sendFiles` of a
// tree (nested folders, an empty file, a 64 MiB file, all file-backed Blobs
// read from disk as they are sent) → the CLI's `peerpipe receive CODE -o
// DIR -y`, which verifies everything; every file arrives equal.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Node, memoryBytes, qrSvg } from "../index.js";
import { run, startServer } from "./harness.mjs";
import { MIB, entriesOf, fileHash, listing, makeTree } from "./send_tree.mjs";

test("a tree sent by Node.js arrives through the CLI's receive, verified", { timeout: 120_000 }, async () => {
  const server = await startServer();
  const dir = mkdtempSync(join(tmpdir(), "pp-send-"));
  let node;
  try {
    const src = makeTree(dir, "tree", 64);
    // Relay only: the figure printed is the relay's.
    node = await Node.bind({ server: server.url, token: server.token("web"), label: "web", direct: false });
    const entries = await entriesOf(src, "tree");
    const hashing = [];
    const progress = [];
    const send = await node.sendFiles(entries);
    send.addEventListener("hashing", (e) => hashing.push([e.done, e.total]));
    send.addEventListener("progress", (e) => progress.push([e.sent, e.total]));
    const connected = new Promise((resolve) => send.addEventListener("connected", resolve, { once: true }));
    const done = new Promise((resolve) => send.addEventListener("done", resolve, { once: true }));
    assert.match(send.code, /^[0-9]+-[a-z]+-[a-z]+$/);
    assert.equal(send.total, 64 * MIB + MIB + 7 + 19);
    assert.deepEqual(send.files.map((f) => f.path).sort(), Object.keys(listing(src)).map((p) => `tree/${p}`).sort());
    assert.match(qrSvg(`http://127.0.0.1/#${send.code}`), /^<svg [^>]*viewBox="0 0 \d+ \d+"/);

    const out = join(dir, "out");
    const started = Date.now();
    const received = await run(["receive", send.code, "-o", out, "-y", "--server", server.url, "--token", server.token("cli")], { ms: 100_000 });
    assert.equal(received.code, 0, received.stderr);
    const report = await send.finished;
    const seconds = (Date.now() - started) / 1000;
    console.log(`sent ${(send.total / MIB).toFixed(1)} MiB Node.js → CLI over the relay in ${seconds.toFixed(2)} s: ${(send.total / MIB / seconds).toFixed(1)} MiB/s; wasm memory ${(memoryBytes() / MIB).toFixed(1)} MiB`);

    assert.equal((await connected).path, "relay");
    assert.equal((await done).files, entries.length);
    assert.equal(report.bytes, send.total);
    assert.ok(report.sent >= send.total, `${report.sent} bytes served`);
    assert.match(send.hash, /^[0-9a-f]{64}$/);
    // What landed equals the source, file by file, the empty one included.
    assert.deepEqual(listing(join(out, "tree")), listing(src));
    for (const path of Object.keys(listing(src))) {
      assert.equal(await fileHash(join(out, "tree", path)), await fileHash(join(src, path)), path);
    }
    assert.ok(hashing.length > 0 && hashing.at(-1)[0] === send.total, "hashing reached the total");
    for (let i = 1; i < progress.length; i++) assert.ok(progress[i][0] >= progress[i - 1][0]);
    assert.deepEqual(progress.at(-1), [send.total, send.total]);
    assert.ok(memoryBytes() < 64 * MIB, `wasm memory grew to ${memoryBytes()} bytes`);
  } finally {
    node?.shutdown();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
