// The WebAssembly memory of a send stays bounded whatever the files' size:
// 256 MiB from a file-backed Blob to the CLI's `peerpipe receive`, its peak
// sampled through hashing and serving (alone in its process, so that the
// figure is this send's).
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, openAsBlob, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Node, memoryBytes } from "../index.js";
import { run, startServer } from "./harness.mjs";
import { MIB, fileHash, writeBig } from "./send_tree.mjs";

test("the WebAssembly memory stays bounded while 256 MiB are sent", { timeout: 180_000 }, async () => {
  const server = await startServer();
  const dir = mkdtempSync(join(tmpdir(), "pp-send-mem-"));
  let node;
  try {
    node = await Node.bind({ server: server.url, token: server.token("web"), direct: false });
    const big = join(dir, "big.bin");
    writeBig(big, 256, 6);
    let peak = memoryBytes();
    const sample = () => (peak = Math.max(peak, memoryBytes()));
    const timer = setInterval(sample, 20);
    const send = await node.sendFiles([{ path: "big.bin", file: await openAsBlob(big) }]);
    send.addEventListener("hashing", sample);
    send.addEventListener("progress", sample);
    // The CLI usually comes while hashing goes on, and is told to wait.
    let hashedFirst = false;
    send.addEventListener("hashing", (e) => (hashedFirst ||= e.done === e.total));
    let early = false;
    send.addEventListener("connected", () => (early = !hashedFirst), { once: true });
    const out = join(dir, "out");
    const started = Date.now();
    const received = await run(["receive", send.code, "-o", out, "-y", "--server", server.url, "--token", server.token("cli")], { ms: 150_000 });
    clearInterval(timer);
    assert.equal(received.code, 0, received.stderr);
    await send.finished;
    const seconds = (Date.now() - started) / 1000;
    console.log(`256 MiB sent in ${seconds.toFixed(1)} s (${(256 / seconds).toFixed(1)} MiB/s); wasm memory peak ${(peak / MIB).toFixed(1)} MiB; the receiver came ${early ? "while hashing went on" : "after hashing"}`);
    assert.equal(await fileHash(join(out, "big.bin")), await fileHash(big));
    // What the design bounds it by: the receiver may grant up to its 16 MiB
    // window, which the session keeps until acknowledged (to resend on a path
    // change) while its encrypted frames wait for the socket — twice that —
    // plus the core's own few MiB. Far below the 256 MiB sent: nothing of a
    // file stays in memory once the receiver has it.
    assert.ok(peak < 48 * MIB, `wasm memory peaked at ${(peak / MIB).toFixed(1)} MiB`);
  } finally {
    node?.shutdown();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
