//! What the node has left: memory (`/proc/meminfo`) and filesystems (`df`), the
//! eviction signals' observations. Behind a trait so eviction rounds are tested with
//! the pressure a test chooses.

use std::path::Path;

/// (available, capacity) observations of the node's resources.
pub trait Resources: Send + Sync {
    /// Memory: (MemAvailable, MemTotal) in bytes.
    fn memory(&self) -> Option<(f64, f64)>;
    /// The filesystem holding `path`: (available, size) in bytes, or inodes.
    fn filesystem(&self, path: &Path, inodes: bool) -> Option<(f64, f64)>;
}

/// A `/proc/meminfo` field (`MemTotal:`, `MemAvailable:`, …) in bytes.
pub fn meminfo_bytes(meminfo: &str, name: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// The host's own resources.
pub struct SystemResources;

impl Resources for SystemResources {
    fn memory(&self) -> Option<(f64, f64)> {
        let info = std::fs::read_to_string("/proc/meminfo").ok()?;
        let field = |name: &str| meminfo_bytes(&info, name).map(|b| b as f64);
        Some((field("MemAvailable:")?, field("MemTotal:")?))
    }

    fn filesystem(&self, path: &Path, inodes: bool) -> Option<(f64, f64)> {
        let fields = if inodes {
            "--output=iavail,itotal"
        } else {
            "--output=avail,size"
        };
        let out = std::process::Command::new("df")
            .args(["-k", fields])
            .arg(path)
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut nums = text
            .lines()
            .nth(1)?
            .split_whitespace()
            .map(|n| n.parse::<f64>().ok());
        let (a, c) = (nums.next()??, nums.next()??);
        Some(if inodes {
            (a, c)
        } else {
            (a * 1024.0, c * 1024.0)
        })
    }
}

/// Resources a test sets.
#[cfg(test)]
#[derive(Default)]
pub struct FakeResources {
    pub memory: std::sync::Mutex<Option<(f64, f64)>>,
    pub disk: std::sync::Mutex<Option<(f64, f64)>>,
}

#[cfg(test)]
impl Resources for FakeResources {
    fn memory(&self) -> Option<(f64, f64)> {
        *self.memory.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn filesystem(&self, _: &Path, inodes: bool) -> Option<(f64, f64)> {
        if inodes {
            return Some((1e6, 1e6));
        }
        *self.disk.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_fields_are_read_in_bytes() {
        let info = "MemTotal:        8000000 kB\nMemFree:  100 kB\nMemAvailable:    2000000 kB\n";
        assert_eq!(meminfo_bytes(info, "MemTotal:"), Some(8_000_000 * 1024));
        assert_eq!(meminfo_bytes(info, "MemAvailable:"), Some(2_000_000 * 1024));
        assert_eq!(meminfo_bytes(info, "SwapTotal:"), None);
    }

    #[test]
    fn the_real_host_reports_memory_and_this_filesystem() {
        let (avail, total) = SystemResources.memory().expect("/proc/meminfo");
        assert!(avail > 0.0 && avail <= total);
        let (free, size) = SystemResources
            .filesystem(Path::new("/"), false)
            .expect("df /");
        assert!(size > 0.0 && free <= size);
    }
}
