//! `peerpipe-netem`: runs a command beside a lab of emulated links.
//!
//! ```text
//! peerpipe-netem [--profile NAME] [--seed N] [--hosts a,b,s] -- COMMAND [ARG...]
//! ```
//!
//! Builds the hosts (network namespaces, default `a,b,s`) joined by the
//! profile's links (default `lossy`; `lossy`, `distant`, `long-fat`, `bursty`),
//! then runs COMMAND in the lab's own namespaces with `NETEM_HOST_<NAME>` set to
//! each host's address; `nsenter --net=/run/netns/NAME CMD` runs a command on a
//! host. The lab ends when COMMAND does; its exit status is this program's.

use std::process::{Command, ExitCode};

use peerpipe_netem::{Entered, Lab, Profile, enter};

fn usage() -> ExitCode {
    eprintln!(
        "usage: peerpipe-netem [--profile NAME] [--seed N] [--hosts a,b,s] -- COMMAND [ARG...]\n\
         profiles: {}",
        Profile::all()
            .iter()
            .map(|p| format!("{} ({})", p.name, p.about))
            .collect::<Vec<_>>()
            .join(", ")
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut profile = Profile::lossy();
    let mut seed = 1u64;
    let mut hosts = "a,b,s".to_owned();
    let mut it = args.iter();
    let mut command = Vec::new();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--profile" => match it.next().and_then(|n| Profile::named(n)) {
                Some(p) => profile = p,
                None => return usage(),
            },
            "--seed" => match it.next().and_then(|s| s.parse().ok()) {
                Some(s) => seed = s,
                None => return usage(),
            },
            "--hosts" => match it.next() {
                Some(h) => hosts.clone_from(h),
                None => return usage(),
            },
            "--" => {
                command = it.by_ref().cloned().collect();
            }
            _ => return usage(),
        }
    }
    if command.is_empty() {
        return usage();
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    match enter(&refs) {
        Err(e) => {
            eprintln!("peerpipe-netem: cannot enter namespaces of its own: {e}");
            ExitCode::FAILURE
        }
        Ok(Entered::Ran(status)) => ExitCode::from(status.code().unwrap_or(1).clamp(0, 255) as u8),
        Ok(Entered::Inside) => {
            let names: Vec<&str> = hosts.split(',').filter(|h| !h.is_empty()).collect();
            let lab = match Lab::start(&names, &profile.link, seed) {
                Ok(lab) => lab,
                Err(e) => {
                    eprintln!("peerpipe-netem: cannot build the lab: {e}");
                    return ExitCode::FAILURE;
                }
            };
            eprintln!(
                "peerpipe-netem: {} ({}), {lab:?}",
                profile.name, profile.about
            );
            let mut child = Command::new(&command[0]);
            child.args(&command[1..]);
            for name in &names {
                child.env(
                    format!("NETEM_HOST_{}", name.to_uppercase()),
                    lab.addr(name).to_string(),
                );
            }
            match child.status() {
                Ok(status) => ExitCode::from(status.code().unwrap_or(1).clamp(0, 255) as u8),
                Err(e) => {
                    eprintln!("peerpipe-netem: cannot run {}: {e}", command[0]);
                    ExitCode::FAILURE
                }
            }
        }
    }
}
