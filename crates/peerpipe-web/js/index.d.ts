// Types of the peerpipe package (index.js).

/** An error from peerpipe: `code` names what went wrong (the native
 * library's error and close-reason names: `BadToken`, `NotFound`,
 * `PeerOffline`, `Rejected`, `TimedOut`, `MessageTooLarge`, `PeerClosed`,
 * `PeerDisconnected`, `NotConnected`, `Unreachable`, ...). */
export interface PeerpipeError extends Error {
  code: string;
}

/** A device as the server lists it. */
export interface PeerInfo {
  id: string;
  label: string;
}

/** Both ends of a stream. Writes settle once the peer granted room for them;
 * a reader that stops pulling stops the writer on the other side. */
export interface Duplex {
  id: number;
  readable: ReadableStream<Uint8Array>;
  writable: WritableStream<Uint8Array | ArrayBuffer | ArrayBufferView | string>;
}

export type Path = "relay" | "webrtc";

export interface MessageEvent extends Event {
  data: Uint8Array;
  text(): string;
}
export interface StreamEvent extends Event, Duplex {}
export interface PathChangeEvent extends Event {
  path: Path;
}
export interface CloseEvent extends Event {
  reason: PeerpipeError;
}
export interface IncomingConnectionEvent extends Event {
  peer: PeerInfo;
  service: string | null;
  accept(): Promise<Connection>;
  reject(): void;
}
export interface PeerOnlineEvent extends Event {
  peer: PeerInfo;
}
export interface PeerOfflineEvent extends Event {
  id: string;
}
export interface StoppedEvent extends Event {
  reason: PeerpipeError;
}

interface ConnectionEvents {
  message: MessageEvent;
  stream: StreamEvent;
  pathchange: PathChangeEvent;
  slow: Event;
  streamopenable: Event;
  close: CloseEvent;
}

export interface ReconnectingEvent extends Event {
  attempt: number;
  delay: number;
}

export interface ConnectionAboutEvent extends Event {
  connection: Connection;
  peer: PeerInfo;
  session: string;
}
export interface ConnectionClosedEvent extends ConnectionAboutEvent {
  reason: PeerpipeError;
}
export interface NodePathChangeEvent extends ConnectionAboutEvent {
  path: Path;
}

interface NodeEvents {
  connectionclosed: ConnectionClosedEvent;
  pathchange: NodePathChangeEvent;
  slow: ConnectionAboutEvent;
  reconnecting: ReconnectingEvent;
  reconnected: Event;
  incomingconnection: IncomingConnectionEvent;
  peeronline: PeerOnlineEvent;
  peeroffline: PeerOfflineEvent;
  stopped: StoppedEvent;
  error: StoppedEvent;
}

/** A connection to another device, end-to-end encrypted. */
export class Connection extends EventTarget {
  readonly peer: PeerInfo;
  readonly session: string;
  readonly service: string | null;
  readonly path: Path;
  readonly closed: PeerpipeError | null;
  send(data: string | ArrayBuffer | ArrayBufferView): Promise<void>;
  sendConfirmed(data: string | ArrayBuffer | ArrayBufferView): Promise<void>;
  openStream(): Promise<Duplex>;
  restartDirect(): void;
  close(): Promise<void>;
  addEventListener<K extends keyof ConnectionEvents>(
    type: K,
    listener: (event: ConnectionEvents[K]) => void,
    options?: boolean | AddEventListenerOptions,
  ): void;
}

export interface BindOptions {
  /** The server's signaling URL: `ws://HOST:PORT/v1/signal` or `wss://...`. */
  server: string;
  /** An admission token (`peerpipe token`); empty: anonymous. */
  token?: string;
  /** What the user's other devices see this one as. */
  label?: string;
  /** The device's 32-byte key. Default: kept in IndexedDB (a fresh one in Node.js). */
  secret?: Uint8Array;
  /** The IndexedDB database the key lives in. */
  keyStore?: string;
  /** The largest message accepted from a peer, in bytes. */
  maxMessageSize?: number;
  /** Where the wasm file is (URL or bytes), if not beside the package. */
  wasm?: string | URL | BufferSource;
}

