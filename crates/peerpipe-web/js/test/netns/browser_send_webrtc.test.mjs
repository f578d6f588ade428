// Headless Chromium sends by code (`node.sendFiles`) to the CLI's `peerpipe
// receive` over a WebRTC data channel (inside the network namespace
// scripts/test-web makes): the data starts on the relay at once and the send
// ends on the data channel (the path is "relay" or "webrtc" at every progress
// event and "webrtc" at the end), every file lands equal to what the page
// offered, and the receiver exits 0.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { run, sha256, startServer } from "../harness.mjs";
import { openPage, serveFiles } from "../browser.mjs";

const MIB = 1 << 20;
const SIZE = Number(process.env.PEERPIPE_WEB_TEST_MIB ?? 64) * MIB;
const CHROMIUM_ARGS = ["--disable-features=WebRtcHideLocalIpsWithMdns"];

test("a page sends to the CLI by code over a WebRTC data channel", { timeout: 120_000 }, async () => {
  const server = await startServer();
  const site = await serveFiles();
  const { browser, page } = await openPage(site, CHROMIUM_ARGS);
  const dir = mkdtempSync(join(tmpdir(), "pp-bsend-rtc-"));
  try {
    const offered = await page.evaluate(
      async ({ server, token, size }) => {
        const { Node } = await import("/index.js");
        const { sha256hex } = await import("/test/shared.mjs");
        // Pseudo-random bytes (xorshift), so that nothing compresses or repeats.
        const big = new Uint8Array(size);
        let x = 0x9e3779b9;
        for (let i = 0; i < size; i += 4) {
          x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
          big[i] = x; big[i + 1] = x >>> 8; big[i + 2] = x >>> 16; big[i + 3] = x >>> 24;
        }
        const note = new TextEncoder().encode("over the data channel, the other way\n");
        const node = await Node.bind({ server, token, label: "chromium" });
        const send = await node.sendFiles([
          { path: "out/big.bin", file: new File([big], "big.bin") },
          { path: "out/note.txt", file: new File([note], "note.txt") },
        ]);
        const paths = new Set();
        send.addEventListener("progress", () => paths.add(send.path));
        window.sending = { node, send, paths };
        return { code: send.code, big: await sha256hex(big), note: await sha256hex(note) };
      },
      { server: server.url, token: server.token("page"), size: SIZE },
    );
    const out = join(dir, "inbox");
    const receiving = run(["receive", offered.code, "-o", out, "-y", "--server", server.url], { ms: 90_000 });
    const got = await page.evaluate(async () => {
      const { node, send, paths } = window.sending;
      const report = await send.finished;
      node.shutdown();
      return { paths: [...paths], last: send.path, seconds: report.seconds };
    });
    const received = await receiving;
    assert.equal(received.code, 0, received.stderr);
    assert.ok(got.paths.every((p) => p === "relay" || p === "webrtc"), `paths ${got.paths}`);
    assert.equal(got.last, "webrtc", `the data channel took over (paths ${got.paths})`);
    assert.equal(sha256(readFileSync(join(out, "out", "big.bin"))), offered.big);
    assert.equal(sha256(readFileSync(join(out, "out", "note.txt"))), offered.note);
    console.log(`page sent ${SIZE / MIB} MiB to the CLI (paths ${got.paths.join(", ")}): ${(SIZE / got.seconds / 1e6).toFixed(1)} MB/s`);
  } finally {
    await browser.close();
    site.close();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
