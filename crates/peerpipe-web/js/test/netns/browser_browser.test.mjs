// Two headless Chromium processes of one user: confirmed messages and a
// stream between them, on a WebRTC data channel after the relay.
import { test } from "node:test";
import assert from "node:assert/strict";
import { startServer } from "../harness.mjs";
import { openPage, serveFiles } from "../browser.mjs";

const CHROMIUM_ARGS = ["--disable-features=WebRtcHideLocalIpsWithMdns"];

test("browser ↔ browser: confirmed messages and a stream", async () => {
  const server = await startServer();
  const site = await serveFiles();
  const a = await openPage(site, CHROMIUM_ARGS);
  const b = await openPage(site, CHROMIUM_ARGS);
  try {
    const token = server.token("alice");
    const bId = await b.page.evaluate(
      async ({ server, token }) => {
        const { Node } = await import("/index.js");
        const node = await Node.bind({ server, token, label: "b" });
        window.result = new Promise((resolve) => {
          node.addEventListener("incomingconnection", async (e) => {
            const conn = await e.accept();
            const messages = [];
            conn.addEventListener("message", (m) => messages.push(m.text()));
            conn.addEventListener("stream", async (s) => {
              const { readAll, sha256hex } = await import("/test/shared.mjs");
              const all = await readAll(s.readable);
              const n = all.length;
              const sum = await sha256hex(all);
              resolve({ messages, n, sum, path: conn.path });
            });
          });
        });
        return node.id;
      },
      { server: server.url, token },
    );
    const sent = await a.page.evaluate(
      async ({ server, token, peer }) => {
        const { Node } = await import("/index.js");
        const node = await Node.bind({ server, token, label: "a" });
        const conn = await node.connect(peer);
        const first = conn.path;
        await (await import("/test/shared.mjs")).onPath(conn, "webrtc", 10_000);
        for (let i = 0; i < 20; i++) await conn.sendConfirmed(`message ${i}`);
        const size = 8 << 20;
        const payload = new Uint8Array(size);
        for (let i = 0; i < size; i++) payload[i] = (i * 31 + 7) & 0xff;
        const sum = await (await import("/test/shared.mjs")).sha256hex(payload);
        const { writable } = await conn.openStream();
        const w = writable.getWriter();
        for (let off = 0; off < size; off += 1 << 20) await w.write(payload.subarray(off, off + (1 << 20)));
        await w.close();
        return { first, path: conn.path, size, sum };
      },
      { server: server.url, token, peer: bId },
    );
    const got = await b.page.evaluate(() => window.result);
    assert.equal(sent.first, "relay");
    assert.equal(sent.path, "webrtc");
    assert.equal(got.path, "webrtc");
    assert.deepEqual(got.messages, Array.from({ length: 20 }, (_, i) => `message ${i}`));
    assert.equal(got.n, sent.size);
    assert.equal(got.sum, sent.sum);
  } finally {
    await a.browser.close();
    await b.browser.close();
    site.close();
    server.close();
  }
});
