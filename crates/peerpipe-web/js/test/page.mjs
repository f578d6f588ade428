// The web page (scripts/web-page) as people use it: served by a real
// `peerpipe serve --web-dir`, opened in headless Chromium, driven through its
// controls. Screenshots of its states go to PEERPIPE_SCREENSHOTS (a
// directory), else to a temporary one.
import { existsSync, mkdirSync, mkdtempSync, readFileSync } from "node:fs";
import { createHash } from "node:crypto";
import { open } from "node:fs/promises";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { startServer } from "./harness.mjs";

const root = fileURLToPath(new URL("../../../../", import.meta.url));
/** The assembled page (scripts/web-page). */
export const webDir = process.env.PEERPIPE_WEB_DIR ?? join(process.env.CARGO_TARGET_DIR ?? join(root, "target"), "web");
let shots;

/** A server that serves the page; `page` is its `http://` address. */
export async function pageServer(extra = []) {
  if (!existsSync(join(webDir, "index.html"))) throw new Error(`no page in ${webDir}: run scripts/web-page`);
  const server = await startServer(["--web-dir", webDir, ...extra]);
  server.page = server.url.replace(/^ws/, "http").replace(/\/v1\/signal$/, "/");
  return server;
}

/** A fresh headless Chromium showing `url`, `width` px wide. */
export async function openApp(url, { width = 1000, height = 800, args = [] } = {}) {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-background-networking", "--disable-dev-shm-usage", ...args],
  });
  const page = await browser.newPage({ viewport: { width, height } });
  const problems = [];
  page.on("pageerror", (e) => problems.push(`page error: ${e}`));
  page.on("console", (m) => m.type() === "error" && problems.push(`console: ${m.text()}`));
  await page.goto(url);
  return { browser, page, problems };
}

/** Saves a screenshot of `page` as `name`.png; returns its path. */
export async function screenshot(page, name) {
  shots ??= process.env.PEERPIPE_SCREENSHOTS ?? mkdtempSync(join(tmpdir(), "pp-shots-"));
  mkdirSync(shots, { recursive: true });
  const path = join(shots, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}

/** SHA-256 of every `chunk` bytes of the file at `path`, in order (what
 * `chunkHashes` in the page computes of a file there). */
export async function chunkHashesOf(path, chunk) {
  const out = [];
  const file = await open(path);
  try {
    const buf = Buffer.alloc(chunk);
    for (;;) {
      const { bytesRead } = await file.read(buf, 0, chunk, null);
      if (bytesRead === 0) break;
      out.push(createHash("sha256").update(buf.subarray(0, bytesRead)).digest("hex"));
      if (bytesRead < chunk) break;
    }
  } finally {
    await file.close();
  }
  return out;
}

/** In the page: SHA-256 of every `chunk` bytes of each received file kept in
 * this browser, `{ path: { size, hashes } }`; read slice by slice, never whole. */
export function keptChunkHashes(page, chunk) {
  return page.evaluate(async (chunk) => {
    const root = await (await navigator.storage.getDirectory()).getDirectoryHandle("peerpipe-received");
    const out = {};
    const hex = (b) => [...new Uint8Array(b)].map((x) => x.toString(16).padStart(2, "0")).join("");
    const walk = async (dir, prefix) => {
      for await (const entry of dir.values()) {
        const path = prefix ? `${prefix}/${entry.name}` : entry.name;
        if (entry.kind === "directory") await walk(entry, path);
        else {
          const file = await entry.getFile();
          const hashes = [];
          for (let at = 0; at < file.size; at += chunk) {
            hashes.push(hex(await crypto.subtle.digest("SHA-256", await file.slice(at, at + chunk).arrayBuffer())));
          }
          out[path] = { size: file.size, hashes };
        }
      }
    };
    for await (const collection of root.values()) await walk(collection, "");
    return out;
  }, chunk);
}

/** The memory (KiB) of `browser`'s largest renderer process — the page's,
 * which runs the core (pids from the DevTools protocol's
 * SystemInfo.getProcessInfo; Chromium keeps spare renderers beside it):
 * `private`, its own pages (what Chromium's task manager calls its memory
 * footprint), and `rss`, which counts the shared libraries' pages too. */
export async function rendererMemoryKiB(browser) {
  if (!sessions.has(browser)) sessions.set(browser, browser.newBrowserCDPSession());
  const { processInfo } = await (await sessions.get(browser)).send("SystemInfo.getProcessInfo");
  let largest = { private: 0, rss: 0 };
  for (const { type, id } of processInfo) {
    if (type !== "renderer") continue;
    try {
      const smaps = readFileSync(`/proc/${id}/smaps_rollup`, "utf8");
      const field = (name) => Number(new RegExp(`^${name}:\\s+(\\d+)`, "m").exec(smaps)?.[1] ?? 0);
      const own = field("Private_Clean") + field("Private_Dirty") + field("Swap");
      if (own > largest.private) largest = { private: own, rss: field("Rss") };
    } catch {
      // Gone meanwhile.
    }
  }
  return largest;
}
const sessions = new WeakMap();

/** Samples `browser`'s renderer memory every 200 ms until `stop()`, which
 * gives the peaks in KiB: `{ private, rss }`. */
export function sampleRenderer(browser) {
  const peak = { private: 0, rss: 0 };
  let on = true;
  browser.once("disconnected", () => (on = false));
  const loop = (async () => {
    while (on) {
      const now = await rendererMemoryKiB(browser).catch(() => peak);
      peak.private = Math.max(peak.private, now.private);
      peak.rss = Math.max(peak.rss, now.rss);
      await new Promise((r) => setTimeout(r, 200));
    }
  })();
  return {
    async stop() {
      on = false;
      await loop;
      return peak;
    },
  };
}

/** Types `code` into the page's code field and presses Enter, as a person would. */
export async function enterCode(page, code) {
  await page.locator("#code").fill("");
  await page.locator("#code").focus();
  await page.keyboard.type(code);
  await page.keyboard.press("Enter");
}
