//! Just enough DER to read a certificate's subject (common names and organizations),
//! which is how Kubernetes turns a client certificate into a user and groups. The
//! certificate has already been verified by the TLS layer; this only reads it.

/// One DER element: (tag, contents, rest after it).
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
const OID_ORGANIZATION: &[u8] = &[0x55, 0x04, 0x0a];

/// The subject of a certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subject {
    /// Its common names (CN), in order.
    pub common_names: Vec<String>,
    /// Its organizations (O), in order: the groups of a client certificate.
    pub organizations: Vec<String>,
}

/// Reads the subject of a DER certificate; `None` if it is not one.
pub fn subject(cert_der: &[u8]) -> Option<Subject> {
    let (tag, cert, _) = element(cert_der)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, tbs, _) = element(cert)?;
    if tag != SEQUENCE {
        return None;
    }
    let mut rest = tbs;
    // [0] version is optional
    if rest.first() == Some(&0xa0) {
        rest = element(rest)?.2;
    }
    // serialNumber, signature, issuer, validity, then subject
    for _ in 0..4 {
        rest = element(rest)?.2;
    }
    let (tag, name, _) = element(rest)?;
    if tag != SEQUENCE {
        return None;
    }
    let mut subject = Subject::default();
    let mut rdns = name;
    while !rdns.is_empty() {
        let (tag, set, next) = element(rdns)?;
        rdns = next;
        if tag != SET {
            return None;
        }
        let mut atvs = set;
        while !atvs.is_empty() {
            let (tag, atv, next) = element(atvs)?;
            atvs = next;
            if tag != SEQUENCE {
                return None;
            }
            let (tag, oid, value) = element(atv)?;
            if tag != OID {
                return None;
            }
            let (_, text, _) = element(value)?;
            let text = String::from_utf8_lossy(text).into_owned();
            if oid == OID_COMMON_NAME {
                subject.common_names.push(text);
            } else if oid == OID_ORGANIZATION {
                subject.organizations.push(text);
            }
        }
    }
    Some(subject)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

    fn cert(cn: &str, orgs: &[&str]) -> Vec<u8> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        for o in orgs {
            dn.push(DnType::OrganizationName, *o);
        }
        params.distinguished_name = dn;
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn reads_user_and_groups() {
        let s = subject(&cert("system:admin", &["system:masters"])).unwrap();
        assert_eq!(s.common_names, vec!["system:admin"]);
        assert_eq!(s.organizations, vec!["system:masters"]);
        // (several O values: see tests/pki.rs, rcgen keeps one value per attribute)
        let s = subject(&cert("system:node:edge-1", &[])).unwrap();
        assert_eq!(s.common_names, vec!["system:node:edge-1"]);
        assert!(s.organizations.is_empty());
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert_eq!(subject(b""), None);
        assert_eq!(subject(&[0x30, 0x82, 0xff]), None);
        let mut truncated = cert("a", &[]);
        truncated.truncate(40);
        assert_eq!(subject(&truncated), None);
    }
}
