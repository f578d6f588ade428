// A page that stops reading: the native writer stops within the credit
// window, the tab's memory (JS heap + wasm memory) stays bounded while 1 GiB
// is offered, and the transfer goes on once the page reads again.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { cli, startServer } from "./harness.mjs";
import { openPage, serveFiles } from "./browser.mjs";

const MIB = 1 << 20;
const OFFERED = 1024 * MIB;
/// What may sit between the native writer and a page that reads nothing: the
/// stream window (at most 16 MiB), the session window, the pipes and the
/// relay's queues.
const IN_FLIGHT_BOUND = 48 * MIB;
const MEMORY_BOUND = 160 * MIB;

test("a page that stops reading stops the native writer, with bounded memory", async () => {
  const server = await startServer();
  const site = await serveFiles();
  const { browser, page } = await openPage(site, ["--enable-precise-memory-info"]);
  let native;
  try {
    const token = server.token("alice");
    const id = await page.evaluate(
      async ({ server, token }) => {
        const { Node } = await import("/index.js");
        const node = await Node.bind({ server, token, label: "slow", direct: false });
        window.stream = new Promise((resolve) =>
          node.addEventListener("incomingconnection", async (e) => {
            const conn = await e.accept();
            conn.addEventListener("stream", (s) => resolve(s.readable.getReader()));
          }),
        );
        return node.id;
      },
      { server: server.url, token },
    );
    const identity = join(mkdtempSync(join(tmpdir(), "pp-id-")), "id");
    native = spawn(cli, ["connect", id, "--server", server.url, "--token", token, "--identity", identity, "--relay-only"], {
      stdio: ["pipe", "ignore", "pipe"],
    });
    let stderr = "";
    native.stderr.on("data", (d) => (stderr += d));
    native.stdin.on("error", () => {});
    let written = 0;
    let feeding = true;
    const chunk = Buffer.alloc(MIB, 7);
    (async () => {
      while (feeding && written < OFFERED) {
        const ok = native.stdin.write(chunk);
        written += chunk.length;
        if (!ok) await new Promise((r) => native.stdin.once("drain", r));
      }
    })().catch(() => {});
    await page.evaluate(() => window.stream.then(() => true));
    // The page reads nothing for a while: the writer must stall.
    await new Promise((r) => setTimeout(r, 4000));
    const stalled = written;
    await new Promise((r) => setTimeout(r, 2000));
    assert.equal(written, stalled, "the writer kept going while nobody read");
    assert.ok(stalled < IN_FLIGHT_BOUND, `${stalled / MIB} MiB left the writer with nobody reading`);
    const memory = await page.evaluate(async () => {
      const { memoryBytes } = await import("/index.js");
      return memoryBytes() + performance.memory.usedJSHeapSize;
    });
    assert.ok(memory < MEMORY_BOUND, `the tab holds ${memory / MIB} MiB`);
    // Reading again lets the writer go on.
    const read = await page.evaluate(async (want) => {
      const reader = await window.stream;
      let n = 0;
      while (n < want) {
        const { value, done } = await reader.read();
        if (done) break;
        n += value.length;
      }
      return n;
    }, 96 * MIB);
    assert.ok(read >= 96 * MIB, `read ${read} bytes; native stderr: ${stderr}`);
    assert.ok(written > stalled, "the writer went on once the page read");
    console.log(`stalled writer: ${(stalled / MIB).toFixed(0)} MiB out of ${OFFERED / MIB} offered; tab memory ${(memory / MIB).toFixed(1)} MiB`);
    feeding = false;
  } finally {
    native?.kill("SIGKILL");
    await browser.close();
    site.close();
    server.close();
  }
});
