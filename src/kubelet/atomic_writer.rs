//! Upstream's atomic writer, for the volumes the kubelet projects (configMap, secret,
//! downwardAPI, projected): the data lives in a timestamped `..<digits>` directory that
//! the `..data` link names, and each top-level key is a link through `..data`, so a
//! container never sees a half-written update. A container once able to write there
//! (before these volumes were forced read-only) may have planted links: nothing in the
//! directory is followed unless this writer made it.

use super::volumes::Files;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A payload path the atomic writer refuses, and why.
#[derive(Debug, thiserror::Error)]
#[error("invalid path {path:?}: {why}")]
pub struct PayloadPathError {
    /// The path.
    pub path: String,
    /// The rule it breaks.
    pub why: &'static str,
}

/// Upstream's atomic writer's `validatePath`: a payload path is relative, has no `..`
/// element, does not start with `..` (those names are the writer's own), has no NUL,
/// and is at most 4096 bytes with elements of at most 255.
pub fn check_payload_path(path: &str) -> Result<(), PayloadPathError> {
    let bad = |why: &'static str| {
        Err(PayloadPathError {
            path: path.to_string(),
            why,
        })
    };
    if path.is_empty() {
        return bad("must not be empty");
    }
    if path.len() > 4096 {
        return bad("must be at most 4096 bytes");
    }
    if path.starts_with('/') {
        return bad("must be relative");
    }
    if path.contains('\0') {
        return bad("must not contain NUL");
    }
    if path.starts_with("..") {
        return bad("must not start with '..'");
    }
    for part in path.split('/') {
        if part == ".." {
            return bad("must not contain '..'");
        }
        if part.len() > 255 {
            return bad("elements must be at most 255 bytes");
        }
    }
    Ok(())
}

/// The timestamped directory `..data` names, if it is one this writer made: a single
/// `..`-prefixed name, a real directory (not a link) inside `dir`. Anything else (a
/// link a container planted when the volume was writable, an absolute or `../` target)
/// is treated as absent and never followed.
fn current_version(dir: &Path) -> Option<PathBuf> {
    let target = std::fs::read_link(dir.join("..data")).ok()?;
    let name = target.to_str()?;
    if !name.starts_with("..") || name.contains('/') || name == ".." || name == "..data" {
        return None;
    }
    let path = dir.join(name);
    std::fs::symlink_metadata(&path)
        .ok()
        .filter(|m| m.file_type().is_dir())
        .map(|_| path)
}

/// Writes `files` into `dir` the way upstream's atomic writer does; returns whether
/// anything changed. Every path is checked first (objects stored before validation
/// existed may carry `../`), nothing in `dir` is followed through a link, and only
/// this writer's own entries are removed.
pub fn write_atomic(dir: &Path, files: &Files) -> std::io::Result<bool> {
    for path in files.keys() {
        check_payload_path(path)
            .map_err(|m| std::io::Error::new(std::io::ErrorKind::InvalidInput, m))?;
    }
    std::fs::create_dir_all(dir)?;
    if std::fs::symlink_metadata(dir)?.file_type().is_symlink() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is a symlink", dir.display()),
        ));
    }
    let data_link = dir.join("..data");
    let current = current_version(dir);
    if let Some(cur) = &current {
        if same(cur, files) {
            return Ok(false);
        }
    }
    let stamp = format!(
        "..{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    let fresh = dir.join(&stamp);
    // a new directory of our own: nothing planted can be in it
    std::fs::create_dir(&fresh)?;
    for (path, (bytes, mode)) in files {
        let target = fresh.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .mode(*mode & 0o777)
            .open(&target)?;
        std::io::Write::write_all(&mut file, bytes)?;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(*mode & 0o777))?;
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&stamp, &tmp)?;
    std::fs::rename(&tmp, &data_link)?;
    // one link per top-level name, through ..data
    let tops: std::collections::BTreeSet<String> = files
        .keys()
        .filter_map(|p| p.split('/').next().map(String::from))
        .collect();
    for top in &tops {
        let link = dir.join(top);
        let want = PathBuf::from(format!("..data/{top}"));
        match std::fs::symlink_metadata(&link) {
            Ok(m) if m.file_type().is_symlink() => {
                if std::fs::read_link(&link).ok().as_ref() != Some(&want) {
                    std::fs::remove_file(&link)?;
                    std::os::unix::fs::symlink(&want, &link)?;
                }
            }
            Ok(_) => {
                // not ours (a file a container left when the volume was writable)
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    format!(
                        "{} is in the way and not a link this writer made",
                        link.display()
                    ),
                ));
            }
            Err(_) => std::os::unix::fs::symlink(&want, &link)?,
        }
    }
    // links of removed keys go: only links, only at the top
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_link = entry.file_type().is_ok_and(|t| t.is_symlink());
        if !name.starts_with("..") && !tops.contains(&name) && is_link {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    // older versions go: real directories with this writer's `..<digits>` names only
    // (remove_dir_all does not follow links inside them); a version orphaned by a
    // planted `..data` goes too
    let _ = current;
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = name
            .strip_prefix("..")
            .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()));
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if ours && is_dir && name != stamp {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    Ok(true)
}

