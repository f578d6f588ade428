// The page served by `peerpipe serve` receives a tree from the CLI's
// `peerpipe send` by code, with the keyboard alone: type the code, Enter,
// Enter on "Keep in this browser". What landed in the browser's storage
// equals the source (SHA-256 of every 8 MiB, read back slice by slice),
// nested folders and an empty file included; the renderer's memory is
// sampled throughout and its peak printed. PEERPIPE_WEB_PAGE_MIB sets the
// big file's size (64 MiB; the long step of .ci/run uses 1024).
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { nativeSend } from "./harness.mjs";
import { writeBig } from "./send_tree.mjs";
import { chunkHashesOf, enterCode, keptChunkHashes, openApp, pageServer, sampleRenderer, screenshot } from "./page.mjs";

const MIB = 1 << 20;
const BIG = Number(process.env.PEERPIPE_WEB_PAGE_MIB ?? 64) * MIB;
const CHUNK = 8 * MIB;

test("the page receives a tree from the CLI by code, keyboard only", { timeout: 600_000 }, async () => {
  const server = await pageServer();
  const dir = mkdtempSync(join(tmpdir(), "pp-page-recv-"));
  const { browser, page, problems } = await openApp(server.page);
  try {
    const tree = join(dir, "holiday");
    mkdirSync(join(tree, "day 1", "raw"), { recursive: true });
    mkdirSync(join(tree, "day 2"), { recursive: true });
    const files = {
      "holiday/notes.txt": Buffer.from("sun, then rain\n"),
      "holiday/day 1/raw/video.bin": null,
      "holiday/day 2/empty.txt": Buffer.alloc(0),
    };
    // The big file is written in pieces: the test's own memory stays small too.
    writeBig(join(dir, "holiday/day 1/raw/video.bin"), BIG / MIB, 7);
    for (const [path, bytes] of Object.entries(files)) if (bytes) writeFileSync(join(dir, path), bytes);

    await screenshot(page, "page-code-entry");
    const sender = nativeSend(server, server.token("cli"), tree);
    const code = await sender.code;
    assert.equal(await page.evaluate(() => document.activeElement?.id), "code", "the code field has the focus");
    await enterCode(page, code);
    await page.locator("#offer").waitFor({ state: "visible", timeout: 30_000 });
    assert.match(await page.locator("#offer-title").textContent(), /holiday \(3 files, /);
    await screenshot(page, "page-offer");
    assert.equal(await page.evaluate(() => document.activeElement?.id), "save-browser");

    const sampler = sampleRenderer(browser);
    const started = Date.now();
    await page.keyboard.press("Enter");
    await page.locator("#progress").waitFor({ state: "visible", timeout: 30_000 });
    await page.waitForFunction(() => document.getElementById("progress-all").value > 0.05 || !document.getElementById("done").hidden, null, { timeout: 120_000 });
    if (await page.locator("#progress").isVisible()) await screenshot(page, "page-progress");
    await page.locator("#done").waitFor({ state: "visible", timeout: 540_000 });
    const seconds = (Date.now() - started) / 1000;
    const peak = await sampler.stop();
    assert.ok(peak.private > 0, "the renderer's memory was sampled");
    await screenshot(page, "page-done");
    assert.match(await page.locator("#done-title").textContent(), /^Received holiday/);
    assert.equal(await page.locator("#downloads a").count(), 3, "a download link per file");

    const kept = await keptChunkHashes(page, CHUNK);
    assert.deepEqual(Object.keys(kept).sort(), Object.keys(files).sort());
    for (const path of Object.keys(files)) {
      const want = await chunkHashesOf(join(dir, path), CHUNK);
      assert.equal(kept[path].size, path.endsWith("video.bin") ? BIG : files[path].length, path);
      assert.deepEqual(kept[path].hashes, want, path);
    }
    const sent = await sender.done;
    assert.equal(sent.code, 0, sent.stderr);
    assert.deepEqual(problems, []);
    console.log(
      `page received ${(BIG / MIB).toFixed(0)} MiB from the CLI in ${seconds.toFixed(1)} s ` +
        `(${(BIG / MIB / seconds).toFixed(1)} MiB/s), page renderer's peak memory ${(peak.private / 1024).toFixed(0)} MiB private (${(peak.rss / 1024).toFixed(0)} MiB resident)`,
    );
  } finally {
    await browser.close();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
