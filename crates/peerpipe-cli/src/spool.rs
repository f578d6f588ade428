//! What `send` offers that is not a file yet (standard input, a `--text`):
//! written into a private temporary directory first, so that it can be hashed
//! and served like any file, and removed when the send ends.

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

/// A file in a directory of its own (mode 0700) under `$TMPDIR`; the directory
/// and everything in it go when this is dropped.
pub struct Spool {
    dir: PathBuf,
    file: PathBuf,
}

impl Spool {
    /// An empty spool whose file will be called `name` (checked: one plain
    /// file name).
    fn create(name: &str) -> Result<(Self, std::fs::File)> {
        check_name(name)?;
        let dir =
            std::env::temp_dir().join(format!("peerpipe-send-{:016x}", rand::random::<u64>()));
        DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("creating a temporary directory {}", dir.display()))?;
        let spool = Self {
            file: dir.join(name),
            dir,
        };
        // Others cannot enter the directory: the file may be readable, so that
        // it arrives with the usual mode of a new file.
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&spool.file)
            .with_context(|| format!("creating {}", spool.file.display()))?;
        Ok((spool, file))
    }

    /// Writes `bytes` into a spooled file called `name`.
    pub fn bytes(name: &str, bytes: &[u8]) -> Result<Self> {
        let (spool, mut file) = Self::create(name)?;
        file.write_all(bytes)
            .and_then(|()| file.flush())
            .with_context(|| format!("writing {}", spool.file.display()))?;
        Ok(spool)
    }

    /// A spooled file called `name` that [`StdinFile::fill`] fills:
    /// the spool is made here, so that it is removed when the caller drops it,
    /// also while standard input is still being read.
    pub fn for_stdin(name: &str) -> Result<(Self, StdinFile)> {
        let (spool, file) = Self::create(name)?;
        let path = spool.file.clone();
        Ok((spool, StdinFile { file, path }))
    }

    /// The spooled file.
    pub fn file(&self) -> &Path {
        &self.file
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!("could not remove {}: {e}", self.dir.display());
        }
    }
}

/// The file of a [`Spool::for_stdin`], to fill from standard input.
pub struct StdinFile {
    file: std::fs::File,
    path: PathBuf,
}

impl StdinFile {
    /// Reads standard input to its end into the file. Blocking: call it from
    /// a blocking thread.
    pub fn fill(self) -> Result<()> {
        let mut out = std::io::BufWriter::with_capacity(1 << 20, self.file);
        std::io::copy(&mut std::io::stdin().lock(), &mut out)
            .and_then(|_| out.flush())
            .with_context(|| {
                format!(
                    "reading standard input into {} (it must fit in $TMPDIR)",
                    self.path.display()
                )
            })?;
        Ok(())
    }
}

/// A name for what `-` reads: one plain file name.
fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        bail!("--name {name:?} is not a file name: give a plain name like data.bin (no /)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_file_names() {
        assert!(check_name("stdin").is_ok());
        assert!(check_name("shop.sql").is_ok());
        for bad in ["", ".", "..", "a/b", "/etc/passwd", "x\0y"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_spool_is_private_and_removed_on_drop() {
        use std::os::unix::fs::PermissionsExt as _;
        let spool = Spool::bytes("note", b"hello").unwrap();
        let dir = spool.file().parent().unwrap().to_path_buf();
        assert_eq!(std::fs::read(spool.file()).unwrap(), b"hello");
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        drop(spool);
        assert!(!dir.exists());
    }
}
