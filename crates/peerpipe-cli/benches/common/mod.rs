//! Helpers shared by the bench binaries: ports, and (from the tests' own
//! helpers) input files, their comparison and commands.
#![allow(dead_code)] // each bench binary uses a part

#[path = "../../tests/common/files.rs"]
pub mod files;

/// The seed of every benchmark's input file.
pub const SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
