// Benchmark of peerpipe-web in headless Chromium, in one run (scripts/bench-web
// runs it in a network namespace with a veth pair, where Chromium forms data
// channels):
// - the bare limit: two RTCPeerConnections in one page, one data channel,
//   16 KiB and 64 KiB messages kept below 4 MiB buffered — no peerpipe;
// - browser → native and native → browser: a stream over the data channel
//   (peerpipe-web in the page, the release CLI natively), MB/s from the first
//   byte to the last;
// - 64 B messages per second, browser → browser over the data channel;
// - time from `connect` returning to the data channel carrying data (median of 5);
// - the web page (scripts/web-page, served by `peerpipe serve --web-dir`):
//   the CLI's `peerpipe send` of one file of PEERPIPE_BENCH_PAGE_MIB MiB
//   (default 1024) received by the page into the browser's storage, end to
//   end from "Keep in this browser" to done, and the renderer's peak memory;
// - the package's size, raw and gzipped.
// Scale with PEERPIPE_BENCH_WEB_MIB (default 64).
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { fileURLToPath } from "node:url";
import { data, deviceId, nativeSend, run, sha256, startServer } from "../test/harness.mjs";
import { openPage, serveFiles } from "../test/browser.mjs";
import { enterCode, openApp, sampleRenderer, webDir } from "../test/page.mjs";
import { writeBig } from "../test/send_tree.mjs";

const MIB = 1 << 20;
const SIZE = Number(process.env.PEERPIPE_BENCH_WEB_MIB ?? 64) * MIB;
const PAGE_SIZE = Number(process.env.PEERPIPE_BENCH_PAGE_MIB ?? 1024) * MIB;
const WITH_PAGE = existsSync(join(webDir, "index.html"));
const ARGS = ["--disable-features=WebRtcHideLocalIpsWithMdns"];
const mbs = (bytes, seconds) => (bytes / seconds / 1e6).toFixed(1);

const server = await startServer(WITH_PAGE ? ["--web-dir", webDir] : []);
const site = await serveFiles();
const token = server.token("bench");
const rows = [];

// The bare data channel.
{
  const { browser, page } = await openPage(site, ARGS);
  for (const size of [16 * 1024, 64 * 1024]) {
    const seconds = await page.evaluate(
      async ({ total, size }) => {
        const a = new RTCPeerConnection();
        const b = new RTCPeerConnection();
        a.onicecandidate = (e) => e.candidate && b.addIceCandidate(e.candidate);
        b.onicecandidate = (e) => e.candidate && a.addIceCandidate(e.candidate);
        const ch = a.createDataChannel("bare", { ordered: true });
        ch.binaryType = "arraybuffer";
        const got = new Promise((resolve) => {
          b.ondatachannel = (e) => {
            let n = 0;
            e.channel.onmessage = (m) => {
              n += m.data.byteLength;
              if (n >= total) resolve(performance.now());
            };
          };
        });
        await a.setLocalDescription(await a.createOffer());
        await b.setRemoteDescription(a.localDescription);
        await b.setLocalDescription(await b.createAnswer());
        await a.setRemoteDescription(b.localDescription);
        await new Promise((r) => (ch.onopen = r));
        const msg = new Uint8Array(size);
        ch.bufferedAmountLowThreshold = 1 << 20;
        const t0 = performance.now();
        let sent = 0;
        while (sent < total) {
          if (ch.bufferedAmount > 4 << 20) await new Promise((r) => (ch.onbufferedamountlow = r));
          ch.send(msg);
          sent += size;
        }
        const t1 = await got;
        a.close();
        b.close();
        return (t1 - t0) / 1000;
      },
      { total: SIZE, size },
    );
    rows.push([`bare RTCDataChannel, ${size / 1024} KiB messages, one page`, mbs(SIZE, seconds)]);
  }
  await browser.close();
}

