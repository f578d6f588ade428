// Receiving files by code in the JavaScript package: the CLI's `peerpipe
// send` of a tree (nested folders, empty files, the same contents twice, a
// 64 MiB file) → `Node.receiveCode` writing through a sink into a temporary
// directory; a wrong code, a decline and a failing sink, each a typed error
// on this side and a non-zero exit with its reason on the CLI's.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { createReadStream, existsSync, mkdtempSync, mkdirSync, openAsBlob, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { mkdir, open } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { Node, memoryBytes } from "../index.js";
import { data, nativeSend, startServer } from "./harness.mjs";

const MIB = 1 << 20;

/** Every file under `root`: relative path → size. */
function listing(root) {
  const out = {};
  const walk = (dir) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else out[relative(root, p)] = statSync(p).size;
    }
  };
  walk(root);
  return out;
}

/** SHA-256 of a file, streamed. */
function fileHash(path) {
  return new Promise((resolve, reject) => {
    const h = createHash("sha256");
    createReadStream(path)
      .on("data", (d) => h.update(d))
      .on("end", () => resolve(h.digest("hex")))
      .on("error", reject);
  });
}

/** A sink writing under `root`: a WHATWG WritableStream per file (each
 * write awaited by the receive), or with `plain` an object with write and
 * close. Records the most bytes any one write carried. Partial files stay
 * when a receive fails; with `resume` the sink offers them back. */
function dirSink(root, { plain = false, resume = false, delay = 0 } = {}) {
  const seen = { opened: [], largestWrite: 0, aborted: [] };
  return {
    seen,
    ...(resume && {
      existing: async (path) => (existsSync(join(root, path)) ? await openAsBlob(join(root, path)) : null),
    }),
    async open(path, size, offset) {
      assert.ok(!path.startsWith("/") && !path.split("/").includes(".."), path);
      seen.opened.push([path, size, offset]);
      const full = join(root, path);
      await mkdir(dirname(full), { recursive: true });
      const fh = await open(full, offset > 0 ? "r+" : "w");
      await fh.truncate(offset);
      let at = offset;
      const write = async (bytes) => {
        if (delay) await new Promise((r) => setTimeout(r, delay));
        seen.largestWrite = Math.max(seen.largestWrite, bytes.length);
        let done = 0;
        while (done < bytes.length) {
          const { bytesWritten } = await fh.write(bytes, done, bytes.length - done, at + done);
          done += bytesWritten;
        }
        at += bytes.length;
      };
      if (plain) {
        return { write, close: () => fh.close(), abort: async () => { seen.aborted.push(path); await fh.close(); } };
      }
      return new WritableStream({
        write,
        close: () => fh.close(),
        abort: async () => {
          seen.aborted.push(path);
          await fh.close();
        },
      });
    },
  };
}

/** A tree with nested folders, two empty files, two files with the same
 * contents and one of `bigMiB` MiB; returns its root. */
function makeTree(dir, bigMiB) {
  const root = join(dir, "tree");
  mkdirSync(join(root, "nested", "deeper"), { recursive: true });
  mkdirSync(join(root, "hollow"), { recursive: true });
  writeFileSync(join(root, "a.txt"), "hello from the CLI\n");
  writeFileSync(join(root, "nested", "same-as-a.txt"), "hello from the CLI\n");
  writeFileSync(join(root, "nested", "deeper", "odd.bin"), data(MIB + 7, 3));
  writeFileSync(join(root, "nested", "empty"), "");
  writeFileSync(join(root, "hollow", "also-empty"), "");
  writeFileSync(join(root, "big.bin"), data(bigMiB * MIB, 9));
  return root;
}

