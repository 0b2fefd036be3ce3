//! `skua debug fuzz`: a stable-Rust fuzzing harness for the parsers an attacker
//! feeds (cargo-fuzz needs a nightly compiler, which this project does not use).
//!
//! Each target takes bytes; the harness mutates a seed corpus (bit flips, byte
//! changes, insertions, deletions, repeated chunks that build deep nesting, tokens of
//! the target's grammar, splices) and, for the JSON targets, also generates
//! structured documents (deep, wide, and patches aimed at paths that exist). A panic
//! is a finding: the input is written to `<out>/<target>-<n>.crash` and the run fails.
//! A stack overflow aborts the process: the run is deterministic per seed, so
//! `--save-every 1` with the same seed leaves the last input in `<out>`.
//!
//! There is no coverage feedback (that needs the compiler's instrumentation), so the
//! corpus grows by keeping inputs that change what the target answers.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Every target, by name.
pub const TARGETS: &[&str] = &[
    "json-patch",
    "merge-patch",
    "strategic-merge",
    "label-selector",
    "field-selector",
    "manifest",
    "protobuf",
    "dns",
    "x509",
    "quantity",
];

/// xorshift64*: small, fast, and the same sequence for the same seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// What a run did.
#[derive(Debug)]
pub struct Report {
    pub target: String,
    pub runs: u64,
    pub corpus: usize,
    pub elapsed: Duration,
}

/// Grammar pieces the mutator inserts.
fn tokens(target: &str) -> &'static [&'static str] {
    match target {
        "json-patch" | "merge-patch" | "strategic-merge" | "manifest" => &[
            "{",
            "}",
            "[",
            "]",
            "\"",
            ":",
            ",",
            "null",
            "true",
            "1e308",
            "-0",
            "\"$patch\"",
            "\"delete\"",
            "\"replace\"",
            "\"$setElementOrder/containers\"",
            "\"$retainKeys\"",
            "\"$deleteFromPrimitiveList/finalizers\"",
            "\"op\"",
            "\"add\"",
            "\"copy\"",
            "\"move\"",
            "\"from\"",
            "\"path\"",
            "\"/a/-\"",
            "\"/~1\"",
            "\"/~0\"",
            "\"\\u0000\"",
            "\n- ",
            ": ",
            "&a ",
            "*a",
            "!!binary ",
            "<<: *a",
            "---\n",
            "? ",
            "|\n  ",
        ],
        "label-selector" | "field-selector" => &[
            "=",
            "==",
            "!=",
            ",",
            " in ",
            " notin ",
            "(",
            ")",
            "!",
            "a.b/c",
            "metadata.name",
            "spec.nodeName",
            "status.phase",
            "\\",
            " ",
            "x",
        ],
        "quantity" => &[
            "Ki", "Mi", "Ei", "m", "k", "e", "E", "+", "-", ".", "9", "0", "n", "u",
        ],
        _ => &["\0", "\u{ff}", "\u{80}", "\u{7f}"],
    }
}

