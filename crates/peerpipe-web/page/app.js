// The peerpipe web page: receive by code into this browser (resumable) or a
// file or folder the user picks, and send picked or dropped files by code.
// Everything runs in this page: the peerpipe core in WebAssembly verifies
// every 16 KiB group before it is written, and files are written and read
// in pieces, never held whole in memory.
import * as peerpipe from "./peerpipe/index.js";

const $ = (id) => document.getElementById(id);
const CODE = /^[0-9]+-[a-z]+-[a-z]+$/;
// Where receives kept in this browser live (OPFS), one folder per content hash.
const STORE = "peerpipe-received";
const RECORDS = "peerpipe.receives";

// ---------------------------------------------------------------- helpers

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${n.toFixed(n < 10 ? 1 : 0)} ${units[i]}`;
}

function duration(seconds) {
  if (!Number.isFinite(seconds)) return "";
  if (seconds < 60) return `${Math.max(1, Math.round(seconds))} s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function pathName(path) {
  return path === "webrtc" ? "direct (WebRTC data channel)" : "relay (through the server, end to end encrypted)";
}

function plural(n, one, many) {
  return `${n} ${n === 1 ? one : many}`;
}

function el(tag, text, className) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (className) e.className = className;
  return e;
}

function fileItem(path, size) {
  const li = el("li");
  li.append(el("span", path), el("span", bytes(size), "size"));
  return li;
}

// The cards of the flow: one of them shows at a time, besides the tabs' content.
const cards = ["offer", "text-offer", "progress", "done", "error", "sending"];
function show(...ids) {
  for (const id of cards) $(id).hidden = !ids.includes(id);
}

function status(text) {
  $("status").textContent = text;
}

function fail(text) {
  show("error");
  $("error-text").textContent = text;
  status("");
  $("error-again").focus();
}

/** A sentence for what went wrong, for the person in front of the page. */
function explain(e, { kept = false } = {}) {
  const code = e?.code ?? e?.name;
  const keptNote = kept ? " What arrived is kept in this browser: a new code from the sender fetches only the rest." : "";
  switch (code) {
    case "Malformed":
      return "That is not a code: a code looks like 7-amber-falcon (a number and two words).";
    case "NotFound":
      return "No sender has this code now: it expired, was used already, or has a typo in its number. Ask the sender for a new code.";
    case "WrongCode":
      return "The words of the code do not match, and the code is now used up. Ask the sender for a new one.";
    case "Expired":
      return "The code expired before anyone used it. Start again for a new code.";
    case "TimedOut":
      return `The other side stopped answering.${keptNote}`;
    case "PeerGone":
    case "SenderStopped":
    case "PeerClosed":
    case "PeerDisconnected":
    case "NotConnected":
      return `The sender went away before the transfer finished${e?.message ? ` (${e.message})` : ""}.${keptNote}`;
    case "ReceiverStopped":
      return "The receiver stopped the transfer.";
    case "Declined":
      return "The receiver declined the files.";
    case "NotSending":
      return "The device with this code is not sending files.";
    case "Corrupt":
      return `Data from the sender did not match what it promised; nothing unverified was written.${keptNote}`;
    case "Collection":
    case "Protocol":
      return `The sender's offer is not valid (${e.message}).`;
    case "TooLarge":
      return "The sender offers more than this page can receive (64 GiB).";
    case "QuotaExceededError":
      return "There is not enough room to save these files. Free some space, or choose another place to save them.";
    case "NotAllowedError":
    case "SecurityError":
      return "Permission to write there was refused. Choose another place, or keep the files in this browser.";
    case "Sink":
      return explain(e.cause ?? { name: "Error", message: e.message }, { kept });
    case "Cancelled":
      return "Stopped.";
    case "BadToken":
    case "Unauthorized":
    case "Forbidden":
      return "This server does not let a page join without a token (it runs with --no-anonymous or --no-codes).";
    case "File":
      return `A file could not be read (${e.message}): was it moved or deleted?`;
    default:
      return `${e?.message ?? e}${keptNote}`;
  }
}

// ------------------------------------------------------------- the node

