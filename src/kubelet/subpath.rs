//! subPath mounts that cannot leave their volume (the CVE-2017-1002101 class).
//!
//! A container may plant symlinks in a volume it writes (`ln -s / /data/x`), and a
//! later container mounting `subPath: x` would get the host's `/` if the kubelet
//! followed them. As upstream does, the subPath is opened — never by its text — and
//! the open file is bind-mounted: `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`
//! from the volume's directory, so the kernel refuses any resolution that leaves the
//! volume (absolute links, `..` above it, `/proc` magic links) while links that stay
//! inside it (a ConfigMap key's `key -> ..data/key`) still work, as upstream's
//! resolve-then-check does. Missing directories are made the same way, one component
//! at a time beneath the volume. The fd is then bind-mounted through
//! `/proc/self/fd/<n>` onto a kubelet-owned path that is handed to the runtime: what
//! is mounted is what was opened, whatever the container changes afterwards.

use rustix::fs::{Mode, OFlags, ResolveFlags};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Why a subPath cannot be mounted (the container fails with
/// `CreateContainerConfigError`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubPathError {
    #[error("subPath {0:?} must be a relative path without '..' elements")]
    Invalid(String),
    #[error("subPath {path:?} leaves volume {volume:?} (through a symlink or '..'): refused")]
    Escapes { path: String, volume: String },
    #[error("cannot prepare subPath {path:?} of volume {volume:?}: {message}")]
    Io {
        path: String,
        volume: String,
        message: String,
    },
}

/// The upstream rule for `volumeMounts[].subPath` (and the kubelet's check again for
/// objects stored before validation): relative, no `..` element, no NUL.
pub fn check(sub: &str) -> Result<(), SubPathError> {
    let bad = sub.starts_with('/') || sub.contains('\0') || sub.split('/').any(|p| p == "..");
    if bad {
        Err(SubPathError::Invalid(sub.to_string()))
    } else {
        Ok(())
    }
}

fn beneath() -> ResolveFlags {
    ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS
}

/// Opens `sub` beneath `root` (an open directory), making missing directories on
/// the way with `mode` (0: the volume's own mode), and never leaving `root`.
pub fn open_beneath(root: &Path, sub: &str, mode: u32) -> Result<OwnedFd, SubPathError> {
    check(sub)?;
    let volume = root.display().to_string();
    let io = |message: String| SubPathError::Io {
        path: sub.to_string(),
        volume: volume.clone(),
        message,
    };
    let escapes = || SubPathError::Escapes {
        path: sub.to_string(),
        volume: volume.clone(),
    };
    // the volume's own path may go through links (a hostPath such as /var/run): it
    // is the kubelet's to resolve; what is beneath it is not
    let root =
        std::fs::canonicalize(root).map_err(|e| io(format!("cannot open the volume: {e}")))?;
    let root_fd = rustix::fs::open(
        &root,
        OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::RDONLY,
        Mode::empty(),
    )
    .map_err(|e| io(format!("cannot open the volume: {e}")))?;
    // new directories get the volume's own mode, as upstream's SafeMakeDir (an
    // emptyDir's 0777 included), whatever the umask
    let mode = match mode {
        0 => rustix::fs::fstat(&root_fd)
            .map(|st| st.st_mode & 0o7777)
            .map_err(|e| io(e.to_string()))?,
        m => m,
    };
    let parts: Vec<&str> = sub
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    // make what is missing, each directory beneath the volume
    for i in 0..parts.len() {
        let prefix = parts[..=i].join("/");
        let opened = rustix::fs::openat2(
            root_fd.as_fd(),
            prefix.as_str(),
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            beneath(),
        );
        match opened {
            Ok(_) => continue,
            Err(rustix::io::Errno::NOENT) => {}
            Err(rustix::io::Errno::XDEV | rustix::io::Errno::LOOP) => return Err(escapes()),
            Err(e) => return Err(io(e.to_string())),
        }
        let parent = if i == 0 {
            root_fd.try_clone().map_err(|e| io(e.to_string()))?
        } else {
            rustix::fs::openat2(
                root_fd.as_fd(),
                parts[..i].join("/").as_str(),
                OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
                beneath(),
            )
            .map_err(|e| match e {
                rustix::io::Errno::XDEV | rustix::io::Errno::LOOP => escapes(),
                e => io(e.to_string()),
            })?
        };
        match rustix::fs::mkdirat(parent.as_fd(), parts[i], Mode::from_bits_truncate(mode)) {
            Ok(()) => {
                let made = rustix::fs::openat(
                    parent.as_fd(),
                    parts[i],
                    OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| io(e.to_string()))?;
                rustix::fs::fchmod(&made, Mode::from_bits_truncate(mode))
                    .map_err(|e| io(e.to_string()))?;
            }
            Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(io(e.to_string())),
        }
    }
    let target = if parts.is_empty() {
        ".".to_string()
    } else {
        parts.join("/")
    };
    rustix::fs::openat2(
        root_fd.as_fd(),
        target.as_str(),
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        beneath(),
    )
    .map_err(|e| match e {
        rustix::io::Errno::XDEV | rustix::io::Errno::LOOP => escapes(),
        e => io(e.to_string()),
    })
}

