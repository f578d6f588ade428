// Test harness: a real `peerpipe serve` on 127.0.0.1, tokens, native CLI
// peers, and pseudo-random data with its hash. Every wait is bounded.
import { spawn, execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("../../../../", import.meta.url));
/** The release CLI (scripts/test-web builds it), in CARGO_TARGET_DIR when set. */
export const cli = process.env.PEERPIPE_BIN ?? join(process.env.CARGO_TARGET_DIR ?? join(root, "target"), "release/peerpipe");

async function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on("error", reject);
  });
}

/** Resolves when `text` shows up in `child`'s stderr, within `ms`. */
function waitFor(child, text, ms) {
  return new Promise((resolve, reject) => {
    let seen = "";
    const timer = setTimeout(() => reject(new Error(`no "${text}" within ${ms} ms; stderr: ${seen}`)), ms);
    child.stderr.on("data", (d) => {
      seen += d;
      if (seen.includes(text)) {
        clearTimeout(timer);
        resolve(seen);
      }
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`exited with ${code} before "${text}"; stderr: ${seen}`));
    });
  });
}

/** A server on a free port with its own secret; `close()` ends it. */
export async function startServer(extra = []) {
  const dir = mkdtempSync(join(tmpdir(), "peerpipe-web-"));
  const port = await freePort();
  const secretFile = join(dir, "secret");
  const start = async () => {
    const child = spawn(cli, ["serve", "--listen", `127.0.0.1:${port}`, "--secret-file", secretFile, ...extra], {
      stdio: ["ignore", "ignore", "pipe"],
    });
    await waitFor(child, "listening", 10_000);
    return child;
  };
  let child = await start();
  const url = `ws://127.0.0.1:${port}/v1/signal`;
  return {
    url,
    dir,
    token: (user) => execFileSync(cli, ["token", "--secret-file", secretFile, "--user", user]).toString().trim(),
    /** Kills the server (SIGKILL) and starts it again on the same port. */
    async restart() {
      const gone = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGKILL");
      await gone;
      child = await start();
    },
    close() {
      child.kill("SIGKILL");
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A native device's id (its identity file is created on first use). */
export function deviceId(identity) {
  return execFileSync(cli, ["id", "--identity", identity]).toString().trim();
}

/** `peerpipe send PATH...` as user `token`'s device: `code` resolves with
 * the code it prints, `done` with its exit `{ code, stderr }`. */
export function nativeSend(server, token, ...paths) {
  const child = spawn(cli, ["send", ...paths, "--server", server.url, "--token", token], { stdio: ["ignore", "pipe", "pipe"] });
  let err = "";
  child.stderr.on("data", (d) => (err += d));
  const done = new Promise((resolve) => child.on("exit", (code) => resolve({ code, stderr: err })));
  const code = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no code within 20 s; stderr: ${err}`)), 20_000);
    let out = "";
    child.stdout.on("data", (d) => {
      out += d;
      const line = out.split("\n").find((l) => /^[0-9]+-[a-z]+-[a-z]+$/.test(l.trim()));
      if (line) {
        clearTimeout(timer);
        resolve(line.trim());
      }
    });
    child.on("exit", (c) => reject(new Error(`send exited with ${c} before a code; stderr: ${err}`)));
  });
  return { child, code, done };
}

/** Runs the CLI with `args`; resolves `{ code, stdout, stderr }` within `ms`. */
export function run(args, { stdin, ms = 60_000, env = {} } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(cli, args, { stdio: ["pipe", "pipe", "pipe"], env: { ...process.env, ...env } });
    const out = [];
    let err = "";
    child.stdout.on("data", (d) => out.push(d));
    child.stderr.on("data", (d) => (err += d));
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`peerpipe ${args[0]} did not finish within ${ms} ms; stderr: ${err}`));
    }, ms);
    child.on("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: Buffer.concat(out), stderr: err });
    });
    // A child that exits early closes its stdin: its exit code tells why.
    child.stdin.on("error", () => {});
    if (stdin) child.stdin.end(stdin);
    else child.stdin.end();
  });
}

export { data } from "./shared.mjs";

/** SHA-256 in hex. */
export function sha256(bytes) {
  return createHash("sha256").update(bytes).digest("hex");
}

/** Polls `check` every 50 ms until it returns a value, within `ms`. */
export async function until(check, ms, what) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
