//! The device identity file: created on first use, readable only by its owner.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use peerpipe::Identity;

const HEADER: &str = "peerpipe-identity-v1";

/// Where the identity lives when neither `--identity` nor `PEERPIPE_IDENTITY` names it.
pub fn default_path() -> PathBuf {
    config_dir().join("identity")
}

/// The per-user configuration directory: `$XDG_CONFIG_HOME/peerpipe` or `~/.config/peerpipe`.
pub fn config_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("peerpipe")
}

/// Reads the identity at `path`, or creates a new one there (mode 0600) if absent.
///
/// Several processes may start on a fresh identity at once: the new key is written
/// to a temporary file and linked into place atomically, so every one of them ends
/// up with the same, complete identity.
pub fn load_or_create(path: &Path) -> Result<Identity> {
    match fs::read_to_string(path) {
        Ok(text) => parse(&text).with_context(|| format!("reading identity {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let identity = Identity::from_secret_bytes(rand::random());
            if create(path, &identity)
                .with_context(|| format!("creating identity {}", path.display()))?
            {
                tracing::info!("created a new device identity at {}", path.display());
                Ok(identity)
            } else {
                load_or_create(path)
            }
        }
        Err(e) => Err(e).with_context(|| format!("reading identity {}", path.display())),
    }
}

fn parse(text: &str) -> Result<Identity> {
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) {
        bail!("not a peerpipe identity file (first line must be {HEADER:?})");
    }
    let hex = lines.next().unwrap_or_default().trim();
    let bytes = decode_hex(hex).context("the key line must be 64 hex digits")?;
    Ok(Identity::from_secret_bytes(bytes))
}

fn decode_hex(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Writes `identity` to `path` unless a file is there already; false if one was.
fn create(path: &Path, identity: &Identity) -> Result<bool> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".identity-{:016x}.tmp", rand::random::<u64>()));
    let written = write_private(&tmp, identity).and_then(|()| match fs::hard_link(&tmp, path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e.into()),
    });
    let _ = fs::remove_file(&tmp);
    written
}

fn write_private(path: &Path, identity: &Identity) -> Result<()> {
    let hex: String = identity
        .secret_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    writeln!(file, "{HEADER}\n{hex}")?;
    file.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_identity_reads_back() {
        let dir = std::env::temp_dir().join(format!("pp-id-{}", rand::random::<u64>()));
        let path = dir.join("sub/identity");
        let a = load_or_create(&path).unwrap();
        let b = load_or_create(&path).unwrap();
        assert_eq!(a.device_id(), b.device_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn concurrent_first_uses_agree_on_one_identity() {
        let dir = std::env::temp_dir().join(format!("pp-id-race-{}", rand::random::<u64>()));
        let path = dir.join("identity");
        let ids: Vec<_> = (0..8)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || load_or_create(&path).unwrap().device_id())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        assert!(ids.iter().all(|id| *id == ids[0]));
        assert_eq!(
            fs::read_dir(&dir).unwrap().count(),
            1,
            "no temporary files left"
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn garbage_is_refused() {
        assert!(parse("hello\n").is_err());
        assert!(parse(&format!("{HEADER}\nzz\n")).is_err());
        assert!(parse(&format!("{HEADER}\n{}\n", "g".repeat(64))).is_err());
    }
}
