// Headless Chromium ↔ native CLI inside a network namespace with a veth pair
// (scripts/test-web makes it): each connection starts on the relay and moves
// to a WebRTC data channel; a stream each way arrives byte-exact.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { data, deviceId, run, sha256, startServer } from "../harness.mjs";
import { openPage, serveFiles } from "../browser.mjs";

const SIZE = Number(process.env.PEERPIPE_WEB_TEST_MIB ?? 64) << 20;
const CHROMIUM_ARGS = ["--disable-features=WebRtcHideLocalIpsWithMdns"];

test("browser → native over a WebRTC data channel, relay first", async () => {
  const server = await startServer();
  const site = await serveFiles();
  const { browser, page } = await openPage(site, CHROMIUM_ARGS);
  try {
    const token = server.token("alice");
    const identity = join(mkdtempSync(join(tmpdir(), "pp-id-")), "id");
    const native = deviceId(identity);
    const listening = run(["listen", "-v", "--server", server.url, "--token", token, "--identity", identity], { ms: 120_000 });
    const sent = await page.evaluate(
      async ({ server, token, native, size }) => {
        const { Node } = await import("/index.js");
        const { data } = await import("/test/shared.mjs");
        const node = await Node.bind({ server, token, label: "chromium" });
        await (await import("/test/shared.mjs")).online(node, native, 10_000);
        const started = performance.now();
        const conn = await node.connect(native);
        const first = conn.path;
        const direct = await new Promise((resolve) => {
          const t = setTimeout(() => resolve(null), 15_000);
          conn.addEventListener("pathchange", (e) => {
            if (e.path === "webrtc") {
              clearTimeout(t);
              resolve(performance.now() - started);
            }
          });
        });
        const { writable } = await conn.openStream();
        const payload = data(size, 7);
        const w = writable.getWriter();
        const t0 = performance.now();
        for (let off = 0; off < payload.length; off += 256 * 1024) {
          await w.ready;
          await w.write(payload.subarray(off, off + 256 * 1024));
        }
        await w.close();
        const path = conn.path;
        await conn.close();
        return { first, direct, path, seconds: (performance.now() - t0) / 1000 };
      },
      { server: server.url, token, native, size: SIZE },
    );
    const out = await listening;
    if (process.env.PEERPIPE_WEB_DEBUG) console.log(out.stderr);
    assert.equal(out.code, 0, out.stderr);
    assert.equal(sent.first, "relay", "connections start on the relay");
    assert.ok(sent.direct !== null, `no data channel within 15 s; native stderr: ${out.stderr}`);
    assert.equal(sent.path, "webrtc");
    assert.equal(sha256(out.stdout), sha256(data(SIZE, 7)));
    console.log(`browser → native: data channel ${sent.direct.toFixed(0)} ms after connect, ${((SIZE / sent.seconds) / 1e6).toFixed(1)} MB/s`);
  } finally {
    await browser.close();
    site.close();
    server.close();
  }
});

test("native → browser over a WebRTC data channel, relay first", async () => {
  const server = await startServer();
  const site = await serveFiles();
  const { browser, page } = await openPage(site, CHROMIUM_ARGS);
  try {
    const token = server.token("alice");
    const id = await page.evaluate(
      async ({ server, token }) => {
        const { Node } = await import("/index.js");
        const node = await Node.bind({ server, token, label: "chromium" });
        window.received = new Promise((resolve, reject) => {
          node.addEventListener("incomingconnection", async (e) => {
            try {
              const conn = await e.accept();
              const paths = [conn.path];
              conn.addEventListener("pathchange", (p) => paths.push(p.path));
              conn.addEventListener("stream", async (s) => {
                const { readAll, sha256hex } = await import("/test/shared.mjs");
                const all = await readAll(s.readable);
                const n = all.length;
                const path = conn.path;
                await conn.close();
                resolve({ n, paths, path, hash: await sha256hex(all) });
              });
            } catch (err) {
              reject(String(err));
            }
          });
        });
        return node.id;
      },
      { server: server.url, token },
    );
    const identity = join(mkdtempSync(join(tmpdir(), "pp-id-")), "id");
    const payload = data(SIZE, 9);
    const pushed = await run(["connect", "-v", id, "--server", server.url, "--token", token, "--identity", identity], {
      stdin: Buffer.from(payload.buffer),
      ms: 120_000,
    });
    assert.equal(pushed.code, 0, pushed.stderr);
    const got = await page.evaluate(() => window.received);
    assert.equal(got.n, SIZE);
    assert.equal(got.hash, sha256(payload));
    assert.equal(got.paths[0], "relay", "connections start on the relay");
    assert.ok(got.paths.includes("webrtc"), `paths: ${got.paths}; native stderr: ${pushed.stderr}`);
    assert.match(pushed.stderr, /direct/, "the native side reports the data channel");
  } finally {
    await browser.close();
    site.close();
    server.close();
  }
});

test("the page leaves its data channel mid-stream: relay meanwhile, nothing lost, a new channel after", async () => {
  const server = await startServer();
  const site = await serveFiles();
  const { browser, page } = await openPage(site, CHROMIUM_ARGS);
  try {
    const token = server.token("alice");
    const identity = join(mkdtempSync(join(tmpdir(), "pp-id-")), "id");
    const native = deviceId(identity);
    const listening = run(["listen", "--server", server.url, "--token", token, "--identity", identity], { ms: 120_000 });
    const sent = await page.evaluate(
      async ({ server, token, native, size }) => {
        const { Node } = await import("/index.js");
        const { data } = await import("/test/shared.mjs");
        const node = await Node.bind({ server, token, label: "chromium" });
        await (await import("/test/shared.mjs")).online(node, native, 10_000);
        const conn = await node.connect(native);
        const paths = [conn.path];
        conn.addEventListener("pathchange", (e) => paths.push(e.path));
        const { onPath } = await import("/test/shared.mjs");
        const direct = () => onPath(conn, "webrtc", 15_000);
        if (!(await direct())) throw new Error("no data channel at first");
        const { writable } = await conn.openStream();
        const w = writable.getWriter();
        const payload = data(size, 11);
        const third = Math.floor(size / 3 / 65536) * 65536;
        let restarted = false;
        for (let off = 0; off < payload.length; off += 64 * 1024) {
          if (!restarted && off >= third) {
            conn.restartDirect();
            restarted = true;
          }
          await w.write(payload.subarray(off, off + 64 * 1024));
        }
        const again = await direct();
        await w.close();
        await conn.close();
        return { paths, again };
      },
      { server: server.url, token, native, size: SIZE },
    );
    const out = await listening;
    assert.equal(out.code, 0, out.stderr);
    assert.equal(sha256(out.stdout), sha256(data(SIZE, 11)), "nothing lost or repeated");
    assert.deepEqual(sent.paths.slice(0, 3), ["relay", "webrtc", "relay"], `paths: ${sent.paths}`);
    // A new channel forms; the session may then leave it for the relay, which
    // it has measured faster here (path choice by goodput).
    assert.ok(sent.again && sent.paths.indexOf("webrtc", 3) === 3, `no new data channel after: ${sent.paths}`);
  } finally {
    await browser.close();
    site.close();
    server.close();
  }
});