let nodePromise;
function signalUrl() {
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/signal`;
}

/** This page's device: a fresh key per page, anonymous (codes need no token). */
function node() {
  nodePromise ??= (async () => {
    status("Connecting to the server…");
    const secret = new Uint8Array(32);
    crypto.getRandomValues(secret);
    const n = await peerpipe.Node.bind({ server: signalUrl(), label: "web page", secret });
    n.addEventListener("reconnecting", () => status("Connection to the server lost; trying again…"));
    n.addEventListener("reconnected", () => status("Connected to the server again."));
    status("");
    return n;
  })();
  nodePromise.catch(() => (nodePromise = undefined));
  return nodePromise;
}

// ------------------------------------------------ progress, speed, ETA

/** Shows a transfer's progress; `update(done, total, file)` as it goes. */
function progressView(title, files, { cancel, pathOf }) {
  show("progress");
  $("progress-title").textContent = title;
  $("progress-all").value = 0;
  $("progress-text").textContent = "";
  $("progress-file").textContent = "";
  const list = $("file-list");
  list.replaceChildren();
  const items = new Map();
  // A long list is cut: the page stays light with thousands of files.
  for (const f of files.slice(0, 500)) {
    const li = fileItem(f.path, f.size);
    items.set(f.path, li);
    list.append(li);
  }
  if (files.length > 500) list.append(el("li", `… and ${files.length - 500} more`));
  const cancelButton = $("progress-cancel");
  cancelButton.hidden = !cancel;
  cancelButton.disabled = false;
  cancelButton.onclick = () => {
    cancelButton.disabled = true;
    cancel();
  };
  let done = 0;
  let total = 1;
  let file = "";
  let rate = 0;
  let last = { t: performance.now(), done: 0 };
  const timer = setInterval(() => {
    const now = performance.now();
    const dt = (now - last.t) / 1000;
    if (dt >= 0.5) {
      const r = (done - last.done) / dt;
      rate = rate === 0 ? r : 0.7 * rate + 0.3 * r;
      last = { t: now, done };
    }
    $("progress-all").value = total ? done / total : 1;
    const eta = rate > 0 ? `, about ${duration((total - done) / rate)} left` : "";
    $("progress-text").textContent = `${bytes(done)} of ${bytes(total)} (${Math.floor((100 * done) / (total || 1))} %)` +
      (rate > 0 ? ` · ${bytes(rate)}/s${eta}` : "");
    $("progress-file").textContent = file;
    if (pathOf) $("progress-path").textContent = `Path: ${pathName(pathOf())}`;
  }, 250);
  return {
    update(d, t, f) {
      done = d;
      total = t;
      if (f !== undefined) file = f;
    },
    fileDone(path) {
      items.get(path)?.classList.add("done");
    },
    stop() {
      clearInterval(timer);
    },
  };
}

// ------------------------------------------- receiving into this browser

let writer;
let calls = 0;
const pending = new Map();
function worker() {
  if (!writer) {
    writer = new Worker(new URL("./opfs-writer.js", import.meta.url));
    writer.onmessage = ({ data }) => {
      const call = pending.get(data.id);
      pending.delete(data.id);
      if (data.error) call.reject(Object.assign(new Error(data.error.message), { name: data.error.name }));
      else call.resolve(data.value);
    };
  }
  return writer;
}
function call(op, args, transfer = []) {
  const id = ++calls;
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve, reject });
    worker().postMessage({ id, op, ...args }, transfer);
  });
}

async function storeDir(hash, create) {
  const root = await navigator.storage.getDirectory();
  return (await root.getDirectoryHandle(STORE, { create })).getDirectoryHandle(hash, { create });
}

async function fileIn(dir, path) {
  const parts = path.split("/");
  const name = parts.pop();
  for (const p of parts) dir = await dir.getDirectoryHandle(p);
  return dir.getFileHandle(name);
}

/** A resumable sink in OPFS: written in place by the worker, so a reload
 * keeps every byte written; `existing` hands back what is there. Each
 * verified chunk moves to the worker as it is (transferred, not copied);
 * while 4 MiB are on their way the receive waits (bounded memory, the
 * disk's pace). */
function browserSink(hash) {
  const IN_FLIGHT = 4 << 20;
  return {
    async open(path, _size, offset) {
      const h = await call("open", { base: [STORE, hash], path, offset });
      const flying = [];
      let bytesFlying = 0;
      let failed = null;
      const settle = async (limit) => {
        while (bytesFlying > limit) {
          const [sent, n] = flying.shift();
          await sent.catch(() => {});
          bytesFlying -= n;
        }
        if (failed) throw failed;
      };
      return {
        async write(chunk) {
          if (failed) throw failed;
          const own = chunk.byteOffset === 0 && chunk.byteLength === chunk.buffer.byteLength ? chunk : chunk.slice();
          const n = own.length;
          const sent = call("write", { h, bytes: own }, [own.buffer]);
          sent.catch((e) => (failed ??= e));
          flying.push([sent, n]);
          bytesFlying += n;
          await settle(IN_FLIGHT);
        },
        async close() {
          await settle(0);
          await call("close", { h });
        },
        async abort() {
          await settle(0).catch(() => {});
          await call("abort", { h, remove: false });
        },
      };
    },
    async existing(path) {
      try {
        return await (await fileIn(await storeDir(hash, false), path)).getFile();
      } catch {
        return null;
      }
    },
  };
}

function records() {
  try {
    return JSON.parse(localStorage.getItem(RECORDS) ?? "{}");
  } catch {
    return {};
  }
}
function saveRecords(all) {
  localStorage.setItem(RECORDS, JSON.stringify(all));
}

async function removeKept(hash) {
  const all = records();
  delete all[hash];
  saveRecords(all);
  try {
    const root = await (await navigator.storage.getDirectory()).getDirectoryHandle(STORE);
    await root.removeEntry(hash, { recursive: true });
  } catch {
    // Already gone.
  }
}

async function keptBytes(hash) {
  let sum = 0;
  const walk = async (dir) => {
    for await (const entry of dir.values()) {
      if (entry.kind === "file") sum += (await entry.getFile()).size;
      else await walk(entry);
    }
  };
  try {
    await walk(await storeDir(hash, false));
  } catch {
    // Nothing kept.
  }
  return sum;
}

/** What this browser keeps from earlier visits: unfinished receives (a new
 * code finishes them) and finished ones still to download. */
async function showKept() {
  const all = Object.entries(records());
  const box = $("unfinished");
  if (all.length === 0) {
    box.hidden = true;
    return;
  }
  const [hash, rec] = all[all.length - 1];
  box.hidden = false;
  if (rec.complete) {
    $("unfinished-text").textContent = `“${rec.title}” (${bytes(rec.total)}) was received earlier and is kept in this browser.`;
    const links = el("ul", undefined, "files");
    for (const path of rec.files.slice(0, 50)) links.append(await downloadItem(hash, path));
    $("unfinished-text").append(links);
  } else {
    const have = await keptBytes(hash);
    $("unfinished-text").textContent = `An unfinished receive of “${rec.title}” (${bytes(have)} of ${bytes(rec.total)}) is kept in this browser. ` +
      "To finish it, ask the sender for a new code and enter it above: only what is missing is fetched.";
  }
  $("unfinished-discard").onclick = async () => {
    await removeKept(hash);
    await showKept();
    status("Removed from this browser.");
  };
}

async function downloadItem(hash, path) {
  const li = el("li");
  const file = await (await fileIn(await storeDir(hash, false), path)).getFile();
  const a = el("a", path);
  a.href = URL.createObjectURL(file);
  a.download = path.split("/").pop();
  li.append(a, el("span", bytes(file.size), "size"));
  return li;
}

// -------------------------------------------------------------- receive

/** What the files are called together: the one top-level name, or a count. */
function nameOf(files) {
  const tops = new Set(files.map((f) => f.path.split("/")[0]));
  return tops.size === 1 ? [...tops][0] : plural(files.length, "file", "files");
}

function titleOf(files, total) {
  const tops = new Set(files.map((f) => f.path.split("/")[0]));
  const count = tops.size === 1 && files.length > 1 ? `${plural(files.length, "file", "files")}, ` : "";
  return `${nameOf(files)} (${count}${bytes(total)})`;
}

let busy = false;

async function receive(rawCode) {
  const code = rawCode.trim().toLowerCase().replace(/\s+/g, "-");
  if (!CODE.test(code)) {
    fail(explain({ code: "Malformed" }));
    return;
  }
  if (busy) return;
  busy = true;
  $("code-go").disabled = true;
  try {
    const n = await node();
    status("Meeting the sender…");
    const offer = await n.receiveCode(code);
    status("");
    if (offer.kind === "text") {
      const text = await offer.acceptText();
      show("text-offer");
      $("text-body").textContent = text;
      $("text-copy").onclick = () => navigator.clipboard?.writeText(text).then(() => status("Copied."));
      $("text-copy").focus();
      return;
    }
    const choice = await chooseWhere(offer);
    if (choice === null) return;
    await runReceive(offer, choice);
  } catch (e) {
    fail(explain(e));
  } finally {
    busy = false;
    $("code-go").disabled = false;
  }
}

/** Shows the offer; settles with where to save (`{ kind, sink }`) or null (declined). */
function chooseWhere(offer) {
  show("offer");
  const title = titleOf(offer.files, offer.total);
  $("offer-title").textContent = `Offered: ${title}`;
  const names = $("offer-names");
  names.replaceChildren();
  for (const f of offer.files.slice(0, 8)) names.append(fileItem(f.path, f.size));
  if (offer.files.length > 8) names.append(el("li", `… and ${offer.files.length - 8} more`));
  $("offer-from").textContent = `From “${offer.peer?.label || "a device"}”. Path now: ${pathName(offer.path)}.`;
  const one = offer.files.length === 1;
  const picker = one ? window.showSaveFilePicker : window.showDirectoryPicker;
  const pickButton = $("save-picker");
  pickButton.hidden = typeof picker !== "function";
  pickButton.textContent = one ? "Save as…" : "Save to a folder…";
  $("save-browser").focus();
  return new Promise((resolve) => {
    $("save-browser").onclick = () => resolve({ kind: "browser", sink: browserSink(offer.hash) });
    pickButton.onclick = async () => {
      try {
        if (one) {
          const handle = await window.showSaveFilePicker({ suggestedName: offer.files[0].path.split("/").pop() });
          resolve({ kind: "picked", sink: { open: () => handle.createWritable() } });
        } else {
          const dir = await window.showDirectoryPicker({ mode: "readwrite" });
          resolve({ kind: "picked", sink: peerpipe.directorySink(dir) });
        }
      } catch (e) {
        if (e?.name !== "AbortError") status(explain(e));
      }
    };
    $("offer-decline").onclick = async () => {
      await offer.decline().catch(() => {});
      show();
      status("Declined: nothing was received, and the sender was told.");
      resolve(null);
    };
  });
}

async function runReceive(offer, { kind, sink }) {
  const title = titleOf(offer.files, offer.total);
  const kept = kind === "browser";
  if (kept) {
    const have = await keptBytes(offer.hash);
    const estimate = await navigator.storage.estimate?.();
    if (estimate && estimate.quota - estimate.usage < offer.total - have) {
      await offer.decline().catch(() => {});
      fail(`There is not enough room in this browser's storage: ${bytes(offer.total - have)} needed, ` +
        `${bytes(estimate.quota - estimate.usage)} free. Free some disk space, or save to a file or folder instead.`);
      return;
    }
    navigator.storage.persist?.().catch(() => {});
    const all = records();
    all[offer.hash] = { title: nameOf(offer.files), total: offer.total, files: offer.files.map((f) => f.path), complete: false };
    saveRecords(all);
  }
  const view = progressView(`Receiving ${title}`, offer.files, {
    cancel: () => offer.cancel(),
    pathOf: () => offer.path,
  });
  offer.addEventListener("progress", (e) => view.update(e.bytes, e.total, `${e.path}: ${bytes(e.fileBytes)} of ${bytes(e.fileSize)}`));
  offer.addEventListener("file", (e) => view.fileDone(e.path));
  let report;
  try {
    report = await offer.accept(sink);
  } catch (e) {
    fail(explain(e, { kept }));
    await showKept();
    return;
  } finally {
    view.stop();
  }
  show("done");
  // For scripts and tests: what was fetched, and what was here already.
  Object.assign($("done").dataset, { fetched: report.fetched, reused: report.reused, bytes: report.bytes });
  $("done-title").textContent = `Received ${title}`;
  const resumed = report.reused > 0 ? ` (${bytes(report.reused)} of it was here already from an earlier try)` : "";
  $("done-text").textContent = `${plural(report.files, "file", "files")}, ${bytes(report.bytes)} in ${duration(report.seconds)}${resumed}. ` +
    "Every byte was checked against the sender's BLAKE3 hash before it was written." +
    (kept ? " Download the files below; they stay in this browser until you remove them." : "");
  const downloads = $("downloads");
  downloads.replaceChildren();
  $("done-clear").hidden = !kept;
  if (kept) {
    const all = records();
    if (all[offer.hash]) all[offer.hash].complete = true;
    saveRecords(all);
    for (const f of offer.files.slice(0, 500)) downloads.append(await downloadItem(offer.hash, f.path));
    $("done-clear").onclick = async () => {
      await removeKept(offer.hash);
      downloads.replaceChildren();
      $("done-clear").hidden = true;
      status("Removed from this browser.");
    };
    $("unfinished").hidden = true;
  }
  status(`Received ${title}.`);
  $("done-again").focus();
}

