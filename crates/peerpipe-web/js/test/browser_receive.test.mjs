// Headless Chromium receives a tree sent by the CLI (`peerpipe send`) by its
// code, into the Origin Private File System: a WritableStream per file from
// `createWritable()`, read back and hashed in the page (SHA-256, WebCrypto)
// against the source.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { data, nativeSend, sha256, startServer } from "./harness.mjs";
import { openPage, serveFiles } from "./browser.mjs";

const MIB = 1 << 20;
const BIG = Number(process.env.PEERPIPE_WEB_TEST_MIB ?? 32) * MIB;

test("a page receives a tree from the CLI by code into OPFS", { timeout: 120_000 }, async () => {
  const server = await startServer();
  const site = await serveFiles();
  const { browser, page } = await openPage(site);
  const dir = mkdtempSync(join(tmpdir(), "pp-brecv-"));
  try {
    const root = join(dir, "photos");
    mkdirSync(join(root, "2026", "march"), { recursive: true });
    const files = {
      "photos/readme.txt": Buffer.from("from the CLI\n"),
      "photos/2026/march/big.raw": Buffer.from(data(BIG, 21).buffer),
      "photos/2026/empty": Buffer.alloc(0),
    };
    for (const [path, bytes] of Object.entries(files)) writeFileSync(join(dir, path), bytes);
    const sender = nativeSend(server, server.token("cli"), root);
    const code = await sender.code;
    const got = await page.evaluate(
      async ({ server, token, code }) => {
        const { Node } = await import("/index.js");
        const { sha256hex } = await import("/test/shared.mjs");
        const node = await Node.bind({ server, token, label: "chromium", direct: false });
        window.node = node;
        const receive = await node.receiveCode(code);
        const { directorySink } = await import("/index.js");
        const opfs = await navigator.storage.getDirectory();
        const inbox = await opfs.getDirectoryHandle("inbox", { create: true });
        const dirOf = async (parts) => {
          let d = inbox;
          for (const p of parts) d = await d.getDirectoryHandle(p);
          return d;
        };
        let events = 0;
        receive.addEventListener("progress", () => events++);
        const report = await receive.accept(directorySink(inbox));
        const hashes = {};
        for (const { path } of receive.files) {
          const parts = path.split("/");
          const name = parts.pop();
          const file = await (await (await dirOf(parts)).getFileHandle(name)).getFile();
          hashes[path] = { size: file.size, hash: await sha256hex(await file.arrayBuffer()) };
        }
        return { hashes, report, events, offered: receive.files.map((f) => f.path) };
      },
      { server: server.url, token: server.token("page"), code },
    );
    assert.deepEqual(got.offered.sort(), Object.keys(files).sort());
    for (const [path, bytes] of Object.entries(files)) {
      assert.equal(got.hashes[path].size, bytes.length, path);
      assert.equal(got.hashes[path].hash, sha256(readFileSync(join(dir, path))), path);
    }
    assert.ok(got.events > 0);
    console.log(`page received ${(BIG / MIB).toFixed(0)} MiB into OPFS in ${got.report.seconds.toFixed(2)} s`);
    const sent = await sender.done;
    assert.equal(sent.code, 0, sent.stderr);

    // Cancelled mid-transfer: the CLI hears it ended, and OPFS holds no part of the file.
    const again = nativeSend(server, server.token("cli"), join(dir, "photos/2026/march/big.raw"));
    const cancelled = await page.evaluate(async (code) => {
      const { directorySink } = await import("/index.js");
      const receive = await window.node.receiveCode(code);
      const opfs = await navigator.storage.getDirectory();
      const later = await opfs.getDirectoryHandle("later", { create: true });
      receive.addEventListener("progress", (e) => e.bytes > 0 && receive.cancel());
      const error = await receive.accept(directorySink(later)).then(() => null, (e) => e.code);
      const left = [];
      for await (const name of later.keys()) left.push(name);
      return { error, left };
    }, await again.code);
    assert.deepEqual(cancelled, { error: "Cancelled", left: [] });
    const stopped = await again.done;
    assert.notEqual(stopped.code, 0, stopped.stderr);
    assert.match(stopped.stderr, /the receiver ended the transfer/);
  } finally {
    await browser.close();
    site.close();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
