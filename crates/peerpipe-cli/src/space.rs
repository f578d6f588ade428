//! Free space on the filesystem a receive writes to.

use std::path::{Path, PathBuf};

/// Bytes an unprivileged process may still write on the filesystem that holds
/// `dir`, or that will hold it once created (its nearest existing ancestor is
/// asked); `None` when that cannot be told. Also the directory that was asked.
pub fn available(dir: &Path) -> Option<(u64, PathBuf)> {
    let at = dir
        .ancestors()
        .find(|a| !a.as_os_str().is_empty() && a.exists())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let stat = rustix::fs::statvfs(&at).ok()?;
    Some((stat.f_bavail.saturating_mul(stat.f_frsize), at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_absent_directory_is_asked_through_its_parent() {
        let tmp = std::env::temp_dir();
        let (free, asked) = available(&tmp.join("no-such-dir/below")).unwrap();
        assert_eq!(asked, tmp);
        assert!(free > 0);
        assert_eq!(available(Path::new("")).unwrap().1, PathBuf::from("."));
    }
}
