// One-time codes in the JavaScript package: two users' devices meet by a code
// (Node.js ↔ Node.js and Node.js ↔ the native CLI), and a wrong, malformed or
// unknown code is a typed error.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { Node } from "../index.js";
import { data, nativeSend, run, sha256, startServer } from "./harness.mjs";

const MIB = 1 << 20;

test("a code connects two users' devices: messages and a stream, end to end", async () => {
  const server = await startServer();
  try {
    const alice = await Node.bind({ server: server.url, token: server.token("alice"), label: "alice" });
    const bob = await Node.bind({ server: server.url, token: server.token("bob"), label: "bob" });
    const offer = await alice.offerCode();
    assert.match(offer.code, /^[1-9][0-9]*-[a-z]+-[a-z]+$/);
    assert.ok(offer.validFor > 0, `validFor ${offer.validFor}`);
    const [ab, ba] = await Promise.all([offer.accept(), bob.claimCode(offer.code)]);
    assert.equal(ab.service, "code");
    assert.equal(ba.service, "code");
    assert.equal(ab.peer.id, bob.id);
    assert.equal(ba.peer.id, alice.id);
    const heard = [];
    ab.addEventListener("message", (e) => heard.push(e.text()));
    await ba.sendConfirmed("hello alice");
    assert.deepEqual(heard, ["hello alice"]);
    const payload = data(4 * MIB, 11);
    const got = new Promise((resolve) =>
      ba.addEventListener("stream", async (s) => {
        const parts = [];
        for await (const c of s.readable) parts.push(c);
        resolve(Buffer.concat(parts));
      }),
    );
    const { writable } = await ab.openStream();
    const w = writable.getWriter();
    await w.write(payload);
    await w.close();
    assert.equal(sha256(await got), sha256(payload));
    // The code was used: claiming it again finds nothing.
    await assert.rejects(bob.claimCode(offer.code), (e) => e.code === "NotFound", "a used code");
    alice.shutdown();
    bob.shutdown();
  } finally {
    server.close();
  }
});

test("a wrong, malformed, unknown or withdrawn code is a typed error", async () => {
  const server = await startServer();
  try {
    const alice = await Node.bind({ server: server.url, token: server.token("alice") });
    const bob = await Node.bind({ server: server.url, token: server.token("bob") });
    const offer = await alice.offerCode();
    const [n, w1] = offer.code.split("-");
    const wrong = `${n}-${w1 === "amber" ? "apple" : "amber"}-falcon`;
    const [accepted, claimed] = await Promise.allSettled([offer.accept(), bob.claimCode(wrong)]);
    assert.equal(accepted.status, "rejected");
    assert.equal(accepted.reason.code, "WrongCode", accepted.reason.message);
    assert.equal(claimed.status, "rejected");
    assert.equal(claimed.reason.code, "WrongCode", claimed.reason.message);
    await assert.rejects(bob.claimCode("not a code"), (e) => e.code === "Malformed");
    await assert.rejects(bob.claimCode("65000-amber-falcon"), (e) => e.code === "NotFound");
    const withdrawn = await alice.offerCode();
    const waiting = withdrawn.accept();
    withdrawn.cancel();
    await assert.rejects(waiting, (e) => e.code === "Cancelled");
    // A request on alice's link, answered after the server took the release
    // (a device's messages are handled in order; bob's are not ordered with them).
    await alice.onlinePeers();
    await assert.rejects(bob.claimCode(withdrawn.code), (e) => e.code === "NotFound", "a withdrawn code");
    alice.shutdown();
    bob.shutdown();
  } finally {
    server.close();
  }
});

test("codes interoperate with the native CLI both ways", async () => {
  const server = await startServer();
  const dir = mkdtempSync(join(tmpdir(), "pp-code-"));
  try {
    const node = await Node.bind({ server: server.url, token: server.token("web"), label: "web" });
    // The CLI offers (send), the package claims: the PAKE and the
    // code-bound handshake agree with the native ones.
    const file = join(dir, "file");
    writeFileSync(file, data(MIB, 5));
    const sender = nativeSend(server, server.token("cli"), file);
    const conn = await node.claimCode(await sender.code);
    assert.equal(conn.service, "code");
    await conn.close();
    sender.child.kill("SIGKILL");
    await sender.done;
    // The package offers, the CLI claims (receive).
    const offer = await node.offerCode();
    const receiving = run(["receive", offer.code, "-o", join(dir, "out"), "--server", server.url, "--token", server.token("cli")], {
      ms: 30_000,
    });
    const accepted = await offer.accept();
    assert.equal(accepted.service, "code");
    assert.notEqual(accepted.peer.id, node.id);
    // The page speaks no sharing protocol: the CLI ends with an error, not a hang.
    await accepted.close();
    const out = await receiving;
    assert.notEqual(out.code, 0, out.stderr);
    node.shutdown();
  } finally {
    server.close();
  }
});
