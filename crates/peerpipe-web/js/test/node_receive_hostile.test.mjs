// A hostile sender: a Node.js device that speaks the share protocol itself
// over a code's connection, with what the real CLI served it (collection,
// group hashes, data) altered in transit. Every alteration is a typed error
// on the receiving side, and nothing unverified reaches the sink.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Node } from "../index.js";
import { data, nativeSend, startServer } from "./harness.mjs";
import { readAll } from "./shared.mjs";

const GROUP = 16 * 1024;
const SIZE = 17 * GROUP + 5;
const FAILED = "peerpipe-share-failed: ";

function u64(n) {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(n));
  return b;
}

const cat = (...parts) => Buffer.concat(parts.map((p) => Buffer.from(p)));

/** Sends `request` on a new stream of `conn` and reads the whole answer. */
async function ask(conn, request) {
  const { readable, writable } = await conn.openStream();
  const w = writable.getWriter();
  await w.write(request);
  await w.close();
  return Buffer.from(await readAll(readable));
}

/** What the CLI's `send` of one file serves: its announce message and its
 * answers to each kind of request. */
async function harvest(server, dir) {
  const file = join(dir, "file");
  const content = Buffer.from(data(SIZE, 12));
  writeFileSync(file, content);
  const sender = nativeSend(server, server.token("cli"), file);
  const node = await Node.bind({ server: server.url, token: server.token("harvest"), direct: false });
  const conn = await node.claimCode(await sender.code);
  const announce = await new Promise((resolve) => conn.addEventListener("message", (e) => resolve(Buffer.from(e.data)), { once: true }));
  const hash = announce.subarray(1);
  const answers = {
    collection: await ask(conn, cat([1], hash)),
    outboards: await ask(conn, cat([2], hash)),
    have: await ask(conn, cat([3], hash)),
    get: await ask(conn, cat([4], hash, u64(0), u64(17 + 1))),
  };
  assert.equal(answers.get.length, 1 + SIZE);
  sender.child.kill("SIGKILL");
  await sender.done;
  node.shutdown();
  return { announce, hash, answers, content };
}

/** Offers a code from a fresh device that announces `announce` (a message,
 * or several sent 300 ms apart) and answers
 * each request through `answer(kind, request, answers)`; `heard` collects
 * the messages the receiver sends. */
async function hostile(server, announce, answer) {
  const node = await Node.bind({ server: server.url, token: server.token("hostile"), direct: false });
  const offer = await node.offerCode();
  const heard = [];
  const connected = offer.accept().then(async (conn) => {
    conn.addEventListener("message", (e) => heard.push(e.text()));
    conn.addEventListener("stream", async (s) => {
      try {
        const request = Buffer.from(await readAll(s.readable));
        const w = s.writable.getWriter();
        await w.write(answer(request[0], request));
        await w.close();
      } catch {
        // The receiver gave up on this request.
      }
    });
    for (const [i, m] of (Array.isArray(announce) ? announce : [announce]).entries()) {
      if (i > 0) await new Promise((r) => setTimeout(r, 300));
      await conn.send(m);
    }
    return conn;
  });
  return { node, code: offer.code, heard, connected };
}

/** A sink that keeps what it was given, per path. */
function memorySink() {
  const files = {};
  return {
    files,
    open(path) {
      files[path] = { bytes: [], aborted: false, closed: false };
      return {
        write: (b) => files[path].bytes.push(Buffer.from(b)),
        close: () => (files[path].closed = true),
        abort: () => (files[path].aborted = true),
      };
    },
  };
}

