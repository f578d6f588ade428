// Benchmark of receiving by code: the release CLI's `peerpipe send` of one
// file of PEERPIPE_BENCH_RECEIVE_MIB MiB (default 256) over the relay of a
// local `peerpipe serve`, received by
// - the CLI's own `peerpipe receive` (the reference),
// - the package in Node.js (`Node.receiveCode`, every group verified in wasm,
//   written to a file through a sink),
// - the package in headless Chromium, to a sink that drops the bytes and
//   into OPFS (`directorySink`), unless PEERPIPE_BENCH_RECEIVE_BROWSER=0.
// MB/s from accepting to the last byte closed; the core's wasm memory after.
// Run after scripts/web-build and a release build of the CLI:
//   node crates/peerpipe-web/js/bench/receive.mjs
import { createHash } from "node:crypto";
import { createReadStream, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { mkdir, open } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { Node, memoryBytes } from "../index.js";
import { data, nativeSend, run, startServer } from "../test/harness.mjs";

const MIB = 1 << 20;
const SIZE = Number(process.env.PEERPIPE_BENCH_RECEIVE_MIB ?? 256) * MIB;
const BROWSER = process.env.PEERPIPE_BENCH_RECEIVE_BROWSER !== "0";
const mbs = (bytes, seconds) => (bytes / seconds / 1e6).toFixed(1);

function fileHash(path) {
  return new Promise((resolve, reject) => {
    const h = createHash("sha256");
    createReadStream(path)
      .on("data", (d) => h.update(d))
      .on("end", () => resolve(h.digest("hex")))
      .on("error", reject);
  });
}

const server = await startServer();
const dir = mkdtempSync(join(tmpdir(), "pp-bench-recv-"));
const rows = [];
try {
  const file = join(dir, "file.bin");
  writeFileSync(file, data(SIZE, 77));
  const want = await fileHash(file);

  // The reference: the CLI receiving.
  {
    const sender = nativeSend(server, server.token("cli"), file);
    const started = performance.now();
    const out = await run(["receive", await sender.code, "-o", join(dir, "cli"), "-y", "--server", server.url, "--token", server.token("cli2")], {
      ms: 600_000,
    });
    const seconds = (performance.now() - started) / 1000;
    if (out.code !== 0) throw new Error(`peerpipe receive failed: ${out.stderr}`);
    if ((await fileHash(join(dir, "cli", "file.bin"))) !== want) throw new Error("the CLI received other bytes");
    await sender.done;
    rows.push(["CLI → CLI receive (relay, incl. connecting)", `${mbs(SIZE, seconds)} MB/s`]);
  }

  // Node.js.
  {
    const node = await Node.bind({ server: server.url, token: server.token("web"), direct: false });
    const sender = nativeSend(server, server.token("cli"), file);
    const receive = await node.receiveCode(await sender.code);
    const out = join(dir, "node");
    const report = await receive.accept({
      async open(path) {
        const full = join(out, path);
        await mkdir(dirname(full), { recursive: true });
        const fh = await open(full, "w");
        return { write: async (b) => void (await fh.write(b)), close: () => fh.close() };
      },
    });
    if ((await fileHash(join(out, "file.bin"))) !== want) throw new Error("Node.js received other bytes");
    const sent = await sender.done;
    if (sent.code !== 0) throw new Error(`send failed: ${sent.stderr}`);
    rows.push(["CLI → Node.js receiveCode (relay, to a file)", `${mbs(SIZE, report.seconds)} MB/s`]);
    rows.push(["  wasm memory after", `${(memoryBytes() / MIB).toFixed(1)} MiB`]);
    node.shutdown();
  }

  // Chromium into OPFS.
  if (BROWSER) {
    const { openPage, serveFiles } = await import("../test/browser.mjs");
    const site = await serveFiles();
    const { browser, page } = await openPage(site);
    try {
      // Network and verification alone: a sink that drops what it gets.
      const first = nativeSend(server, server.token("cli"), file);
      const dropped = await page.evaluate(
        async ({ server, token, code }) => {
          const { Node } = await import("/index.js");
          const node = await Node.bind({ server, token, direct: false });
          const receive = await node.receiveCode(code);
          let n = 0;
          const report = await receive.accept({ open: () => ({ write: (b) => void (n += b.length), close() {} }) });
          node.shutdown();
          return { seconds: report.seconds, n };
        },
        { server: server.url, token: server.token("page"), code: await first.code },
      );
      if (dropped.n !== SIZE) throw new Error(`the page got ${dropped.n} bytes`);
      await first.done;
      rows.push(["CLI → Chromium receiveCode (relay, sink drops)", `${mbs(SIZE, dropped.seconds)} MB/s`]);
      const sender = nativeSend(server, server.token("cli"), file);
      const got = await page.evaluate(
        async ({ server, token, code }) => {
          const { Node, directorySink, memoryBytes } = await import("/index.js");
          const node = await Node.bind({ server, token, direct: false });
          const receive = await node.receiveCode(code);
          const opfs = await navigator.storage.getDirectory();
          const report = await receive.accept(directorySink(await opfs.getDirectoryHandle("bench", { create: true })));
          const size = (await (await (await opfs.getDirectoryHandle("bench")).getFileHandle("file.bin")).getFile()).size;
          node.shutdown();
          return { seconds: report.seconds, size, memory: memoryBytes(), heap: performance.memory?.usedJSHeapSize ?? 0 };
        },
        { server: server.url, token: server.token("page"), code: await sender.code },
      );
      if (got.size !== SIZE) throw new Error(`the page wrote ${got.size} bytes`);
      const sent = await sender.done;
      if (sent.code !== 0) throw new Error(`send failed: ${sent.stderr}`);
      rows.push(["CLI → Chromium receiveCode (relay, into OPFS)", `${mbs(SIZE, got.seconds)} MB/s`]);
      rows.push(["  wasm memory after, JS heap used", `${(got.memory / MIB).toFixed(1)} MiB, ${(got.heap / MIB).toFixed(1)} MiB`]);
    } finally {
      await browser.close();
      site.close();
    }
  }
} finally {
  server.close();
  rmSync(dir, { recursive: true, force: true });
}
console.log(`\nreceive by code, ${SIZE / MIB} MiB, one run\n`);
for (const [what, value] of rows) console.log(`${what.padEnd(48)} ${value}`);