/// Whether the version in `dir` holds exactly `files`: walked without following
/// links, and at most as many entries as expected are looked at.
fn same(dir: &Path, files: &Files) -> bool {
    let mut count = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(kind) = entry.file_type() else {
                return false;
            };
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                count += 1;
            } else {
                return false; // a link or device: not something this writer made
            }
            if count > files.len() || stack.len() > files.len() + 1 {
                return false;
            }
        }
    }
    count == files.len()
        && files.iter().all(|(path, (bytes, mode))| {
            let p = dir.join(path);
            std::fs::symlink_metadata(&p).is_ok_and(|m| {
                m.file_type().is_file() && m.permissions().mode() & 0o777 == *mode & 0o777
            }) && std::fs::read(&p).is_ok_and(|b| &b == bytes)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_swap_whole_versions_and_drop_removed_keys() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("v");
        let mut files = Files::from([
            ("a".to_string(), (b"1".to_vec(), 0o644)),
            ("sub/b".to_string(), (b"2".to_vec(), 0o600)),
        ]);
        assert!(write_atomic(&d, &files).unwrap());
        assert_eq!(std::fs::read_to_string(d.join("a")).unwrap(), "1");
        assert_eq!(std::fs::read_to_string(d.join("sub/b")).unwrap(), "2");
        assert_eq!(
            std::fs::read_link(d.join("a")).unwrap(),
            PathBuf::from("..data/a")
        );
        assert!(!write_atomic(&d, &files).unwrap(), "nothing changed");
        let first = std::fs::read_link(d.join("..data")).unwrap();
        files.remove("sub/b");
        files.insert("a".into(), (b"3".to_vec(), 0o644));
        assert!(write_atomic(&d, &files).unwrap());
        assert_eq!(std::fs::read_to_string(d.join("a")).unwrap(), "3");
        assert!(
            std::fs::symlink_metadata(d.join("sub")).is_err(),
            "removed key's link is gone"
        );
        assert!(!d.join(first).exists(), "the old version is removed");
    }

    #[test]
    fn the_writer_never_follows_what_a_container_planted() {
        let root = tempfile::tempdir().unwrap();
        let victim = root.path().join("victim");
        std::fs::create_dir(&victim).unwrap();
        std::fs::write(victim.join("precious"), "keep").unwrap();
        let d = root.path().join("vol");
        let files = Files::from([("key".to_string(), (b"v1".to_vec(), 0o644))]);
        write_atomic(&d, &files).unwrap();
        // ..data to the victim, absolute and relative; a loop; a key's link elsewhere
        for target in [
            victim.clone(),
            PathBuf::from("../victim"),
            PathBuf::from("..data"),
        ] {
            std::fs::remove_file(d.join("..data")).unwrap();
            std::os::unix::fs::symlink(&target, d.join("..data")).unwrap();
            std::fs::remove_file(d.join("key")).unwrap();
            std::os::unix::fs::symlink(victim.join("precious"), d.join("key")).unwrap();
            let next = Files::from([(
                "key".to_string(),
                (format!("{target:?}").into_bytes(), 0o644),
            )]);
            assert!(write_atomic(&d, &next).unwrap());
            assert_eq!(
                std::fs::read_to_string(victim.join("precious")).unwrap(),
                "keep"
            );
            assert_eq!(
                std::fs::read_to_string(d.join("key")).unwrap(),
                format!("{target:?}"),
                "the key reads the new version through ..data again"
            );
        }
        // paths from objects stored before validation are refused, nothing written
        for bad in ["../../victim/x", "/etc/x", "..data/x", "a/../../x", ""] {
            let files = Files::from([(bad.to_string(), (b"x".to_vec(), 0o644))]);
            assert!(write_atomic(&d, &files).is_err(), "{bad:?}");
        }
        assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 1);
        // one version directory is left: older ones (also orphaned) are gone
        let versions = std::fs::read_dir(&d)
            .unwrap()
            .flatten()
            .filter(|e| e.file_type().unwrap().is_dir())
            .count();
        assert_eq!(versions, 1);
    }
}
