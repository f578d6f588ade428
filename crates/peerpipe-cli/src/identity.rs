//! The device identity file: created on first use, readable only by its owner.

use std::fs;
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

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

/// The lock of the identity this process holds, kept open until it exits.
static HELD: OnceLock<fs::File> = OnceLock::new();

/// Takes the identity at `path` for this process alone (for the commands that
/// others reach by device id: `listen`, `share`), or says which command has it.
///
/// The server knows a device by its key and lets a new link with the same key
/// replace the old one (a device that reconnects must win over its own dead
/// link). So two processes must never join with one key: the lock file beside
/// the identity (`IDENTITY.lock`) makes the second one fail at once, instead of
/// cutting off the first.
pub fn load_exclusive(path: &Path, command: &str) -> Result<Identity> {
    let identity = load_or_create(path)?;
    let lock_path = lock_path(path);
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let holder = if holder.is_empty() {
                "another peerpipe command".to_string()
            } else {
                holder.to_string()
            };
            bail!(
                "the device identity {} is in use by {holder}: only one `listen` or `share` \
                 can be this device at a time; stop it, or give this one its own device with \
                 --identity OTHER_FILE",
                path.display()
            );
        }
        Err(fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("locking {}", lock_path.display()));
        }
    }
    file.set_len(0)?;
    file.rewind()?;
    write!(file, "`peerpipe {command}` (pid {})", std::process::id())?;
    // Held (and locked) until the process exits.
    let _ = HELD.set(file);
    Ok(identity)
}

/// A device key for this run only, never written to disk: the commands that
/// only look or fetch (`peers`, `connect`, `send`, `receive`, `get`) join as a
/// short-lived device of the same user, so any number of them run beside a
/// `listen` or `share` that holds the identity.
pub fn short_lived() -> Identity {
    Identity::from_secret_bytes(rand::random())
}

fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    path.with_file_name(name)
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
    fn a_held_identity_is_refused_with_its_holder() {
        let dir = std::env::temp_dir().join(format!("pp-id-lock-{}", rand::random::<u64>()));
        let path = dir.join("identity");
        let first = load_exclusive(&path, "listen").unwrap();
        // Another open file description of the lock conflicts like another process.
        let other = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(lock_path(&path))
            .unwrap();
        assert!(matches!(
            other.try_lock(),
            Err(fs::TryLockError::WouldBlock)
        ));
        let holder = fs::read_to_string(lock_path(&path)).unwrap();
        assert!(holder.contains("peerpipe listen"), "{holder}");
        assert_ne!(short_lived().device_id(), first.device_id());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn garbage_is_refused() {
        assert!(parse("hello\n").is_err());
        assert!(parse(&format!("{HEADER}\nzz\n")).is_err());
        assert!(parse(&format!("{HEADER}\n{}\n", "g".repeat(64))).is_err());
    }
}
