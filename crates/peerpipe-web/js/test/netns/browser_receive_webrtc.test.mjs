// Headless Chromium receives by code from the CLI's `peerpipe send` over a
// WebRTC data channel (inside the network namespace scripts/test-web makes):
// the page waits for the data channel (it may form while the offer is
// fetched), then accepts; every file lands in OPFS verified, and the sender exits 0.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { data, nativeSend, sha256, startServer } from "../harness.mjs";
import { openPage, serveFiles } from "../browser.mjs";

const MIB = 1 << 20;
const SIZE = Number(process.env.PEERPIPE_WEB_TEST_MIB ?? 64) * MIB;
const CHROMIUM_ARGS = ["--disable-features=WebRtcHideLocalIpsWithMdns"];

test("a page receives from the CLI by code over a WebRTC data channel", { timeout: 120_000 }, async () => {
  const server = await startServer();
  const site = await serveFiles();
  const { browser, page } = await openPage(site, CHROMIUM_ARGS);
  const dir = mkdtempSync(join(tmpdir(), "pp-brecv-rtc-"));
  try {
    mkdirSync(join(dir, "box", "inner"), { recursive: true });
    writeFileSync(join(dir, "box", "inner", "big.bin"), data(SIZE, 31));
    writeFileSync(join(dir, "box", "note.txt"), "over the data channel\n");
    const sender = nativeSend(server, server.token("cli"), join(dir, "box"));
    const got = await page.evaluate(
      async ({ server, token, code }) => {
        const { Node, directorySink } = await import("/index.js");
        const { sha256hex } = await import("/test/shared.mjs");
        const node = await Node.bind({ server, token, label: "chromium" });
        const receive = await node.receiveCode(code);
        const end = performance.now() + 15_000;
        while (receive.path !== "webrtc" && performance.now() < end) await new Promise((r) => setTimeout(r, 50));
        const before = receive.path;
        const paths = new Set();
        receive.addEventListener("progress", () => paths.add(receive.path));
        const inbox = await (await navigator.storage.getDirectory()).getDirectoryHandle("rtc", { create: true });
        const report = await receive.accept(directorySink(inbox));
        const hashes = {};
        for (const { path } of receive.files) {
          let d = inbox;
          const parts = path.split("/");
          const name = parts.pop();
          for (const p of parts) d = await d.getDirectoryHandle(p);
          hashes[path] = await sha256hex(await (await (await d.getFileHandle(name)).getFile()).arrayBuffer());
        }
        node.shutdown();
        return { before, paths: [...paths], seconds: report.seconds, hashes };
      },
      { server: server.url, token: server.token("page"), code: await sender.code },
    );
    assert.equal(got.before, "webrtc", "the data channel formed before accepting");
    assert.deepEqual(got.paths, ["webrtc"]);
    for (const path of ["box/inner/big.bin", "box/note.txt"]) {
      assert.equal(got.hashes[path], sha256(readFileSync(join(dir, path))), path);
    }
    console.log(`page received ${SIZE / MIB} MiB over WebRTC into OPFS: ${(SIZE / got.seconds / 1e6).toFixed(1)} MB/s`);
    const sent = await sender.done;
    assert.equal(sent.code, 0, sent.stderr);
  } finally {
    await browser.close();
    site.close();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
