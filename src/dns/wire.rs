//! DNS messages (RFC 1035) as far as cluster DNS needs them: a query's header,
//! question and EDNS payload size in; an answer with A, AAAA, CNAME, PTR, SRV and SOA
//! records out, name compression read (never written), truncation at the client's
//! size. Pure: no I/O.

use std::net::{Ipv4Addr, Ipv6Addr};

pub const TYPE_A: u16 = 1;
pub const TYPE_CNAME: u16 = 5;
pub const TYPE_SOA: u16 = 6;
pub const TYPE_PTR: u16 = 12;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_SRV: u16 = 33;
pub const TYPE_OPT: u16 = 41;
pub const TYPE_ANY: u16 = 255;
pub const CLASS_IN: u16 = 1;

pub const RCODE_NOERROR: u8 = 0;
pub const RCODE_FORMERR: u8 = 1;
pub const RCODE_SERVFAIL: u8 = 2;
pub const RCODE_NXDOMAIN: u8 = 3;
pub const RCODE_NOTIMP: u8 = 4;

/// Why a message could not be read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed DNS message: {0}")]
pub struct WireError(pub &'static str);

/// The part of a query the server acts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    pub id: u16,
    /// Recursion desired, echoed in the answer.
    pub rd: bool,
    pub opcode: u8,
    /// Lower-cased, without the trailing dot.
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
    /// The largest UDP answer the client takes (512 without EDNS).
    pub udp_size: usize,
    /// The query carried an EDNS OPT record (the answer then carries one too).
    pub edns: bool,
    /// The question as it was sent (echoed in the answer, case kept).
    pub raw_name: String,
}

/// One resource record's data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RData {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Cname(String),
    Ptr(String),
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        target: String,
    },
    Soa {
        mname: String,
        rname: String,
        serial: u32,
        refresh: u32,
        retry: u32,
        expire: u32,
        minimum: u32,
    },
}

impl RData {
    pub fn rtype(&self) -> u16 {
        match self {
            RData::A(_) => TYPE_A,
            RData::Aaaa(_) => TYPE_AAAA,
            RData::Cname(_) => TYPE_CNAME,
            RData::Ptr(_) => TYPE_PTR,
            RData::Srv { .. } => TYPE_SRV,
            RData::Soa { .. } => TYPE_SOA,
        }
    }
}

/// A resource record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub name: String,
    pub ttl: u32,
    pub data: RData,
}

/// Reads a (possibly compressed) name at `pos`; returns it and the position after it.
fn read_name(msg: &[u8], mut pos: usize) -> Result<(String, usize), WireError> {
    let mut labels: Vec<String> = Vec::new();
    let mut end = None;
    let mut jumps = 0;
    loop {
        let len = *msg.get(pos).ok_or(WireError("name runs past the end"))? as usize;
        if len == 0 {
            pos += 1;
            break;
        }
        if len & 0xc0 == 0xc0 {
            let lo = *msg
                .get(pos + 1)
                .ok_or(WireError("cut compression pointer"))? as usize;
            if end.is_none() {
                end = Some(pos + 2);
            }
            jumps += 1;
            if jumps > 16 {
                return Err(WireError("compression loop"));
            }
            pos = ((len & 0x3f) << 8) | lo;
            continue;
        }
        if len > 63 {
            return Err(WireError("label longer than 63"));
        }
        let label = msg
            .get(pos + 1..pos + 1 + len)
            .ok_or(WireError("label runs past the end"))?;
        labels.push(String::from_utf8_lossy(label).into_owned());
        pos += 1 + len;
        if labels.iter().map(|l| l.len() + 1).sum::<usize>() > 255 {
            return Err(WireError("name longer than 255"));
        }
    }
    Ok((labels.join("."), end.unwrap_or(pos)))
}

