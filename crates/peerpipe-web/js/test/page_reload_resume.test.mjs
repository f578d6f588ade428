// A page reloaded mid-transfer keeps what it had verified and written (in
// the browser's storage, written in place by a worker), says so after the
// reload, and with a new code from the sender fetches only what was missing:
// the groups requested are exactly those past what was kept.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { data, nativeSend } from "./harness.mjs";
import { chunkHashesOf, enterCode, keptChunkHashes, openApp, pageServer, screenshot } from "./page.mjs";

const MIB = 1 << 20;
const GROUP = 16 * 1024;
const SIZE = 256 * MIB;

test("a page reloaded mid-transfer fetches only what was missing", { timeout: 300_000 }, async () => {
  const server = await pageServer();
  const dir = mkdtempSync(join(tmpdir(), "pp-page-reload-"));
  const { browser, page, problems } = await openApp(server.page);
  try {
    const file = join(dir, "film.bin");
    writeFileSync(file, data(SIZE, 11));
    const first = nativeSend(server, server.token("cli"), file);
    await enterCode(page, await first.code);
    await page.locator("#save-browser").click({ timeout: 30_000 });
    await page.waitForFunction(() => document.getElementById("progress-all").value > 0.25, null, { timeout: 120_000 });
    await page.reload();
    first.child.kill("SIGKILL");
    await first.done;

    await page.locator("#unfinished").waitFor({ state: "visible", timeout: 10_000 });
    assert.match(await page.locator("#unfinished-text").textContent(), /unfinished receive of “film.bin”.*ask the sender for a new code/);
    await screenshot(page, "page-after-reload");
    const kept = await page.evaluate(async () => {
      const root = await (await navigator.storage.getDirectory()).getDirectoryHandle("peerpipe-received");
      for await (const dir of root.values()) return (await (await dir.getFileHandle("film.bin")).getFile()).size;
    });
    assert.ok(kept >= SIZE / 8 && kept < SIZE, `${kept} bytes kept after the reload`);

    const second = nativeSend(server, server.token("cli"), file);
    await enterCode(page, await second.code);
    await page.locator("#save-browser").click({ timeout: 30_000 });
    await page.locator("#done").waitFor({ state: "visible", timeout: 180_000 });
    const { fetched, reused } = await page.locator("#done").evaluate((e) => ({ fetched: Number(e.dataset.fetched), reused: Number(e.dataset.reused) }));
    const keptGroups = Math.floor(kept / GROUP);
    assert.equal(reused, keptGroups * GROUP, "everything kept was verified and reused");
    assert.equal(fetched, SIZE - reused);
    assert.equal(fetched / GROUP, SIZE / GROUP - keptGroups, "only the missing groups were requested");
    assert.match(await page.locator("#done-text").textContent(), /was here already from an earlier try/);
    const got = await keptChunkHashes(page, 8 * MIB);
    assert.deepEqual(got["film.bin"].hashes, await chunkHashesOf(file, 8 * MIB));
    assert.equal((await second.done).code, 0);
    assert.deepEqual(problems, []);
    console.log(`reloaded at ${(kept / MIB).toFixed(1)} MiB of ${SIZE / MIB}; the new code fetched ${fetched / GROUP} groups (${(fetched / MIB).toFixed(1)} MiB)`);
  } finally {
    await browser.close();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
