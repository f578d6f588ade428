//! `peerpipe serve` serves the web page at `/`: from `--web-dir` (or
//! PEERPIPE_WEB_DIR), else from beside the binary (an installed
//! `../share/peerpipe/web`, then the build tree's `../web`), and says at
//! start-up where to open it; `--no-web` turns it off (and wins over the
//! environment); a `--web-dir` without index.html is refused at start.

mod common;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{KillOnDrop, TempDir, bin, bin_at, wait_bounded};

const INDEX: &str = "<!doctype html><title>peerpipe test page</title>\n";

/// A `peerpipe serve` child and the lines of its stderr as they come.
struct Serve {
    child: KillOnDrop,
    lines: mpsc::Receiver<String>,
    /// Every line read so far.
    seen: Vec<String>,
    /// `127.0.0.1:PORT`, from its "listening on" line.
    addr: String,
}

impl Serve {
    /// Spawns `command` (a `serve --listen 127.0.0.1:0 ...`) and reads its
    /// stderr up to the "clients connect with" line.
    fn start(mut command: Command) -> Self {
        let mut child = KillOnDrop(
            command
                .env_remove("PEERPIPE_LISTEN")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn peerpipe serve"),
        );
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut serve = Serve {
            child,
            lines,
            seen: Vec::new(),
            addr: String::new(),
        };
        let listening = serve.line_with("listening on ws://");
        serve.addr = listening
            .split("ws://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .expect("an address")
            .to_string();
        serve.line_with("clients connect with");
        serve
    }

    /// The next line holding `text` (bounded: 20 s).
    fn line_with(&mut self, text: &str) -> String {
        loop {
            match self.lines.recv_timeout(Duration::from_secs(20)) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(_) => panic!("no line with {text:?}; stderr so far: {:#?}", self.seen),
            }
        }
    }

    /// Stops the server with SIGTERM; every line it wrote.
    fn stop(mut self) -> Vec<String> {
        let killed = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(killed.success());
        wait_bounded(&mut self.child, Duration::from_secs(20));
        self.seen.extend(self.lines.try_iter());
        self.seen
    }
}

/// `serve` on a free loopback port with a fresh secret in `dir`, and none of
/// the environment that would change what it serves.
fn serve(mut command: Command, dir: &Path) -> Command {
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--secret-file"])
        .arg(dir.join("secret"))
        .env_remove("PEERPIPE_WEB_DIR");
    command
}

/// A plain HTTP/1.1 GET: the status and the body.
fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("a read time-out");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("an answer");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a header end");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    (status, body.to_string())
}

/// A page directory `dir/name` with an index.html and a script.
fn page(dir: &Path, name: &str) -> PathBuf {
    let web = dir.join(name);
    std::fs::create_dir_all(web.join("peerpipe")).unwrap();
    std::fs::write(web.join("index.html"), INDEX).unwrap();
    std::fs::write(web.join("peerpipe/peerpipe_web.js"), "export {};\n").unwrap();
    web
}

