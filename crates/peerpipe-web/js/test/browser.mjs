// Real headless Chromium (Debian's `chromium`) driven by playwright-core, and a
// static server on 127.0.0.1 for the package and a blank page.
import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { extname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const pkgRoot = fileURLToPath(new URL("../", import.meta.url));
const types = { ".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm", ".html": "text/html" };

/** Serves the package directory; `close()` stops it. */
export async function serveFiles() {
  const http = createServer(async (req, res) => {
    const path = normalize(decodeURIComponent(new URL(req.url, "http://x").pathname)).replace(/^(\.\.[/\\])+/, "");
    if (path === "/" || path === "/blank.html") {
      res.writeHead(200, { "content-type": "text/html" });
      return res.end("<!doctype html><title>peerpipe test</title>");
    }
    try {
      const body = await readFile(join(pkgRoot, path));
      res.writeHead(200, { "content-type": types[extname(path)] ?? "application/octet-stream" });
      res.end(body);
    } catch {
      res.writeHead(404);
      res.end();
    }
  });
  await new Promise((resolve) => http.listen(0, "127.0.0.1", resolve));
  const { port } = http.address();
  return { url: `http://127.0.0.1:${port}`, close: () => http.close() };
}

/** A fresh headless Chromium on a blank page of `site`. */
export async function openPage(site, extraArgs = []) {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-background-networking", "--disable-dev-shm-usage", ...extraArgs],
  });
  const page = await browser.newPage();
  page.on("pageerror", (e) => console.error("page error:", e));
  await page.goto(`${site.url}/blank.html`);
  return { browser, page };
}