fn u16_at(msg: &[u8], pos: usize) -> Result<u16, WireError> {
    msg.get(pos..pos + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or(WireError("message cut short"))
}

/// Reads a query: one question (and an OPT record, if any, for the UDP size).
pub fn parse_query(msg: &[u8]) -> Result<Query, WireError> {
    if msg.len() < 12 {
        return Err(WireError("shorter than a header"));
    }
    let id = u16_at(msg, 0)?;
    let flags = u16_at(msg, 2)?;
    if flags & 0x8000 != 0 {
        return Err(WireError("a response, not a query"));
    }
    let qd = u16_at(msg, 4)?;
    let an = u16_at(msg, 6)?;
    let ns = u16_at(msg, 8)?;
    let ar = u16_at(msg, 10)?;
    if qd != 1 {
        return Err(WireError("not exactly one question"));
    }
    let (raw_name, pos) = read_name(msg, 12)?;
    let qtype = u16_at(msg, pos)?;
    let qclass = u16_at(msg, pos + 2)?;
    let mut pos = pos + 4;
    let mut udp_size = 512;
    let mut edns = false;
    // skip answers and authorities, look for OPT among the additionals
    for i in 0..(an as usize + ns as usize + ar as usize) {
        let (_, p) = read_name(msg, pos)?;
        let rtype = u16_at(msg, p)?;
        let class = u16_at(msg, p + 2)?;
        let rdlen = u16_at(msg, p + 8)? as usize;
        if i >= an as usize + ns as usize && rtype == TYPE_OPT {
            udp_size = (class as usize).clamp(512, 4096);
            edns = true;
        }
        pos = p + 10 + rdlen;
        if pos > msg.len() {
            return Err(WireError("record runs past the end"));
        }
    }
    Ok(Query {
        id,
        rd: flags & 0x0100 != 0,
        opcode: ((flags >> 11) & 0xf) as u8,
        name: raw_name.trim_end_matches('.').to_ascii_lowercase(),
        qtype,
        qclass,
        udp_size,
        edns,
        raw_name,
    })
}

fn write_name(out: &mut Vec<u8>, name: &str) {
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        let b = label.as_bytes();
        let n = b.len().min(63);
        out.push(n as u8);
        out.extend_from_slice(&b[..n]);
    }
    out.push(0);
}

fn write_record(out: &mut Vec<u8>, r: &Record) {
    write_name(out, &r.name);
    out.extend_from_slice(&r.data.rtype().to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out.extend_from_slice(&r.ttl.to_be_bytes());
    let mut data = Vec::new();
    match &r.data {
        RData::A(ip) => data.extend_from_slice(&ip.octets()),
        RData::Aaaa(ip) => data.extend_from_slice(&ip.octets()),
        RData::Cname(n) | RData::Ptr(n) => write_name(&mut data, n),
        RData::Srv {
            priority,
            weight,
            port,
            target,
        } => {
            data.extend_from_slice(&priority.to_be_bytes());
            data.extend_from_slice(&weight.to_be_bytes());
            data.extend_from_slice(&port.to_be_bytes());
            write_name(&mut data, target);
        }
        RData::Soa {
            mname,
            rname,
            serial,
            refresh,
            retry,
            expire,
            minimum,
        } => {
            write_name(&mut data, mname);
            write_name(&mut data, rname);
            for v in [serial, refresh, retry, expire, minimum] {
                data.extend_from_slice(&v.to_be_bytes());
            }
        }
    }
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(&data);
}

/// An answer to `q`. Records that do not fit in `limit` bytes are left out and the
/// message is marked truncated (the client asks again over TCP).
pub struct Answer<'a> {
    pub query: &'a Query,
    pub rcode: u8,
    pub authoritative: bool,
    pub answers: Vec<Record>,
    pub authority: Vec<Record>,
    pub additional: Vec<Record>,
}

