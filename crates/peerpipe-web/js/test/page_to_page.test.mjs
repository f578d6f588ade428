// One page sends picked files; another, in a browser of its own, opens the
// link with the code (`/#CODE`) and keeps them: both say done, and what the
// second holds equals the source.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { data } from "./harness.mjs";
import { chunkHashesOf, keptChunkHashes, openApp, pageServer } from "./page.mjs";

const MIB = 1 << 20;

test("a page sends to a page that opened the link", { timeout: 180_000 }, async () => {
  const server = await pageServer();
  const dir = mkdtempSync(join(tmpdir(), "pp-page2page-"));
  const sender = await openApp(server.page);
  let receiver;
  try {
    writeFileSync(join(dir, "a.bin"), data(24 * MIB, 9));
    writeFileSync(join(dir, "b.txt"), "second file\n");
    await sender.page.locator("#tab-send").click();
    await sender.page.locator("#pick-files").setInputFiles([join(dir, "a.bin"), join(dir, "b.txt")]);
    await sender.page.locator("#send-link").waitFor({ state: "visible", timeout: 30_000 });
    const link = await sender.page.locator("#send-link").getAttribute("href");

    receiver = await openApp(link);
    await receiver.page.locator("#save-browser").click({ timeout: 30_000 });
    await receiver.page.locator("#done").waitFor({ state: "visible", timeout: 120_000 });
    await sender.page.locator("#done").waitFor({ state: "visible", timeout: 30_000 });
    assert.equal(await receiver.page.evaluate(() => location.hash), "", "the used code left the address bar");
    const got = await keptChunkHashes(receiver.page, 8 * MIB);
    for (const name of ["a.bin", "b.txt"]) {
      assert.deepEqual(got[name].hashes, await chunkHashesOf(join(dir, name), 8 * MIB), name);
    }
    assert.deepEqual([...sender.problems, ...receiver.problems], []);
  } finally {
    await sender.browser.close();
    await receiver?.browser.close();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
