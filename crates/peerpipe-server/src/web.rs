//! Static files from [`Config::web_root`](crate::Config::web_root): the web page
//! next to `/v1/signal`.
//!
//! A request path is taken apart before the file system sees it
//! ([`relative_path`]): each segment is percent-decoded on its own and refused
//! (404) if it is empty, starts with `.` (so `.`, `..` and hidden files), or
//! holds `/`, `\`, NUL or another control character; a path ending in `/`
//! names that directory's `index.html`. What is left is resolved with every
//! symlink followed and must stay inside the root (itself resolved once, at
//! start), below no hidden name, and be a regular file; a directory answers
//! with its `index.html`. Files over [`MAX_FILE`] are not served (500, logged).
//!
//! Files are streamed in pieces of [`CHUNK`] bytes read through `tokio::fs`
//! (off the async threads), so a slow browser holds one piece, not the file.
//! Every file carries `X-Content-Type-Options: nosniff`,
//! `Referrer-Policy: no-referrer` and `Cache-Control: no-cache`; HTML and SVG
//! documents a strict [`CONTENT_SECURITY_POLICY`] as well.

use std::io;
use std::path::{Component, Path, PathBuf};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt as _};

/// The largest file served.
pub(crate) const MAX_FILE: u64 = 64 << 20;
/// Bytes read from a file at a time.
const CHUNK: usize = 64 * 1024;
/// The file a directory answers with.
const INDEX: &str = "index.html";

/// Sent with every HTML (and SVG) document: its own scripts, styles and wasm
/// only, WebSockets to anywhere (the signaling server may be elsewhere), no
/// framing, no `<base>`, no form posts.
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; \
    script-src 'self' 'wasm-unsafe-eval'; connect-src 'self' ws: wss:; \
    img-src 'self' data: blob:; style-src 'self'; frame-ancestors 'none'; \
    base-uri 'none'; form-action 'none'";

/// A directory served read-only.
#[derive(Debug)]
pub(crate) struct WebRoot {
    /// The directory, symlinks resolved.
    root: PathBuf,
}

impl WebRoot {
    /// Resolves `dir`, which must be a directory.
    pub(crate) async fn open(dir: &Path) -> io::Result<Self> {
        let context =
            |e: io::Error| io::Error::new(e.kind(), format!("web_root {}: {e}", dir.display()));
        let root = tokio::fs::canonicalize(dir).await.map_err(context)?;
        if !tokio::fs::metadata(&root).await.map_err(context)?.is_dir() {
            return Err(context(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a directory",
            )));
        }
        tracing::info!(root = %root.display(), "serving the web page's files");
        Ok(Self { root })
    }

    /// Answers one request: GET or HEAD of a file under the root.
    pub(crate) async fn serve(&self, req: Request) -> Response {
        let method = req.method();
        if method != Method::GET && method != Method::HEAD {
            let mut refusal = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD here\n");
            refusal
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return refusal;
        }
        let head = method == Method::HEAD;
        let Some(relative) = relative_path(req.uri().path()) else {
            return not_found();
        };
        match self.open_file(&relative).await {
            Ok(Some((path, file, len))) => file_response(&path, file, len, head),
            Ok(None) => not_found(),
            Err(e) => {
                tracing::warn!(path = %self.root.join(&relative).display(), "cannot serve: {e}");
                plain(StatusCode::INTERNAL_SERVER_ERROR, "cannot read this file\n")
            }
        }
    }

    /// The regular file `relative` names under the root (a directory: its
    /// index), opened, with its path and length; `None` if there is none
    /// there or it resolves outside the root; `Err` if it cannot be read or
    /// is over [`MAX_FILE`].
    async fn open_file(
        &self,
        relative: &Path,
    ) -> io::Result<Option<(PathBuf, tokio::fs::File, u64)>> {
        let Some(mut path) = self.resolve(&self.root.join(relative)).await? else {
            return Ok(None);
        };
        if absent(tokio::fs::metadata(&path).await)?.is_some_and(|m| m.is_dir()) {
            match self.resolve(&path.join(INDEX)).await? {
                Some(index) => path = index,
                None => return Ok(None),
            }
        }
        let mut options = tokio::fs::OpenOptions::new();
        options.read(true);
        // The resolved path has no symlink left; one swapped in since is not
        // followed, and a FIFO swapped in does not block the open.
        #[cfg(unix)]
        options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
        let Some(file) = absent(options.open(&path).await)? else {
            return Ok(None);
        };
        let meta = file.metadata().await?;
        if !meta.is_file() {
            return Ok(None);
        }
        if meta.len() > MAX_FILE {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!("{} bytes, over the {MAX_FILE}-byte limit", meta.len()),
            ));
        }
        Ok(Some((path, file, meta.len())))
    }

    /// `path` with every symlink resolved, if it exists and stays inside the
    /// root below no hidden name.
    async fn resolve(&self, path: &Path) -> io::Result<Option<PathBuf>> {
        let Some(real) = absent(tokio::fs::canonicalize(path).await)? else {
            return Ok(None);
        };
        let inside = real.strip_prefix(&self.root).is_ok_and(|rest| {
            rest.components().all(|c| match c {
                Component::Normal(name) => !name.as_encoded_bytes().starts_with(b"."),
                _ => false,
            })
        });
        Ok(inside.then_some(real))
    }
}

