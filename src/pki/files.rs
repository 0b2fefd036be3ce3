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

/// A directory only its owner (root) may enter: made 0700 if missing, and set to
/// 0700 if an older install left it open (k3s' `server/` and CIS 1.1.11). A symlink
/// in its place is refused rather than followed.
pub fn private_dir(dir: &Path) -> Result<(), PkiError> {
    create_private_dir(dir)?;
    let meta = fs::symlink_metadata(dir).map_err(|e| file_error(dir, e))?;
    if !meta.is_dir() {
        return Err(file_error(dir, "is not a directory (a symlink?)"));
    }
    if meta.permissions().mode() & 0o1000 != 0 {
        // a shared sticky directory (`--data-dir /tmp`): not ours to close
        return Err(file_error(
            dir,
            "is a shared (sticky) directory; choose a directory of its own",
        ));
    }
    if meta.permissions().mode() & 0o777 != 0o700 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| file_error(dir, e))?;
    }
    Ok(())
}

/// Atomically replaces `path` with `contents`, with permission bits `mode`. The
/// temporary file is created new (`O_EXCL`) and never through a link (`O_NOFOLLOW`),
/// so another user cannot plant a link under its name in a shared directory and
/// receive the contents.
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
    let mut nonce = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
        .map_err(|_| file_error(path, "no randomness for a temporary name"))?;
    let nonce: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = dir.join(format!(".{name}.tmp-{}-{nonce}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_files_never_go_through_a_planted_link() {
        let shared = tempfile::tempdir().unwrap();
        let stolen = shared.path().join("stolen");
        // another user plants links under every name a writer of this pid could use
        for i in 0..4 {
            let _ = std::os::unix::fs::symlink(
                &stolen,
                shared
                    .path()
                    .join(format!(".kubeconfig.tmp-{}{}", std::process::id(), i)),
            );
        }
        let target = shared.path().join("kubeconfig");
        write_private(&target, b"secret", 0o600).unwrap();
        assert!(!stolen.exists(), "nothing was written through a link");
        assert_eq!(fs::read(&target).unwrap(), b"secret");
        assert_eq!(
            fs::metadata(&target).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn private_directories_are_tightened_and_links_refused() {
        let root = tempfile::tempdir().unwrap();
        let open = root.path().join("server");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(open.join("db"), "x").unwrap();
        fs::set_permissions(open.join("db"), fs::Permissions::from_mode(0o644)).unwrap();
        private_dir(&open).unwrap();
        assert_eq!(
            fs::metadata(&open).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let link = root.path().join("agent");
        std::os::unix::fs::symlink("/tmp", &link).unwrap();
        assert!(private_dir(&link).is_err());
    }
}