// Browser → native and native → browser over the data channel.
const PAGE = `(async ({ server, token }) => {
  const { Node } = await import("/index.js");
  window.node = await Node.bind({ server, token, label: "bench" });
  return window.node.id;
})`;
{
  const { browser, page } = await openPage(site, ARGS);
  const pageId = await page.evaluate(eval(PAGE), { server: server.url, token });
  const identity = join(mkdtempSync(join(tmpdir(), "pp-bench-")), "id");
  const native = deviceId(identity);
  const listening = run(["listen", "--server", server.url, "--token", token, "--identity", identity], { ms: 300_000 });
  const up = await page.evaluate(
    async ({ native, size }) => {
      const node = window.node;
      while (!(await node.onlinePeers()).some((p) => p.id === native)) await new Promise((r) => setTimeout(r, 50));
      const t0 = performance.now();
      const conn = await node.connect(native);
      const connected = performance.now();
      const { writable } = await conn.openStream();
      const w = writable.getWriter();
      await new Promise((r) => (conn.path === "webrtc" ? r() : conn.addEventListener("pathchange", (e) => e.path === "webrtc" && r())));
      const direct = performance.now();
      const chunk = new Uint8Array(256 * 1024);
      for (let i = 0; i < chunk.length; i++) chunk[i] = i & 0xff;
      // The main thread's longest task while the core moves the data.
      let longest = 0;
      const observer = new PerformanceObserver((list) => {
        for (const e of list.getEntries()) longest = Math.max(longest, e.duration);
      });
      observer.observe({ type: "longtask" });
      const t1 = performance.now();
      for (let off = 0; off < size; off += chunk.length) await w.write(chunk);
      await w.close();
      await conn.close();
      const seconds = (performance.now() - t1) / 1000;
      observer.disconnect();
      return { directAfterConnect: direct - connected, connect: connected - t0, seconds, longest };
    },
    { native, size: SIZE },
  );
  const out = await listening;
  if (out.code !== 0 || out.stdout.length !== SIZE) throw new Error(`browser → native failed: ${out.stderr}`);
  rows.push(["peerpipe-web browser → native CLI, stream, data channel", mbs(SIZE, up.seconds)]);
  rows.push(["main thread's longest task during browser → native, ms (long tasks are ≥ 50 ms; 0: none)", up.longest.toFixed(0)]);

  const received = page.evaluate(
    () =>
      new Promise((resolve) =>
        window.node.addEventListener(
          "incomingconnection",
          async (e) => {
            const conn = await e.accept();
            conn.addEventListener("stream", async (s) => {
              const reader = s.readable.getReader();
              let n = 0;
              let t0 = null;
              for (;;) {
                const { value, done } = await reader.read();
                if (done) break;
                if (conn.path === "webrtc" && t0 === null) t0 = performance.now();
                if (t0 !== null) n += value.length;
              }
              const seconds = (performance.now() - t0) / 1000;
              await conn.close();
              resolve({ n, seconds });
            });
          },
          { once: true },
        ),
      ),
  );
  const payload = data(SIZE + 16 * MIB, 3);
  const pushed = await run(["connect", pageId, "--server", server.url, "--token", token, "--identity", identity], {
    stdin: Buffer.from(payload.buffer),
    ms: 300_000,
  });
  if (pushed.code !== 0) throw new Error(`native → browser failed: ${pushed.stderr}`);
  const down = await received;
  rows.push(["peerpipe-web native CLI → browser, stream, data channel", mbs(down.n, down.seconds)]);

  // Connect → data channel carrying data, five fresh connections.
  const times = [];
  for (let i = 0; i < 5; i++) {
    const l = run(["listen", "--server", server.url, "--token", token, "--identity", identity], { ms: 60_000 });
    times.push(
      await page.evaluate(async (native) => {
        const node = window.node;
        while (!(await node.onlinePeers()).some((p) => p.id === native)) await new Promise((r) => setTimeout(r, 20));
        const conn = await node.connect(native);
        const t0 = performance.now();
        await new Promise((r) => (conn.path === "webrtc" ? r() : conn.addEventListener("pathchange", (e) => e.path === "webrtc" && r())));
        const ms = performance.now() - t0;
        const { writable } = await conn.openStream();
        const w = writable.getWriter();
        await w.write(new Uint8Array(1024));
        await w.close();
        await conn.close();
        return ms;
      }, native),
    );
    await l;
  }
  times.sort((a, b) => a - b);
  rows.push(["connect → data channel carrying data, ms (median of 5)", times[2].toFixed(0)]);
  await browser.close();
}

