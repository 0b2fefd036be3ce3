//! `/etc/skua/registries.yaml` (`--private-registry`), in k3s' format: `mirrors` (per
//! registry: `endpoint` list and `rewrite` rules for repository paths) and `configs`
//! (per registry host: `auth` and `tls`). Mirrors and configs become containerd's CRI
//! registry settings; rewrites are applied by the kubelet to the references it pulls.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registries {
    #[serde(default)]
    pub mirrors: BTreeMap<String, Mirror>,
    #[serde(default)]
    pub configs: BTreeMap<String, Config>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    #[serde(default)]
    pub endpoint: Vec<String>,
    /// Regular expression → replacement (`$1`…) for the repository path.
    #[serde(default)]
    pub rewrite: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub auth: Option<Auth>,
    pub tls: Option<Tls>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    pub username: Option<String>,
    pub password: Option<String>,
    pub auth: Option<String>,
    pub identitytoken: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub ca_file: Option<String>,
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// A TOML basic string: backslash, quote and every control character escaped, so no
/// value can end the string or the line and add keys of its own.
pub fn toml(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A registries file that cannot be used, naming it.
#[derive(Debug, thiserror::Error)]
pub enum RegistriesError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a valid registries file (k3s format: mirrors, configs): {message}")]
    Invalid { path: String, message: String },
    #[error(
        "{path}: mirrors.{registry}.rewrite: {pattern:?} is not a regular expression: {message}"
    )]
    Rewrite {
        path: String,
        registry: String,
        pattern: String,
        message: String,
    },
}

impl Registries {
    /// Reads the file; a missing file is no configuration, a broken one an error that
    /// names it.
    pub fn load(path: &Path) -> Result<Registries, RegistriesError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Registries::default()),
            Err(source) => {
                return Err(RegistriesError::Read {
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        if text.trim().is_empty() {
            return Ok(Registries::default());
        }
        let parsed: Registries =
            serde_saphyr::from_str(&text).map_err(|e| RegistriesError::Invalid {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
        for (registry, m) in &parsed.mirrors {
            for pattern in m.rewrite.keys() {
                regex_lite::Regex::new(pattern).map_err(|e| RegistriesError::Rewrite {
                    path: path.display().to_string(),
                    registry: registry.clone(),
                    pattern: pattern.clone(),
                    message: e.to_string(),
                })?;
            }
        }
        Ok(parsed)
    }

    /// containerd's CRI registry sections (config version 2).
    pub fn containerd_toml(&self) -> String {
        let base = "plugins.\"io.containerd.grpc.v1.cri\".registry";
        let mut out = String::new();
        for (registry, m) in &self.mirrors {
            let endpoints: Vec<String> = m.endpoint.iter().map(|e| toml(e)).collect();
            out.push_str(&format!(
                "\n[{base}.mirrors.{}]\n  endpoint = [{}]\n",
                toml(registry),
                endpoints.join(", ")
            ));
        }
        for (host, c) in &self.configs {
            if let Some(a) = &c.auth {
                out.push_str(&format!("\n[{base}.configs.{}.auth]\n", toml(host)));
                for (k, v) in [
                    ("username", &a.username),
                    ("password", &a.password),
                    ("auth", &a.auth),
                    ("identitytoken", &a.identitytoken),
                ] {
                    if let Some(v) = v {
                        out.push_str(&format!("  {k} = {}\n", toml(v)));
                    }
                }
            }
            if let Some(t) = &c.tls {
                out.push_str(&format!("\n[{base}.configs.{}.tls]\n", toml(host)));
                out.push_str(&format!(
                    "  insecure_skip_verify = {}\n",
                    t.insecure_skip_verify
                ));
                for (k, v) in [
                    ("cert_file", &t.cert_file),
                    ("key_file", &t.key_file),
                    ("ca_file", &t.ca_file),
                ] {
                    if let Some(v) = v {
                        out.push_str(&format!("  {k} = {}\n", toml(v)));
                    }
                }
            }
        }
        out
    }

    /// `image` with its repository path rewritten by its registry's mirror rules (the
    /// first that matches), or `None` when no rule applies.
    pub fn rewrite(&self, image: &str) -> Option<String> {
        let full = normalize(image);
        let (registry, rest) = full.split_once('/')?;
        let rules = &self.mirrors.get(registry)?.rewrite;
        let (repo, tail) = split_tail(rest);
        for (pattern, replacement) in rules {
            let re = regex_lite::Regex::new(pattern).ok()?;
            if re.is_match(repo) {
                let new = re.replace(repo, replacement.as_str());
                return Some(format!("{registry}/{new}{tail}"));
            }
        }
        None
    }
}

/// A reference in full: `busybox` → `docker.io/library/busybox:latest`.
pub fn normalize(image: &str) -> String {
    let (registry, rest) = match image.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first.to_string(), rest.to_string())
        }
        _ => ("docker.io".to_string(), image.to_string()),
    };
    let rest = if registry == "docker.io" && !rest.contains('/') {
        format!("library/{rest}")
    } else {
        rest
    };
    let (repo, tail) = split_tail(&rest);
    let tail = if tail.is_empty() { ":latest" } else { tail };
    format!("{registry}/{repo}{tail}")
}

