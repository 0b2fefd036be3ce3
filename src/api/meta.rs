//! Object metadata rules shared by every kind: name syntax (with upstream's exact
//! messages), uids and timestamps.

/// How a kind's names are validated (upstream's `ValidateObjectMeta` name functions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameRule {
    /// DNS-1123 subdomain: most kinds.
    Subdomain,
    /// DNS-1123 label: namespaces, services.
    Label,
    /// Any path segment: RBAC kinds (`system:controller:...`).
    PathSegment,
}

impl NameRule {
    /// The rule upstream applies to names of `kind`.
    pub fn for_kind(kind: &str) -> NameRule {
        match kind {
            "Namespace" | "Service" => NameRule::Label,
            "Role" | "ClusterRole" | "RoleBinding" | "ClusterRoleBinding" => NameRule::PathSegment,
            _ => NameRule::Subdomain,
        }
    }
}

const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Problems with `name` under `rule`, in upstream's words (empty: valid).
pub fn name_problems(rule: NameRule, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    match rule {
        NameRule::Subdomain => {
            if name.len() > 253 {
                out.push("must be no more than 253 characters".to_string());
            }
            if !name.split('.').all(is_label) {
                out.push(SUBDOMAIN_MSG.to_string());
            }
        }
        NameRule::Label => {
            if name.len() > 63 {
                out.push("must be no more than 63 characters".to_string());
            }
            if !is_label(name) {
                out.push(LABEL_MSG.to_string());
            }
        }
        NameRule::PathSegment => {
            if name == "." || name == ".." {
                out.push(format!("may not be '{name}'"));
            }
            for bad in ["/", "%"] {
                if name.contains(bad) {
                    out.push(format!("may not contain '{bad}'"));
                }
            }
        }
    }
    out
}

/// A random (version 4) UUID.
pub fn new_uid() -> String {
    let mut b = [0u8; 16];
    // SystemRandom reads the kernel's CSPRNG; it only fails if that is unavailable
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        b = nanos.to_le_bytes();
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Five random lowercase alphanumerics, as `generateName` appends.
pub fn name_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let uid = new_uid();
    uid.bytes()
        .filter(|c| c.is_ascii_hexdigit())
        .take(5)
        .enumerate()
        .map(|(i, c)| ALPHABET[(usize::from(c) * 7 + i * 13) % ALPHABET.len()] as char)
        .collect()
}

/// Seconds since the epoch, now.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Now as an RFC 3339 UTC timestamp with seconds, like `metav1.Time`.
pub fn now_rfc3339() -> String {
    rfc3339(now_secs())
}

pub use super::civil::{parse_rfc3339, rfc3339};

/// Now as a `metav1.MicroTime` (`2006-01-02T15:04:05.000000Z`), as Leases and Events
/// carry.
pub fn now_micro() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = rfc3339(d.as_secs() as i64);
    format!("{}.{:06}Z", &secs[..19], d.subsec_micros())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_upstream_rules() {
        assert!(name_problems(NameRule::Subdomain, "web.example-1").is_empty());
        assert_eq!(
            name_problems(NameRule::Subdomain, "Bad_Name"),
            vec![SUBDOMAIN_MSG.to_string()]
        );
        assert!(!name_problems(NameRule::Subdomain, "a.").is_empty());
        assert!(name_problems(NameRule::Label, "kube-system").is_empty());
        assert!(!name_problems(NameRule::Label, "a.b").is_empty());
        assert!(!name_problems(NameRule::Label, &"a".repeat(64)).is_empty());
        assert!(name_problems(NameRule::PathSegment, "system:controller:x").is_empty());
        assert!(!name_problems(NameRule::PathSegment, "a/b").is_empty());
    }

    #[test]
    fn uids_and_times() {
        let u = new_uid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(u, new_uid());
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(name_suffix().len(), 5);
    }
}
