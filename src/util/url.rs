//! Query strings: percent-encoding as Go's `url.QueryEscape`/`QueryUnescape` do it
//! (what kubectl and client-go send), over the `percent-encoding` crate.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// Everything but the unreserved characters of RFC 3986.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Decodes a query component (`%XX` and `+`); a malformed escape stays as it is.
pub fn decode(s: &str) -> String {
    let plus = s.replace('+', " ");
    percent_decode_str(&plus).decode_utf8_lossy().into_owned()
}

/// Percent-encodes a query value.
pub fn encode(s: &str) -> String {
    utf8_percent_encode(s, QUERY_VALUE).to_string()
}

/// Every value `key` has in `query` (`a=1&a=2`), decoded, in order.
pub fn values(query: &str, key: &str) -> Vec<String> {
    query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| decode(v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_what_clients_send() {
        for s in ["plain", "a b", "x=y&z", "ünï/%", "sh -c 'echo $HOME'", ""] {
            assert_eq!(decode(&encode(s)), s);
        }
        assert_eq!(encode("a b/c~d"), "a%20b%2Fc~d");
        assert_eq!(decode("a+b%2Fc"), "a b/c");
    }

    #[test]
    fn malformed_escapes_are_kept_not_refused() {
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz%4"), "%zz%4");
        assert_eq!(decode("%ff"), "\u{fffd}");
    }

    #[test]
    fn values_keeps_repeats_in_order() {
        let q = "command=sh&command=-c&command=echo+hi&tty=1";
        assert_eq!(values(q, "command"), ["sh", "-c", "echo hi"]);
        assert!(values(q, "stdin").is_empty());
    }
}