impl<'a> Answer<'a> {
    /// An answer with no records, e.g. SERVFAIL or NOTIMP (the question is echoed:
    /// resolvers drop replies whose question does not match theirs).
    pub fn bare(query: &'a Query, rcode: u8) -> Answer<'a> {
        Answer {
            query,
            rcode,
            authoritative: false,
            answers: vec![],
            authority: vec![],
            additional: vec![],
        }
    }

    pub fn encode(&self, limit: usize) -> Vec<u8> {
        // room for the OPT record an EDNS query gets back (RFC 6891 §7)
        let opt_len = if self.query.edns { 11 } else { 0 };
        let limit = limit.saturating_sub(opt_len);
        let mut out = Vec::with_capacity(512);
        out.extend_from_slice(&self.query.id.to_be_bytes());
        out.extend_from_slice(&[0, 0]); // flags, set below
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&[0; 6]);
        write_name(&mut out, &self.query.raw_name);
        out.extend_from_slice(&self.query.qtype.to_be_bytes());
        out.extend_from_slice(&self.query.qclass.to_be_bytes());
        let mut truncated = false;
        let mut counts = [0u16; 3];
        for (i, section) in [&self.answers, &self.authority, &self.additional]
            .into_iter()
            .enumerate()
        {
            for r in section {
                let mark = out.len();
                write_record(&mut out, r);
                if out.len() > limit {
                    out.truncate(mark);
                    // a cut answer section is truncation; dropped extras are not
                    truncated |= i == 0;
                    break;
                }
                counts[i] += 1;
            }
        }
        let mut flags: u16 = 0x8000 | (u16::from(self.query.opcode & 0xf) << 11) | 0x0080;
        if self.authoritative {
            flags |= 0x0400;
        }
        if truncated {
            flags |= 0x0200;
        }
        if self.query.rd {
            flags |= 0x0100;
        }
        flags |= u16::from(self.rcode & 0xf);
        out[2..4].copy_from_slice(&flags.to_be_bytes());
        out[6..8].copy_from_slice(&counts[0].to_be_bytes());
        out[8..10].copy_from_slice(&counts[1].to_be_bytes());
        if self.query.edns {
            // root name, OPT, our UDP size, extended rcode/version/flags 0, no options
            out.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0]);
            counts[2] += 1;
        }
        out[10..12].copy_from_slice(&counts[2].to_be_bytes());
        out
    }
}

