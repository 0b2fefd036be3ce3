//! The audit log (`--audit-log-path`, as kube-apiserver's log backend): one
//! `audit.k8s.io/v1` `Event` per request at the `Metadata` level (who, what, from
//! where, the answer's code; no bodies), as JSON lines. CIS 1.2.16-1.2.19 ask for it
//! and k3s' hardening guide turns it on. Requests refused before authentication are
//! recorded as `system:anonymous`. The writer runs on its own thread behind a bounded
//! queue: a slow disk drops events (counted in the log) instead of slowing requests.
//! The file is rotated at `--audit-log-maxsize` MiB, keeping `--audit-log-maxbackup`
//! old files (`<path>.1` newest).

use super::auth::UserInfo;
use super::request_info::RequestInfo;
use serde_json::json;
use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};

/// Where and how the log is kept.
#[derive(Clone, Debug)]
pub struct AuditConfig {
    pub path: PathBuf,
    /// Rotate when the file passes this many MiB (0: never).
    pub max_size_mib: u64,
    /// Rotated files kept (0: all of them).
    pub max_backups: usize,
}

/// The sending side of the log; cheap to call from request handlers.
pub struct AuditLog {
    queue: SyncSender<String>,
}

/// One finished request, as the log records it.
pub struct Record<'a> {
    pub user: &'a UserInfo,
    pub info: &'a RequestInfo,
    pub method: &'a str,
    pub uri: &'a str,
    pub source: Option<std::net::IpAddr>,
    pub user_agent: &'a str,
    pub code: u16,
    pub received: std::time::SystemTime,
}

fn micros(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let base = crate::api::meta::rfc3339(secs);
    // 2026-12-07T04:00:00Z → 2026-12-07T04:00:00.123456Z
    format!("{}.{:06}Z", base.trim_end_matches('Z'), d.subsec_micros())
}

/// The audit Event of `r`.
pub fn event(r: &Record) -> serde_json::Value {
    let i = r.info;
    let mut e = json!({
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Metadata",
        "auditID": crate::api::meta::new_uid(),
        "stage": "ResponseComplete",
        "requestURI": r.uri,
        "verb": i.verb,
        "user": {"username": r.user.name, "groups": r.user.groups},
        "sourceIPs": r.source.map(|s| vec![s.to_string()]).unwrap_or_default(),
        "userAgent": r.user_agent,
        "responseStatus": {"metadata": {}, "code": r.code},
        "requestReceivedTimestamp": micros(r.received),
        "stageTimestamp": micros(std::time::SystemTime::now()),
    });
    if i.is_resource_request {
        let mut obj = json!({"resource": i.resource, "apiVersion": i.version});
        if !i.group.is_empty() {
            obj["apiGroup"] = json!(i.group);
        }
        if let Some(ns) = &i.namespace {
            obj["namespace"] = json!(ns);
        }
        if let Some(n) = &i.name {
            obj["name"] = json!(n);
        }
        if let Some(s) = &i.subresource {
            obj["subresource"] = json!(s);
        }
        e["objectRef"] = obj;
    } else {
        e["verb"] = json!(r.method.to_ascii_lowercase());
    }
    e
}

impl AuditLog {
    /// Starts the writer thread; the file is opened (0600, appended) at once so a
    /// wrong path fails the start.
    pub fn start(cfg: AuditConfig) -> std::io::Result<AuditLog> {
        let open = |path: &PathBuf| {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path)
        };
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = open(&cfg.path)?;
        let (queue, events) = sync_channel::<String>(10_000);
        std::thread::Builder::new()
            .name("audit-log".into())
            .spawn(move || {
                let mut size = file.metadata().map(|m| m.len()).unwrap_or(0);
                for line in events {
                    if cfg.max_size_mib > 0 && size > cfg.max_size_mib << 20 {
                        if cfg.max_backups > 0 {
                            for i in (1..cfg.max_backups).rev() {
                                let from = format!("{}.{i}", cfg.path.display());
                                let _ = std::fs::rename(
                                    &from,
                                    format!("{}.{}", cfg.path.display(), i + 1),
                                );
                            }
                            let _ = std::fs::rename(&cfg.path, format!("{}.1", cfg.path.display()));
                        } else {
                            // 0 keeps every old file (upstream's lumberjack)
                            let stamp = std::time::SystemTime::now()
                                .duration_since(std::time::UNIX_EPOCH)
                                .map(|d| d.as_millis())
                                .unwrap_or(0);
                            let _ = std::fs::rename(
                                &cfg.path,
                                format!("{}.{stamp}", cfg.path.display()),
                            );
                        }
                        match open(&cfg.path) {
                            Ok(f) => {
                                file = f;
                                size = 0;
                            }
                            Err(e) => tracing::error!(error = %e, "cannot reopen the audit log"),
                        }
                    }
                    if file.write_all(line.as_bytes()).is_ok() {
                        size += line.len() as u64;
                    }
                }
            })?;
        Ok(AuditLog { queue })
    }

    /// Records one request (dropped, and said so, if the writer is far behind).
    pub fn record(&self, r: &Record) {
        let mut line = event(r).to_string();
        line.push('\n');
        if let Err(TrySendError::Full(_)) = self.queue.try_send(line) {
            tracing::warn!("the audit log is behind: an event was dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn events_say_who_did_what_from_where_and_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit/audit.log");
        let log = AuditLog::start(AuditConfig {
            path: path.clone(),
            max_size_mib: 1,
            max_backups: 2,
        })
        .unwrap();
        let user = UserInfo {
            name: "system:node:n1".into(),
            groups: vec!["system:nodes".into()],
        };
        let info = RequestInfo::parse(&Method::DELETE, "/api/v1/namespaces/default/pods/web", "");
        let r = Record {
            user: &user,
            info: &info,
            method: "DELETE",
            uri: "/api/v1/namespaces/default/pods/web",
            source: Some("10.0.0.7".parse().unwrap()),
            user_agent: "kubectl/v1.33",
            code: 403,
            received: std::time::SystemTime::now(),
        };
        let e = event(&r);
        assert_eq!(e["user"]["username"], "system:node:n1");
        assert_eq!(e["objectRef"]["resource"], "pods");
        assert_eq!(e["objectRef"]["name"], "web");
        assert_eq!(e["verb"], "delete");
        assert_eq!(e["responseStatus"]["code"], 403);
        assert_eq!(e["sourceIPs"][0], "10.0.0.7");
        assert!(
            e["requestReceivedTimestamp"]
                .as_str()
                .unwrap()
                .ends_with('Z')
        );
        for _ in 0..6000 {
            log.record(&r);
        }
        drop(log);
        std::thread::sleep(std::time::Duration::from_millis(500));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let rotated = dir.path().join("audit/audit.log.1");
        assert!(rotated.exists(), "rotated past 1 MiB");
        let first = std::fs::read_to_string(&rotated).unwrap();
        let line: serde_json::Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
        assert_eq!(line["kind"], "Event");
    }
}
