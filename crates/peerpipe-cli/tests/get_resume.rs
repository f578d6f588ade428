//! `peerpipe get` killed with SIGKILL mid-download resumes: the second run finds
//! what the first verified on disk and asks the seed for exactly the missing
//! groups, and the file arrives identical.

mod common;

use std::fs;
use std::io::{BufRead as _, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{KillOnDrop, ServeProcess, TempDir, client, spawn_share, wait_bounded};

const SIZE: usize = 48 * 1024 * 1024;
const GROUP: u64 = 16 * 1024;

fn json_lines(child: &mut std::process::Child) -> impl Iterator<Item = serde_json::Value> + use<> {
    BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok())
}

#[test]
fn a_killed_get_fetches_only_what_is_missing() {
    let dir = TempDir::new("get-resume");
    // A slow relay keeps the first download running long enough to kill it.
    let server = ServeProcess::start_with(&dir.0, &["--relay-rate", "300"]);
    let token = server.token("me");
    let file = dir.path("big.bin");
    let mut data = vec![0u8; SIZE];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    fs::write(&file, &data).unwrap();

    let (seed, ticket) = spawn_share(client(
        "share",
        &[file.to_str().unwrap(), "--relay-only"],
        &server,
        &token,
        &dir.path("seed"),
    ));
    let out = dir.path("out");
    let get = |extra: &[&str]| {
        let mut args = vec![
            ticket.as_str(),
            "--json",
            "--relay-only",
            "-o",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        client("get", &args, &server, &token, &dir.path("getter"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };

    // First run: kill -9 once some, but not all, data is verified.
    let mut first = KillOnDrop(get(&[]));
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut killed_at = None;
    for line in json_lines(&mut first) {
        assert!(Instant::now() < deadline, "no progress within 60 s");
        if line["event"] == "progress" {
            let done = line["done"].as_u64().unwrap();
            if done > 0 && done < SIZE as u64 / 2 {
                first.kill().unwrap();
                killed_at = Some(done);
                break;
            }
        }
        if line["event"] == "done" {
            break;
        }
    }
    let killed_at = killed_at.expect("the first run was killed mid-download");
    let _ = first.wait();

    // Second run: resumes.
    let mut second = KillOnDrop(get(&[]));
    let done = json_lines(&mut second)
        .find(|l| l["event"] == "done")
        .expect("the second run finished");
    let status = wait_bounded(&mut second, Duration::from_secs(120));
    assert!(status.success());
    let total_groups = (SIZE as u64).div_ceil(GROUP);
    let reused = done["reused_groups"].as_u64().unwrap();
    let missing = done["missing_groups"].as_u64().unwrap();
    let requested = done["requested_groups"].as_u64().unwrap();
    eprintln!(
        "killed after {killed_at} verified bytes; resume: {reused} groups reused, {missing} missing, {requested} requested"
    );
    assert_eq!(reused + missing, total_groups);
    assert!(
        reused * GROUP >= killed_at,
        "what was verified before the kill is reused"
    );
    assert!(missing > 0, "the first run did not finish");
    assert_eq!(requested, missing, "only the missing groups are fetched");
    assert_eq!(
        done["fetched_bytes"].as_u64().unwrap(),
        SIZE as u64 - reused * GROUP
    );
    assert!(
        fs::read(out.join("big.bin")).unwrap() == data,
        "the file is identical"
    );
    drop(seed);
}