/// The seed corpus of a target.
fn seeds(target: &str) -> Vec<Vec<u8>> {
    let s = |v: &[&str]| v.iter().map(|x| x.as_bytes().to_vec()).collect();
    match target {
        "json-patch" => s(&[
            r#"{"doc": {"metadata": {"name": "a", "labels": {"x": "y"}}, "spec": {"l": [1, 2]}}, "patch": [{"op": "add", "path": "/spec/l/-", "value": 3}, {"op": "copy", "from": "/spec", "path": "/spec/l/0"}, {"op": "move", "from": "/metadata/labels", "path": "/m"}, {"op": "test", "path": "/m/x", "value": "y"}]}"#,
        ]),
        "merge-patch" | "strategic-merge" => s(&[
            r#"{"doc": {"metadata": {"finalizers": ["a", "b"], "labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80}]}]}}, "patch": {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"], "labels": {"a": null}}, "spec": {"$setElementOrder/containers": [{"name": "d"}, {"name": "c"}], "containers": [{"name": "d", "image": "j"}, {"name": "c", "$patch": "delete"}]}}}"#,
        ]),
        "label-selector" => s(&[
            "a=b,c!=d",
            "x in (a,b),!y",
            "app.kubernetes.io/name notin (x)",
            "z",
        ]),
        "field-selector" => s(&["metadata.name=a,spec.nodeName!=b", "status.phase==Running"]),
        "manifest" => s(&[
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  labels: {x: y}\ndata:\n  k: |\n    v\n",
            r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "v"}}"#,
            "a: &a [1, 2]\nb: *a\nc: !!str 1\n",
        ]),
        "protobuf" => {
            // the magic, a TypeMeta and an object envelope, as kubectl sends them
            let mut v = b"k8s\0".to_vec();
            v.extend_from_slice(&[0x0a, 0x0e, 0x0a, 0x02, b'v', b'1', 0x12, 0x08]);
            v.extend_from_slice(b"ConfigMa");
            v.extend_from_slice(&[0x12, 0x05, 0x0a, 0x03, 0x0a, 0x01, b'a']);
            vec![v, b"k8s\0".to_vec()]
        }
        "dns" => {
            // a query as a resolver sends it: header, one question, an EDNS record
            let mut m = vec![0, 7, 1, 0, 0, 1, 0, 0, 0, 0, 0, 1];
            for label in "kubernetes.default.svc.cluster.local".split('.') {
                m.push(label.len() as u8);
                m.extend_from_slice(label.as_bytes());
            }
            m.extend_from_slice(&[0, 0, 1, 0, 1]);
            m.extend_from_slice(&[0, 0, 41, 4, 0, 0, 0, 0, 0, 0, 0]);
            vec![m]
        }
        "x509" => {
            let key = rcgen::KeyPair::generate().ok();
            let der = key
                .and_then(|k| {
                    let mut p = rcgen::CertificateParams::new(vec!["a.example".into()]).ok()?;
                    p.distinguished_name
                        .push(rcgen::DnType::CommonName, "system:node:n1");
                    p.distinguished_name
                        .push(rcgen::DnType::OrganizationName, "system:nodes");
                    p.self_signed(&k).ok().map(|c| c.der().to_vec())
                })
                .unwrap_or_default();
            vec![der]
        }
        "quantity" => s(&[
            "100m",
            "1.5Gi",
            "2e3",
            "-1",
            "0.000001",
            "9223372036854775807Ei",
        ]),
        _ => vec![Vec::new()],
    }
}

/// A random JSON value, up to `depth` deep, for the structured JSON targets.
fn json_value(rng: &mut Rng, depth: usize) -> serde_json::Value {
    use serde_json::{Value, json};
    let keys = [
        "a",
        "b",
        "metadata",
        "spec",
        "containers",
        "name",
        "finalizers",
        "$patch",
        "x",
    ];
    match rng.below(if depth == 0 { 4 } else { 7 }) {
        0 => Value::Null,
        1 => json!(rng.below(3) == 0),
        2 => json!(rng.next() as i64 >> rng.below(60)),
        3 => json!(keys[rng.below(keys.len())]),
        4 | 5 => {
            let n = rng.below(4);
            let mut m = serde_json::Map::new();
            for _ in 0..n {
                m.insert(
                    keys[rng.below(keys.len())].to_string(),
                    json_value(rng, depth - 1),
                );
            }
            Value::Object(m)
        }
        _ => {
            let n = if rng.below(20) == 0 {
                rng.below(2000)
            } else {
                rng.below(4)
            };
            Value::Array(
                (0..n)
                    .map(|_| json_value(rng, depth.saturating_sub(2)))
                    .collect(),
            )
        }
    }
}

/// A JSON pointer into `doc` (existing or one step beyond), for JSON patch ops.
fn pointer(rng: &mut Rng, doc: &serde_json::Value) -> String {
    let mut path = String::new();
    let mut at = doc;
    for _ in 0..rng.below(8) {
        match at {
            serde_json::Value::Object(m) if !m.is_empty() => {
                let (k, v) = m.iter().nth(rng.below(m.len())).expect("in range");
                path.push('/');
                path.push_str(&k.replace('~', "~0").replace('/', "~1"));
                at = v;
            }
            serde_json::Value::Array(a) if !a.is_empty() => {
                let i = rng.below(a.len());
                path.push_str(&format!("/{i}"));
                at = &a[i];
            }
            _ => break,
        }
    }
    if rng.below(3) == 0 {
        path.push_str(["/-", "/new", "/0", "/~1x"][rng.below(4)]);
    }
    path
}

