// Helpers of the send tests: a tree of files on disk, the entries
// `Node.sendFiles` takes for it (file-backed Blobs, read from disk as they
// are sent), listings and hashes to compare what arrived.
import { createHash } from "node:crypto";
import { createReadStream, mkdirSync, openAsBlob, openSync, closeSync, readdirSync, statSync, writeFileSync, writeSync } from "node:fs";
import { join, relative } from "node:path";
import { data } from "./harness.mjs";

export const MIB = 1 << 20;

/** A file of `mib` MiB of pseudo-random data, written 8 MiB at a time. */
export function writeBig(path, mib, seed) {
  const fd = openSync(path, "w");
  try {
    for (let at = 0; at < mib; at += 8) writeSync(fd, data(Math.min(8, mib - at) * MIB, seed + at));
  } finally {
    closeSync(fd);
  }
}

/** A tree under `dir/name`: nested folders, an empty file, a small odd-sized
 * one and one of `bigMiB` MiB; returns its root. */
export function makeTree(dir, name, bigMiB) {
  const root = join(dir, name);
  mkdirSync(join(root, "nested", "deeper"), { recursive: true });
  writeFileSync(join(root, "a.txt"), "hello from Node.js\n");
  writeFileSync(join(root, "nested", "deeper", "odd.bin"), data(MIB + 7, 3));
  writeFileSync(join(root, "nested", "empty"), "");
  writeBig(join(root, "big.bin"), bigMiB, 9);
  return root;
}

/** Every file under `root`: relative path → size. */
export function listing(root) {
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

/** `sendFiles` entries for every file under `root`, named `prefix/...` as
 * a picked folder's `webkitRelativePath` would be. */
export async function entriesOf(root, prefix) {
  return Promise.all(
    Object.keys(listing(root)).map(async (path) => ({ path: `${prefix}/${path}`, file: await openAsBlob(join(root, path)) })),
  );
}

/** SHA-256 of a file, streamed. */
export function fileHash(path) {
  return new Promise((resolve, reject) => {
    const h = createHash("sha256");
    createReadStream(path)
      .on("data", (d) => h.update(d))
      .on("end", () => resolve(h.digest("hex")))
      .on("error", reject);
  });
}