// ----------------------------------------------------------------- send

/** `{ path, file }` for every file under the dropped entries. */
async function dropped(items) {
  const out = [];
  const walk = async (entry, prefix) => {
    if (entry.isFile) {
      const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
      out.push({ path: prefix + entry.name, file });
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
        if (batch.length === 0) break;
        for (const child of batch) await walk(child, `${prefix}${entry.name}/`);
      }
    }
  };
  const entries = [...items].map((i) => i.webkitGetAsEntry?.()).filter(Boolean);
  for (const entry of entries) await walk(entry, "");
  return out;
}

async function send(entries) {
  if (busy || entries.length === 0) return;
  busy = true;
  try {
    const n = await node();
    status("Asking the server for a code…");
    const sending = await n.sendFiles(entries);
    const total = entries.reduce((s, e) => s + e.file.size, 0);
    const title = titleOf(entries.map((e) => ({ path: e.path, size: e.file.size })), total);
    show("sending");
    $("drop").hidden = true;
    const link = `${location.origin}${location.pathname}#${sending.code}`;
    $("send-code").textContent = sending.code;
    $("send-link").textContent = link;
    $("send-link").href = link;
    $("send-copy").onclick = () => navigator.clipboard?.writeText(link).then(() => status("Link copied."));
    $("send-cli").textContent = `Or on a device with the CLI: peerpipe receive ${sending.code} --server ${signalUrl()}`;
    if (typeof peerpipe.qrSvg === "function") {
      const img = $("send-qr");
      img.src = URL.createObjectURL(new Blob([peerpipe.qrSvg(link)], { type: "image/svg+xml" }));
      img.hidden = false;
    }
    status(`Waiting for the receiver. Give them the code ${sending.code}, or the link.`);
    $("send-copy").focus();
    let view;
    const started = () => {
      if (view) return;
      $("sending").hidden = false;
      view = progressView(`Sending ${title}`, entries.map((e) => ({ path: e.path, size: e.file.size })), {
        cancel: () => sending.cancel(),
        pathOf: () => sending.path,
      });
      $("progress").hidden = false;
    };
    sending.addEventListener("hashing", (e) => {
      if (!view) status(`Preparing: checked ${bytes(e.done)} of ${bytes(e.total)}. The code works already.`);
    });
    sending.addEventListener("connected", () => {
      started();
      status("The receiver is connected.");
    });
    sending.addEventListener("progress", (e) => {
      started();
      view.update(e.sent, e.total);
    });
    try {
      await sending.finished;
    } finally {
      view?.stop();
    }
    show("done");
    $("done-title").textContent = `Sent ${title}`;
    $("done-text").textContent = "The receiver has every file, verified.";
    $("downloads").replaceChildren();
    $("done-clear").hidden = true;
    status(`Sent ${title}.`);
    $("done-again").focus();
  } catch (e) {
    fail(explain(e));
  } finally {
    busy = false;
  }
}

