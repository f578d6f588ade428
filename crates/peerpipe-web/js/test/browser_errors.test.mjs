// Typed errors in the page: a wrong token, another user's device, an
// oversized message; the page goes on working after each.
import { test } from "node:test";
import assert from "node:assert/strict";
import { startServer } from "./harness.mjs";
import { openPage, serveFiles } from "./browser.mjs";

test("wrong token, another user's device and an oversized message are typed errors in Chromium", async () => {
  const server = await startServer();
  const site = await serveFiles();
  const { browser, page } = await openPage(site);
  try {
    const got = await page.evaluate(
      async ({ server, alice, bob }) => {
        const { Node } = await import("/index.js");
        const { online } = await import("/test/shared.mjs");
        const code = (p) => p.then(() => "no error", (e) => `${e.code}: ${e instanceof Error}`);
        const out = {};
        out.token = await code(Node.bind({ server, token: "not-a-token", direct: false }));
        const a = await Node.bind({ server, token: alice, keyStore: "a", direct: false });
        const b = await Node.bind({ server, token: alice, keyStore: "b", direct: false });
        const other = await Node.bind({ server, token: bob, keyStore: "c", direct: false });
        out.otherUser = await code(a.connect(other.id));
        b.addEventListener("incomingconnection", (e) => e.accept());
        await online(a, b.id, 5_000);
        const conn = await a.connect(b.id);
        out.tooLarge = await code(conn.send(new Uint8Array((16 << 20) + 1)));
        out.after = await code(conn.sendConfirmed("still fine"));
        return out;
      },
      { server: server.url, alice: server.token("alice"), bob: server.token("bob") },
    );
    assert.deepEqual(got, {
      token: "BadToken: true",
      otherUser: "NotFound: true",
      tooLarge: "MessageTooLarge: true",
      after: "no error",
    });
  } finally {
    await browser.close();
    site.close();
    server.close();
  }
});
