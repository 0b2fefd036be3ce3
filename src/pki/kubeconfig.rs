//! The admin kubeconfig, in the shape k3s writes (`default` cluster, user and context,
//! credentials embedded), so `KUBECONFIG=/etc/skua/skua.yaml kubectl …` works at once.

use super::{PkiError, write_private};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use std::path::Path;

/// The kubeconfig text for `server` (an https URL) with the given PEM material.
pub fn render(server: &str, ca_pem: &str, cert_pem: &str, key_pem: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority-data: {ca}
    server: {server}
  name: default
contexts:
- context:
    cluster: default
    user: default
  name: default
current-context: default
preferences: {{}}
users:
- name: default
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
",
        ca = STANDARD.encode(ca_pem),
        cert = STANDARD.encode(cert_pem),
        key = STANDARD.encode(key_pem),
    )
}

/// Parses `--write-kubeconfig-mode` (octal, like chmod: `600`, `0644`).
pub fn parse_mode(mode: &str) -> Result<u32, crate::config::ConfigError> {
    match u32::from_str_radix(mode.trim_start_matches("0o"), 8) {
        Ok(m) if m <= 0o777 => Ok(m),
        _ => Err(crate::config::ConfigError::NotFileMode(mode.to_string())),
    }
}

/// Writes the kubeconfig atomically with `mode`.
pub fn write(path: &Path, mode: u32, contents: &str) -> Result<(), PkiError> {
    write_private(path, contents.as_bytes(), mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_octal() {
        assert_eq!(parse_mode("600").ok(), Some(0o600));
        assert_eq!(parse_mode("0644").ok(), Some(0o644));
        assert!(parse_mode("999").is_err());
        assert!(parse_mode("rw").is_err());
        assert!(parse_mode("7777").is_err());
    }
}