/// A generated input for the JSON targets: (doc, patch), passed as values (a document
/// deeper than serde_json reads must still reach the target).
fn structured(rng: &mut Rng, target: &str) -> (serde_json::Value, serde_json::Value) {
    use serde_json::json;
    let mut doc = json_value(rng, 6);
    // now and then, a document as deep as an attacker would make it
    if rng.below(10) == 0 {
        for _ in 0..rng.below(140) {
            doc = json!({"a": doc});
        }
    }
    let patch = if target == "json-patch" {
        let ops: Vec<serde_json::Value> = (0..rng.below(30))
            .map(|_| {
                let op = ["add", "remove", "replace", "move", "copy", "test"][rng.below(6)];
                json!({"op": op, "path": pointer(rng, &doc), "from": pointer(rng, &doc),
                       "value": json_value(rng, 4)})
            })
            .collect();
        json!(ops)
    } else {
        json_value(rng, 6)
    };
    (doc, patch)
}

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, corpus: &[Vec<u8>], target: &str, max_len: usize) {
    for _ in 0..1 + rng.below(4) {
        let len = input.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = rng.next() as u8;
            }
            2 => {
                let i = rng.below(len + 1);
                input.insert(i, rng.next() as u8);
            }
            3 if len > 1 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(16));
                input.drain(i..i + n);
            }
            4 if len > 0 => {
                // a chunk repeated: builds deep nesting and long lists
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(8));
                let chunk = input[i..i + n].to_vec();
                for _ in 0..rng.below(300) {
                    input.splice(i..i, chunk.iter().copied());
                }
            }
            5 | 6 => {
                let t = tokens(target);
                let tok = t[rng.below(t.len())].as_bytes();
                let i = rng.below(len + 1);
                input.splice(i..i, tok.iter().copied());
            }
            _ if !corpus.is_empty() => {
                let other = &corpus[rng.below(corpus.len())];
                if !other.is_empty() {
                    let from = rng.below(other.len());
                    let i = rng.below(len + 1);
                    input.splice(i..i, other[from..].iter().copied().take(64));
                }
            }
            _ => {}
        }
    }
    input.truncate(max_len);
}

fn shape(ok: bool, detail: usize) -> u64 {
    u64::from(ok) | ((detail as u64) << 1)
}

/// Runs a JSON target on a document and a patch.
pub fn run_json(target: &str, doc: &serde_json::Value, patch: &serde_json::Value) -> u64 {
    use crate::api::patch::{MAX_DEPTH, depth};
    match target {
        "json-patch" => {
            let out = crate::api::patch::json_patch(doc, patch);
            if let Ok(v) = &out {
                // what a patch builds is never deeper than the store reads back
                assert!(
                    depth(v) <= MAX_DEPTH.max(depth(doc)),
                    "a patch nested too deep"
                );
            }
            shape(out.is_ok(), out.as_ref().map_or(0, depth))
        }
        "merge-patch" => {
            let mut doc = doc.clone();
            crate::api::patch::merge_patch(&mut doc, patch);
            shape(true, depth(&doc))
        }
        "strategic-merge" => {
            let out = crate::api::strategic::apply(doc, patch);
            shape(
                out.is_ok(),
                out.map(|o| o.map_or(0, |v| depth(&v))).unwrap_or(0),
            )
        }
        other => panic!("{other:?} is not a JSON target"),
    }
}

/// Runs `target` on `input`; the answer's shape, for the corpus to tell inputs apart.
pub fn run_one(target: &str, input: &[u8]) -> u64 {
    let text = String::from_utf8_lossy(input);
    let split = || -> Option<(serde_json::Value, serde_json::Value)> {
        let v: serde_json::Value = serde_json::from_slice(input).ok()?;
        Some((v.get("doc")?.clone(), v.get("patch")?.clone()))
    };
    match target {
        "json-patch" | "merge-patch" | "strategic-merge" => match split() {
            Some((doc, patch)) => run_json(target, &doc, &patch),
            None => 0,
        },
        "label-selector" => {
            let out = crate::api::selector::LabelSelector::parse(&text);
            shape(
                out.is_ok(),
                out.map(|s| usize::from(s.is_empty())).unwrap_or(0),
            )
        }
        "field-selector" => {
            let out = crate::api::selector::FieldSelector::parse(
                &text,
                &[
                    "metadata.name",
                    "metadata.namespace",
                    "spec.nodeName",
                    "status.phase",
                ],
            );
            shape(out.is_ok(), 0)
        }
        "manifest" => {
            let res = &crate::api::registry::CONFIGMAPS;
            let y = crate::apiserver::resources::object::decode(res, "application/yaml", input);
            let j = crate::apiserver::resources::object::decode(res, "application/json", input);
            shape(y.is_ok(), usize::from(j.is_ok()))
        }
        "protobuf" => {
            let out = crate::apiserver::protobuf::to_json(input);
            shape(
                out.is_ok(),
                out.map(|v| v.to_string().len().min(64)).unwrap_or(0),
            )
        }
        "dns" => {
            let q = crate::dns::wire::parse_query(input);
            let e = crate::dns::wire::error_reply(input, 2);
            if let Ok(q) = &q {
                let a = crate::dns::wire::Answer::bare(q, 3);
                assert!(a.encode(512).len() <= 512, "an answer fits its limit");
            }
            shape(q.is_ok(), usize::from(e.is_some()))
        }
        "x509" => {
            let s = crate::pki::x509::subject(input);
            shape(s.is_some(), s.map_or(0, |s| s.common_names.len()))
        }
        "quantity" => {
            let q = crate::api::quantity::parse(&text);
            shape(q.is_some(), q.map_or(0, |v| usize::from(v.is_finite())))
        }
        other => panic!("unknown fuzz target {other:?}"),
    }
}

