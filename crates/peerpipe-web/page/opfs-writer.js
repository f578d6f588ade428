// The page's writer into the Origin Private File System, in a dedicated
// worker: synchronous access handles write each verified chunk in place, so
// what was written survives a reload, a crash or a closed tab (a
// `createWritable()` stream keeps its data aside until it is closed, and a
// reload throws it away). Requests are `{ id, op, ... }`; every one is
// answered `{ id, value }` or `{ id, error: { name, message } }`.

const open = new Map();
let next = 1;

async function directory(parts, create) {
  let dir = await navigator.storage.getDirectory();
  for (const part of parts) dir = await dir.getDirectoryHandle(part, { create });
  return dir;
}

const ops = {
  // Opens `base/path` for writing from `offset`: what lies past it is cut.
  async open({ base, path, offset }) {
    const parts = [...base, ...path.split("/")];
    const name = parts.pop();
    const parent = await directory(parts, true);
    const handle = await (await parent.getFileHandle(name, { create: true })).createSyncAccessHandle();
    handle.truncate(offset);
    const h = next++;
    open.set(h, { handle, at: offset, parent, name });
    return h;
  },
  write({ h, bytes }) {
    const file = open.get(h);
    let done = 0;
    while (done < bytes.length) {
      const n = file.handle.write(bytes.subarray(done), { at: file.at + done });
      if (n <= 0) throw Object.assign(new Error("the file took no bytes"), { name: "QuotaExceededError" });
      done += n;
    }
    file.at += done;
  },
  close({ h }) {
    const file = open.get(h);
    open.delete(h);
    file.handle.flush();
    file.handle.close();
  },
  // Stops writing; with `remove` the file goes too.
  async abort({ h, remove }) {
    const file = open.get(h);
    if (!file) return;
    open.delete(h);
    try {
      file.handle.flush();
    } finally {
      file.handle.close();
    }
    if (remove) await file.parent.removeEntry(file.name);
  },
};

self.onmessage = async ({ data }) => {
  try {
    const value = await ops[data.op](data);
    self.postMessage({ id: data.id, value });
  } catch (e) {
    self.postMessage({ id: data.id, error: { name: e?.name ?? "Error", message: String(e?.message ?? e) } });
  }
};
