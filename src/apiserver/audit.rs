//! The audit log (`--audit-log-path` with `--audit-policy-file`, as kube-apiserver's
//! log backend): `audit.k8s.io/v1` `Event`s as JSON lines, at the level and stages
//! the policy's first matching rule gives (api/audit_policy.rs); no policy, no
//! events, as upstream. A request refused at authentication is recorded once, at
//! ResponseStarted, with an empty user. The writer runs on its own thread behind a
//! bounded queue: a slow disk drops events (counted in the log) instead of slowing
//! requests. The file (0600) is rotated at `--audit-log-maxsize` MiB to
//! `<name>-<UTC time>.<ext>`, keeping `--audit-log-maxbackup` files no older than
//! `--audit-log-maxage` days (upstream's lumberjack); `-` writes to standard output.

use super::auth::UserInfo;
use super::request_info::RequestInfo;
use crate::api::audit_policy::{Attributes, Decision, Level, Policy};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};

/// Where and how the log is kept.
#[derive(Clone, Debug)]
pub struct AuditConfig {
    /// The file (`-`: standard output).
    pub path: PathBuf,
    /// Rotate when the file passes this many MiB (0: upstream's 100).
    pub max_size_mib: u64,
    /// Rotated files kept (0: all of them).
    pub max_backups: usize,
    /// Rotated files older than this many days go (0: none for age).
    pub max_age_days: u64,
    /// What is recorded.
    pub policy: Policy,
}

/// The sending side of the log; cheap to call from request handlers.
pub struct AuditLog {
    queue: SyncSender<String>,
    policy: Policy,
}

/// One request, as the log records it.
pub struct Record<'a> {
    /// Who authenticated (`None`: authentication failed).
    pub user: Option<&'a UserInfo>,
    /// Who the request ran as, when it impersonated someone.
    pub impersonated: Option<&'a UserInfo>,
    /// What admission noted for the log (`pod-security.kubernetes.io/…`).
    pub annotations: &'a BTreeMap<String, String>,
    pub info: &'a RequestInfo,
    pub method: &'a str,
    pub uri: &'a str,
    pub source: Option<std::net::IpAddr>,
    pub user_agent: &'a str,
    pub code: u16,
    /// The answer's body when it is a `Status` (errors), or for RequestResponse.
    pub response: Option<&'a Value>,
    /// The request's body, for Request and RequestResponse.
    pub request: Option<&'a Value>,
    /// Watches, logs, exec and the like: their answer streams on after this.
    pub long_running: bool,
    pub received: std::time::SystemTime,
}

fn micros(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let base = crate::api::meta::rfc3339(secs);
    // 2026-12-07T04:00:00Z → 2026-12-07T04:00:00.123456Z
    format!("{}.{:06}Z", base.trim_end_matches('Z'), d.subsec_micros())
}

/// A user as audit Events show it (`{}` for nobody; empty fields left out).
fn user_json(u: Option<&UserInfo>) -> Value {
    let mut out = serde_json::Map::new();
    let Some(u) = u else {
        return Value::Object(out);
    };
    if !u.name.is_empty() {
        out.insert("username".into(), json!(u.name));
    }
    if !u.uid.is_empty() {
        out.insert("uid".into(), json!(u.uid));
    }
    if !u.groups.is_empty() {
        out.insert("groups".into(), json!(u.groups));
    }
    if !u.extra.is_empty() {
        out.insert("extra".into(), json!(u.extra));
    }
    Value::Object(out)
}

/// A recorded body, without managedFields when the policy says so.
fn body(v: &Value, omit_managed_fields: bool) -> Value {
    let mut v = v.clone();
    if omit_managed_fields {
        let strip = |o: &mut Value| {
            if let Some(m) = o["metadata"].as_object_mut() {
                m.remove("managedFields");
            }
        };
        strip(&mut v);
        for item in v["items"].as_array_mut().into_iter().flatten() {
            strip(item);
        }
    }
    v
}

