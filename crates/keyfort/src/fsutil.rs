//! Small file helpers: atomic writes with explicit permissions.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of files holding secrets (private keys, `dev.json`).
pub const PRIVATE: u32 = 0o600;
/// Mode of public files (certificates).
pub const PUBLIC: u32 = 0o644;

/// Writes `data` to `path` atomically: a temporary file in the same directory with `mode`,
/// flushed to disk, then renamed over `path`. A reader sees the old file or the new one, never a
/// partial one, and a secret is never readable by others even for a moment.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = dir.join(tmp_name);

    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        // `mode` only applies when the file is created; a leftover temporary file keeps its own.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(data)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_with_mode_and_replaces() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("secret.json");
        write_atomic(&path, b"one", PRIVATE).unwrap_or_else(|e| panic!("{e}"));
        write_atomic(&path, b"two", PRIVATE).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(fs::read(&path).unwrap_or_default(), b"two");
        let mode = fs::metadata(&path).map(|m| m.permissions().mode() & 0o777);
        assert_eq!(mode.unwrap_or_default(), 0o600);
        let entries = fs::read_dir(dir.path())
            .map(|d| d.count())
            .unwrap_or_default();
        assert_eq!(entries, 1, "no temporary file left behind");
    }
}
