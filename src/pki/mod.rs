//! The cluster's own certificate authorities and the certificates the server needs,
//! under `<data-dir>/server/tls/` with k3s' file names.
//!
//! The two CAs (server CA: signs serving certificates; client CA: signs client
//! certificates) and the service-account signing key are made once and kept: every
//! kubeconfig and node certificate depends on them. Leaf certificates are issued again
//! at every start, so their SANs always match the current flags and they never get
//! near their 365-day expiry on a server that is restarted now and then.

mod files;
pub mod join;
pub(crate) mod kubeconfig;
pub mod x509;

pub use files::{private_dir, write_private};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// CA lifetime, set explicitly (not left to a library default).
pub const CA_DAYS: i64 = 3650;
/// Leaf certificate lifetime.
pub const LEAF_DAYS: i64 = 365;

/// What the server's certificates must say.
#[derive(Clone, Debug)]
pub struct PkiOptions {
    /// `<data-dir>/server/tls`.
    pub dir: PathBuf,
    /// `--cluster-domain`, for the `kubernetes.default.svc.<domain>` name.
    pub cluster_domain: String,
    /// The service CIDR; its first address is the `kubernetes` service IP.
    pub service_cidr: String,
    /// This node's addresses, put in the serving certificate.
    pub node_ips: Vec<IpAddr>,
    /// `--tls-san`: extra host names or IPs.
    pub tls_sans: Vec<String>,
}

/// The PEM material the server uses.
#[derive(Clone)]
pub struct ServerPki {
    /// The CA that signs serving certificates.
    pub server_ca_cert: String,
    /// The CA that signs client certificates; the API server trusts clients by it.
    pub client_ca_cert: String,
    /// The API server's serving certificate.
    pub serving_cert: String,
    /// The key of `serving_cert`.
    pub serving_key: String,
    /// The admin's client certificate (`system:admin` in `system:masters`).
    pub admin_cert: String,
    /// The key of `admin_cert`.
    pub admin_key: String,
    /// The private key that signs service-account tokens.
    pub service_account_key: String,
}

/// Why the certificates could not be made or loaded.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A key or certificate file could not be read, written or used.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// Making a key or certificate failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// A setting (such as a `--tls-san` or the service CIDR) cannot be used.
    #[error("{0}")]
    Invalid(String),
}

/// A CA loaded or made: its certificate (PEM) and what signs with it.
struct Ca {
    cert: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    // a little slack for clocks that are slightly behind
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(days);
}

/// Loads the CA named `name` from `dir`, or makes it if neither file exists. A lone
/// certificate or key is damage, not a reason to start over.
fn load_or_make_ca(dir: &Path, name: &str, common_name: &str) -> Result<Ca, PkiError> {
    let cert_path = dir.join(format!("{name}.crt"));
    let key_path = dir.join(format!("{name}.key"));
    // The issuer is rebuilt from the same name and key, which reproduces the subject
    // and key identifier that the stored certificate carries.
    match (files::read(&cert_path)?, files::read(&key_path)?) {
        (Some(cert), Some(key_pem)) => {
            let key = KeyPair::from_pem(&key_pem).map_err(|e| PkiError::File {
                path: key_path.clone(),
                message: format!("not a usable private key ({e}); restore it from a backup"),
            })?;
            Ok(Ca {
                cert,
                issuer: Issuer::new(ca_params(common_name), key),
            })
        }
        (None, None) => {
            let key = KeyPair::generate()?;
            let mut params = ca_params(common_name);
            validity(&mut params, CA_DAYS);
            let cert = params.self_signed(&key)?.pem();
            write_private(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
            files::write_public(&cert_path, cert.as_bytes())?;
            tracing::info!(path = %cert_path.display(), "created certificate authority");
            Ok(Ca {
                cert,
                issuer: Issuer::new(ca_params(common_name), key),
            })
        }
        (cert, _) => {
            let (present, missing) = if cert.is_some() {
                (&cert_path, &key_path)
            } else {
                (&key_path, &cert_path)
            };
            Err(PkiError::File {
                path: missing.clone(),
                message: format!(
                    "is missing while {} exists; restore it from a backup (skua will not replace a CA that certificates already depend on)",
                    present.display()
                ),
            })
        }
    }
}

/// The first address of a CIDR (the `kubernetes` service IP of a service CIDR).
pub fn first_ip(cidr: &str) -> Result<IpAddr, PkiError> {
    let bad = || PkiError::Invalid(format!("{cidr:?} is not a CIDR"));
    let (addr, len) = cidr.split_once('/').ok_or_else(bad)?;
    let len: u32 = len.parse().map_err(|_| bad())?;
    match addr.parse::<IpAddr>().map_err(|_| bad())? {
        IpAddr::V4(a) if len <= 32 => {
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            Ok(IpAddr::V4((u32::from(a) & mask).wrapping_add(1).into()))
        }
        IpAddr::V6(a) if len <= 128 => {
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            Ok(IpAddr::V6((u128::from(a) & mask).wrapping_add(1).into()))
        }
        _ => Err(bad()),
    }
}

/// The machine's own IPv4 addresses (not loopback), from the kernel's routing table
/// (`/proc/net/fib_trie`: every `/32 host LOCAL` entry): the node IPs when
/// `--node-ip` is not given. Reading it sends nothing on the network.
pub fn local_addresses() -> Vec<IpAddr> {
    let mut all =
        parse_fib_trie(&std::fs::read_to_string("/proc/net/fib_trie").unwrap_or_default());
    // the address the default route leaves from comes first (k3s picks that one): a
    // route lookup only, a UDP socket's connect sends nothing (TEST-NET-1, RFC 5737)
    let primary = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("192.0.2.1:9").and_then(|_| s.local_addr()))
        .map(|a| a.ip())
        .ok();
    if let Some(p) = primary {
        if let Some(i) = all.iter().position(|ip| *ip == p) {
            all.remove(i);
            all.insert(0, p);
        }
    }
    all
}