/// The answer's status as upstream records it: the Status's fields for an error,
/// else the code alone.
fn response_status(r: &Record) -> Value {
    let mut s = json!({"metadata": {}, "code": r.code});
    if let Some(status) = r.response.filter(|v| v["kind"] == "Status") {
        for f in ["status", "message", "reason", "details"] {
            if !status[f].is_null() {
                s[f] = status[f].clone();
            }
        }
    }
    s
}

/// The audit Event of `r` at `stage`, as `d` has it recorded.
pub fn event(r: &Record, d: &Decision, id: &str, stage: &str) -> Value {
    let i = r.info;
    let mut e = json!({
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": d.level.as_str(),
        "auditID": id,
        "stage": stage,
        "requestURI": r.uri,
        "verb": if i.is_resource_request { i.verb.clone() } else { r.method.to_ascii_lowercase() },
        "user": user_json(r.user),
        "sourceIPs": r.source.map(|s| vec![s.to_string()]).unwrap_or_default(),
        "userAgent": r.user_agent,
    });
    if let Some(as_) = r.impersonated {
        e["impersonatedUser"] = user_json(Some(as_));
    }
    if i.is_resource_request {
        let mut obj = json!({"resource": i.resource, "apiVersion": i.version});
        if !i.group.is_empty() {
            obj["apiGroup"] = json!(i.group);
        }
        for (k, v) in [
            ("namespace", &i.namespace),
            ("name", &i.name),
            ("subresource", &i.subresource),
        ] {
            if let Some(v) = v {
                obj[k] = json!(v);
            }
        }
        // a create names its object in the body (upstream fills it from there)
        if let Some(name) = r.request.and_then(|b| b["metadata"]["name"].as_str()) {
            if obj.get("name").is_none() {
                obj["name"] = json!(name);
            }
        }
        e["objectRef"] = obj;
    }
    if stage != "RequestReceived" {
        e["responseStatus"] = response_status(r);
    }
    if d.level >= Level::Request {
        if let Some(req) = r.request {
            e["requestObject"] = body(req, d.omit_managed_fields);
        }
    }
    if d.level >= Level::RequestResponse && stage == "ResponseComplete" {
        if let Some(resp) = r.response {
            e["responseObject"] = body(resp, d.omit_managed_fields);
        }
    }
    e["requestReceivedTimestamp"] = json!(micros(r.received));
    e["stageTimestamp"] = json!(if stage == "RequestReceived" {
        micros(r.received)
    } else {
        micros(std::time::SystemTime::now())
    });
    if !r.annotations.is_empty() {
        e["annotations"] = json!(r.annotations);
    }
    e
}

/// A rotated file's name, as upstream's lumberjack: `audit.log` →
/// `audit-2026-12-08T01-02-03.456.log`.
pub fn backup_name(path: &Path, at: std::time::SystemTime) -> PathBuf {
    let d = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let stamp = crate::api::meta::rfc3339(d.as_secs() as i64)
        .trim_end_matches('Z')
        .replace(':', "-");
    let stamp = format!("{stamp}.{:03}", d.subsec_millis());
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("audit.log");
    let (stem, ext) = match name.rsplit_once('.') {
        Some((s, e)) if !s.is_empty() => (s, format!(".{e}")),
        _ => (name, String::new()),
    };
    path.with_file_name(format!("{stem}-{stamp}{ext}"))
}

/// The rotated files of `path` to delete: beyond the newest `max_backups` (0: none
/// for count), or older than `max_age_days` (0: none for age). `backups` are names
/// with their times.
pub fn expired(
    mut backups: Vec<(PathBuf, std::time::SystemTime)>,
    max_backups: usize,
    max_age_days: u64,
    now: std::time::SystemTime,
) -> Vec<PathBuf> {
    backups.sort_by_key(|b| std::cmp::Reverse(b.1));
    let age = std::time::Duration::from_secs(max_age_days * 86_400);
    backups
        .into_iter()
        .enumerate()
        .filter(|(i, (_, t))| {
            (max_backups > 0 && *i >= max_backups)
                || (max_age_days > 0 && now.duration_since(*t).unwrap_or_default() > age)
        })
        .map(|(_, (p, _))| p)
        .collect()
}