/// `Ok(None)` for the errors that mean "nothing there".
fn absent<T>(result: io::Result<T>) -> io::Result<Option<T>> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(None)
        }
        // O_NOFOLLOW met a symlink.
        #[cfg(unix)]
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The path under the root that a request path names, or `None` if it is
/// refused: not absolute, an empty segment inside it, a segment that is not
/// valid percent-encoded UTF-8, or one that decodes to something empty,
/// starting with `.`, or holding `/`, `\`, NUL or a control character. A path
/// ending in `/` (`/` itself too) names the `index.html` there.
pub(crate) fn relative_path(path: &str) -> Option<PathBuf> {
    let mut segments = path.strip_prefix('/')?.split('/').peekable();
    let mut relative = PathBuf::new();
    while let Some(raw) = segments.next() {
        if raw.is_empty() && segments.peek().is_none() {
            relative.push(INDEX);
            break;
        }
        let name = String::from_utf8(percent_decode(raw)?).ok()?;
        let refused = name.is_empty()
            || name.starts_with('.')
            || name
                .chars()
                .any(|c| c == '/' || c == '\\' || c.is_control());
        if refused {
            return None;
        }
        relative.push(name);
    }
    Some(relative)
}

/// `%XX` escapes decoded; `None` for a `%` without two hex digits.
fn percent_decode(raw: &str) -> Option<Vec<u8>> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The `Content-Type` for a file name, by its extension.
pub(crate) fn content_type(path: &Path) -> &'static str {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json" | "map") => "application/json",
        Some("txt") => "text/plain; charset=utf-8",
        Some("webmanifest") => "application/manifest+json",
        _ => "application/octet-stream",
    }
}

/// A file's answer: its headers and (for GET) its bytes, `len` of them.
fn file_response(path: &Path, file: tokio::fs::File, len: u64, head: bool) -> Response {
    let kind = content_type(path);
    let body = if head {
        Body::empty()
    } else {
        Body::from_stream(pieces(file.take(len)))
    };
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if kind.starts_with("text/html") || kind == "image/svg+xml" {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
    }
    response
}

/// `reader` as a stream of pieces of at most [`CHUNK`] bytes.
fn pieces<R: AsyncRead + Unpin + Send + 'static>(
    reader: R,
) -> impl futures_util::Stream<Item = io::Result<Bytes>> + Send + 'static {
    futures_util::stream::try_unfold(reader, |mut reader| async move {
        let mut piece = BytesMut::with_capacity(CHUNK);
        if reader.read_buf(&mut piece).await? == 0 {
            return Ok(None);
        }
        Ok(Some((piece.freeze(), reader)))
    })
}

fn not_found() -> Response {
    plain(StatusCode::NOT_FOUND, "not found\n")
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    let mut response = (status, text).into_response();
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(path: &str) -> String {
        relative_path(path)
            .unwrap_or_else(|| panic!("{path:?} refused"))
            .to_str()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn ordinary_paths_name_files_and_directories_their_index() {
        assert_eq!(ok("/"), "index.html");
        assert_eq!(ok("/index.html"), "index.html");
        assert_eq!(
            ok("/peerpipe/peerpipe_web_bg.wasm"),
            "peerpipe/peerpipe_web_bg.wasm"
        );
        assert_eq!(ok("/peerpipe/"), "peerpipe/index.html");
        assert_eq!(ok("/a%20b/c.js"), "a b/c.js");
        assert_eq!(ok("/caf%C3%A9.txt"), "café.txt");
        assert_eq!(ok("/a..b"), "a..b");
    }

    #[test]
    fn traversal_hidden_names_and_odd_bytes_are_refused() {
        for path in [
            "",
            "index.html",
            "//",
            "/a//b",
            "//etc/passwd",
            "/.",
            "/..",
            "/../etc/passwd",
            "/a/../../etc/passwd",
            "/a/./b",
            "/.git/config",
            "/a/.env",
            "/%2e%2e/etc/passwd",
            "/%2E%2E/etc/passwd",
            "/%2e",
            "/a%2f..%2f..%2fetc",
            "/a%2F..",
            "/..%5c..%5cetc",
            "/a%5cb",
            "/a\\b",
            "/a%00.html",
            "/a%0a",
            "/%",
            "/%2",
            "/%zz",
            "/%ff",
            "/%C3",
            "/%2e%2e%2f",
        ] {
            assert_eq!(relative_path(path), None, "{path:?}");
        }
    }

    #[test]
    fn content_types_follow_the_extension() {
        let kind = |name: &str| content_type(Path::new(name));
        assert_eq!(kind("index.html"), "text/html; charset=utf-8");
        assert_eq!(kind("a.JS"), "text/javascript; charset=utf-8");
        assert_eq!(kind("a.mjs"), "text/javascript; charset=utf-8");
        assert_eq!(kind("a.wasm"), "application/wasm");
        assert_eq!(kind("a.css"), "text/css; charset=utf-8");
        assert_eq!(kind("a.svg"), "image/svg+xml");
        assert_eq!(kind("a.png"), "image/png");
        assert_eq!(kind("favicon.ico"), "image/x-icon");
        assert_eq!(kind("a.json"), "application/json");
        assert_eq!(kind("a.js.map"), "application/json");
        assert_eq!(kind("a.txt"), "text/plain; charset=utf-8");
        assert_eq!(kind("site.webmanifest"), "application/manifest+json");
        assert_eq!(kind("a.exe"), "application/octet-stream");
        assert_eq!(kind("README"), "application/octet-stream");
    }

    #[tokio::test]
    async fn pieces_are_bounded_and_cover_the_reader() {
        use futures_util::TryStreamExt as _;
        let data: Vec<u8> = (0..3 * CHUNK + 5).map(|i| (i % 253) as u8).collect();
        let got: Vec<Bytes> = pieces(std::io::Cursor::new(data.clone()))
            .try_collect()
            .await
            .unwrap();
        assert!(got.iter().all(|p| p.len() <= CHUNK && !p.is_empty()));
        assert_eq!(got.concat(), data);
    }
}
