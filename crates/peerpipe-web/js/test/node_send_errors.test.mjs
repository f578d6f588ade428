// How a send by code from the JavaScript package ends when it does not end
// well: the receiver declines, the sender cancels mid-transfer (the CLI's
// receive fails saying so, and nothing there looks complete), a file that
// changed after it was picked, bad paths refused before a code is taken.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, openAsBlob, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Node } from "../index.js";
import { run, startServer } from "./harness.mjs";
import { MIB, fileHash, writeBig } from "./send_tree.mjs";

/** A server and a relay-only Node.js device on it; `close()` ends both. */
async function setup() {
  const server = await startServer();
  const dir = mkdtempSync(join(tmpdir(), "pp-send-err-"));
  const node = await Node.bind({ server: server.url, token: server.token("web"), direct: false });
  return {
    server,
    dir,
    node,
    close() {
      node.shutdown();
      server.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

test("a receiver that declines ends the send with Declined", { timeout: 60_000 }, async () => {
  const { server, node, close } = await setup();
  let receiver;
  try {
    const send = await node.sendFiles([{ path: "note.txt", file: new Blob(["hello"]) }]);
    receiver = await Node.bind({ server: server.url, token: server.token("bob"), direct: false });
    const receive = await receiver.receiveCode(send.code);
    await receive.decline();
    await assert.rejects(send.finished, (e) => e.code === "Declined" && /declined/.test(e.message));
  } finally {
    receiver?.shutdown();
    close();
  }
});

test("a sender that cancels mid-transfer: the CLI's receive fails and nothing looks complete", { timeout: 120_000 }, async () => {
  const { server, dir, node, close } = await setup();
  try {
    const big = join(dir, "big.bin");
    writeBig(big, 128, 4);
    const send = await node.sendFiles([{ path: "big.bin", file: await openAsBlob(big) }]);
    send.addEventListener("progress", (e) => {
      if (e.sent >= 8 * MIB) send.cancel();
    });
    const out = join(dir, "out");
    const received = await run(["receive", send.code, "-o", out, "-y", "--server", server.url, "--token", server.token("cli")], { ms: 60_000 });
    await assert.rejects(send.finished, (e) => e.code === "Cancelled");
    assert.notEqual(received.code, 0);
    console.log(`the CLI said: ${received.stderr.trim().split("\n").at(-1)}`);
    assert.match(received.stderr, /sender stopped|no device that has the files is connected/);
    // No file of the full size and contents stands where the file belongs.
    const target = join(out, "big.bin");
    assert.ok(!existsSync(target) || statSync(target).size < 128 * MIB || (await fileHash(target)) !== (await fileHash(big)));
  } finally {
    close();
  }
});

test("a file that changed after it was picked ends the send with File", { timeout: 60_000 }, async () => {
  const { dir, node, close } = await setup();
  try {
    const path = join(dir, "moving.bin");
    writeFileSync(path, Buffer.alloc(3 * MIB, 1));
    const file = await openAsBlob(path);
    // Node.js refuses to read a file-backed Blob whose file changed.
    await new Promise((r) => setTimeout(r, 20));
    writeFileSync(path, Buffer.alloc(MIB, 2));
    const send = await node.sendFiles([{ path: "moving.bin", file }]);
    await assert.rejects(send.finished, (e) => e.code === "File" && /moving\.bin/.test(e.message));
  } finally {
    close();
  }
});

test("bad paths are refused before a code is taken", { timeout: 60_000 }, async () => {
  const { server, node, close } = await setup();
  try {
    // With the server gone a code cannot be had: the refusals below come
    // from the checks that run before the code is asked for.
    server.close();
    const file = new Blob(["x"]);
    const cases = [
      [[{ path: "../up", file }], "BadPath"],
      [[{ path: "/etc/passwd", file }], "BadPath"],
      [[{ path: "a//b", file }], "BadPath"],
      [[{ path: "a/./b", file }], "BadPath"],
      [[{ path: "back\\slash", file }], "BadPath"],
      [[{ path: "", file }], "BadPath"],
      [[{ path: "same", file }, { path: "same", file }], "Conflict"],
      [[{ path: "dir", file }, { path: "dir/inner", file }], "Conflict"],
      [[{ path: "not-a-blob", file: "text" }], "BadFile"],
      [[], "NoFiles"],
    ];
    for (const [entries, code] of cases) {
      await assert.rejects(node.sendFiles(entries), (e) => e.code === code, JSON.stringify(entries.map((e) => e.path)));
    }
    await assert.rejects(node.sendFiles([{ path: "fine", file }]), (e) => !["BadPath", "Conflict"].includes(e.code));
  } finally {
    close();
  }
});
