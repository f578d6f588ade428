// The page sends a picked folder (nested folders, an empty file, a file
// read from disk as it is sent) by code: it shows the code, a link with it
// and a QR code; the CLI's `peerpipe receive CODE` gets every file, equal to
// the source, and the page says it is done.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { data, run, sha256 } from "./harness.mjs";
import { openApp, pageServer, screenshot } from "./page.mjs";

const MIB = 1 << 20;

test("the page sends a folder by code to the CLI", { timeout: 180_000 }, async () => {
  const server = await pageServer();
  const dir = mkdtempSync(join(tmpdir(), "pp-page-send-"));
  const { browser, page, problems } = await openApp(server.page);
  try {
    const tree = join(dir, "project");
    mkdirSync(join(tree, "src", "deep"), { recursive: true });
    const files = {
      "project/README": Buffer.from("read me\n"),
      "project/src/deep/blob.bin": Buffer.from(data(48 * MIB, 5).buffer),
      "project/src/empty": Buffer.alloc(0),
    };
    for (const [path, bytes] of Object.entries(files)) writeFileSync(join(dir, path), bytes);

    await page.locator("#tab-send").click();
    await page.locator("#pick-folder").setInputFiles(tree);
    await page.locator("#send-code").waitFor({ state: "visible", timeout: 30_000 });
    const code = (await page.locator("#send-code").textContent()).trim();
    assert.match(code, /^[0-9]+-[a-z]+-[a-z]+$/);
    assert.equal(await page.locator("#send-link").getAttribute("href"), `${server.page}#${code}`);
    await page.locator("#send-qr").waitFor({ state: "visible", timeout: 10_000 });
    assert.ok(await page.locator("#send-qr").evaluate((img) => img.complete && img.naturalWidth > 0), "the QR code is drawn");
    await screenshot(page, "page-sending");

    const out = join(dir, "out");
    const received = await run(["receive", code, "-o", out, "-y", "--server", server.url], { ms: 120_000 });
    assert.equal(received.code, 0, received.stderr);
    for (const [path, bytes] of Object.entries(files)) {
      assert.equal(sha256(readFileSync(join(out, path))), sha256(bytes), path);
    }
    await page.locator("#done").waitFor({ state: "visible", timeout: 30_000 });
    assert.match(await page.locator("#done-title").textContent(), /^Sent project/);
    await screenshot(page, "page-sent");
    assert.deepEqual(problems, []);
  } finally {
    await browser.close();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
