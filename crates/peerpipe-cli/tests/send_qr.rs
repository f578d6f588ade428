//! `peerpipe send --qr` draws the receive command as a QR code on stderr in
//! Unicode half blocks; read back module by module it is exactly the QR
//! code of that command. The code line stays alone on stdout, and the
//! transfer goes on as usual.

mod common;

use std::io::Read as _;
use std::time::Duration;

use common::{ServeProcess, TempDir, receive, spawn_send_with, wait_bounded};

/// The half-block drawing read back as rows of modules (true: dark).
fn modules(lines: &[&str]) -> Vec<Vec<bool>> {
    let mut rows = Vec::new();
    for line in lines {
        let (mut top, mut bottom) = (Vec::new(), Vec::new());
        for c in line.chars() {
            // Light modules are drawn, dark ones are blank.
            top.push(!matches!(c, '█' | '▀'));
            bottom.push(!matches!(c, '█' | '▄'));
        }
        rows.push(top);
        rows.push(bottom);
    }
    rows
}

#[test]
fn the_qr_code_is_the_receive_command() {
    let dir = TempDir::new("send-qr");
    let server = ServeProcess::start(&dir.0);
    let source = dir.path("photo.jpg");
    std::fs::write(&source, vec![9u8; 50_000]).unwrap();
    let mut sender = spawn_send_with(&server, &dir.path("sender"), &[&source], &["--qr"]);
    let received = receive(
        &server,
        &dir.path("receiver"),
        &sender.code,
        &dir.path("in"),
        &[],
    );
    assert!(
        received.status.success(),
        "{}",
        String::from_utf8_lossy(&received.stderr)
    );
    assert!(wait_bounded(&mut sender.child, Duration::from_secs(30)).success());
    assert!(
        sender.rest.next().is_none(),
        "the code is the only stdout line"
    );
    let mut err = String::new();
    sender
        .child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();

    let command = format!("peerpipe receive {} --server {}", sender.code, server.url);
    assert!(
        err.contains(&format!("on the other device run: {command}")),
        "{err}"
    );
    let drawing: Vec<&str> = err
        .lines()
        .filter(|l| !l.is_empty() && l.chars().all(|c| matches!(c, '█' | '▀' | '▄' | ' ')))
        .collect();
    assert!(!drawing.is_empty(), "a QR code on stderr: {err}");
    let mut rows = modules(&drawing);
    let size = rows[0].len();
    assert!(drawing.iter().all(|l| l.chars().count() == size), "{err}");
    // An odd size: the last line's lower half is padding.
    rows.truncate(size);
    assert_eq!(rows.len(), size, "square: {err}");

    let expected =
        qrcode::QrCode::with_error_correction_level(&command, qrcode::EcLevel::L).unwrap();
    let width = expected.width();
    let quiet = (size - width) / 2;
    assert!(quiet >= 2, "a quiet zone: {size} for {width} modules");
    let colors = expected.to_colors();
    for (y, row) in rows.iter().enumerate() {
        for (x, &dark) in row.iter().enumerate() {
            let inside = (quiet..quiet + width).contains(&x) && (quiet..quiet + width).contains(&y);
            let want = inside && colors[(y - quiet) * width + (x - quiet)] == qrcode::Color::Dark;
            assert_eq!(dark, want, "module ({x}, {y})");
        }
    }
}
