// peerpipe for browsers and Node.js 20+: a thin JavaScript layer (events,
// WHATWG streams, the device key) over the Rust core in WebAssembly.
import init, { WasmNode, WasmReceive, WasmSend, qrSvg as wasmQrSvg } from "./pkg/peerpipe_web.js";

const isNode = typeof process !== "undefined" && !!process.versions?.node;
let loading;
let core;

/** Loads the WebAssembly core once (`wasm`: its URL or bytes, optional). */
export function load(wasm) {
  loading ??= (async () => {
    if (isNode) {
      if (!globalThis.WebSocket) {
        globalThis.WebSocket = (await import("ws")).WebSocket;
      }
      if (!globalThis.RTCPeerConnection) {
        // WebRTC in Node.js comes from `@roamhq/wrtc` when it is installed.
        try {
          globalThis.RTCPeerConnection = (await import("@roamhq/wrtc")).default.RTCPeerConnection;
        } catch {
          // Not installed: connections stay on the relay.
        }
      }
      const { readFile } = await import("node:fs/promises");
      const bytes = wasm ?? (await readFile(new URL("./pkg/peerpipe_web_bg.wasm", import.meta.url)));
      core = await init({ module_or_path: bytes });
    } else {
      core = await init(wasm === undefined ? undefined : { module_or_path: wasm });
    }
  })();
  return loading;
}

/** Bytes of memory the WebAssembly core holds (0 before it loaded). */
export function memoryBytes() {
  return core?.memory?.buffer.byteLength ?? 0;
}

/** `text` (a link, say) as an SVG image of its QR code: a string of
 * `<svg>` with a viewBox of the code's modules, a quiet zone of four
 * modules, dark on white, crisp edges. Needs the core loaded (`load()`, or
 * any `Node.bind`); fails with `code` `TooLong` for a text no QR code holds. */
export function qrSvg(text) {
  if (!core) throw Object.assign(new Error("the WebAssembly core is not loaded: await load() first"), { code: "NotLoaded" });
  return wasmQrSvg(String(text));
}

function randomSecret() {
  const secret = new Uint8Array(32);
  crypto.getRandomValues(secret);
  return secret;
}