/** A device's node: its link to the server. */
export class Node extends EventTarget {
  static bind(options: BindOptions): Promise<Node>;
  readonly id: string;
  onlinePeers(): Promise<PeerInfo[]>;
  connect(id: string, options?: { service?: string }): Promise<Connection>;
  /** Offers a one-time code that a device of any user can claim. */
  offerCode(): Promise<CodeOffer>;
  /** Claims a one-time code and connects to its offerer. Fails with
   * `Malformed`, `NotFound` (no such code, or already used), `WrongCode`
   * (the words differ; the code is used up), `TimedOut`, `PeerGone`. */
  claimCode(code: string): Promise<Connection>;
  /** Claims the one-time code of a sender of files (the CLI's `peerpipe
   * send`) and settles once its list of files arrived, verified against
   * the hash the sender named. Fails as `claimCode`, or with
   * `SenderStopped` (its reason in the message), `NotSending` (the code's
   * device sends no files), `Corrupt`, `Collection` (an unsafe or malformed
   * list), `TooLarge` (more than 64 GiB), `TimedOut`. */
  receiveCode(code: string): Promise<Receive>;
  /** Sends files by one-time code, as `peerpipe send` does, to the CLI's
   * `peerpipe receive CODE` or to `receiveCode` elsewhere. The paths are
   * checked before anything else (a bad list fails with `BadPath`,
   * `Conflict`, `TooLarge`, `NoFiles` or `BadFile`, no code taken); settles
   * with the `Send` as soon as the server gave the code, while the files
   * are hashed (a receiver that comes early waits). Files are read in
   * 1 MiB slices (`blob.slice().arrayBuffer()`), never whole. */
  sendFiles(entries: SendEntry[], options?: SendOptions): Promise<Send>;
  shutdown(): void;
  addEventListener<K extends keyof NodeEvents>(
    type: K,
    listener: (event: NodeEvents[K]) => void,
    options?: boolean | AddEventListenerOptions,
  ): void;
}

/** A one-time code this node offers. */
export class CodeOffer {
  /** The code to show, like `7-amber-falcon`. */
  readonly code: string;
  /** Milliseconds the code stays valid unclaimed, from its allocation. */
  readonly validFor: number;
  /** Waits for the claim, runs the key exchange and accepts the claimer's
   * connection (its `service` is `"code"`). Fails with `Expired`,
   * `WrongCode`, `PeerGone`, `TimedOut`, `Cancelled`, `NotConnected`. */
  accept(): Promise<Connection>;
  /** Withdraws the code. */
  cancel(): void;
}

/** One offered file. */
export interface OfferedFile {
  /** Relative, `/`-separated, checked: no `..`, `.`, empty or absolute part. */
  path: string;
  size: number;
}

/** Where one file is written: a WHATWG `WritableStream` (written in order
 * from the start, every write awaited), or an object whose methods may
 * return promises, each awaited before the next call. `write` gets a fresh
 * `Uint8Array` of verified bytes (at most 1 MiB) that the sink may keep. */
export type FileSink =
  | WritableStream<Uint8Array>
  | {
      write(bytes: Uint8Array): unknown;
      close(): unknown;
      /** The file will not be complete: the receive failed or was cancelled. */
      abort?(reason: PeerpipeError): unknown;
    };

/** Where a receive writes: `open` is called for every file in order (for
 * files with the same contents, and empty files, together), the previous
 * one closed first except for those. */
export interface ReceiveSink {
  /** The sink of one file: it keeps the first `offset` bytes of what it
   * holds (0 unless resuming: those are verified), drops the rest, and is
   * written on from there. */
  open(path: string, size: number, offset: number): FileSink | Promise<FileSink>;
  /** Resuming: what the sink holds of the file from an earlier attempt, or
   * `null`. It is read back and verified before anything is fetched; only
   * groups past its verified start are fetched. */
  existing?(path: string, size: number): Blob | null | Promise<Blob | null>;
}

export interface ReceiveProgressEvent extends Event {
  /** Bytes verified and written, of all files. */
  bytes: number;
  /** Bytes verified, some perhaps not written yet. */
  verified: number;
  total: number;
  /** The file being written, and its bytes written. */
  path: string;
  fileBytes: number;
  fileSize: number;
}
export interface ReceiveFileEvent extends Event {
  /** A file written in full and closed. */
  path: string;
  size: number;
}
interface ReceiveEvents {
  progress: ReceiveProgressEvent;
  file: ReceiveFileEvent;
}

export interface ReceiveReport {
  bytes: number;
  files: number;
  seconds: number;
  /** Bytes fetched from the sender (verified). */
  fetched: number;
  /** Bytes the sink held verified already (resuming), not fetched. */
  reused: number;
}

/** Files a sender offers over a one-time code (from `Node.receiveCode`).
 * Nothing is fetched or written before `accept`. Memory stays bounded
 * whatever the size: at most 8 MiB requested and 8 MiB verified waiting
 * for the sink. */
