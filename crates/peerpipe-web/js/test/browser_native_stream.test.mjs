// Headless Chromium ↔ native CLI: a stream each way over the relay,
// byte-exact (SHA-256 on both ends).
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { data, deviceId, run, sha256, startServer } from "./harness.mjs";
import { openPage, serveFiles } from "./browser.mjs";

const SIZE = Number(process.env.PEERPIPE_WEB_TEST_MIB ?? 32) << 20;

// Runs in the page: the same pseudo-random bytes as harness.mjs's `data`.

test("browser → native and native → browser streams over the relay", async () => {
  const server = await startServer();
  const site = await serveFiles();
  const { browser, page } = await openPage(site);
  try {
    const token = server.token("alice");
    const identity = join(mkdtempSync(join(tmpdir(), "pp-id-")), "id");
    const native = deviceId(identity);

    // Browser → native.
    const listening = run(["listen", "--server", server.url, "--token", token, "--identity", identity, "--relay-only"], {
      ms: 120_000,
    });
    const sent = await page.evaluate(
      async ({ server, token, native, size }) => {
        const { Node } = await import("/index.js");
        const { data } = await import("/test/shared.mjs");
        const node = await Node.bind({ server, token, label: "chromium" });
        window.node = node;
        await (await import("/test/shared.mjs")).online(node, native, 10_000);
        const conn = await node.connect(native);
        const { writable } = await conn.openStream();
        const payload = data(size, 7);
        const w = writable.getWriter();
        for (let off = 0; off < payload.length; off += 256 * 1024) {
          await w.ready;
          await w.write(payload.subarray(off, off + 256 * 1024));
        }
        await w.close();
        await conn.close();
        return { path: conn.path, id: node.id };
      },
      { server: server.url, token, native, size: SIZE },
    );
    const out = await listening;
    assert.equal(out.code, 0, out.stderr);
    assert.equal(sent.path, "relay");
    assert.equal(sha256(out.stdout), sha256(data(SIZE, 7)));

    // Native → browser. The page listens before the CLI dials (a connection
    // request with no listener yet would wait out the CLI's time-out).
    await page.evaluate(() => {
      window.received = new Promise((resolve, reject) => {
        window.node.addEventListener(
          "incomingconnection",
          async (e) => {
            try {
              const conn = await e.accept();
              conn.addEventListener("stream", async (s) => {
                const { readAll, sha256hex } = await import("/test/shared.mjs");
                const all = await readAll(s.readable);
                const n = all.length;
                await conn.close();
                resolve({ n, hash: await sha256hex(all) });
              });
            } catch (err) {
              reject(String(err));
            }
          },
          { once: true },
        );
      });
    });
    const received = page.evaluate(() => window.received);
    // Should the CLI fail first, its error is the one reported, not this one's.
    received.catch(() => {});
    const payload = data(SIZE, 9);
    const pushed = await run(["connect", sent.id, "--server", server.url, "--token", token, "--identity", identity, "--relay-only"], {
      stdin: Buffer.from(payload.buffer),
      ms: 120_000,
    });
    assert.equal(pushed.code, 0, pushed.stderr);
    const got = await received;
    assert.equal(got.n, SIZE);
    assert.equal(got.hash, sha256(payload));
  } finally {
    await browser.close();
    site.close();
    server.close();
  }
});
