// The server is killed and restarted mid-stream: the page and the native CLI
// reconnect, the page routes its connection again, and the stream completes
// byte-exact.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { data, deviceId, run, sha256, startServer } from "./harness.mjs";
import { openPage, serveFiles } from "./browser.mjs";

const SIZE = Number(process.env.PEERPIPE_WEB_TEST_MIB ?? 32) << 20;

test("a stream survives a server restart", async () => {
  const server = await startServer();
  const site = await serveFiles();
  const { browser, page } = await openPage(site);
  try {
    const token = server.token("alice");
    const identity = join(mkdtempSync(join(tmpdir(), "pp-id-")), "id");
    const native = deviceId(identity);
    const listening = run(["listen", "--server", server.url, "--token", token, "--identity", identity, "--relay-only"], {
      ms: 120_000,
    });
    await page.evaluate(
      async ({ server, token, native, size }) => {
        const { Node } = await import("/index.js");
        const node = await Node.bind({ server, token, label: "chromium", direct: false });
        window.events = [];
        node.addEventListener("reconnecting", () => window.events.push("reconnecting"));
        node.addEventListener("reconnected", () => window.events.push("reconnected"));
        await (await import("/test/shared.mjs")).online(node, native, 10_000);
        const conn = await node.connect(native);
        const { writable } = await conn.openStream();
        window.conn = conn;
        window.writer = writable.getWriter();
        const { data } = await import("/test/shared.mjs");
        window.payload = data(size, 13);
        for (let off = 0; off < size / 3; off += 256 * 1024) {
          await window.writer.write(window.payload.subarray(off, off + 256 * 1024));
        }
      },
      { server: server.url, token, native, size: SIZE },
    );
    await server.restart();
    const result = await page.evaluate(async (size) => {
      const start = Math.ceil(size / 3 / (256 * 1024)) * 256 * 1024;
      for (let off = start; off < size; off += 256 * 1024) {
        await window.writer.write(window.payload.subarray(off, off + 256 * 1024));
      }
      await window.writer.close();
      await window.conn.close();
      return { events: window.events };
    }, SIZE);
    const out = await listening;
    assert.equal(out.code, 0, out.stderr);
    assert.ok(result.events.includes("reconnected"), `events: ${result.events}`);
    assert.equal(out.stdout.length, SIZE);
    assert.equal(sha256(out.stdout), sha256(data(SIZE, 13)), "nothing lost or repeated");
  } finally {
    await browser.close();
    site.close();
    server.close();
  }
});
