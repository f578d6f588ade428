//! `Config::web_root`: the web page's files at `/` next to `/v1/signal`, with
//! their content types and security headers, and nothing outside the directory
//! (traversal raw or percent-encoded, hidden files, a symlink out, a directory
//! without an index, a file over the size bound).

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use common::{Client, RECV_LIMIT, TestServer, bounded, http_get};
use peerpipe_proto::signal::ServerMessage;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const CSP: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; \
    connect-src 'self' ws: wss:; img-src 'self' data: blob:; style-src 'self'; \
    frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// A fresh temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("peerpipe-web-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An HTTP answer: status, headers (names lower-case) and body.
struct Answer {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// Sends `METHOD TARGET` as written (no normalisation) and reads the answer.
async fn request(addr: SocketAddr, method: &str, target: &str) -> Result<Answer> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(
        format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await?;
    let mut raw = Vec::new();
    tokio::time::timeout(RECV_LIMIT, s.read_to_end(&mut raw)).await??;
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no header end")?;
    let head = std::str::from_utf8(&raw[..end])?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .context("no status")?
        .parse()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(Answer {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    })
}

async fn get(addr: SocketAddr, target: &str) -> Result<Answer> {
    request(addr, "GET", target).await
}

fn write(root: &Path, name: &str, bytes: &[u8]) {
    let path = root.join(name);
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("the directory");
    std::fs::write(path, bytes).expect("the file");
}

/// The page's directory inside `tmp/web`, and a secret beside it in `tmp`.
fn page(tmp: &Path) -> PathBuf {
    let root = tmp.join("web");
    write(tmp, "secret.txt", b"outside the root\n");
    write(
        &root,
        "index.html",
        b"<!doctype html><title>peerpipe</title>\n",
    );
    write(&root, "app.js", b"console.log('app');\n");
    write(&root, "worker.mjs", b"export {};\n");
    let wasm: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    write(&root, "peerpipe/peerpipe_web_bg.wasm", &wasm);
    write(&root, "peerpipe/index.html", b"<p>package</p>\n");
    write(&root, "style.css", b"body{}\n");
    write(
        &root,
        "icon.svg",
        b"<svg xmlns='http://www.w3.org/2000/svg'/>\n",
    );
    write(&root, "icon.png", b"\x89PNG\r\n\x1a\n");
    write(&root, "favicon.ico", b"\0\0\x01\0");
    write(&root, "data.json", b"{}\n");
    write(&root, "app.js.map", b"{}\n");
    write(&root, "notes.txt", b"notes\n");
    write(&root, "site.webmanifest", b"{}\n");
    write(&root, "blob.bin", b"\x00\x01");
    write(&root, ".hidden", b"hidden\n");
    write(&root, ".git/config", b"[core]\n");
    write(&root, "peerpipe/.env", b"KEY=1\n");
    std::fs::create_dir_all(root.join("empty")).expect("a directory");
    // Sparse: one byte over the 64 MiB bound, without writing 64 MiB.
    std::fs::File::create(root.join("huge.bin"))
        .and_then(|f| f.set_len((64 << 20) + 1))
        .expect("a sparse file");
    #[cfg(unix)]
    {
        use std::os::unix::fs::symlink;
        symlink("../secret.txt", root.join("out.txt")).expect("a symlink");
        symlink("..", root.join("up")).expect("a symlink");
        symlink(tmp.join("secret.txt"), root.join("abs.txt")).expect("a symlink");
        symlink(".hidden", root.join("peek.txt")).expect("a symlink");
        symlink("app.js", root.join("alias.js")).expect("a symlink");
    }
    root
}

#[tokio::test]
async fn files_are_served_with_their_types_and_headers() -> Result<()> {
    bounded(async {
        let tmp = TempDir::new();
        let root = page(&tmp.0);
        let t = TestServer::with(|c| c.web_root = Some(root.clone())).await?;
        let addr = t.server.local_addr();

        let index = get(addr, "/").await?;
        assert_eq!(index.status, 200);
        assert_eq!(index.body, std::fs::read(root.join("index.html"))?);
        assert_eq!(
            index.header("content-type"),
            Some("text/html; charset=utf-8")
        );
        assert_eq!(index.header("content-security-policy"), Some(CSP));
        for answer in [&index, &get(addr, "/app.js").await?] {
            assert_eq!(answer.header("x-content-type-options"), Some("nosniff"));
            assert_eq!(answer.header("referrer-policy"), Some("no-referrer"));
            assert_eq!(answer.header("cache-control"), Some("no-cache"));
        }
        assert_eq!(get(addr, "/index.html").await?.body, index.body);
        assert_eq!(get(addr, "/?code=1").await?.body, index.body);

        for (path, kind) in [
            ("/app.js", "text/javascript; charset=utf-8"),
            ("/alias.js", "text/javascript; charset=utf-8"),
            ("/worker.mjs", "text/javascript; charset=utf-8"),
            ("/peerpipe/peerpipe_web_bg.wasm", "application/wasm"),
            ("/style.css", "text/css; charset=utf-8"),
            ("/icon.svg", "image/svg+xml"),
            ("/icon.png", "image/png"),
            ("/favicon.ico", "image/x-icon"),
            ("/data.json", "application/json"),
            ("/app.js.map", "application/json"),
            ("/notes.txt", "text/plain; charset=utf-8"),
            ("/site.webmanifest", "application/manifest+json"),
            ("/blob.bin", "application/octet-stream"),
        ] {
            let answer = get(addr, path).await?;
            assert_eq!(answer.status, 200, "{path}");
            assert_eq!(answer.header("content-type"), Some(kind), "{path}");
            let file = root.join(path.trim_start_matches('/'));
            assert_eq!(answer.body, std::fs::read(&file)?, "{path}");
            assert_eq!(
                answer.header("content-length"),
                Some(answer.body.len().to_string().as_str()),
                "{path}"
            );
            assert_eq!(answer.header("x-content-type-options"), Some("nosniff"));
            let csp = answer.header("content-security-policy");
            assert_eq!(csp.is_some(), path.ends_with(".svg"), "{path}: {csp:?}");
        }

        // A directory answers with its index, with or without the slash.
        for path in ["/peerpipe/", "/peerpipe"] {
            let answer = get(addr, path).await?;
            assert_eq!(answer.status, 200, "{path}");
            assert_eq!(answer.body, b"<p>package</p>\n", "{path}");
            assert_eq!(answer.header("content-security-policy"), Some(CSP));
        }

        // HEAD: the headers of GET, no body.
        let head = request(addr, "HEAD", "/peerpipe/peerpipe_web_bg.wasm").await?;
        assert_eq!(head.status, 200);
        assert_eq!(head.header("content-length"), Some("300000"));
        assert_eq!(head.header("content-type"), Some("application/wasm"));
        assert_eq!(head.header("cache-control"), Some("no-cache"));
        assert!(head.body.is_empty());

        for method in ["POST", "PUT", "DELETE", "OPTIONS"] {
            let answer = request(addr, method, "/index.html").await?;
            assert_eq!(answer.status, 405, "{method}");
            assert_eq!(answer.header("allow"), Some("GET, HEAD"), "{method}");
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn nothing_outside_the_root_nor_hidden_is_served() -> Result<()> {
    bounded(async {
        let tmp = TempDir::new();
        let root = page(&tmp.0);
        let t = TestServer::with(|c| c.web_root = Some(root.clone())).await?;
        let addr = t.server.local_addr();
        for target in [
            "/../secret.txt",
            "/peerpipe/../../secret.txt",
            "/./index.html",
            "//index.html",
            "/peerpipe//peerpipe_web_bg.wasm",
            "/%2e%2e/secret.txt",
            "/%2E%2E/secret.txt",
            "/peerpipe/%2e%2e/%2e%2e/secret.txt",
            "/..%2fsecret.txt",
            "/peerpipe%2f..%2f..%2fsecret.txt",
            "/..%5csecret.txt",
            "/..\\secret.txt",
            "/peerpipe\\..\\..\\secret.txt",
            "/index.html%00.txt",
            "/index%2ehtml%2f",
            "/%zz",
            "/.hidden",
            "/%2ehidden",
            "/.git/config",
            "/.git/",
            "/peerpipe/.env",
            "/out.txt",
            "/abs.txt",
            "/up/secret.txt",
            "/peek.txt",
            "/empty",
            "/empty/",
            "/missing.js",
            "/app.js/",
            "/app.js/x",
        ] {
            let answer = get(addr, target).await?;
            assert_eq!(answer.status, 404, "{target}");
            assert!(!answer.body.starts_with(b"outside"), "{target}");
        }
        // Over the size bound: an error, not the file.
        let huge = get(addr, "/huge.bin").await?;
        assert_eq!(huge.status, 500);
        assert!(huge.body.len() < 100);
        // The server still answers after all that.
        assert_eq!(get(addr, "/").await?.status, 200);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn signaling_health_and_metrics_still_answer_with_a_web_root() -> Result<()> {
    bounded(async {
        let tmp = TempDir::new();
        let root = page(&tmp.0);
        let t = TestServer::with(|c| c.web_root = Some(root)).await?;
        let addr = t.server.local_addr();
        assert_eq!(http_get(addr, "/health").await?, (200, "ok\n".into()));
        let (status, metrics) = http_get(addr, "/metrics").await?;
        assert_eq!(status, 200);
        assert!(metrics.contains("peerpipe_connections "), "{metrics}");
        let device = t.device("alice", "a").await?;
        assert!(device.peers.is_empty());
        let mut anonymous = Client::connect(&t.server.url()).await?;
        let welcome = anonymous.hello("", &common::identity(), "b").await?;
        assert!(
            matches!(welcome, ServerMessage::Welcome { .. }),
            "{welcome:?}"
        );
        // A plain GET of the signaling path is the signaling endpoint's refusal,
        // not a file.
        assert_eq!(get(addr, "/v1/signal").await?.status, 426);
        assert_eq!(request(addr, "POST", "/health").await?.status, 405);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn without_a_web_root_there_is_no_page() -> Result<()> {
    bounded(async {
        let t = TestServer::start().await?;
        let addr = t.server.local_addr();
        for target in ["/", "/index.html", "/app.js"] {
            assert_eq!(get(addr, target).await?.status, 404, "{target}");
        }
        assert_eq!(http_get(addr, "/health").await?, (200, "ok\n".into()));
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_web_root_that_is_not_a_directory_is_refused_at_bind() -> Result<()> {
    bounded(async {
        let tmp = TempDir::new();
        let missing = tmp.0.join("no-such-dir");
        let err = TestServer::with(|c| c.web_root = Some(missing.clone()))
            .await
            .err()
            .context("a missing web root was accepted")?;
        assert!(err.to_string().contains("no-such-dir"), "{err}");
        write(&tmp.0, "file", b"x");
        let file = tmp.0.join("file");
        assert!(TestServer::with(|c| c.web_root = Some(file)).await.is_err());
        Ok(())
    })
    .await
}