/// `repo` and its `:tag` / `@digest` suffix.
fn split_tail(rest: &str) -> (&str, &str) {
    if let Some(at) = rest.find('@') {
        return rest.split_at(at);
    }
    match rest.rfind(':') {
        Some(colon) if !rest[colon..].contains('/') => rest.split_at(colon),
        _ => (rest, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_cannot_break_out_of_their_toml_string() {
        let evil = "pw\"\n[plugins.\"evil\"]\nx = \"1\u{7}";
        let quoted = toml(evil);
        assert_eq!(quoted.lines().count(), 1, "{quoted}");
        assert_eq!(quoted, r#""pw\"\n[plugins.\"evil\"]\nx = \"1\u0007""#);
    }

    #[test]
    fn k3s_registries_files_become_containerd_settings_and_rewrites() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registries.yaml");
        assert!(
            Registries::load(&path).unwrap().mirrors.is_empty(),
            "a missing file is no config"
        );
        std::fs::write(
            &path,
            r#"
mirrors:
  docker.io:
    endpoint: ["http://127.0.0.1:5000"]
    rewrite:
      "^rancher/(.*)": "mirrored/rancher-$1"
configs:
  "127.0.0.1:5000":
    auth: {username: me, password: "p\"w"}
    tls: {insecure_skip_verify: true}
"#,
        )
        .unwrap();
        let r = Registries::load(&path).unwrap();
        let toml = r.containerd_toml();
        assert!(
            toml.contains(
                "registry.mirrors.\"docker.io\"]\n  endpoint = [\"http://127.0.0.1:5000\"]"
            ),
            "{toml}"
        );
        assert!(
            toml.contains(
                "configs.\"127.0.0.1:5000\".auth]\n  username = \"me\"\n  password = \"p\\\"w\""
            ),
            "{toml}"
        );
        assert!(toml.contains("insecure_skip_verify = true"), "{toml}");
        assert_eq!(
            r.rewrite("rancher/pause:3.1").as_deref(),
            Some("docker.io/mirrored/rancher-pause:3.1")
        );
        assert_eq!(r.rewrite("busybox"), None);
        std::fs::write(&path, "mirrors:\n  docker.io:\n    endpoints: [x]\n").unwrap();
        let e = Registries::load(&path).unwrap_err();
        assert!(matches!(e, RegistriesError::Invalid { .. }), "{e}");
        assert!(e.to_string().contains("not a valid registries file"), "{e}");
    }

    #[test]
    fn references_normalize_as_docker_does() {
        assert_eq!(normalize("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(
            normalize("rancher/pause:3.1"),
            "docker.io/rancher/pause:3.1"
        );
        assert_eq!(normalize("127.0.0.1:5000/app"), "127.0.0.1:5000/app:latest");
        assert_eq!(normalize("quay.io/a/b@sha256:ab"), "quay.io/a/b@sha256:ab");
    }
}
