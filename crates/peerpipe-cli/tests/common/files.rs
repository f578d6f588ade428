//! Input files and their comparison, and running a command for its output:
//! shared by the CLI's tests (through `common/wan.rs`) and its benchmarks
//! (through `benches/common/mod.rs`).
#![allow(dead_code)] // each user takes a part

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::Command;

use anyhow::{Result, ensure};

/// Runs `command` to the end; its trimmed stdout, or an error with its stderr.
pub fn output_of(command: &mut Command) -> Result<String> {
    let out = command.output()?;
    ensure!(
        out.status.success(),
        "{command:?}: {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

/// Writes `len` pseudo-random bytes (xorshift, the same for every `seed`) to `path`.
pub fn write_input(path: &Path, len: u64, seed: u64) -> Result<()> {
    let mut out = std::io::BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut x = seed | 1;
    let mut block = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        for chunk in block.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(block.len() as u64) as usize;
        out.write_all(&block[..n])?;
        left -= n as u64;
    }
    out.flush()?;
    Ok(())
}

/// Whether two files have the same bytes, compared in 1 MiB pieces.
pub fn same_files(a: &Path, b: &Path) -> Result<bool> {
    let (mut a, mut b) = (File::open(a)?, File::open(b)?);
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = a.read(&mut x)?;
        if n == 0 {
            return Ok(b.read(&mut y)? == 0);
        }
        if b.read_exact(&mut y[..n]).is_err() || x[..n] != y[..n] {
            return Ok(false);
        }
    }
}

/// Writes `count` files of `len` pseudo-random bytes each under `dir`, 1,000 to a
/// subdirectory; no two files have the same bytes (content addressing cannot
/// fold them).
pub fn write_tree(dir: &Path, count: u64, len: u64) -> Result<()> {
    for i in 0..count {
        let sub = dir.join(format!("d{:03}", i / 1000));
        if i % 1000 == 0 {
            std::fs::create_dir_all(&sub)?;
        }
        let mut x = 0x9e37_79b9_7f4a_7c15 ^ (i + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        let mut bytes = Vec::with_capacity(len as usize + 8);
        while (bytes.len() as u64) < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            bytes.extend_from_slice(&x.to_le_bytes());
        }
        bytes.truncate(len as usize);
        std::fs::write(sub.join(format!("f{i:06}.bin")), bytes)?;
    }
    Ok(())
}

/// Whether two paths hold the same content: two files with the same bytes, or
/// two directories with the same names below them, each the same.
pub fn same_content(a: &Path, b: &Path) -> Result<bool> {
    if !a.is_dir() {
        return Ok(b.is_file() && same_files(a, b)?);
    }
    if !b.is_dir() {
        return Ok(false);
    }
    let names = |dir: &Path| -> Result<Vec<std::ffi::OsString>> {
        let mut names = std::fs::read_dir(dir)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<Vec<_>>>()?;
        names.sort();
        Ok(names)
    };
    let here = names(a)?;
    if here != names(b)? {
        return Ok(false);
    }
    for name in here {
        if !same_content(&a.join(&name), &b.join(&name))? {
            return Ok(false);
        }
    }
    Ok(true)
}