test("a sender that alters data, hashes or lengths gets a typed error, and nothing unverified is written", { timeout: 120_000 }, async () => {
  const server = await startServer();
  const dir = mkdtempSync(join(tmpdir(), "pp-hostile-"));
  const nodes = [];
  try {
    const h = await harvest(server, dir);
    // A fresh receiving device per scenario: the server limits how many
    // control messages (code claims among them) one device sends.
    let receiver;
    const fresh = async () => {
      receiver = await Node.bind({ server: server.url, token: server.token("web"), direct: false });
      nodes.push(receiver);
    };
    const serveAs = (alter) => (kind, request) => {
      const honest = { 1: h.answers.collection, 2: h.answers.outboards, 3: h.answers.have }[kind];
      if (kind === 4) {
        const view = new DataView(request.buffer, request.byteOffset);
        const start = Number(view.getBigUint64(33));
        const end = Number(view.getBigUint64(41));
        const body = h.content.subarray(start * GROUP, Math.min(end * GROUP, SIZE));
        return alter(kind, cat([0], body));
      }
      return alter(kind, honest);
    };
    const start = async (announce, alter) => {
      await fresh();
      const s = await hostile(server, announce, serveAs(alter));
      nodes.push(s.node);
      return s;
    };

    // One flipped bit in group 5: groups 0-4 may be written, nothing after.
    {
      const s = await start(h.announce, (kind, body) => {
        if (kind !== 4) return body;
        const bad = Buffer.from(body);
        bad[1 + 5 * GROUP + 100] ^= 1;
        return bad;
      });
      const receive = await receiver.receiveCode(s.code);
      const sink = memorySink();
      await assert.rejects(receive.accept(sink), (e) => e.code === "Corrupt" && /verification/.test(e.message));
      const got = Buffer.concat(sink.files.file.bytes);
      assert.ok(got.length <= 5 * GROUP, `${got.length} bytes written`);
      assert.ok(got.equals(h.content.subarray(0, got.length)), "only verified bytes");
      assert.equal(sink.files.file.aborted, true);
      assert.equal(sink.files.file.closed, false);
      await s.connected;
      const deadline = Date.now() + 5_000;
      while (!s.heard.some((m) => m.startsWith(FAILED)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      assert.ok(s.heard.some((m) => m.startsWith(FAILED) && /verification/.test(m)), s.heard.join("; "));
    }
    // A collection that is not the one announced.
    {
      const other = Buffer.from(h.announce);
      other[5] ^= 1;
      const s = await start(other, (_, body) => body);
      await assert.rejects(receiver.receiveCode(s.code), (e) => e.code === "Corrupt");
    }
    // A collection claiming to be a terabyte long.
    {
      const s = await start(h.announce, (kind, body) => (kind === 1 ? cat([0], u64(2 ** 40), body.subarray(9)) : body));
      await assert.rejects(receiver.receiveCode(s.code), (e) => e.code === "TooLarge");
    }
    // Group hashes cut short, and group hashes altered.
    {
      const s = await start(h.announce, (kind, body) => (kind === 2 ? body.subarray(0, body.length - 32) : body));
      await assert.rejects(receiver.receiveCode(s.code), (e) => e.code === "Protocol");
      const t = await start(h.announce, (kind, body) => {
        if (kind !== 2) return body;
        const bad = Buffer.from(body);
        bad[40] ^= 1;
        return bad;
      });
      await assert.rejects(receiver.receiveCode(t.code), (e) => e.code === "Corrupt");
    }
    // Data past what was asked for.
    {
      const s = await start(h.announce, (kind, body) => (kind === 4 ? cat(body, [1, 2, 3]) : body));
      const receive = await receiver.receiveCode(s.code);
      await assert.rejects(receive.accept(memorySink()), (e) => e.code === "Protocol");
    }
    // A sender still hashing says so first; then the list arrives as usual.
    {
      const s = await start([Buffer.from([2]), h.announce], (_, body) => body);
      const receive = await receiver.receiveCode(s.code);
      assert.equal(receive.total, SIZE);
      const sink = memorySink();
      await receive.accept(sink);
      assert.ok(Buffer.concat(sink.files.file.bytes).equals(h.content));
      assert.equal(sink.files.file.closed, true);
    }
    // A "text" of 272 KiB (a text is one file of at most 64 KiB).
    {
      const text = Buffer.from(h.announce);
      text[0] = 3;
      const s = await start(text, (_, body) => body);
      await assert.rejects(receiver.receiveCode(s.code), (e) => e.code === "Protocol" && /text/.test(e.message));
    }
    // Not a sender at all, and a sender that gives up.
    {
      const s = await start(Buffer.from("hello"), (_, body) => body);
      await assert.rejects(receiver.receiveCode(s.code), (e) => e.code === "NotSending");
      const t = await start(Buffer.from(`${FAILED}out of disk`), (_, body) => body);
      await assert.rejects(receiver.receiveCode(t.code), (e) => e.code === "SenderStopped" && /out of disk/.test(e.message));
    }
  } finally {
    for (const n of nodes) n.shutdown();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