// 64 B messages, browser → browser.
{
  const a = await openPage(site, ARGS);
  const b = await openPage(site, ARGS);
  const COUNT = 50_000;
  const bId = await b.page.evaluate(eval(PAGE), { server: server.url, token });
  await b.page.evaluate((count) => {
    window.done = new Promise((resolve) =>
      window.node.addEventListener("incomingconnection", async (e) => {
        const conn = await e.accept();
        let n = 0;
        let t0 = 0;
        conn.addEventListener("message", () => {
          if (n === 0) t0 = performance.now();
          if (++n === count) resolve((performance.now() - t0) / 1000);
        });
      }),
    );
  }, COUNT);
  await a.page.evaluate(eval(PAGE), { server: server.url, token });
  await a.page.evaluate(
    async ({ peer, count }) => {
      const conn = await window.node.connect(peer);
      await new Promise((r) => (conn.path === "webrtc" ? r() : conn.addEventListener("pathchange", (e) => e.path === "webrtc" && r())));
      const msg = new Uint8Array(64);
      for (let i = 0; i < count; i++) await conn.send(msg);
    },
    { peer: bId, count: COUNT },
  );
  const seconds = await b.page.evaluate(() => window.done);
  rows.push(["peerpipe-web 64 B messages/s, browser → browser, data channel", Math.round(COUNT / seconds).toString()]);
  await a.browser.close();
  await b.browser.close();
}

// The web page: CLI send → page receive into the browser's storage.
if (WITH_PAGE) {
  const dir = mkdtempSync(join(tmpdir(), "pp-bench-page-"));
  const file = join(dir, "file.bin");
  writeBig(file, PAGE_SIZE / MIB, 1);
  const app = await openApp(server.url.replace(/^ws/, "http").replace(/\/v1\/signal$/, "/"), { args: ARGS });
  const sender = nativeSend(server, token, file);
  await enterCode(app.page, await sender.code);
  await app.page.locator("#save-browser").waitFor({ state: "visible", timeout: 30_000 });
  const sampler = sampleRenderer(app.browser);
  const t0 = performance.now();
  await app.page.locator("#save-browser").click();
  await app.page.locator("#done").waitFor({ state: "visible", timeout: 900_000 });
  const seconds = (performance.now() - t0) / 1000;
  const peak = await sampler.stop();
  const path = await app.page.locator("#progress-path").textContent();
  const sent = await sender.done;
  if (sent.code !== 0) throw new Error(`send to the page failed: ${sent.stderr}`);
  rows.push([`web page: CLI send → page, ${PAGE_SIZE / MIB} MiB into the browser's storage (${path.includes("direct") ? "direct" : "relay"} at the end)`, mbs(PAGE_SIZE, seconds)]);
  rows.push(["web page: the page renderer's private memory (Chromium's memory footprint), peak over that transfer, MiB", (peak.private / 1024).toFixed(0)]);
  rows.push(["web page: the page renderer's resident memory (shared libraries included), peak, MiB", (peak.rss / 1024).toFixed(0)]);
  await app.browser.close();
  rmSync(dir, { recursive: true, force: true });
}

// Size.
const pkg = fileURLToPath(new URL("../pkg/", import.meta.url));
const wasm = readFileSync(join(pkg, "peerpipe_web_bg.wasm"));
const js = Buffer.concat([readFileSync(join(pkg, "peerpipe_web.js")), readFileSync(fileURLToPath(new URL("../index.js", import.meta.url)))]);
rows.push(["package: wasm + JS, KiB raw", ((wasm.length + js.length) / 1024).toFixed(0)]);
rows.push(["package: wasm + JS, KiB gzipped", ((gzipSync(wasm, { level: 9 }).length + gzipSync(js, { level: 9 }).length) / 1024).toFixed(0)]);

site.close();
server.close();
const bare = Math.max(Number(rows[0][1]), Number(rows[1][1]));
console.log(`\n${SIZE / MIB} MiB per transfer, headless Chromium ${process.env.CHROMIUM_VERSION ?? ""} in a network namespace\n`);
console.log("| measure | MB/s, count or size |\n|---|--:|");
for (const [k, v] of rows) console.log(`| ${k} | ${v} |`);
const row = (name) => Number(rows.find(([k]) => k.startsWith(name))[1]);
const up = row("peerpipe-web browser → native");
const down = row("peerpipe-web native CLI → browser");
console.log(`\nbrowser → native / bare: ${(up / bare).toFixed(2)}x; native → browser / bare: ${(down / bare).toFixed(2)}x`);
if (WITH_PAGE) console.log(`CLI → web page / bare: ${(row("web page: CLI send") / bare).toFixed(2)}x`);