test("a tree sent by the CLI arrives through a sink, verified, and the sender exits 0", { timeout: 120_000 }, async () => {
  const server = await startServer();
  const dir = mkdtempSync(join(tmpdir(), "pp-recv-"));
  let node;
  try {
    const src = makeTree(dir, 64);
    const out = join(dir, "out");
    // Relay only: the figure printed is the relay's.
    node = await Node.bind({ server: server.url, token: server.token("web"), label: "web", direct: false });
    const sender = nativeSend(server, server.token("cli"), src);
    const receive = await node.receiveCode(await sender.code);
    // The offer: every file with its size, before anything is fetched.
    const offered = Object.fromEntries(receive.files.map((f) => [f.path, f.size]));
    const expected = Object.fromEntries(Object.entries(listing(src)).map(([p, n]) => [`tree/${p}`, n]));
    assert.deepEqual(offered, expected);
    assert.equal(receive.total, Object.values(expected).reduce((a, b) => a + b, 0));
    assert.match(receive.hash, /^[0-9a-f]{64}$/);
    assert.equal(receive.path, "relay");

    const sink = dirSink(out);
    const progress = [];
    const files = [];
    receive.addEventListener("progress", (e) => progress.push({ bytes: e.bytes, verified: e.verified, total: e.total }));
    receive.addEventListener("file", (e) => files.push(e.path));
    const report = await receive.accept(sink);
    const mbps = receive.total / MIB / report.seconds;
    console.log(`received ${(receive.total / MIB).toFixed(1)} MiB in ${report.seconds.toFixed(2)} s over the relay: ${mbps.toFixed(1)} MiB/s; wasm memory ${(memoryBytes() / MIB).toFixed(1)} MiB`);
    assert.equal(report.files, receive.files.length);
    assert.equal(report.bytes, receive.total);

    // What landed equals the source, file by file.
    assert.deepEqual(listing(out), expected);
    for (const path of Object.keys(listing(src))) {
      assert.equal(await fileHash(join(out, "tree", path)), await fileHash(join(src, path)), path);
    }
    assert.deepEqual(files.sort(), Object.keys(expected).sort());
    // Progress only grows and ends at the total; the sink got bounded writes.
    assert.ok(progress.length > 2, `${progress.length} progress events`);
    for (let i = 1; i < progress.length; i++) assert.ok(progress[i].bytes >= progress[i - 1].bytes);
    assert.equal(progress.at(-1).bytes, receive.total);
    assert.ok(progress.every((p) => p.verified >= p.bytes && p.total === receive.total));
    assert.ok(sink.seen.largestWrite <= MIB, `a write of ${sink.seen.largestWrite} bytes`);
    // The 64 MiB file never sat in the core's memory whole.
    assert.ok(memoryBytes() < 64 * MIB, `wasm memory grew to ${memoryBytes()} bytes`);

    const sent = await sender.done;
    assert.equal(sent.code, 0, sent.stderr);
    assert.match(sent.stderr, /verified everything/);
    await assert.rejects(receive.accept(sink), (e) => e.code === "Busy");
  } finally {
    node?.shutdown();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a slow sink holds the transfer back: verified bytes waiting for it stay bounded", { timeout: 120_000 }, async () => {
  const server = await startServer();
  const dir = mkdtempSync(join(tmpdir(), "pp-recv-"));
  let node;
  try {
    const file = join(dir, "file");
    writeFileSync(file, data(48 * MIB, 8));
    node = await Node.bind({ server: server.url, token: server.token("web"), direct: false });
    const sender = nativeSend(server, server.token("cli"), file);
    const receive = await node.receiveCode(await sender.code);
    const inner = dirSink(join(dir, "out"), { plain: true });
    // Every write takes 25 ms: about 40 MiB/s at most, slower than the relay.
    const slow = {
      async open(path, size) {
        const f = await inner.open(path, size);
        return {
          write: async (bytes) => {
            await new Promise((r) => setTimeout(r, 25));
            return f.write(bytes);
          },
          close: () => f.close(),
        };
      },
    };
    let ahead = 0;
    receive.addEventListener("progress", (e) => (ahead = Math.max(ahead, e.verified - e.bytes)));
    await receive.accept(slow);
    // 8 MiB may wait for the sink and 8 MiB more be on its way (the bounds
    // of the receive), plus the write in progress.
    assert.ok(ahead > 0, "the fetching ran ahead of the sink");
    assert.ok(ahead <= 17 * MIB, `${(ahead / MIB).toFixed(1)} MiB verified ahead of the sink`);
    assert.ok(memoryBytes() < 48 * MIB, `wasm memory grew to ${memoryBytes()} bytes`);
    assert.equal(await fileHash(join(dir, "out", "file")), await fileHash(file));
    const sent = await sender.done;
    assert.equal(sent.code, 0, sent.stderr);
    console.log(`slow sink: at most ${(ahead / MIB).toFixed(1)} MiB verified ahead of it`);
  } finally {
    node?.shutdown();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a sender that goes away mid-transfer, or a cancel while the sink hangs, ends the receive with a typed error", { timeout: 120_000 }, async () => {
  const server = await startServer();
  const dir = mkdtempSync(join(tmpdir(), "pp-recv-"));
  let node;
  try {
    const file = join(dir, "file");
    writeFileSync(file, data(32 * MIB, 10));
    node = await Node.bind({ server: server.url, token: server.token("web"), direct: false });

    // The sender is killed once the first bytes are written.
    const sender = nativeSend(server, server.token("cli"), file);
    const receive = await node.receiveCode(await sender.code);
    const inner = dirSink(join(dir, "gone"), { plain: true });
    const slow = {
      async open(path, size) {
        const f = await inner.open(path, size);
        return {
          write: async (bytes) => {
            await new Promise((r) => setTimeout(r, 25));
            return f.write(bytes);
          },
          close: () => f.close(),
          abort: (why) => f.abort(why),
        };
      },
    };
    receive.addEventListener("progress", (e) => e.bytes > 0 && sender.child.kill("SIGKILL"), { once: true });
    const started = Date.now();
    const error = await receive.accept(slow).then(() => null, (e) => e);
    assert.ok(error, "the receive failed");
    assert.ok(["PeerGone", "PeerDisconnected", "PeerClosed", "TimedOut"].includes(error.code), `${error.code}: ${error.message}`);
    assert.ok(Date.now() - started < 30_000, `ended after ${Date.now() - started} ms`);
    assert.deepEqual(inner.seen.aborted, ["file"]);
    console.log(`sender killed: ${error.code} after ${Date.now() - started} ms (${error.message})`);
    await sender.done;

    // A sink whose write never settles: cancel() still ends the receive.
    const second = nativeSend(server, server.token("cli"), file);
    const stuck = await node.receiveCode(await second.code);
    let aborted = false;
    let writes = 0;
    const hanging = { open: () => ({ write: () => (++writes === 1 ? undefined : new Promise(() => {})), close() {}, abort: () => (aborted = true) }) };
    stuck.addEventListener("progress", () => setTimeout(() => stuck.cancel(), 50), { once: true });
    await assert.rejects(stuck.accept(hanging), (e) => e.code === "Cancelled");
    assert.equal(aborted, true);
    const sent = await second.done;
    assert.notEqual(sent.code, 0, sent.stderr);
    assert.match(sent.stderr, /the receiver ended the transfer/);
  } finally {
    node?.shutdown();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a receive resumes from what the sink holds: what verifies is kept, the rest fetched", { timeout: 120_000 }, async () => {
  const server = await startServer();
  const dir = mkdtempSync(join(tmpdir(), "pp-recv-"));
  let node;
  try {
    const src = join(dir, "tree");
    mkdirSync(join(src, "sub"), { recursive: true });
    writeFileSync(join(src, "a.bin"), data(8 * MIB, 14));
    writeFileSync(join(src, "sub", "b.bin"), data(3 * MIB + 5, 15));
    writeFileSync(join(src, "sub", "empty"), "");
    const out = join(dir, "out");
    node = await Node.bind({ server: server.url, token: server.token("web"), direct: false });

    // A first attempt, cancelled after 4 MiB of a.bin (its sink is slow:
    // every write of up to 1 MiB takes 30 ms and more).
    const first = nativeSend(server, server.token("cli"), src);
    const one = await node.receiveCode(await first.code);
    one.addEventListener("progress", (e) => e.bytes >= 4 * MIB && one.cancel());
    await assert.rejects(one.accept(dirSink(out, { plain: true, resume: true, delay: 30 })), (e) => e.code === "Cancelled");
    await first.done;
    const partial = statSync(join(out, "tree", "a.bin")).size;
    assert.ok(partial >= 4 * MIB && partial < 8 * MIB, `${partial} bytes of a.bin kept`);
    assert.ok(!existsSync(join(out, "tree", "sub", "b.bin")));
    // A byte of the kept part goes bad (at 1 MiB + 10): only the first MiB verifies.
    const kept = readFileSync(join(out, "tree", "a.bin"));
    kept[MIB + 10] ^= 0xff;
    writeFileSync(join(out, "tree", "a.bin"), kept);

    // The second attempt, by a new code: 1 MiB reused, the rest fetched.
    const second = nativeSend(server, server.token("cli"), src);
    const two = await node.receiveCode(await second.code);
    const sink = dirSink(out, { resume: true });
    const report = await two.accept(sink);
    assert.equal(report.reused, MIB);
    assert.equal(report.fetched, two.total - MIB);
    assert.deepEqual(sink.seen.opened, [
      ["tree/a.bin", 8 * MIB, MIB],
      ["tree/sub/b.bin", 3 * MIB + 5, 0],
      ["tree/sub/empty", 0, 0],
    ]);
    for (const path of ["a.bin", "sub/b.bin", "sub/empty"]) {
      assert.equal(await fileHash(join(out, "tree", path)), await fileHash(join(src, path)), path);
    }
    const sent = await second.done;
    assert.equal(sent.code, 0, sent.stderr);

    // A third time, everything is there: nothing is fetched, the sender still exits 0.
    const third = nativeSend(server, server.token("cli"), src);
    const three = await node.receiveCode(await third.code);
    const again = await three.accept(dirSink(out, { resume: true }));
    assert.equal(again.fetched, 0);
    assert.equal(again.reused, three.total);
    assert.equal((await third.done).code, 0);
  } finally {
    node?.shutdown();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a text sent with send --text is received into memory, verified", { timeout: 120_000 }, async () => {
  const server = await startServer();
  let node;
  try {
    node = await Node.bind({ server: server.url, token: server.token("web"), direct: false });
    const text = "the wifi password is ünïcode-42 🙂\nsecond line";
    const sender = nativeSend(server, server.token("cli"), "--text", text);
    const receive = await node.receiveCode(await sender.code);
    assert.equal(receive.kind, "text");
    assert.equal(receive.files.length, 1);
    assert.equal(await receive.acceptText(), text);
    const sent = await sender.done;
    assert.equal(sent.code, 0, sent.stderr);
    // Files are not a text.
    const dir = mkdtempSync(join(tmpdir(), "pp-recv-"));
    writeFileSync(join(dir, "f"), "x");
    const files = nativeSend(server, server.token("cli"), join(dir, "f"));
    const offer = await node.receiveCode(await files.code);
    assert.equal(offer.kind, "files");
    await assert.rejects(offer.acceptText(), (e) => e.code === "NotText");
    await offer.decline();
    await files.done;
    rmSync(dir, { recursive: true, force: true });
  } finally {
    node?.shutdown();
    server.close();
  }
});

test("a wrong code is a typed error, and the sender gives up", { timeout: 120_000 }, async () => {
  const server = await startServer();
  const dir = mkdtempSync(join(tmpdir(), "pp-recv-"));
  let node;
  try {
    const file = join(dir, "file");
    writeFileSync(file, data(MIB, 4));
    node = await Node.bind({ server: server.url, token: server.token("web") });
    const sender = nativeSend(server, server.token("cli"), file);
    const [n, w1] = (await sender.code).split("-");
    const wrong = `${n}-${w1 === "amber" ? "apple" : "amber"}-falcon`;
    await assert.rejects(node.receiveCode(wrong), (e) => e.code === "WrongCode" && /code/i.test(e.message));
    const sent = await sender.done;
    assert.notEqual(sent.code, 0, sent.stderr);
    await assert.rejects(node.receiveCode("not a code"), (e) => e.code === "Malformed");
  } finally {
    node?.shutdown();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a declined offer fetches nothing, and the CLI sender exits saying so", { timeout: 120_000 }, async () => {
  const server = await startServer();
  const dir = mkdtempSync(join(tmpdir(), "pp-recv-"));
  let node;
  try {
    const src = makeTree(dir, 1);
    node = await Node.bind({ server: server.url, token: server.token("web") });
    const sender = nativeSend(server, server.token("cli"), src);
    const receive = await node.receiveCode(await sender.code);
    assert.equal(receive.files.length, 6);
    await receive.decline();
    const sent = await sender.done;
    assert.notEqual(sent.code, 0, sent.stderr);
    assert.match(sent.stderr, /declined/);
    await assert.rejects(receive.accept(dirSink(join(dir, "out"))), (e) => e.code === "Busy");
  } finally {
    node?.shutdown();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a sink that fails ends the receive with Sink, aborts the file, and the sender hears it ended", { timeout: 120_000 }, async () => {
  const server = await startServer();
  const dir = mkdtempSync(join(tmpdir(), "pp-recv-"));
  let node;
  try {
    const file = join(dir, "file");
    writeFileSync(file, data(8 * MIB, 6));
    node = await Node.bind({ server: server.url, token: server.token("web") });
    const sender = nativeSend(server, server.token("cli"), file);
    const receive = await node.receiveCode(await sender.code);
    const inner = dirSink(join(dir, "out"), { plain: true });
    let writes = 0;
    const failing = {
      async open(path, size) {
        const f = await inner.open(path, size);
        return {
          write: async (bytes) => {
            if (++writes === 3) throw new Error("disk full (simulated)");
            return f.write(bytes);
          },
          close: () => f.close(),
          abort: (why) => f.abort(why),
        };
      },
    };
    await assert.rejects(receive.accept(failing), (e) => e.code === "Sink" && /disk full/.test(e.message) && e.cause instanceof Error);
    assert.deepEqual(inner.seen.aborted, ["file"]);
    const sent = await sender.done;
    assert.notEqual(sent.code, 0, sent.stderr);
    assert.match(sent.stderr, /the receiver ended the transfer/);
  } finally {
    node?.shutdown();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