/// This machine's addresses (as [`local_addresses`]) without those inside `cidrs`:
/// the cluster's own (the pod bridge's gateway, the cluster DNS address an agent holds)
/// are never a node's address.
pub fn node_addresses(cidrs: &[&str]) -> Vec<IpAddr> {
    let nets: Vec<(u32, u32)> = cidrs
        .iter()
        .filter_map(|c| {
            let (ip, len) = c.split_once('/')?;
            let ip: std::net::Ipv4Addr = ip.parse().ok()?;
            let len: u32 = len.parse().ok().filter(|l| *l <= 32)?;
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            Some((u32::from(ip) & mask, mask))
        })
        .collect();
    outside(local_addresses(), &nets)
}

fn outside(addrs: Vec<IpAddr>, nets: &[(u32, u32)]) -> Vec<IpAddr> {
    addrs
        .into_iter()
        .filter(|ip| match ip {
            IpAddr::V4(v4) => !nets.iter().any(|(net, mask)| u32::from(*v4) & mask == *net),
            IpAddr::V6(_) => true,
        })
        .collect()
}

fn parse_fib_trie(text: &str) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    let mut last: Option<IpAddr> = None;
    for line in text.lines() {
        let t = line.trim();
        if let Some(addr) = t.strip_prefix("|-- ") {
            last = addr.parse().ok();
        } else if t.starts_with("/32 host LOCAL") {
            if let Some(ip) = last.filter(|ip| !ip.is_loopback() && !out.contains(ip)) {
                out.push(ip);
            }
        }
    }
    out
}

/// The names the serving certificate must carry.
pub fn serving_sans(opts: &PkiOptions) -> Result<Vec<SanType>, PkiError> {
    let mut names = vec![
        "kubernetes".to_string(),
        "kubernetes.default".to_string(),
        "kubernetes.default.svc".to_string(),
        format!("kubernetes.default.svc.{}", opts.cluster_domain),
        "localhost".to_string(),
    ];
    let mut ips: Vec<IpAddr> = vec![IpAddr::from([127, 0, 0, 1])];
    ips.extend(&opts.node_ips);
    ips.push(first_ip(&opts.service_cidr)?);
    for san in &opts.tls_sans {
        match san.parse::<IpAddr>() {
            Ok(ip) => ips.push(ip),
            Err(_) => names.push(san.clone()),
        }
    }
    let mut out = Vec::new();
    for name in names {
        if !is_dns_name(&name) {
            return Err(PkiError::Invalid(format!(
                "--tls-san {name:?} is neither an IP address nor a DNS name"
            )));
        }
        let dns = name.clone().try_into().map_err(|_| {
            PkiError::Invalid(format!("--tls-san {name:?} is not a valid DNS name"))
        })?;
        let san = SanType::DnsName(dns);
        if !out.contains(&san) {
            out.push(san);
        }
    }
    for ip in ips {
        let san = SanType::IpAddress(ip);
        if !out.contains(&san) {
            out.push(san);
        }
    }
    Ok(out)
}

/// A DNS name as certificates carry it: dot-separated labels of letters, digits and
/// inner hyphens, at most 253 characters, optionally starting with a `*.` wildcard.
fn is_dns_name(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn leaf(
    ca: &Ca,
    common_name: &str,
    organization: Option<&str>,
    sans: Vec<SanType>,
    usage: ExtendedKeyUsagePurpose,
) -> Result<(String, String), PkiError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(o) = organization {
        dn.push(DnType::OrganizationName, o);
    }
    params.distinguished_name = dn;
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, LEAF_DAYS);
    let cert = params.signed_by(&key, &ca.issuer)?.pem();
    Ok((cert, key.serialize_pem()))
}

