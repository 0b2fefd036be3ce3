//! Container logs where log collectors look for them: the runtime writes CRI-format
//! lines to `<pod-log-dir>/<ns>_<pod>_<uid>/<container>/<restart>.log`; the kubelet
//! links `<container-log-dir>/<pod>_<ns>_<container>-<id>.log` to it, rotates files
//! by size (`--container-log-max-size`, `--container-log-max-files`), and reads them
//! back for `kubectl logs`.

use std::path::{Path, PathBuf};

/// The `/var/log/containers` link name of a container.
pub fn link_name(pod: &str, ns: &str, container: &str, id: &str) -> String {
    format!("{pod}_{ns}_{container}-{id}.log")
}

/// Links a container's log into the container log directory.
pub fn link(container_log_dir: &Path, name: &str, target: &Path) {
    let _ = std::fs::create_dir_all(container_log_dir);
    let at = container_log_dir.join(name);
    let _ = std::fs::remove_file(&at);
    if let Err(e) = std::os::unix::fs::symlink(target, &at) {
        tracing::warn!(link = %at.display(), error = %e, "cannot link a container log");
    }
}

/// Removes the links of containers with id in `ids`.
pub fn unlink(container_log_dir: &Path, ids: &[String]) {
    for entry in std::fs::read_dir(container_log_dir)
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if ids.iter().any(|id| name.ends_with(&format!("-{id}.log"))) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Rotates `log` if it grew past `max_size`: renames it with a timestamp suffix (the
/// caller then asks the runtime to reopen it) and keeps `max_files - 1` rotated files.
/// Returns whether it rotated.
pub fn rotate(log: &Path, max_size: u64, max_files: usize) -> bool {
    let Ok(meta) = std::fs::metadata(log) else {
        return false;
    };
    if meta.len() < max_size || max_files < 2 {
        return false;
    }
    let stamp = {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros())
            .unwrap_or(0);
        format!("{now}")
    };
    let rotated = PathBuf::from(format!("{}.{stamp}", log.display()));
    if std::fs::rename(log, &rotated).is_err() {
        return false;
    }
    let mut old = rotated_files(log);
    while old.len() > max_files - 1 {
        let _ = std::fs::remove_file(old.remove(0));
    }
    true
}

/// The rotated files of `log`, oldest first.
pub fn rotated_files(log: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (log.parent(), log.file_name()) else {
        return Vec::new();
    };
    let prefix = format!("{}.", name.to_string_lossy());
    let mut files: Vec<(u128, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            let stamp = n.strip_prefix(&prefix)?.parse().ok()?;
            Some((stamp, e.path()))
        })
        .collect();
    files.sort();
    files.into_iter().map(|(_, p)| p).collect()
}

/// One line of a CRI log: `<RFC3339Nano time> <stream> <P|F> <text>`.
#[derive(Debug, PartialEq, Eq)]
pub struct Line<'a> {
    pub time: &'a str,
    pub stream: &'a str,
    /// `false` for a partial line (`P`) that the next one continues.
    pub full: bool,
    pub text: &'a str,
}

pub fn parse_line(line: &str) -> Option<Line<'_>> {
    let mut parts = line.splitn(4, ' ');
    let time = parts.next()?;
    let stream = parts.next()?;
    let tag = parts.next()?;
    let text = parts.next().unwrap_or("");
    Some(Line {
        time,
        stream,
        full: !tag.starts_with('P'),
        text,
    })
}

/// What `kubectl logs` asks for.
#[derive(Debug, Default, Clone)]
pub struct Options {
    pub timestamps: bool,
    pub tail_lines: Option<usize>,
    /// Only lines at or after this time (RFC 3339, compared as seconds).
    pub since_secs: Option<i64>,
    pub limit_bytes: Option<usize>,
}

/// Renders CRI log text as the container wrote it, as the kubelet's log API does.
pub fn render(text: &str, opts: &Options) -> Vec<u8> {
    let mut lines: Vec<String> = Vec::new();
    let mut pending = String::new();
    for raw in text.lines() {
        let Some(l) = parse_line(raw) else { continue };
        if let Some(since) = opts.since_secs {
            if crate::api::civil::parse_rfc3339(l.time).is_some_and(|t| t < since) {
                continue;
            }
        }
        if pending.is_empty() && opts.timestamps {
            pending.push_str(l.time);
            pending.push(' ');
        }
        pending.push_str(l.text);
        if l.full {
            pending.push('\n');
            lines.push(std::mem::take(&mut pending));
        }
    }
    if !pending.is_empty() {
        lines.push(pending);
    }
    if let Some(n) = opts.tail_lines {
        let skip = lines.len().saturating_sub(n);
        lines.drain(..skip);
    }
    let mut out: Vec<u8> = lines.concat().into_bytes();
    if let Some(limit) = opts.limit_bytes {
        out.truncate(limit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_lines_render_with_partials_tails_and_timestamps() {
        let text = "2026-11-22T10:00:00.1Z stdout F one\n\
                    2026-11-22T10:00:01.2Z stderr P tw\n\
                    2026-11-22T10:00:01.3Z stderr F o\n\
                    2026-11-22T10:00:05.0Z stdout F three\n";
        assert_eq!(render(text, &Options::default()), b"one\ntwo\nthree\n");
        let tail = Options {
            tail_lines: Some(1),
            ..Default::default()
        };
        assert_eq!(render(text, &tail), b"three\n");
        let stamped = Options {
            timestamps: true,
            tail_lines: Some(2),
            ..Default::default()
        };
        assert_eq!(
            String::from_utf8(render(text, &stamped)).unwrap(),
            "2026-11-22T10:00:01.2Z two\n2026-11-22T10:00:05.0Z three\n"
        );
    }

    #[test]
    fn rotation_keeps_the_newest_files() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("0.log");
        for _ in 0..4 {
            std::fs::write(&log, vec![b'x'; 100]).unwrap();
            assert!(rotate(&log, 50, 3));
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert_eq!(
            rotated_files(&log).len(),
            2,
            "max 3 files: the live one and two rotated"
        );
        std::fs::write(&log, b"small").unwrap();
        assert!(!rotate(&log, 50, 3));
    }
}