/// A bare error answer (SERVFAIL, FORMERR) to a message whose header was readable.
pub fn error_reply(msg: &[u8], rcode: u8) -> Option<Vec<u8>> {
    if msg.len() < 12 {
        return None;
    }
    let mut out = msg[..12].to_vec();
    let flags = u16::from_be_bytes([msg[2], msg[3]]);
    let flags = 0x8000 | (flags & 0x7900) | 0x0080 | u16::from(rcode);
    out[2..4].copy_from_slice(&flags.to_be_bytes());
    out[4..12].copy_from_slice(&[0; 8]);
    Some(out)
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A query as a resolver sends it, optionally with an EDNS OPT record.
    pub fn query(id: u16, name: &str, qtype: u16, edns: Option<u16>) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&id.to_be_bytes());
        m.extend_from_slice(&0x0100u16.to_be_bytes());
        m.extend_from_slice(&1u16.to_be_bytes());
        m.extend_from_slice(&[0, 0, 0, 0]);
        m.extend_from_slice(&(edns.is_some() as u16).to_be_bytes());
        write_name(&mut m, name);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&CLASS_IN.to_be_bytes());
        if let Some(size) = edns {
            m.push(0);
            m.extend_from_slice(&TYPE_OPT.to_be_bytes());
            m.extend_from_slice(&size.to_be_bytes());
            m.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        }
        m
    }

    /// One record read back: name, type, data.
    pub type Rr = (String, u16, Vec<u8>);

    /// Reads an answer back: rcode, flags and the answer section's records.
    pub fn decode(msg: &[u8]) -> (u8, u16, Vec<Rr>) {
        let flags = u16::from_be_bytes([msg[2], msg[3]]);
        let an = u16::from_be_bytes([msg[6], msg[7]]);
        let (_, mut pos) = read_name(msg, 12).unwrap();
        pos += 4;
        let mut out = Vec::new();
        for _ in 0..an {
            let (name, p) = read_name(msg, pos).unwrap();
            let rtype = u16_at(msg, p).unwrap();
            let len = u16_at(msg, p + 8).unwrap() as usize;
            out.push((name, rtype, msg[p + 10..p + 10 + len].to_vec()));
            pos = p + 10 + len;
        }
        ((flags & 0xf) as u8, flags, out)
    }

    #[test]
    fn queries_are_read_with_their_edns_size_and_case() {
        let q = parse_query(&query(
            7,
            "Web.Default.svc.cluster.local.",
            TYPE_A,
            Some(1232),
        ))
        .unwrap();
        assert_eq!((q.id, q.qtype, q.udp_size, q.rd), (7, TYPE_A, 1232, true));
        assert_eq!(q.name, "web.default.svc.cluster.local");
        assert_eq!(q.raw_name, "Web.Default.svc.cluster.local");
        assert_eq!(
            parse_query(&query(1, "x", TYPE_A, None)).unwrap().udp_size,
            512
        );
        assert!(parse_query(&[0; 5]).is_err());
        let mut bad = query(1, "x.y", TYPE_A, None);
        bad[12] = 60; // a label longer than the message
        assert!(parse_query(&bad).is_err());
        // a compression loop is refused, not followed forever
        let mut lp = query(1, "a", TYPE_A, None);
        lp.truncate(12);
        lp.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert!(parse_query(&lp).is_err());
    }

    #[test]
    fn answers_encode_and_truncate_at_the_limit() {
        let q = parse_query(&query(9, "h.default.svc.cluster.local", TYPE_A, None)).unwrap();
        let answers: Vec<Record> = (0..60)
            .map(|i| Record {
                name: q.name.clone(),
                ttl: 5,
                data: RData::A(Ipv4Addr::new(10, 42, 0, i)),
            })
            .collect();
        let a = Answer {
            query: &q,
            rcode: RCODE_NOERROR,
            authoritative: true,
            answers,
            authority: vec![],
            additional: vec![],
        };
        let small = a.encode(512);
        assert!(small.len() <= 512);
        let (rcode, flags, recs) = decode(&small);
        assert_eq!(rcode, 0);
        assert!(flags & 0x0200 != 0, "truncated");
        assert!(flags & 0x0400 != 0, "authoritative");
        assert!(recs.len() < 60 && !recs.is_empty());
        assert_eq!(recs[0].2, vec![10, 42, 0, 0]);
        let (_, flags, recs) = decode(&a.encode(65535));
        assert_eq!((flags & 0x0200, recs.len()), (0, 60));
        let srv = Record {
            name: "_http._tcp.web.default.svc.cluster.local".into(),
            ttl: 5,
            data: RData::Srv {
                priority: 0,
                weight: 100,
                port: 80,
                target: "web.default.svc.cluster.local".into(),
            },
        };
        let a = Answer {
            query: &q,
            rcode: 0,
            authoritative: true,
            answers: vec![srv],
            authority: vec![],
            additional: vec![],
        };
        let (_, _, recs) = decode(&a.encode(512));
        assert_eq!(recs[0].1, TYPE_SRV);
        assert_eq!(&recs[0].2[..6], &[0, 0, 0, 100, 0, 80]);
        // an EDNS query gets an OPT record back, within its size
        let qe = parse_query(&query(4, "h.default.svc.cluster.local", TYPE_A, Some(1232))).unwrap();
        let a = Answer {
            query: &qe,
            rcode: 0,
            authoritative: true,
            answers: vec![],
            authority: vec![],
            additional: vec![],
        };
        let m = a.encode(qe.udp_size);
        assert_eq!(u16::from_be_bytes([m[10], m[11]]), 1);
        assert_eq!(&m[m.len() - 11..m.len() - 8], &[0, 0, 41]);
        // a bare SERVFAIL still carries the question
        let b = Answer::bare(&q, RCODE_SERVFAIL).encode(512);
        assert_eq!(
            (u16::from_be_bytes([b[4], b[5]]), b[3] & 0xf),
            (1, RCODE_SERVFAIL)
        );
        let e = error_reply(&query(3, "x", TYPE_A, None), RCODE_SERVFAIL).unwrap();
        assert_eq!(
            (e[0], e[1], e[3] & 0xf, e[2] & 0x80),
            (0, 3, RCODE_SERVFAIL, 0x80)
        );
    }
}
