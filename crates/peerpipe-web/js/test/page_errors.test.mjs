// What goes wrong, on a phone-sized page (360 px): a malformed code, a code
// nobody holds, a code with the wrong words (the CLI sender fails too), and a
// sender that goes away mid-transfer. Each ends in a clear sentence on the
// page, with nothing half-written offered as complete; the page never
// scrolls sideways.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { data, nativeSend } from "./harness.mjs";
import { enterCode, openApp, pageServer, screenshot } from "./page.mjs";

const MIB = 1 << 20;

async function errorText(page) {
  await page.locator("#error").waitFor({ state: "visible", timeout: 60_000 });
  return page.locator("#error-text").textContent();
}

async function noSideScroll(page) {
  const { scroll, width } = await page.evaluate(() => ({ scroll: document.documentElement.scrollWidth, width: innerWidth }));
  assert.ok(scroll <= width, `the page is ${scroll} px wide in a ${width} px window`);
}

test("a phone-sized page explains each failure in a sentence", { timeout: 180_000 }, async () => {
  const server = await pageServer();
  const dir = mkdtempSync(join(tmpdir(), "pp-page-err-"));
  const { browser, page } = await openApp(server.page, { width: 360, height: 740 });
  try {
    await noSideScroll(page);
    await screenshot(page, "page-phone");

    await enterCode(page, "hello there");
    assert.match(await errorText(page), /not a code: a code looks like 7-amber-falcon/);
    await page.locator("#error-again").press("Enter");
    assert.equal(await page.evaluate(() => document.activeElement?.id), "code", "Try again goes back to the code");

    await enterCode(page, "998-amber-falcon");
    assert.match(await errorText(page), /No sender has this code now/);
    await screenshot(page, "page-error");
    await noSideScroll(page);
    await page.locator("#error-again").click();

    writeFileSync(join(dir, "small.txt"), "not for guessers\n");
    const guessed = nativeSend(server, server.token("cli"), join(dir, "small.txt"));
    // Words from the list in the wrong order: a well-formed code, but not this one.
    const [number, first, second] = (await guessed.code).split("-");
    await enterCode(page, first === second ? `${number}-${first}-${first === "amber" ? "falcon" : "amber"}` : `${number}-${second}-${first}`);
    assert.match(await errorText(page), /words of the code do not match/);
    const refused = await guessed.done;
    assert.notEqual(refused.code, 0, "the sender fails on a wrong guess");
    await page.locator("#error-again").click();

    // The sender is killed mid-transfer: the page says so, offers nothing as
    // complete, and says what it keeps.
    writeFileSync(join(dir, "big.bin"), data(256 * MIB, 3));
    const going = nativeSend(server, server.token("cli"), join(dir, "big.bin"));
    await enterCode(page, await going.code);
    await page.locator("#save-browser").click({ timeout: 30_000 });
    await page.waitForFunction(() => document.getElementById("progress-all").value > 0.02, null, { timeout: 60_000 });
    going.child.kill("SIGKILL");
    const text = await errorText(page);
    assert.match(text, /(sender went away|stopped answering).*kept in this browser: a new code from the sender fetches only the rest/);
    assert.equal(await page.locator("#done").isVisible(), false);
    assert.match(await page.locator("#unfinished-text").textContent(), /unfinished receive of “big.bin”/);
    await screenshot(page, "page-sender-gone");
    await noSideScroll(page);
  } finally {
    await browser.close();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