// -------------------------------------------------------------- wiring

function selectTab(which) {
  for (const t of ["receive", "send"]) {
    $(`tab-${t}`).setAttribute("aria-selected", String(t === which));
    $(t).hidden = t !== which;
  }
}

function reset() {
  show();
  $("drop").hidden = false;
  status("");
  $("code").value = "";
  $("pick-files").value = "";
  $("pick-folder").value = "";
  if (!$("receive").hidden) $("code").focus();
}

function start() {
  $("tab-receive").onclick = () => selectTab("receive");
  $("tab-send").onclick = () => selectTab("send");
  $("code-form").addEventListener("submit", (e) => {
    e.preventDefault();
    receive($("code").value);
  });
  $("error-again").onclick = reset;
  $("done-again").onclick = reset;
  const canSend = typeof peerpipe.Node.prototype.sendFiles === "function";
  document.querySelector(".tabs").hidden = !canSend;
  if (canSend) {
    const picked = (input) => send([...input.files].map((file) => ({ path: file.webkitRelativePath || file.name, file })));
    $("pick-files").onchange = () => picked($("pick-files"));
    $("pick-folder").onchange = () => picked($("pick-folder"));
    const drop = $("drop");
    drop.addEventListener("dragover", (e) => {
      e.preventDefault();
      drop.classList.add("over");
    });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", async (e) => {
      e.preventDefault();
      drop.classList.remove("over");
      send(await dropped(e.dataTransfer.items));
    });
  }
  const fromLink = decodeURIComponent(location.hash.slice(1));
  showKept();
  if (fromLink) {
    $("code").value = fromLink;
    history.replaceState(null, "", location.pathname);
    receive(fromLink);
  } else {
    $("code").focus();
  }
}

start();