/// Opens `sub` beneath the volume at `root` and bind-mounts what was opened onto
/// `target` (made here: a directory or an empty file, as the source is); returns
/// `target`, the path to hand the runtime.
pub fn bind(root: &Path, sub: &str, target: &Path) -> Result<PathBuf, SubPathError> {
    let fd = open_beneath(root, sub, 0)?;
    let io = |message: String| SubPathError::Io {
        path: sub.to_string(),
        volume: root.display().to_string(),
        message,
    };
    // a mount left from the container's last start is replaced: the subPath is
    // resolved again every time
    if crate::host::Mounts::is_mount(&crate::host::mounts::SystemMounts, target) {
        rustix::mount::unmount(target, rustix::mount::UnmountFlags::DETACH)
            .map_err(|e| io(format!("cannot unmount the previous subPath mount: {e}")))?;
    }
    let is_dir = rustix::fs::fstat(&fd)
        .map(|st| {
            rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory
        })
        .map_err(|e| io(e.to_string()))?;
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io(e.to_string()))?;
    }
    let _ = std::fs::remove_dir(target);
    let _ = std::fs::remove_file(target);
    if is_dir {
        std::fs::create_dir(target).map_err(|e| io(e.to_string()))?;
    } else {
        std::fs::File::create(target).map_err(|e| io(e.to_string()))?;
    }
    let source = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
    rustix::mount::mount_bind(source.as_str(), target)
        .map_err(|e| io(format!("cannot bind-mount the subPath: {e}")))?;
    Ok(target.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sub_path_is_refused_by_its_text() {
        for bad in ["/etc", "../x", "a/../../b", "a/..", "a\0b"] {
            assert!(check(bad).is_err(), "{bad:?}");
        }
        for ok in ["a", "a/b", "..a", "a..b", "./a"] {
            assert!(check(ok).is_ok(), "{ok:?}");
        }
    }

    #[test]
    fn symlinks_planted_in_the_volume_never_lead_out_of_it() {
        let host = tempfile::tempdir().unwrap();
        let secret = host.path().join("host-secret");
        std::fs::create_dir(&secret).unwrap();
        let vol = host.path().join("vol");
        std::fs::create_dir(&vol).unwrap();
        std::os::unix::fs::symlink("/", vol.join("root")).unwrap();
        std::os::unix::fs::symlink(&secret, vol.join("abs")).unwrap();
        std::os::unix::fs::symlink("../host-secret", vol.join("rel")).unwrap();
        std::os::unix::fs::symlink("/proc/self/root", vol.join("magic")).unwrap();
        for planted in ["root", "abs", "rel", "magic", "root/etc", "rel/made"] {
            let e = open_beneath(&vol, planted, 0o750).unwrap_err();
            assert!(matches!(e, SubPathError::Escapes { .. }), "{planted}: {e}");
        }
        assert!(
            !secret.join("made").exists(),
            "no directory was made through a link"
        );
        // links that stay inside work, as a ConfigMap key's link does
        std::fs::create_dir_all(vol.join("..data")).unwrap();
        std::fs::write(vol.join("..data/key"), "v").unwrap();
        std::os::unix::fs::symlink("..data/key", vol.join("key")).unwrap();
        assert!(open_beneath(&vol, "key", 0o750).is_ok());
        // missing directories are made inside the volume
        assert!(open_beneath(&vol, "new/deeper", 0o750).is_ok());
        assert!(vol.join("new/deeper").is_dir());
    }
}