export class Receive extends EventTarget {
  readonly files: readonly OfferedFile[];
  readonly total: number;
  /** The collection's BLAKE3 hash, hex. */
  readonly hash: string;
  /** `"text"` for one short text (`peerpipe send --text`, at most 64 KiB)
   * meant to be shown: see `acceptText`. */
  readonly kind: "files" | "text";
  readonly peer: PeerInfo;
  readonly path: Path;
  /** Fetches the files, verifies every 16 KiB group in WebAssembly before
   * it is handed to the sink, writes them in order and tells the sender
   * (whose `peerpipe send` then exits 0). Fails with `Corrupt` (nothing
   * unverified was written; the sink's file is aborted), `Protocol`,
   * `NotHeld`, `Sink` (the sink threw: `cause` holds what it threw),
   * `Cancelled`, `TimedOut` (no data for a minute), `Busy` (accepted or
   * declined already), or how the connection ended (`PeerClosed`,
   * `PeerDisconnected`, ...). */
  accept(sink: ReceiveSink): Promise<ReceiveReport>;
  /** Receives a text offer into memory, verified, decoded as UTF-8; fails
   * with `NotText` for files, else as `accept`. */
  acceptText(): Promise<string>;
  /** Refuses: the sender is told (its `peerpipe send` exits non-zero,
   * saying the receiver declined). */
  decline(): Promise<void>;
  /** Stops the receive (as `decline` before `accept`). */
  cancel(): void;
  addEventListener<K extends keyof ReceiveEvents>(
    type: K,
    listener: (event: ReceiveEvents[K]) => void,
    options?: boolean | AddEventListenerOptions,
  ): void;
}

/** A sink writing into a browser directory (OPFS's
 * `navigator.storage.getDirectory()`, or `showDirectoryPicker()`'s): folders
 * made as needed, each file through `createWritable()`, so a failed or
 * cancelled receive leaves no partial file. With `resume`, what was
 * written is kept on failure and a later receive of the same files fetches
 * only what is missing (a differing file there is replaced). */
export function directorySink(dir: FileSystemDirectoryHandle, options?: { resume?: boolean }): ReceiveSink;

/** One file to send. */
export interface SendEntry {
  /** Relative, `/`-separated (as `webkitRelativePath`): no empty, `.` or
   * `..` part, no leading `/`, backslash or NUL; no path twice, no file
   * that is also another's folder. */
  path: string;
  /** Its contents (a `File` from a picker or a drop, any `Blob`). */
  file: Blob;
}

export interface SendOptions {
  /** Cancels the send when aborted (as `Send.cancel`). */
  signal?: AbortSignal;
}

export interface HashingEvent extends Event {
  /** Bytes hashed so far, of `total`. */
  done: number;
  total: number;
}
export interface SendConnectedEvent extends Event {
  /** The receiving device. */
  peer: PeerInfo;
  /** The path the data takes when the receiver came; see `Send.path`. */
  path: Path;
}
export interface SendProgressEvent extends Event {
  /** Bytes of file data served so far, of `total`. */
  sent: number;
  total: number;
}
export interface SendReport {
  bytes: number;
  files: number;
  /** Bytes of file data served (more than `bytes` if some were asked twice). */
  sent: number;
  seconds: number;
}
export interface SendDoneEvent extends Event, SendReport {}

interface SendEvents {
  hashing: HashingEvent;
  connected: SendConnectedEvent;
  progress: SendProgressEvent;
  done: SendDoneEvent;
}

/** Files sent over a one-time code (from `Node.sendFiles`). Memory stays
 * bounded whatever the size: the group hashes (32 bytes per 16 KiB) and a
 * few 1 MiB slices being read. */
export class Send extends EventTarget {
  /** The code to give the receiver, like `7-amber-falcon`. */
  readonly code: string;
  /** The files as given. */
  readonly files: readonly OfferedFile[];
  readonly total: number;
  /** The collection's BLAKE3 hash, hex, once hashed. */
  readonly hash: string | null;
  /** The path the data takes now, once the receiver came. */
  readonly path: Path | null;
  /** Settles once the receiver has every file, verified. Fails with
   * `Declined`, `ReceiverStopped` (its reason in the message), `Cancelled`,
   * `File` (a file could not be read, or changed since it was picked),
   * `Expired` (nobody used the code in time), or how the connection ended
   * (`PeerClosed`, `PeerDisconnected`, `TimedOut`, ...). */
  readonly finished: Promise<SendReport>;
  /** Stops: the code is withdrawn, or the receiver is told and the
   * transfer ends (`finished` fails with `Cancelled`). */
  cancel(): void;
  addEventListener<K extends keyof SendEvents>(
    type: K,
    listener: (event: SendEvents[K]) => void,
    options?: boolean | AddEventListenerOptions,
  ): void;
}

/** `text` (a link, say) as an SVG image of its QR code: a viewBox of its
 * modules with a quiet zone of four, dark on white, crisp edges. Needs the
 * core loaded (`load()` or `Node.bind`); fails with `NotLoaded` or
 * `TooLong`. */
export function qrSvg(text: string): string;

/** Bytes of memory the WebAssembly core holds (0 before it loaded). */
export function memoryBytes(): number;

/** Loads the WebAssembly core (done by `Node.bind` too). */
export function load(wasm?: string | URL | BufferSource): Promise<void>;
