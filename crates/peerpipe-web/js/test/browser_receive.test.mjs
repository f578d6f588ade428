// Headless Chromium receives a tree sent by the CLI (`peerpipe send`) by its
// code, into the Origin Private File System: a WritableStream per file from
// `createWritable()`, read back and hashed in the page (SHA-256, WebCrypto)
// against the source; a cancelled receive leaves nothing, or with
// `{ resume: true }` what it wrote, from which the next receive resumes.
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

    // With { resume: true } a cancelled receive keeps what it wrote, and the
    // next one (a new code) fetches only the rest.
    const big = join(dir, "photos/2026/march/big.raw");
    const third = nativeSend(server, server.token("cli"), big);
    const kept = await page.evaluate(async (code) => {
      const { directorySink } = await import("/index.js");
      const receive = await window.node.receiveCode(code);
      const box = await (await navigator.storage.getDirectory()).getDirectoryHandle("resume", { create: true });
      receive.addEventListener("progress", (e) => e.bytes >= 4 << 20 && receive.cancel());
      const sink = directorySink(box, { resume: true });
      const open = sink.open;
      // A slow disk: the cancel lands mid-file.
      sink.open = async (...args) => {
        const f = await open(...args);
        return { ...f, write: async (b) => (await new Promise((r) => setTimeout(r, 30)), f.write(b)) };
      };
      const error = await receive.accept(sink).then(() => null, (e) => e.code);
      const size = (await (await box.getFileHandle("big.raw")).getFile()).size;
      return { error, size };
    }, await third.code);
    assert.equal(kept.error, "Cancelled");
    assert.ok(kept.size >= 4 * MIB && kept.size < BIG, `${kept.size} bytes kept`);
    await third.done;
    const fourth = nativeSend(server, server.token("cli"), big);
    const resumed = await page.evaluate(async (code) => {
      const { directorySink } = await import("/index.js");
      const { sha256hex } = await import("/test/shared.mjs");
      const receive = await window.node.receiveCode(code);
      const box = await (await navigator.storage.getDirectory()).getDirectoryHandle("resume");
      const report = await receive.accept(directorySink(box, { resume: true }));
      const file = await (await box.getFileHandle("big.raw")).getFile();
      return { reused: report.reused, fetched: report.fetched, hash: await sha256hex(await file.arrayBuffer()) };
    }, await fourth.code);
    assert.equal(resumed.reused, Math.floor(kept.size / (16 * 1024)) * 16 * 1024);
    assert.equal(resumed.reused + resumed.fetched, BIG);
    assert.equal(resumed.hash, sha256(readFileSync(big)));
    assert.equal((await fourth.done).code, 0);
  } finally {
    await browser.close();
    site.close();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