/// The binary linked (or copied) to `tree/bin/peerpipe`, on the file system
/// of the build directory.
fn binary_in(tree: &Path) -> PathBuf {
    let bin_dir = tree.join("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    let exe = bin_dir.join("peerpipe");
    let built = env!("CARGO_BIN_EXE_peerpipe");
    if std::fs::hard_link(built, &exe).is_err() {
        std::fs::copy(built, &exe).unwrap();
    }
    exe
}

/// A fresh directory under Cargo's temporary directory for integration
/// tests (beside the binary, so a hard link works), removed on drop.
fn build_tree(tag: &str) -> TempDir {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("serve-web-{tag}-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

#[test]
fn web_dir_is_served_at_the_root_and_named_at_start_up() {
    let dir = TempDir::new("serve-web");
    let web = page(&dir.0, "web");
    let mut command = serve(bin(), &dir.0);
    command.arg("--web-dir").arg(&web);
    let mut server = Serve::start(command);
    let line = server.line_with("web page");
    assert_eq!(
        line,
        format!("web page: open http://{}/ in a browser", server.addr)
    );
    assert_eq!(http_get(&server.addr, "/"), (200, INDEX.to_string()));
    assert_eq!(
        http_get(&server.addr, "/peerpipe/peerpipe_web.js"),
        (200, "export {};\n".to_string())
    );
    assert_eq!(http_get(&server.addr, "/health"), (200, "ok\n".to_string()));
    assert_eq!(http_get(&server.addr, "/../secret").0, 404);
    let lines = server.stop();
    assert!(lines.iter().any(|l| l == "server stopped"), "{lines:#?}");
}

#[test]
fn the_environment_names_the_web_dir_and_no_web_wins_over_it() {
    let dir = TempDir::new("serve-web-env");
    let web = page(&dir.0, "web");

    let mut command = serve(bin(), &dir.0);
    command.env("PEERPIPE_WEB_DIR", &web);
    let mut server = Serve::start(command);
    server.line_with("web page: open http://");
    assert_eq!(http_get(&server.addr, "/"), (200, INDEX.to_string()));
    server.stop();

    let mut command = serve(bin(), &dir.0);
    command.env("PEERPIPE_WEB_DIR", &web).arg("--no-web");
    let server = Serve::start(command);
    assert_eq!(http_get(&server.addr, "/").0, 404);
    assert_eq!(http_get(&server.addr, "/health"), (200, "ok\n".to_string()));
    let lines = server.stop();
    assert!(
        lines.iter().any(|l| l == "server stopped"),
        "it ran to the end: {lines:#?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("web page")),
        "nothing said about a page: {lines:#?}"
    );
}

#[test]
fn no_web_conflicts_with_web_dir() {
    let dir = TempDir::new("serve-web-conflict");
    let web = page(&dir.0, "web");
    let out = serve(bin(), &dir.0)
        .arg("--no-web")
        .arg("--web-dir")
        .arg(&web)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--no-web") && err.contains("--web-dir"),
        "{err}"
    );
}

#[test]
fn a_web_dir_without_index_html_is_an_error_at_start() {
    let dir = TempDir::new("serve-web-empty");
    let empty = dir.path("not-built");
    std::fs::create_dir_all(&empty).unwrap();
    for missing in [empty.clone(), dir.path("absent")] {
        let mut command = serve(bin(), &dir.0);
        let out = command.arg("--web-dir").arg(&missing).output().unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&*missing.to_string_lossy()), "{err}");
        assert!(err.contains("index.html"), "{err}");
        assert!(err.contains("scripts/web-page"), "{err}");
        assert!(
            !err.contains("listening"),
            "refused before listening: {err}"
        );
    }
}

#[test]
fn the_page_beside_the_binary_is_found_installed_then_in_the_build_tree() {
    // PREFIX/bin/peerpipe serves PREFIX/share/peerpipe/web before PREFIX/web.
    let installed = build_tree("installed");
    page(&installed.0, "share/peerpipe/web");
    std::fs::create_dir_all(installed.0.join("web")).unwrap();
    std::fs::write(installed.0.join("web/index.html"), "the other one\n").unwrap();
    let mut server = Serve::start(serve(bin_at(&binary_in(&installed.0)), &installed.0));
    server.line_with("web page: open http://");
    assert_eq!(http_get(&server.addr, "/"), (200, INDEX.to_string()));
    server.stop();

    // target/release/peerpipe serves target/web.
    let built = build_tree("built");
    page(&built.0, "web");
    let mut server = Serve::start(serve(bin_at(&binary_in(&built.0)), &built.0));
    server.line_with("web page: open http://");
    assert_eq!(http_get(&server.addr, "/"), (200, INDEX.to_string()));
    server.stop();

    // Neither: one line on how to get a page, and `/` is not found.
    let bare = build_tree("bare");
    let mut server = Serve::start(serve(bin_at(&binary_in(&bare.0)), &bare.0));
    let line = server.line_with("web page");
    assert_eq!(
        line,
        "no web page (build it with scripts/web-page, or give --web-dir DIR)"
    );
    assert_eq!(http_get(&server.addr, "/").0, 404);
    server.stop();
}
