//! Network values of the configuration: IPv4 networks and port ranges, parsed once.

use super::ConfigError;
use std::net::Ipv4Addr;

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

/// An IPv4 network `addr/prefix` (the address is the network's own).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Net {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Ipv4Net {
        let prefix = prefix.min(32);
        Ipv4Net {
            addr: Ipv4Addr::from(u32::from(addr) & mask(prefix)),
            prefix,
        }
    }
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.addr)
    }
}

impl std::str::FromStr for Ipv4Net {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Ipv4Net, ConfigError> {
        let not_cidr = || ConfigError::NotCidr(s.to_string());
        let (a, p) = s.split_once('/').ok_or_else(not_cidr)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| not_cidr())?;
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| ConfigError::BadPrefix(s.to_string()))?;
        Ok(Ipv4Net::new(addr, prefix))
    }
}

impl std::fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Ipv4Net {
    /// How many addresses the network has.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    /// The `index`th /24 inside the network (node pod ranges), if it has that many.
    pub fn subnet24(&self, index: u32) -> Option<Ipv4Net> {
        if self.prefix > 24 || u64::from(index) >= 1u64 << (24 - u32::from(self.prefix)) {
            return None;
        }
        Some(Ipv4Net::new(
            Ipv4Addr::from(u32::from(self.addr) + (index << 8)),
            24,
        ))
    }
}

/// A range of ports, `first-last` (`--service-node-port-range`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl std::str::FromStr for PortRange {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<PortRange, ConfigError> {
        let bad = || ConfigError::NotPortRange(s.to_string());
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let (first, last): (u16, u16) = (
            a.trim().parse().map_err(|_| bad())?,
            b.trim().parse().map_err(|_| bad())?,
        );
        if first == 0 || first > last {
            return Err(bad());
        }
        Ok(PortRange { first, last })
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_and_port_ranges_parse_once_and_refuse_nonsense() {
        let net: Ipv4Net = "10.42.7.1/16".parse().unwrap();
        assert_eq!(net.to_string(), "10.42.0.0/16");
        assert_eq!(net.size(), 65536);
        assert!(net.contains(Ipv4Addr::new(10, 42, 255, 1)));
        assert!(!net.contains(Ipv4Addr::new(10, 43, 0, 1)));
        assert_eq!(net.subnet24(3).unwrap().to_string(), "10.42.3.0/24");
        assert_eq!(net.subnet24(256), None);
        let small: Ipv4Net = "10.42.0.0/23".parse().unwrap();
        assert_eq!(small.subnet24(1).unwrap().to_string(), "10.42.1.0/24");
        assert_eq!(small.subnet24(2), None);
        for bad in [
            "10.42.0.0",
            "10.42.0.0/33",
            "fd00::/64",
            "x/8",
            "10.42.0.0/-1",
        ] {
            assert!(bad.parse::<Ipv4Net>().is_err(), "{bad}");
        }
        assert_eq!(
            "30000-32767".parse::<PortRange>().unwrap(),
            PortRange {
                first: 30000,
                last: 32767
            }
        );
        for bad in ["0-10", "10-9", "30000", "a-b", "1-70000"] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad}");
        }
    }
}