/// The rotated files beside `path` (`<stem>-<time>.<ext>`) and when they were written.
fn backups_of(path: &Path) -> Vec<(PathBuf, std::time::SystemTime)> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let stem = name.rsplit_once('.').map_or(name, |(s, _)| s);
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with(&format!("{stem}-")) && n.as_ref() != name
        })
        .filter_map(|e| Some((e.path(), e.metadata().ok()?.modified().ok()?)))
        .collect()
}

fn open(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// Writes lines to the file, rotating it.
fn write_file(
    cfg: &AuditConfig,
    mut file: std::fs::File,
    events: std::sync::mpsc::Receiver<String>,
) {
    let limit = if cfg.max_size_mib == 0 {
        100
    } else {
        cfg.max_size_mib
    } << 20;
    let mut size = file.metadata().map(|m| m.len()).unwrap_or(0);
    for line in events {
        if size > 0 && size + line.len() as u64 > limit {
            let _ = std::fs::rename(
                &cfg.path,
                backup_name(&cfg.path, std::time::SystemTime::now()),
            );
            for old in expired(
                backups_of(&cfg.path),
                cfg.max_backups,
                cfg.max_age_days,
                std::time::SystemTime::now(),
            ) {
                let _ = std::fs::remove_file(old);
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
}

impl AuditLog {
    /// Starts the writer thread; the file is opened (0600, appended) at once so a
    /// wrong path fails the start.
    pub fn start(cfg: AuditConfig) -> std::io::Result<AuditLog> {
        let (queue, events) = sync_channel::<String>(10_000);
        let stdout = cfg.path.as_os_str() == "-";
        let file = if stdout { None } else { Some(open(&cfg.path)?) };
        let policy = cfg.policy.clone();
        std::thread::Builder::new()
            .name("audit-log".into())
            .spawn(move || match file {
                Some(file) => write_file(&cfg, file, events),
                None => {
                    for line in events {
                        let _ = std::io::stdout().write_all(line.as_bytes());
                    }
                }
            })?;
        Ok(AuditLog { queue, policy })
    }

    /// What the policy decides for a request (its level decides which bodies the
    /// caller keeps for [`AuditLog::record`]).
    pub fn decide(&self, user: Option<&UserInfo>, info: &RequestInfo) -> Decision {
        let verb = if info.is_resource_request {
            info.verb.as_str()
        } else {
            "get"
        };
        let resource = info.is_resource_request.then(|| {
            (
                info.group.as_str(),
                info.resource.as_str(),
                info.subresource.as_deref().unwrap_or(""),
                info.namespace.as_deref().unwrap_or(""),
                info.name.as_deref().unwrap_or(""),
            )
        });
        self.policy.decide(&Attributes {
            user: user.map(|u| (u.name.as_str(), u.groups.as_slice())),
            verb,
            resource,
            path: &info.path,
        })
    }

    /// Records one request at the stages its decision keeps (dropped, and said so,
    /// if the writer is far behind).
    pub fn record(&self, r: &Record) {
        let d = self.decide(r.user, r.info);
        if d.level == Level::None {
            return;
        }
        let stages: &[&str] = match (r.user.is_some(), r.long_running) {
            (false, _) => &["ResponseStarted"],
            (true, true) => &["RequestReceived", "ResponseStarted"],
            (true, false) => &["RequestReceived", "ResponseComplete"],
        };
        let id = crate::api::meta::new_uid();
        for stage in stages {
            if d.omit_stages.iter().any(|s| s == stage) {
                continue;
            }
            let mut line = event(r, &d, &id, stage).to_string();
            line.push('\n');
            if let Err(TrySendError::Full(_)) = self.queue.try_send(line) {
                tracing::warn!("the audit log is behind: an event was dropped");
            }
        }
    }
}

#[cfg(test)]
mod tests;