/** The device key kept in IndexedDB under `name`, created on first use. */
async function storedSecret(name) {
  if (typeof indexedDB === "undefined") return randomSecret();
  const db = await new Promise((resolve, reject) => {
    const open = indexedDB.open(name, 1);
    open.onupgradeneeded = () => open.result.createObjectStore("keys");
    open.onsuccess = () => resolve(open.result);
    open.onerror = () => reject(open.error);
  });
  const tx = (mode) => db.transaction("keys", mode).objectStore("keys");
  const existing = await new Promise((resolve, reject) => {
    const get = tx("readonly").get("device");
    get.onsuccess = () => resolve(get.result);
    get.onerror = () => reject(get.error);
  });
  if (existing instanceof Uint8Array && existing.length === 32) return existing;
  const secret = randomSecret();
  await new Promise((resolve, reject) => {
    const put = tx("readwrite").put(secret, "device");
    put.onsuccess = () => resolve();
    put.onerror = () => reject(put.error);
  });
  return secret;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function toBytes(data) {
  if (typeof data === "string") return encoder.encode(data);
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  throw Object.assign(new TypeError("send a string, an ArrayBuffer or a typed array"), { code: "InvalidData" });
}

function event(type, fields) {
  return Object.assign(new Event(type), fields);
}

/** Both ends of stream `id`, as WHATWG streams whose backpressure is the
 * session's credit: a write settles once the peer granted room for it, and
 * a reader that stops pulling stops the writer on the other side. */
function duplex(raw, id) {
  const readable = new ReadableStream(
    {
      async pull(controller) {
        const chunk = await raw.read(id);
        if (chunk === null) controller.close();
        else controller.enqueue(chunk);
      },
      cancel() {
        raw.stop(id, 0);
      },
    },
    { highWaterMark: 0 },
  );
  const writable = new WritableStream(
    {
      write(chunk) {
        return raw.write(id, toBytes(chunk));
      },
      close() {
        raw.finish(id);
      },
      abort() {
        raw.reset(id, 0);
      },
    },
    { highWaterMark: 1 },
  );
  return { id, readable, writable };
}

/** A connection to another device. Events: `message` (`data`: Uint8Array,
 * `text()`), `stream` (`readable`, `writable`: a stream the peer opened),
 * `pathchange` (`path`), `slow`, `close` (`reason`: Error with `code`). */
export class Connection extends EventTarget {
  #raw;
  #attached = false;

  constructor(raw) {
    super();
    this.#raw = raw;
  }

  // What arrives before the page listens waits in the core: the handler is
  // attached a task after the first listener, so that listeners added
  // together all hear the first events.
  addEventListener(type, listener, options) {
    super.addEventListener(type, listener, options);
    if (!this.#attached) {
      this.#attached = true;
      setTimeout(() => this.#raw.setHandler((t, d) => this.#event(t, d)), 0);
    }
  }

  #event(type, detail) {
    switch (type) {
      case "message":
        this.dispatchEvent(event("message", { data: detail, text: () => decoder.decode(detail) }));
        break;
      case "stream":
        this.dispatchEvent(event("stream", duplex(this.#raw, detail)));
        break;
      case "pathchange":
        this.dispatchEvent(event("pathchange", { path: detail }));
        break;
      case "close":
        this.dispatchEvent(event("close", { reason: detail }));
        break;
      default:
        this.dispatchEvent(event(type, {}));
    }
  }

  /** The device at the other end: `{ id, label }`. */
  get peer() { return this.#raw.peer; }
  /** The server's id for this connection. */
  get session() { return this.#raw.session; }
  /** What the connection was asked for with (`null`: nothing). */
  get service() { return this.#raw.service ?? null; }
  /** `"relay"` or `"webrtc"`. */
  get path() { return this.#raw.path; }
  /** Why the connection ended (an Error with `code`), or `null`. */
  get closed() { return this.#raw.closed; }

  /** Sends a message (string or bytes); settles once it is queued. */
  send(data) { return this.#raw.send(toBytes(data), false); }
  /** Sends a message; settles once the peer's application took it. */
  sendConfirmed(data) { return this.#raw.send(toBytes(data), true); }
  /** Opens a stream: `{ readable, writable }`. */
  async openStream() { return duplex(this.#raw, this.#raw.openStream()); }
  /** Leaves the current data channel and negotiates a new one, staying on
   * the relay meanwhile (nothing sent is lost): after a network change. */
  restartDirect() { this.#raw.restartDirect(); }
  /** Closes once everything sent so far arrived. */
  close() { return this.#raw.close(); }
}

/** A device's node: its link to the server. Events: `incomingconnection`
 * (`peer`, `service`, `accept()`, `reject()`), `peeronline` (`peer`),
 * `peeroffline` (`id`), `reconnecting` (`attempt`, `delay` in ms: the link
 * dropped; connections wait, on their data channel if they have one),
 * `reconnected` (connections are routed again), `connectionclosed`
 * (`connection`, `peer`, `session`, `reason`), `pathchange` (`connection`,
 * `path`, ...), `slow` (`connection`, ...), `stopped` (`reason`: the server
 * refused the device on reconnect), `error` (`reason`). */
export class Node extends EventTarget {
  #raw;

  constructor(raw) {
    super();
    this.#raw = raw;
  }

  /** Connects to `server` and waits until it admitted this device.
   * Options: `server`, `token`, `label`, `secret` (the device's 32-byte
   * key; default: kept in IndexedDB as `keyStore`, in Node.js a fresh key
   * each time), `maxMessageSize`, `direct` (false: stay on the relay),
   * `iceServers` (instead of the server's), `wasm`. */
  static async bind(options = {}) {
    const { secret, keyStore = "peerpipe", wasm } = options;
    await load(wasm);
    const key = secret ?? (await storedSecret(keyStore));
    let node;
    const early = [];
    const onEvent = (type, detail) => (node ? node.#event(type, detail) : early.push([type, detail]));
    const direct = options.direct ?? typeof globalThis.RTCPeerConnection !== "undefined";
    const raw = await WasmNode.bind({ ...options, direct }, key, onEvent);
    node = new Node(raw);
    for (const [type, detail] of early) node.#event(type, detail);
    return node;
  }

  #event(type, detail) {
    switch (type) {
      case "incomingconnection": {
        const raw = this.#raw;
        const session = detail.session;
        this.dispatchEvent(event("incomingconnection", {
          peer: detail.peer,
          service: detail.service,
          accept: async () => this.#watch(new Connection(await raw.accept(session))),
          reject: () => raw.reject(session),
        }));
        break;
      }
      case "peeronline":
        this.dispatchEvent(event("peeronline", { peer: detail }));
        break;
      case "peeroffline":
        this.dispatchEvent(event("peeroffline", { id: detail.id }));
        break;
      case "reconnecting":
        this.dispatchEvent(event("reconnecting", { attempt: detail.attempt, delay: detail.delay }));
        break;
      case "reconnected":
        this.dispatchEvent(event("reconnected", {}));
        break;
      default:
        this.dispatchEvent(event(type, { reason: detail }));
    }
  }

  // The node reports what happens to its connections too, as natively.
  #watch(conn) {
    const about = () => ({ connection: conn, peer: conn.peer, session: conn.session });
    conn.addEventListener("close", (e) => this.dispatchEvent(event("connectionclosed", { ...about(), reason: e.reason })));
    conn.addEventListener("pathchange", (e) => this.dispatchEvent(event("pathchange", { ...about(), path: e.path })));
    conn.addEventListener("slow", () => this.dispatchEvent(event("slow", about())));
    return conn;
  }

  /** This device's id. */
  get id() { return this.#raw.id; }
  /** This user's other online devices: `[{ id, label }]`. */
  onlinePeers() { return this.#raw.onlinePeers(); }
  /** Connects to device `id`. */
  async connect(id, { service } = {}) { return this.#watch(new Connection(await this.#raw.connect(id, service))); }
  /** Offers a one-time code (`7-amber-falcon`) that a device of any user can
   * claim with `claimCode`; the server learns only its number. */
  async offerCode() {
    const raw = await this.#raw.offerCode();
    return new CodeOffer(raw, (c) => this.#watch(c));
  }
  /** Claims a one-time code and connects to the device that offered it; the
   * key agreed from the code is bound into the end-to-end handshake. */
  async claimCode(code) { return this.#watch(new Connection(await this.#raw.claimCode(code))); }
  /** Claims a one-time code of a sender of files (`peerpipe send`) and
   * settles with a `Receive` once its list of files arrived, verified: see
   * `Receive.accept` to fetch them, `Receive.decline` to refuse. */
  async receiveCode(code) {
    const conn = await this.#raw.claimCode(code);
    return new Receive(await WasmReceive.start(conn));
  }
  /** Sends files by one-time code, as `peerpipe send` does: `entries` is
   * `[{ path, file }]`, `path` relative and `/`-separated (a folder's files
   * as `webkitRelativePath` names them), `file` a `Blob` or `File`; empty
   * files and nested folders are fine. The paths are checked first (no
   * empty, `.` or `..` part, no absolute path, backslash or NUL, no path
   * twice, no file that is also a folder): a bad list fails with `BadPath`,
   * `Conflict`, `TooLarge`, `NoFiles` or `BadFile` before a code is taken.
   * Settles with a `Send` as soon as the server gave the code; the files
   * are hashed meanwhile (a receiver that comes early waits). `options.signal`
   * (an `AbortSignal`) cancels the send. */
  async sendFiles(entries, options = {}) {
    const send = new Send(entries);
    try {
      send[begin](await this.#raw.offerCode());
    } catch (e) {
      send.cancel();
      throw e;
    }
    const { signal } = options;
    if (signal) {
      if (signal.aborted) send.cancel();
      else signal.addEventListener("abort", () => send.cancel(), { once: true });
    }
    return send;
  }
  /** Ends every connection and the link to the server. */
  shutdown() { this.#raw.shutdown(); }
}

const begin = Symbol("begin");

function typed(code, message) {
  return Object.assign(new TypeError(message), { code });
}

/** Files sent over a one-time code (from `Node.sendFiles`). Events:
 * `hashing` (`done`, `total` bytes hashed), `connected` (`peer`, `path`:
 * `"relay"` or `"webrtc"`, the receiver came), `progress` (`sent`, `total`
 * bytes of file data served), `done` (`bytes`, `files`, `sent`, `seconds`:
 * the receiver has everything, verified). */
export class Send extends EventTarget {
  #raw;
  #files;
  #offer = null;
  #connected = false;
  #finished;

  constructor(entries) {
    super();
    if (!Array.isArray(entries)) throw typed("BadFile", "sendFiles(entries) takes an array of { path, file }");
    const paths = [];
    const files = [];
    for (const e of entries) {
      if (!e || typeof e.path !== "string" || !(e.file instanceof Blob)) {
        throw typed("BadFile", "every entry is { path: string, file: Blob or File }");
      }
      paths.push(e.path);
      files.push(e.file);
    }
    this.#files = Object.freeze(entries.map((e) => Object.freeze({ path: e.path, size: e.file.size })));
    this.#raw = new WasmSend(paths, files, (type, detail) => this.dispatchEvent(event(type, detail)));
  }

  [begin](offer) {
    this.#offer = offer;
    this.#finished = (async () => {
      let failure;
      // A file that cannot be read ends the send, receiver or not.
      this.#raw.hashed().catch((e) => {
        failure = e;
        if (!this.#connected) offer.cancel();
      });
      let conn;
      try {
        conn = await offer.accept();
      } catch (e) {
        throw failure ?? e;
      }
      this.#connected = true;
      this.dispatchEvent(event("connected", { peer: conn.peer, path: conn.path }));
      const report = await this.#raw.serve(conn);
      this.dispatchEvent(event("done", report));
      return report;
    })();
    // Whoever awaits `finished` hears how it ended; nobody has to.
    this.#finished.catch(() => {});
  }

  /** The code to give the receiver, like `7-amber-falcon`. */
  get code() { return this.#offer?.code ?? null; }
  /** The files as given: `[{ path, size }]`. */
  get files() { return this.#files; }
  /** Bytes of all files. */
  get total() { return this.#raw.total; }
  /** The collection's BLAKE3 hash in hex once hashed, else `null`. */
  get hash() { return this.#raw.hash ?? null; }
  /** `"relay"` or `"webrtc"` once the receiver came, else `null`. */
  get path() { return this.#raw.path ?? null; }
  /** Settles with `{ bytes, files, sent, seconds }` once the receiver has
   * every file, verified; fails with an Error whose `code` is `Declined`,
   * `ReceiverStopped` (with its reason), `Cancelled`, `File` (a file could
   * not be read), `Expired` (nobody used the code in time), or how the
   * connection ended (`PeerClosed`, `PeerDisconnected`, `TimedOut`, ...). */
  get finished() { return this.#finished; }
  /** Stops: the code is withdrawn, or the receiver is told and the
   * transfer ends; `finished` fails with `Cancelled`. */
  cancel() {
    this.#raw.cancel();
    if (!this.#connected) this.#offer?.cancel();
  }
}

/** A file sink the receive writes through: `sink.open(path, size)` gave
 * a WHATWG `WritableStream` (written in order, each write awaited) or an
 * object with `write(bytes)`, `close()` and optionally `abort(reason)`. */
function fileSink(handle, path) {
  if (handle && typeof handle.getWriter === "function") {
    const writer = handle.getWriter();
    return {
      write: (bytes) => writer.write(bytes),
      close: () => writer.close(),
      abort: (reason) => writer.abort(reason),
    };
  }
  if (handle && typeof handle.write === "function") {
    return {
      write: (bytes) => handle.write(bytes),
      close: () => handle.close?.(),
      abort: (reason) => handle.abort?.(reason),
    };
  }
  throw Object.assign(new TypeError(`sink.open("${path}") gave neither a WritableStream nor { write, close }`), {
    code: "Sink",
  });
}

/** A receive sink (for `Receive.accept`) writing into a browser directory:
 * the Origin Private File System (`await navigator.storage.getDirectory()`)
 * or a folder the user picked (`showDirectoryPicker()`). Folders are made as
 * needed; each file goes through `createWritable()`, whose data the browser
 * keeps aside until `close()`. By default a receive that fails or is
 * cancelled leaves no partial file (the file's entry is removed). With
 * `{ resume: true }` what was written (all verified, in order) is kept
 * instead, and a later receive of the same files verifies what is there and
 * fetches only the rest; a file there that differs is replaced. */
export function directorySink(dir, { resume = false } = {}) {
  const locate = async (path, create) => {
    const parts = path.split("/");
    const name = parts.pop();
    let parent = dir;
    for (const part of parts) parent = await parent.getDirectoryHandle(part, { create });
    return { parent, name };
  };
  const sink = {
    async open(path, size, offset = 0) {
      const { parent, name } = await locate(path, true);
      const file = await parent.getFileHandle(name, { create: true });
      const writable = await file.createWritable({ keepExistingData: offset > 0 });
      if (offset > 0) {
        await writable.truncate(offset);
        await writable.seek(offset);
      }
      const writer = writable.getWriter();
      return {
        write: (bytes) => writer.write(bytes),
        close: () => writer.close(),
        abort: async (reason) => {
          if (resume) return writer.close();
          await writer.abort(reason).catch(() => {});
          await parent.removeEntry(name).catch(() => {});
        },
      };
    },
  };
  if (resume) {
    sink.existing = async (path) => {
      try {
        const { parent, name } = await locate(path, false);
        return await (await parent.getFileHandle(name)).getFile();
      } catch {
        return null;
      }
    };
  }
  return sink;
}

/** Files offered over a one-time code (from `Node.receiveCode`). Events
 * during `accept`: `progress` (`bytes` verified and written, `verified`,
 * `total`, `path`, `fileBytes`, `fileSize`), `file` (`path`, `size`: a file
 * written and closed). */
export class Receive extends EventTarget {
  #raw;
  #files;

  constructor(raw) {
    super();
    this.#raw = raw;
    this.#files = Object.freeze(raw.files.map((f) => Object.freeze(f)));
  }

  /** The offered files, in order: `[{ path, size }]` (paths relative, `/`
   * separated, checked: no `..`, no absolute path). */
  get files() { return this.#files; }
  /** Bytes of all files. */
  get total() { return this.#raw.total; }
  /** The collection's BLAKE3 hash in hex. */
  get hash() { return this.#raw.hash; }
  /** `"files"`, or `"text"`: one short text (`peerpipe send --text`, at
   * most 64 KiB) to show rather than save; see `acceptText`. */
  get kind() { return this.#raw.kind; }
  /** The sender's device: `{ id, label }`. */
  get peer() { return this.#raw.peer; }
  /** `"relay"` or `"webrtc"`. */
  get path() { return this.#raw.path; }

  /** Fetches the files, verifying every 16 KiB group before it is
   * written, and writes each through `sink.open(path, size, offset)` (see
   * `fileSink`); with `sink.existing(path, size)` (a `Blob` of what the
   * sink holds of a file, or `null`) it resumes: what is there is verified
   * and only the rest fetched. Settles with `{ bytes, files, seconds,
   * fetched, reused }` once all are closed and the sender was told. */
  accept(sink) {
    if (!sink || typeof sink.open !== "function") {
      return Promise.reject(Object.assign(new TypeError("accept(sink) needs a sink with open(path, size)"), { code: "Sink" }));
    }
    const open = async (path, size, offset) => fileSink(await sink.open(path, size, offset), path);
    const existing = typeof sink.existing === "function" ? (path, size) => sink.existing(path, size) : undefined;
    return this.#raw.accept(open, (type, detail) => this.dispatchEvent(event(type, detail)), existing);
  }
  /** Receives a text offer (`kind` is `"text"`) into memory, verified, and
   * settles with it decoded as UTF-8 (the sender is told it arrived). */
  async acceptText() {
    if (this.kind !== "text") {
      throw Object.assign(new TypeError("this offer is files, not a text: use accept(sink)"), { code: "NotText" });
    }
    const parts = [];
    await this.accept({ open: () => ({ write: (bytes) => void parts.push(bytes), close() {} }) });
    const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) {
      all.set(p, at);
      at += p.length;
    }
    return decoder.decode(all);
  }
  /** Refuses the files: the sender is told; settles once the connection closed. */
  decline() { return this.#raw.decline(); }
  /** Stops: before `accept` as `decline`; during it `accept` fails with
   * `Cancelled`, open sinks are aborted and the sender is told. */
  cancel() { this.#raw.cancel(); }
}

/** A one-time code this node offers (from `Node.offerCode`). */
export class CodeOffer {
  #raw;
  #watch;

  constructor(raw, watch) {
    this.#raw = raw;
    this.#watch = watch;
  }

  /** The code to show, like `7-amber-falcon`. */
  get code() { return this.#raw.code; }
  /** Milliseconds the code stays valid unclaimed, from its allocation. */
  get validFor() { return this.#raw.validFor; }
  /** Waits for the claim, runs the key exchange and accepts the claimer's
   * connection. */
  async accept() { return this.#watch(new Connection(await this.#raw.accept())); }
  /** Withdraws the code; a waiting `accept()` fails with `Cancelled`. */
  cancel() { this.#raw.cancel(); }
}
