//! The on-disk layout of the sled backend (format 2; format 1 is the same layout,
//! compacted by an algorithm that could leave superseded versions behind, and is
//! repaired at open — see `purge.rs`).
//!
//! * tree `versions`: `key ++ 0x00 ++ revision (8 bytes, big-endian)` →
//!   `kind (1 byte: 1 put, 2 delete) ++ create_revision (8 bytes BE) ++ value`.
//!   Every kept version of every key, grouped by key in key order and by revision within
//!   a key, so a consistent list at any kept revision is one ordered scan (MVCC, like
//!   etcd's bolt backend keyed by revision plus its key index).
//! * tree `log`: `revision (8 bytes BE)` → `key`: the change log, for watch replay and
//!   for compaction to find what each revision touched without scanning every key.
//! * tree `meta`: `format` → u32 BE, `compact_revision` → i64 BE.
//!
//! Keys never contain NUL (see `validate_key`), which makes `key ++ 0x00` an unambiguous
//! group prefix.

use crate::store::{Result, Revision, StoreError};

/// The format this build writes and reads.
pub(crate) const FORMAT: u32 = 2;
/// The oldest format this build opens, after repairing it.
pub(crate) const FORMAT_REPAIRABLE: u32 = 1;
pub(crate) const META_FORMAT: &[u8] = b"format";
pub(crate) const META_COMPACT: &[u8] = b"compact_revision";

pub(crate) const KIND_PUT: u8 = 1;
pub(crate) const KIND_DELETE: u8 = 2;

const REV_LEN: usize = 8;

/// `key ++ 0x00`: the prefix of every version of `key`.
pub(crate) fn version_prefix(key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 1);
    out.extend_from_slice(key.as_bytes());
    out.push(0);
    out
}

pub(crate) fn version_key(key: &str, revision: Revision) -> Vec<u8> {
    let mut out = version_prefix(key);
    out.extend_from_slice(&rev_bytes(revision));
    out
}

pub(crate) fn rev_bytes(revision: Revision) -> [u8; REV_LEN] {
    revision.to_be_bytes()
}

pub(crate) fn decode_rev(bytes: &[u8]) -> Result<Revision> {
    let arr: [u8; REV_LEN] = bytes
        .try_into()
        .map_err(|_| corrupt(format!("a revision has {} bytes, not 8", bytes.len())))?;
    Ok(Revision::from_be_bytes(arr))
}

/// Splits a `versions` key into the object key and the revision.
pub(crate) fn split_version_key(raw: &[u8]) -> Result<(&str, Revision)> {
    if raw.len() < REV_LEN + 2 || raw[raw.len() - REV_LEN - 1] != 0 {
        return Err(corrupt("a version key is malformed".to_string()));
    }
    let (key, rest) = raw.split_at(raw.len() - REV_LEN - 1);
    let key = std::str::from_utf8(key).map_err(|_| corrupt("a key is not UTF-8".to_string()))?;
    Ok((key, decode_rev(&rest[1..])?))
}

/// A decoded `versions` value.
pub(crate) struct StoredVersion<'a> {
    pub kind: u8,
    pub create_revision: Revision,
    pub value: &'a [u8],
}

pub(crate) fn encode_version(kind: u8, create_revision: Revision, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + REV_LEN + value.len());
    out.push(kind);
    out.extend_from_slice(&rev_bytes(create_revision));
    out.extend_from_slice(value);
    out
}

pub(crate) fn decode_version(raw: &[u8]) -> Result<StoredVersion<'_>> {
    if raw.len() < 1 + REV_LEN || !matches!(raw[0], KIND_PUT | KIND_DELETE) {
        return Err(corrupt("a stored version is malformed".to_string()));
    }
    Ok(StoredVersion {
        kind: raw[0],
        create_revision: decode_rev(&raw[1..1 + REV_LEN])?,
        value: &raw[1 + REV_LEN..],
    })
}

/// The smallest `versions` key at or after every version of keys `>= start`, where
/// `start` may be a continuation key ending in NUL ("after this key").
pub(crate) fn scan_lower_bound(start: &str) -> Vec<u8> {
    match start.strip_suffix('\0') {
        Some(after) => {
            let mut out = after.as_bytes().to_vec();
            out.push(1);
            out
        }
        None => start.as_bytes().to_vec(),
    }
}

fn corrupt(what: String) -> StoreError {
    StoreError::Backend(format!("corrupt datastore: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_keys_round_trip_and_group_by_key_in_key_order() {
        let a = version_key("/a", 7);
        let ab = version_key("/a/b", 3);
        let a_later = version_key("/a", 300);
        assert_eq!(split_version_key(&a).unwrap(), ("/a", 7));
        // all versions of "/a" sort before any version of "/a/b", in revision order
        assert!(a < a_later && a_later < ab);
    }

    #[test]
    fn versions_round_trip() {
        let raw = encode_version(KIND_PUT, 42, b"hello");
        let v = decode_version(&raw).unwrap();
        assert_eq!(
            (v.kind, v.create_revision, v.value),
            (KIND_PUT, 42, &b"hello"[..])
        );
        assert!(decode_version(&[9, 0]).is_err());
    }

    #[test]
    fn continuation_bound_skips_the_previous_key_entirely() {
        let bound = scan_lower_bound("/a\0");
        assert!(version_key("/a", i64::MAX).as_slice() < bound.as_slice());
        assert!(version_key("/a/b", 1).as_slice() > bound.as_slice());
        assert_eq!(scan_lower_bound("/a"), b"/a".to_vec());
    }
}
