//! Thin seams over the kernel's packet machinery, so the logic above them (the service
//! proxy, the overlay, network policy) is tested without root: nftables (one
//! transaction per call), conntrack and sysctls. The real implementations run the
//! Debian tools (`nft -f -`, `conntrack`), exactly as kube-proxy's knftables does, and
//! only ever read back the agent's own table.

pub(crate) mod netlink;
pub(crate) mod upgrade;

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// Why the kernel refused a change.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A tool could not be run (usually: its package is not installed).
    #[error("cannot run {tool}: {source} (is the {package} package installed?)")]
    Spawn {
        /// The tool, e.g. `nft`.
        tool: &'static str,
        /// The Debian package that provides it.
        package: &'static str,
        /// Why it could not be run.
        source: std::io::Error,
    },
    /// A tool ran but rejected the change.
    #[error("{tool} refused the change: {message}")]
    Refused {
        /// The tool, e.g. `nft`.
        tool: &'static str,
        /// What it said (the first lines of its error output).
        message: String,
    },
}

/// nftables: each call is one atomic transaction.
pub trait Nft: Send + Sync {
    /// Applies `script` (nft command syntax, one command per line) atomically: all of
    /// it or none.
    fn apply(&self, script: &str) -> Result<(), NetError>;
    /// The ruleset of one table in nft's own text (`None` when there is no such table).
    fn list_table(&self, family: &str, table: &str) -> Result<Option<String>, NetError>;
}

/// Where the real tools run: this process's network namespace, or another one
/// (`/var/run/netns/<name>`, entered with `nsenter`), as benchmarks and tests do.
#[derive(Clone, Debug, Default)]
pub struct Netns(pub Option<std::path::PathBuf>);

impl Netns {
    fn command(&self, tool: &str) -> Command {
        match &self.0 {
            None => Command::new(tool),
            Some(path) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", path.display()))
                    .arg("--")
                    .arg(tool);
                c
            }
        }
    }
}

/// The real nftables, through `nft -f -`.
#[derive(Clone, Debug, Default)]
pub struct NftCli(pub Netns);

impl Nft for NftCli {
    fn apply(&self, script: &str) -> Result<(), NetError> {
        let mut child = self
            .0
            .command("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| NetError::Spawn {
                tool: "nft",
                package: "nftables",
                source,
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(script.as_bytes())
                .map_err(|source| NetError::Spawn {
                    tool: "nft",
                    package: "nftables",
                    source,
                })?;
        }
        let out = child.wait_with_output().map_err(|source| NetError::Spawn {
            tool: "nft",
            package: "nftables",
            source,
        })?;
        if out.status.success() {
            Ok(())
        } else {
            Err(NetError::Refused {
                tool: "nft",
                message: first_lines(&String::from_utf8_lossy(&out.stderr), 6),
            })
        }
    }

    fn list_table(&self, family: &str, table: &str) -> Result<Option<String>, NetError> {
        let out = self
            .0
            .command("nft")
            .args(["list", "table", family, table])
            .output()
            .map_err(|source| NetError::Spawn {
                tool: "nft",
                package: "nftables",
                source,
            })?;
        if out.status.success() {
            Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()))
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            if err.contains("No such file or directory") {
                Ok(None)
            } else {
                Err(NetError::Refused {
                    tool: "nft",
                    message: first_lines(&err, 6),
                })
            }
        }
    }
}

fn first_lines(s: &str, n: usize) -> String {
    s.lines().take(n).collect::<Vec<_>>().join("\n")
}

/// A recording nftables for unit tests: keeps every transaction; fails the next
/// `fail_next` of them.
#[derive(Default)]
pub struct FakeNft {
    /// Every transaction applied, in order.
    pub applied: Mutex<Vec<String>>,
    /// How many of the next transactions fail.
    pub fail_next: Mutex<usize>,
}

impl Nft for FakeNft {
    fn apply(&self, script: &str) -> Result<(), NetError> {
        let mut fail = self.fail_next.lock().unwrap_or_else(|e| e.into_inner());
        if *fail > 0 {
            *fail -= 1;
            return Err(NetError::Refused {
                tool: "nft",
                message: "injected failure".into(),
            });
        }
        self.applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(script.to_string());
        Ok(())
    }

    fn list_table(&self, _family: &str, _table: &str) -> Result<Option<String>, NetError> {
        Ok(None)
    }
}

/// Connection tracking: stale UDP flows outlive the rules that made them (UDP has no
/// close), so they are deleted when their endpoint goes.
pub trait Conntrack: Send + Sync {
    /// Deletes UDP flows that were NATed to `ip:port` (a removed endpoint).
    fn clear_udp_endpoint(&self, ip: &str, port: u16) -> Result<(), NetError>;
    /// Deletes UDP flows addressed to `ip:port` (a service that had no endpoints: its
    /// rejected flows would otherwise keep being rejected).
    fn clear_udp_destination(&self, ip: &str, port: u16) -> Result<(), NetError>;
}

/// The real conntrack table, through the `conntrack` tool.
#[derive(Clone, Debug, Default)]
pub struct ConntrackCli(pub Netns);

impl ConntrackCli {
    fn delete(&self, args: &[&str]) -> Result<(), NetError> {
        let out = self
            .0
            .command("conntrack")
            .arg("-D")
            .args(args)
            .output()
            .map_err(|source| NetError::Spawn {
                tool: "conntrack",
                package: "conntrack",
                source,
            })?;
        // exit 1 with "0 flow entries have been deleted" is not a failure
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || err.contains("0 flow entries") {
            Ok(())
        } else {
            Err(NetError::Refused {
                tool: "conntrack",
                message: first_lines(&err, 3),
            })
        }
    }
}

impl Conntrack for ConntrackCli {
    fn clear_udp_endpoint(&self, ip: &str, port: u16) -> Result<(), NetError> {
        self.delete(&[
            "-p",
            "udp",
            "--dst-nat",
            ip,
            "--reply-port-src",
            &port.to_string(),
        ])
    }

    fn clear_udp_destination(&self, ip: &str, port: u16) -> Result<(), NetError> {
        self.delete(&[
            "-p",
            "udp",
            "--orig-dst",
            ip,
            "--orig-port-dst",
            &port.to_string(),
        ])
    }
}

/// A conntrack that records what it was asked to delete (unit tests).
#[derive(Default)]
pub struct FakeConntrack {
    /// Each deletion asked for: `endpoint <ip>:<port>` or `destination <ip>:<port>`.
    pub cleared: Mutex<Vec<String>>,
}

impl Conntrack for FakeConntrack {
    fn clear_udp_endpoint(&self, ip: &str, port: u16) -> Result<(), NetError> {
        self.cleared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(format!("endpoint {ip}:{port}"));
        Ok(())
    }

    fn clear_udp_destination(&self, ip: &str, port: u16) -> Result<(), NetError> {
        self.cleared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(format!("destination {ip}:{port}"));
        Ok(())
    }
}

/// Sets a sysctl of this network namespace (`net.ipv4.ip_forward` → /proc/sys/...).
pub fn sysctl(key: &str, value: &str) -> std::io::Result<()> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    if std::fs::read_to_string(&path)
        .map(|v| v.trim() == value)
        .unwrap_or(false)
    {
        return Ok(());
    }
    std::fs::write(&path, value)
}