/// Makes (first start) or loads the CAs and the service-account key, and issues the
/// serving and admin certificates; writes everything to `opts.dir`.
pub fn ensure(opts: &PkiOptions) -> Result<ServerPki, PkiError> {
    files::create_private_dir(&opts.dir)?;
    let server_ca = load_or_make_ca(&opts.dir, "server-ca", "skua-server-ca")?;
    let client_ca = load_or_make_ca(&opts.dir, "client-ca", "skua-client-ca")?;

    let sa_path = opts.dir.join("service.key");
    let service_account_key = match files::read(&sa_path)? {
        Some(pem) => {
            KeyPair::from_pem(&pem).map_err(|e| PkiError::File {
                path: sa_path.clone(),
                message: format!("not a usable private key ({e}); restore it from a backup"),
            })?;
            pem
        }
        None => {
            let pem = KeyPair::generate()?.serialize_pem();
            write_private(&sa_path, pem.as_bytes(), 0o600)?;
            pem
        }
    };

    let (serving_cert, serving_key) = leaf(
        &server_ca,
        "kube-apiserver",
        None,
        serving_sans(opts)?,
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    files::write_public(
        &opts.dir.join("serving-kube-apiserver.crt"),
        serving_cert.as_bytes(),
    )?;
    write_private(
        &opts.dir.join("serving-kube-apiserver.key"),
        serving_key.as_bytes(),
        0o600,
    )?;

    let (admin_cert, admin_key) = leaf(
        &client_ca,
        "system:admin",
        Some("system:masters"),
        Vec::new(),
        ExtendedKeyUsagePurpose::ClientAuth,
    )?;
    files::write_public(&opts.dir.join("client-admin.crt"), admin_cert.as_bytes())?;
    write_private(
        &opts.dir.join("client-admin.key"),
        admin_key.as_bytes(),
        0o600,
    )?;

    Ok(ServerPki {
        server_ca_cert: server_ca.cert,
        client_ca_cert: client_ca.cert,
        serving_cert,
        serving_key,
        admin_cert,
        admin_key,
        service_account_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_addresses_leave_out_the_clusters_own() {
        let addrs: Vec<IpAddr> = ["10.43.0.10", "192.0.2.7", "10.42.3.1", "fe80::1"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let nets = [(0x0a2b_0000, 0xffff_0000), (0x0a2a_0000, 0xffff_0000)];
        let kept: Vec<String> = outside(addrs, &nets)
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(kept, ["192.0.2.7", "fe80::1"]);
    }

    #[test]
    fn local_addresses_come_from_host_local_routes() {
        let trie = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 127.0.0.1\n        /32 host LOCAL\n     |-- 192.0.2.2\n        /32 host LOCAL\n     |-- 192.0.2.255\n        /32 link BROADCAST\nLocal:\n     |-- 192.0.2.2\n        /32 host LOCAL\n";
        assert_eq!(parse_fib_trie(trie), vec![IpAddr::from([192, 0, 2, 2])]);
    }

    #[test]
    fn first_ip_of_service_cidrs() {
        assert_eq!(first_ip("10.43.0.0/16").unwrap().to_string(), "10.43.0.1");
        assert_eq!(first_ip("10.43.7.9/16").unwrap().to_string(), "10.43.0.1");
        assert_eq!(first_ip("fd00:43::/112").unwrap().to_string(), "fd00:43::1");
        assert!(first_ip("10.43.0.0").is_err());
        assert!(first_ip("10.43.0.0/40").is_err());
    }

    #[test]
    fn serving_sans_cover_the_service_names_and_flags() {
        let opts = PkiOptions {
            dir: PathBuf::new(),
            cluster_domain: "cluster.local".into(),
            service_cidr: "10.43.0.0/16".into(),
            node_ips: vec![IpAddr::from([192, 0, 2, 7])],
            tls_sans: vec![
                "skua.example.com".into(),
                "203.0.113.5".into(),
                "localhost".into(),
            ],
        };
        let sans = serving_sans(&opts).unwrap();
        let text: Vec<String> = sans
            .iter()
            .map(|s| match s {
                SanType::DnsName(n) => n.as_str().to_string(),
                SanType::IpAddress(ip) => ip.to_string(),
                other => format!("{other:?}"),
            })
            .collect();
        for want in [
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "localhost",
            "127.0.0.1",
            "192.0.2.7",
            "10.43.0.1",
            "skua.example.com",
            "203.0.113.5",
        ] {
            assert!(
                text.contains(&want.to_string()),
                "missing {want} in {text:?}"
            );
        }
        assert_eq!(
            text.iter().filter(|t| *t == "localhost").count(),
            1,
            "no duplicates"
        );
        let bad = PkiOptions {
            tls_sans: vec!["not a name!".into()],
            ..opts
        };
        assert!(serving_sans(&bad).is_err());
    }
}