/// What a fuzzing run found, or why it could not run.
#[derive(Debug, thiserror::Error)]
pub enum FuzzError {
    /// A target `skua debug fuzz` does not know.
    #[error("unknown target {0:?}; targets: {targets}", targets = TARGETS.join(", "))]
    UnknownTarget(String),
    /// An input made the target panic: a finding.
    #[error("{target}: input {input} panicked ({message}); saved to {}", .saved.display())]
    Panicked {
        /// The target.
        target: String,
        /// The input's number in the run.
        input: u64,
        /// The panic's message.
        message: String,
        /// Where the input was saved.
        saved: PathBuf,
    },
}

/// Fuzzes `target` for `time` (or `runs` inputs, whichever comes first), from `seed`.
/// A panic leaves its input in `out` and is returned as the error.
pub fn fuzz(
    target: &str,
    time: Duration,
    runs: Option<u64>,
    seed: u64,
    out: &Path,
    save_every: Option<u64>,
) -> Result<Report, FuzzError> {
    if !TARGETS.contains(&target) {
        return Err(FuzzError::UnknownTarget(target.to_string()));
    }
    let mut rng = Rng(seed.max(1));
    let mut corpus = seeds(target);
    let mut shapes: HashSet<u64> = HashSet::new();
    let structured_target = matches!(target, "json-patch" | "merge-patch" | "strategic-merge");
    let max_len = if target == "x509" || target == "protobuf" {
        8192
    } else {
        64 * 1024
    };
    let started = Instant::now();
    let mut n = 0u64;
    // panics are findings: keep the default hook from printing each one twice
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = loop {
        if started.elapsed() >= time || runs.is_some_and(|r| n >= r) {
            break Ok(());
        }
        let generated =
            (structured_target && rng.below(3) == 0).then(|| structured(&mut rng, target));
        let input = match &generated {
            // kept as text for the corpus and for a finding's file
            Some((doc, patch)) => {
                serde_json::to_vec(&serde_json::json!({"doc": doc, "patch": patch}))
                    .unwrap_or_default()
            }
            None => {
                let mut input = corpus[rng.below(corpus.len())].clone();
                mutate(&mut rng, &mut input, &corpus, target, max_len);
                input
            }
        };
        if save_every.is_some_and(|k| k > 0 && n % k == 0) {
            let _ = std::fs::create_dir_all(out);
            let _ = std::fs::write(out.join(format!("{target}.last")), &input);
        }
        n += 1;
        let ran = std::panic::catch_unwind(|| match &generated {
            Some((doc, patch)) => run_json(target, doc, patch),
            None => run_one(target, &input),
        });
        match ran {
            Ok(shape) => {
                if shapes.insert(shape) && corpus.len() < 4096 {
                    corpus.push(input);
                }
            }
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                let _ = std::fs::create_dir_all(out);
                let file: PathBuf = out.join(format!("{target}-{n}.crash"));
                let _ = std::fs::write(&file, &input);
                break Err(FuzzError::Panicked {
                    target: target.to_string(),
                    input: n,
                    message,
                    saved: file,
                });
            }
        }
    };
    std::panic::set_hook(hook);
    result.map(|()| Report {
        target: target.to_string(),
        runs: n,
        corpus: corpus.len(),
        elapsed: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_survives_a_short_run() {
        let out = tempfile::tempdir().unwrap();
        for target in TARGETS {
            let report = fuzz(
                target,
                Duration::from_secs(60),
                Some(3000),
                42,
                out.path(),
                None,
            )
            .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(report.runs, 3000, "{target}");
        }
    }

    #[test]
    fn a_panic_is_caught_and_its_input_kept() {
        let out = tempfile::tempdir().unwrap();
        let r = std::panic::catch_unwind(|| run_one("no-such-target", b"x"));
        assert!(r.is_err());
        assert!(fuzz("nope", Duration::from_secs(1), Some(1), 1, out.path(), None).is_err());
    }
}
