// Helpers the tests use both in Node.js and in the page (imported there as
// "/test/shared.mjs"): nothing here may need Node.js.

/** `n` pseudo-random bytes (xorshift, seeded), fast to make in JS. */
export function data(n, seed = 1) {
  const out = new Uint8Array(n);
  const view = new DataView(out.buffer);
  let x = seed >>> 0 || 1;
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    view.setUint32(i, x >>> 0);
  }
  for (; i < n; i++) out[i] = i & 0xff;
  return out;
}

/** Everything `readable` yields, in one array. */
export async function readAll(readable) {
  const parts = [];
  let n = 0;
  for await (const chunk of readable) {
    parts.push(chunk);
    n += chunk.length;
  }
  const all = new Uint8Array(n);
  let off = 0;
  for (const p of parts) {
    all.set(p, off);
    off += p.length;
  }
  return all;
}

/** SHA-256 in hex (WebCrypto). */
export async function sha256hex(bytes) {
  const hash = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return [...hash].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** Resolves true once `conn` is on `path`, false after `ms`. */
export function onPath(conn, path, ms) {
  return new Promise((resolve) => {
    if (conn.path === path) return resolve(true);
    const t = setTimeout(() => resolve(false), ms);
    conn.addEventListener("pathchange", (e) => {
      if (e.path === path) {
        clearTimeout(t);
        resolve(true);
      }
    });
  });
}

/** Waits until device `id` is among `node`'s online peers, within `ms`. */
export async function online(node, id, ms) {
  const end = Date.now() + ms;
  while (!(await node.onlinePeers()).some((p) => p.id === id)) {
    if (Date.now() > end) throw new Error(`device ${id} did not come online`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
