//! Writing key material safely: private files are created with their final mode
//! (never world-readable for a moment), written in full to a temporary file, synced
//! and renamed into place, so a crash leaves either the old file or the new one.

use super::PkiError;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

fn file_error(path: &Path, e: impl std::fmt::Display) -> PkiError {
    PkiError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Reads a file that may not exist yet.
pub(super) fn read(path: &Path) -> Result<Option<String>, PkiError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(file_error(path, e)),
    }
}

pub(super) fn create_private_dir(dir: &Path) -> Result<(), PkiError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| file_error(dir, e))
}

/// Atomically replaces `path` with `contents`, with permission bits `mode`.
pub fn write_private(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    // a bare file name has the empty path as its parent: that is the current directory
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| file_error(dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        // the mode given at creation is filtered by the umask; set it exactly
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(contents)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|e| file_error(path, e))
}

/// Certificates are public: 0644.
pub(super) fn write_public(path: &Path, contents: &[u8]) -> Result<(), PkiError> {
    write_private(path, contents, 0o644)
}
