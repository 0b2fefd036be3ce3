//! Mounts: what the kubelet mounts for pods (tmpfs for secrets, projected volumes and
//! memory-backed emptyDirs) and unmounts when they go, and what is mounted now. The
//! real implementation runs `mount(8)` (the options are built by skua, never a user's
//! text) and unmounts with `umount2(MNT_DETACH)`; the fake keeps a list, so volume
//! set-up and teardown are tested without root.

use std::path::{Path, PathBuf};

/// Why a mount or unmount failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MountError {
    #[error("cannot run mount: {0}")]
    Spawn(String),
    /// What `mount(8)` or the kernel said.
    #[error("{0}")]
    Refused(String),
}

/// Mounting and unmounting (see the module documentation).
pub trait Mounts: Send + Sync {
    /// Every mount point now, resolved as the kernel reports them.
    fn mount_points(&self) -> Vec<PathBuf>;
    /// Mounts a tmpfs with `options` (e.g. `mode=0777,size=1048576`) at `target`.
    fn mount_tmpfs(&self, target: &Path, options: &str) -> Result<(), MountError>;
    /// Detaches the mount at `target`.
    fn unmount(&self, target: &Path) -> Result<(), MountError>;

    /// Whether `path` is a mount point.
    fn is_mount(&self, path: &Path) -> bool {
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        self.mount_points().contains(&path)
    }

    /// The mount points at or below `dir`.
    fn mounts_under(&self, dir: &Path) -> Vec<PathBuf> {
        self.mount_points()
            .into_iter()
            .filter(|m| m.starts_with(dir))
            .collect()
    }
}

/// The host's own mounts.
pub struct SystemMounts;

/// Mount points as `/proc/self/mountinfo` writes them (octal escapes decoded).
pub fn parse_mountinfo(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(|p| {
            let mut out = Vec::new();
            let b = p.as_bytes();
            let mut i = 0;
            while i < b.len() {
                let octal = b
                    .get(i + 1..i + 4)
                    .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
                match octal {
                    Some(d) if b[i] == b'\\' => {
                        out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                        i += 4;
                    }
                    _ => {
                        out.push(b[i]);
                        i += 1;
                    }
                }
            }
            PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(out))
        })
        .collect()
}

impl Mounts for SystemMounts {
    fn mount_points(&self) -> Vec<PathBuf> {
        std::fs::read_to_string("/proc/self/mountinfo")
            .map(|m| parse_mountinfo(&m))
            .unwrap_or_default()
    }

    fn mount_tmpfs(&self, target: &Path, options: &str) -> Result<(), MountError> {
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(target)
            .output()
            .map_err(|e| MountError::Spawn(e.to_string()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(MountError::Refused(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ))
        }
    }

    fn unmount(&self, target: &Path) -> Result<(), MountError> {
        rustix::mount::unmount(target, rustix::mount::UnmountFlags::DETACH)
            .map_err(|e| MountError::Refused(e.to_string()))
    }
}

/// Mounts kept in a list (tests): what was mounted, with which options, in order.
#[cfg(test)]
#[derive(Default)]
pub struct FakeMounts {
    mounted: std::sync::Mutex<Vec<(PathBuf, String)>>,
    /// Every unmount asked, in order.
    pub unmounted: std::sync::Mutex<Vec<PathBuf>>,
    /// Mount points whose unmount fails (busy).
    pub busy: std::sync::Mutex<Vec<PathBuf>>,
}

#[cfg(test)]
impl FakeMounts {
    /// (mount point, options) of what is mounted now.
    pub fn mounted(&self) -> Vec<(PathBuf, String)> {
        self.mounted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[cfg(test)]
impl Mounts for FakeMounts {
    fn mount_points(&self) -> Vec<PathBuf> {
        self.mounted().into_iter().map(|(p, _)| p).collect()
    }

    fn mount_tmpfs(&self, target: &Path, options: &str) -> Result<(), MountError> {
        let target =
            std::fs::canonicalize(target).map_err(|e| MountError::Refused(e.to_string()))?;
        let mut m = self.mounted.lock().unwrap_or_else(|e| e.into_inner());
        if m.iter().any(|(p, _)| *p == target) {
            return Err(MountError::Refused(format!(
                "{} is already mounted",
                target.display()
            )));
        }
        m.push((target, options.to_string()));
        Ok(())
    }

    fn unmount(&self, target: &Path) -> Result<(), MountError> {
        self.unmounted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(target.to_path_buf());
        if self
            .busy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|b| b == target)
        {
            return Err(MountError::Refused(format!(
                "{}: target is busy",
                target.display()
            )));
        }
        let mut m = self.mounted.lock().unwrap_or_else(|e| e.into_inner());
        let before = m.len();
        m.retain(|(p, _)| p != target);
        if m.len() == before {
            return Err(MountError::Refused(format!(
                "{} is not mounted",
                target.display()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_paths_are_decoded() {
        let info = "36 35 98:0 /mnt1 /mnt/with\\040space rw - tmpfs tmpfs rw\n\
                    37 35 98:0 / /var/lib/kubelet/pods/x rw - tmpfs tmpfs rw\n";
        assert_eq!(
            parse_mountinfo(info),
            [
                PathBuf::from("/mnt/with space"),
                PathBuf::from("/var/lib/kubelet/pods/x")
            ]
        );
    }
}
