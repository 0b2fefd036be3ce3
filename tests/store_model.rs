//! Model-based randomized test of the `Store` contract (issue 14): long random sequences
//! of creates, updates, deletes, reads, lists at current and past revisions, watches
//! from arbitrary revisions, compactions, clean restarts and SIGKILLs, applied one by
//! one to a trivial in-test model, to memory, to sled (in a child process of its own,
//! `skua debug store-serve`, so that it can be SIGKILLed, also in the middle of a
//! purge) and to a real etcd, the reference. After every operation each backend's
//! answer must equal the model's, and etcd's must too; every few operations the
//! versions sled and memory keep must be exactly those etcd's compaction keeps.
//!
//! Each backend numbers its revisions itself; answers are compared after mapping each
//! backend's revisions to the model's (the n-th write is the n-th write everywhere).
//!
//! A run prints its seeds. To replay one: `SKUA_MODEL_SEED=<seed> cargo nextest run
//! --test store_model`. `SKUA_MODEL_OPS` sets the operations per seed (default 1500),
//! `SKUA_MODEL_SECONDS` keeps starting new seeds until that much time has passed (the
//! long local run), `SKUA_MODEL_SEEDS` the number of seeds otherwise (default 2).
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use skua::cli::debug::{StoreReply, StoreRequest, serve_one};
use skua::store::memory::MemoryStore;
use skua::store::{Event, EventKind, GetResult, KeyValue, ListResult, Revision, Store, StoreError};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WATCH_TIMEOUT: Duration = Duration::from_secs(10);
const PREFIXES: [&str; 2] = ["/m/a/", "/m/b/"];
const KEYS_PER_PREFIX: u64 = 7;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn range(&mut self, lo: Revision, hi: Revision) -> Revision {
        lo + self.below((hi - lo + 1).max(1) as u64) as Revision
    }
}

// ---------------------------------------------------------------------------------
// The model: every version of every key, forever; compaction only moves a number.

#[derive(Clone, Debug)]
struct Version {
    revision: Revision,
    create_revision: Revision,
    value: Option<Vec<u8>>,
}

struct Model {
    revision: Revision,
    compact: Revision,
    history: BTreeMap<String, Vec<Version>>,
    /// Which key each revision wrote.
    log: BTreeMap<Revision, String>,
}

/// A key-value with model revisions: (key, value, create, mod). Values are text here.
type Kv = (String, String, Revision, Revision);

fn text(value: &[u8]) -> String {
    String::from_utf8_lossy(value).into_owned()
}

fn kv_of(key: &str, v: &Version) -> Option<Kv> {
    v.value
        .as_ref()
        .map(|value| (key.to_string(), text(value), v.create_revision, v.revision))
}

/// An event: its kind, the key-value it wrote and the one it replaced.
type Ev = (EventKind, Kv, Option<Kv>);

/// An answer, with revisions in the model's numbering.
#[derive(Clone, Debug, PartialEq)]
enum Outcome {
    Rev(Revision),
    Get(Option<Kv>),
    List {
        kvs: Vec<Kv>,
        count: usize,
        more: bool,
        revision: Revision,
    },
    Events(Vec<Ev>),
    Done,
    AlreadyExists(String),
    Conflict {
        key: String,
        expected: Revision,
        current: Option<Kv>,
    },
    Compacted {
        requested: Revision,
        compact_revision: Revision,
    },
    FutureRevision {
        requested: Revision,
        current: Revision,
    },
    Other(String),
}

impl Model {
    fn new() -> Model {
        Model {
            revision: 1,
            compact: 0,
            history: BTreeMap::new(),
            log: BTreeMap::new(),
        }
    }

    fn visible(&self, key: &str, at: Revision) -> Option<Kv> {
        let v = self
            .history
            .get(key)?
            .iter()
            .rev()
            .find(|v| v.revision <= at)?;
        kv_of(key, v)
    }

    fn write(&mut self, key: &str, value: Option<Vec<u8>>) -> Revision {
        let prev = self.visible(key, self.revision);
        self.revision += 1;
        let create_revision = prev.map_or(self.revision, |p| p.2);
        self.history
            .entry(key.to_string())
            .or_default()
            .push(Version {
                revision: self.revision,
                create_revision,
                value,
            });
        self.log.insert(self.revision, key.to_string());
        self.revision
    }

    fn apply(&mut self, req: &StoreRequest) -> Outcome {
        match req {
            StoreRequest::Get { key } => Outcome::Get(self.visible(key, self.revision)),
            StoreRequest::List {
                prefix,
                revision,
                limit,
                continue_from,
            } => {
                let at = if *revision == 0 {
                    self.revision
                } else {
                    *revision
                };
                if at < self.compact {
                    return Outcome::Compacted {
                        requested: at,
                        compact_revision: self.compact,
                    };
                }
                if at > self.revision {
                    return Outcome::FutureRevision {
                        requested: at,
                        current: self.revision,
                    };
                }
                let start = continue_from.clone().unwrap_or_else(|| prefix.clone());
                let all: Vec<Kv> = self
                    .history
                    .range(start..)
                    .take_while(|(k, _)| k.starts_with(prefix.as_str()))
                    .filter_map(|(k, _)| self.visible(k, at))
                    .collect();
                let count = all.len();
                let kvs: Vec<Kv> = if *limit == 0 {
                    all
                } else {
                    all.into_iter().take(*limit).collect()
                };
                Outcome::List {
                    more: count > kvs.len(),
                    kvs,
                    count,
                    revision: at,
                }
            }
            StoreRequest::Create { key, value } => {
                if self.visible(key, self.revision).is_some() {
                    return Outcome::AlreadyExists(key.clone());
                }
                Outcome::Rev(self.write(key, Some(value.clone())))
            }
            StoreRequest::Update {
                key,
                value,
                expected,
            } => self.guarded(key, *expected, Some(value.clone())),
            StoreRequest::Delete { key, expected } => self.guarded(key, *expected, None),
            StoreRequest::Compact { revision } => {
                if *revision <= self.compact {
                    return Outcome::Compacted {
                        requested: *revision,
                        compact_revision: self.compact,
                    };
                }
                if *revision > self.revision {
                    return Outcome::FutureRevision {
                        requested: *revision,
                        current: self.revision,
                    };
                }
                self.compact = *revision;
                Outcome::Done
            }
            StoreRequest::Current => Outcome::Rev(self.revision),
            StoreRequest::Watch { prefix, since, .. } => {
                if *since < self.compact {
                    return Outcome::Compacted {
                        requested: *since,
                        compact_revision: self.compact,
                    };
                }
                Outcome::Events(
                    self.events_after(prefix, *since)
                        .into_iter()
                        .map(|(_, e)| e)
                        .collect(),
                )
            }
            other => panic!("the model does not answer {other:?}"),
        }
    }

    fn guarded(&mut self, key: &str, expected: Revision, value: Option<Vec<u8>>) -> Outcome {
        let current = self.visible(key, self.revision);
        match &current {
            Some(kv) if kv.3 == expected => Outcome::Rev(self.write(key, value)),
            _ => Outcome::Conflict {
                key: key.to_string(),
                expected,
                current,
            },
        }
    }

    /// The events under `prefix` after `since`, with their revisions.
    fn events_after(&self, prefix: &str, since: Revision) -> Vec<(Revision, Ev)> {
        let mut out = Vec::new();
        for (&revision, key) in self.log.range(since + 1..) {
            if !key.starts_with(prefix) {
                continue;
            }
            let versions = &self.history[key];
            let i = versions
                .iter()
                .position(|v| v.revision == revision)
                .unwrap();
            let prev = i.checked_sub(1).and_then(|p| kv_of(key, &versions[p]));
            let v = &versions[i];
            let event = match kv_of(key, v) {
                Some(kv) => (EventKind::Put, kv),
                None => (
                    EventKind::Delete,
                    (key.to_string(), String::new(), 0, revision),
                ),
            };
            out.push((revision, (event.0, event.1, prev)));
        }
        out
    }

    /// What etcd's compaction keeps: every version after the compact revision C, and
    /// the newest one at or below C when it is a value.
    fn retained(&self) -> Vec<(String, Revision, bool)> {
        let mut out = Vec::new();
        for (key, versions) in &self.history {
            let below = versions.iter().rposition(|v| v.revision <= self.compact);
            for (i, v) in versions.iter().enumerate() {
                let keep = v.revision > self.compact || (Some(i) == below && v.value.is_some());
                if keep {
                    out.push((key.clone(), v.revision, v.value.is_none()));
                }
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------
// The backends under test.

/// sled in a child process (`skua debug store-serve`).
struct SledChild {
    dir: std::path::PathBuf,
    purge_chunk: usize,
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl SledChild {
    fn start(dir: &std::path::Path, purge_chunk: usize) -> SledChild {
        let mut child = Command::new(env!("CARGO_BIN_EXE_skua"))
            .args(["debug", "store-serve", "--purge-chunk"])
            .arg(purge_chunk.to_string())
            .arg("--data-dir")
            .arg(dir)
            .env("SKUA_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start skua debug store-serve");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "store-serve did not start");
        SledChild {
            dir: dir.to_path_buf(),
            purge_chunk,
            child,
            stdin,
            stdout,
        }
    }

    fn call(&mut self, req: &StoreRequest) -> StoreReply {
        let mut line = serde_json::to_string(req).unwrap();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).unwrap();
        self.stdin.flush().unwrap();
        let mut answer = String::new();
        self.stdout.read_line(&mut answer).unwrap();
        serde_json::from_str(&answer)
            .unwrap_or_else(|e| panic!("store-serve answered {answer:?} to {req:?}: {e}"))
    }

    fn kill(&mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
        *self = SledChild::start(&self.dir.clone(), self.purge_chunk);
    }

    fn restart(&mut self) {
        assert_eq!(self.call(&StoreRequest::Shutdown), StoreReply::Done);
        let status = self.child.wait().unwrap();
        assert!(status.success(), "store-serve exited with {status}");
        *self = SledChild::start(&self.dir.clone(), self.purge_chunk);
    }
}

impl Drop for SledChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

enum Kind {
    Memory(Arc<MemoryStore>),
    Sled(SledChild),
    Etcd {
        server: common::EtcdServer,
        store: Arc<dyn Store>,
    },
}

struct Subject {
    name: &'static str,
    kind: Kind,
    /// This backend's revision → the model's, and back.
    to_model: HashMap<Revision, Revision>,
    to_subject: HashMap<Revision, Revision>,
    /// This backend's latest revision (the model's is `Model::revision`).
    current: Revision,
}

impl Subject {
    fn new(name: &'static str, kind: Kind, rt: &tokio::runtime::Runtime) -> Subject {
        let mut s = Subject {
            name,
            kind,
            to_model: HashMap::new(),
            to_subject: HashMap::new(),
            current: 0,
        };
        let current = match s.call(&StoreRequest::Current, rt) {
            StoreReply::Revision(r) => r,
            other => panic!("{name}: current revision: {other:?}"),
        };
        s.current = current;
        s.to_model.insert(current, 1);
        s.to_subject.insert(1, current);
        s
    }

    fn call(&mut self, req: &StoreRequest, rt: &tokio::runtime::Runtime) -> StoreReply {
        match &mut self.kind {
            Kind::Memory(store) => rt.block_on(serve_one(&**store, req.clone())),
            Kind::Etcd { store, .. } => rt.block_on(serve_one(&**store, req.clone())),
            Kind::Sled(child) => child.call(req),
        }
    }

    /// A model revision in this backend's numbering; one past the latest maps to as
    /// far past this backend's latest.
    fn rev_in(&self, model_rev: Revision, model_current: Revision) -> Revision {
        if model_rev == 0 {
            return 0;
        }
        if model_rev > model_current {
            return self.current + (model_rev - model_current);
        }
        *self
            .to_subject
            .get(&model_rev)
            .unwrap_or_else(|| panic!("{}: model revision {model_rev} was never mapped", self.name))
    }

    /// This backend's revision in the model's numbering (negative when it never
    /// appeared: a certain mismatch).
    fn rev_out(&self, rev: Revision, model_current: Revision) -> Revision {
        if rev == 0 {
            return 0;
        }
        if let Some(m) = self.to_model.get(&rev) {
            return *m;
        }
        if rev > self.current {
            return model_current + (rev - self.current);
        }
        -rev
    }

    fn translate(&self, req: &StoreRequest, model_current: Revision) -> StoreRequest {
        let r = |rev: Revision| self.rev_in(rev, model_current);
        match req.clone() {
            StoreRequest::List {
                prefix,
                revision,
                limit,
                continue_from,
            } => StoreRequest::List {
                prefix,
                revision: r(revision),
                limit,
                continue_from,
            },
            StoreRequest::Update {
                key,
                value,
                expected,
            } => StoreRequest::Update {
                key,
                value,
                expected: r(expected),
            },
            StoreRequest::Delete { key, expected } => StoreRequest::Delete {
                key,
                expected: r(expected),
            },
            StoreRequest::Compact { revision } => StoreRequest::Compact {
                revision: r(revision),
            },
            StoreRequest::Watch {
                prefix,
                since,
                upto,
                timeout_ms,
            } => StoreRequest::Watch {
                prefix,
                since: r(since),
                upto: r(upto),
                timeout_ms,
            },
            other => other,
        }
    }

    fn kv(&self, kv: &KeyValue, model_current: Revision) -> Kv {
        (
            kv.key.clone(),
            text(&kv.value),
            self.rev_out(kv.create_revision, model_current),
            self.rev_out(kv.mod_revision, model_current),
        )
    }

    fn outcome(&self, reply: StoreReply, model_current: Revision) -> Outcome {
        let r = |rev: Revision| self.rev_out(rev, model_current);
        match reply {
            StoreReply::Revision(rev) => Outcome::Rev(r(rev)),
            StoreReply::Get(GetResult { kv, .. }) => {
                Outcome::Get(kv.map(|kv| self.kv(&kv, model_current)))
            }
            StoreReply::List(ListResult {
                kvs,
                count,
                revision,
                more,
            }) => Outcome::List {
                kvs: kvs.iter().map(|kv| self.kv(kv, model_current)).collect(),
                count,
                more,
                revision: r(revision),
            },
            StoreReply::Events(events) => Outcome::Events(
                events
                    .iter()
                    .map(|e: &Event| {
                        let mut kv = self.kv(&e.kv, model_current);
                        if e.kind == EventKind::Delete {
                            kv.2 = 0;
                        }
                        (
                            e.kind,
                            kv,
                            e.prev.as_ref().map(|p| self.kv(p, model_current)),
                        )
                    })
                    .collect(),
            ),
            StoreReply::Done => Outcome::Done,
            StoreReply::Error(StoreError::AlreadyExists { key }) => Outcome::AlreadyExists(key),
            StoreReply::Error(StoreError::Conflict {
                key,
                expected,
                current,
            }) => Outcome::Conflict {
                key,
                expected: r(expected),
                current: current.map(|kv| self.kv(&kv, model_current)),
            },
            StoreReply::Error(StoreError::Compacted {
                requested,
                compact_revision,
            }) => Outcome::Compacted {
                requested: r(requested),
                compact_revision: r(compact_revision),
            },
            StoreReply::Error(StoreError::FutureRevision { requested, current }) => {
                Outcome::FutureRevision {
                    requested: r(requested),
                    current: r(current),
                }
            }
            other => Outcome::Other(format!("{other:?}")),
        }
    }

    /// Records the revision a write got here against the model's.
    fn learn(&mut self, reply: &StoreReply, model: &Outcome) {
        if let (StoreReply::Revision(rev), Outcome::Rev(m)) = (reply, model) {
            self.to_model.insert(*rev, *m);
            self.to_subject.insert(*m, *rev);
            self.current = self.current.max(*rev);
        }
    }

    /// The versions this backend keeps, in the model's numbering (None for etcd).
    fn retained(&mut self, model_current: Revision) -> Option<Vec<(String, Revision, bool)>> {
        let versions = match &mut self.kind {
            Kind::Memory(store) => store.retained_versions(),
            Kind::Sled(child) => {
                assert_eq!(child.call(&StoreRequest::WaitPurged), StoreReply::Done);
                match child.call(&StoreRequest::Retained) {
                    StoreReply::Versions(v) => v,
                    other => panic!("sled: retained versions: {other:?}"),
                }
            }
            Kind::Etcd { .. } => return None,
        };
        let mut out: Vec<_> = versions
            .into_iter()
            .map(|(k, rev, del)| (k, self.rev_out(rev, model_current), del))
            .collect();
        out.sort();
        Some(out)
    }
}

// ---------------------------------------------------------------------------------
// The run.

struct Run {
    seed: u64,
    rng: Rng,
    model: Model,
    subjects: Vec<Subject>,
    rt: tokio::runtime::Runtime,
    step: usize,
    counts: BTreeMap<&'static str, usize>,
    _dir: tempfile::TempDir,
}

impl Run {
    fn new(seed: u64) -> Run {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut rng = Rng(seed);
        // purges in steps of one to three log entries most of the time, so that reads
        // and SIGKILLs land between the steps
        let purge_chunk = [1, 2, 3, 1000][rng.below(4) as usize];
        println!("seed {seed}: sled purges {purge_chunk} log entries per step");
        let memory = Kind::Memory(Arc::new(MemoryStore::new()));
        let sled = Kind::Sled(SledChild::start(&dir.path().join("sled"), purge_chunk));
        let server = common::EtcdServer::start();
        let store: Arc<dyn Store> = Arc::new(rt.block_on(server.connect()));
        let etcd = Kind::Etcd { server, store };
        let subjects = vec![
            Subject::new("etcd", etcd, &rt),
            Subject::new("sled", sled, &rt),
            Subject::new("memory", memory, &rt),
        ];
        Run {
            seed,
            rng,
            model: Model::new(),
            subjects,
            rt,
            step: 0,
            counts: BTreeMap::new(),
            _dir: dir,
        }
    }

    fn fail(&self, what: String) -> ! {
        panic!(
            "seed {} step {}: {what}\nreplay with SKUA_MODEL_SEED={} (and SKUA_MODEL_OPS >= {})",
            self.seed,
            self.step,
            self.seed,
            self.step + 1
        );
    }

    /// Applies `req` to the model and every backend and compares the answers.
    fn op(&mut self, name: &'static str, req: StoreRequest) -> Outcome {
        *self.counts.entry(name).or_default() += 1;
        let model_current = self.model.revision;
        let expected = self.model.apply(&req);
        let mut answers = Vec::new();
        for i in 0..self.subjects.len() {
            let translated = self.subjects[i].translate(&req, model_current);
            let reply = self.subjects[i].call(&translated, &self.rt);
            let subject = &mut self.subjects[i];
            subject.learn(&reply, &expected);
            let got = subject.outcome(reply, self.model.revision);
            answers.push((subject.name, got));
        }
        let reference = answers[0].1.clone();
        for (name, got) in &answers {
            if *got != expected {
                self.fail(format!(
                    "{name} disagrees with the model on {req:?}\n  model: {expected:?}\n  {name}: {got:?}\n  etcd (reference): {reference:?}"
                ));
            }
        }
        expected
    }

    fn key(&mut self) -> String {
        let prefix = PREFIXES[self.rng.below(PREFIXES.len() as u64) as usize];
        format!("{prefix}{}", self.rng.below(KEYS_PER_PREFIX))
    }

    fn value(&mut self) -> Vec<u8> {
        let mut v = format!("{}:{}", self.step, self.rng.next()).into_bytes();
        if self.rng.chance(5) {
            v.resize(4096 + self.rng.below(8192) as usize, b'x');
        }
        v
    }

    /// A revision a read may ask for: mostly kept ones, sometimes compacted ones.
    fn past_revision(&mut self) -> Revision {
        let lo = (self.model.compact - 3).max(1);
        self.rng.range(lo, self.model.revision)
    }

    fn list(&mut self, revision: Revision) {
        let prefix = ["/m/", "/m/a/", "/m/b/"][self.rng.below(3) as usize].to_string();
        let limit = [0, 0, 1, 2, 3, 5][self.rng.below(6) as usize];
        let mut req = StoreRequest::List {
            prefix: prefix.clone(),
            revision,
            limit,
            continue_from: None,
        };
        // follow the pages at the revision of the first
        for _ in 0..20 {
            match self.op("list", req) {
                Outcome::List {
                    kvs,
                    more: true,
                    revision,
                    ..
                } => {
                    req = StoreRequest::List {
                        prefix: prefix.clone(),
                        revision,
                        limit,
                        continue_from: Some(format!("{}\0", kvs.last().unwrap().0)),
                    };
                }
                _ => return,
            }
        }
    }

    fn write(&mut self) {
        let key = self.key();
        let current = self.model.visible(&key, self.model.revision);
        let stale = self.rng.chance(8);
        let expected = |rng: &mut Rng, model: &Model, mod_rev: Revision| {
            if stale {
                // an older revision of this key, or any other one
                let older: Vec<Revision> = model.history[&key]
                    .iter()
                    .map(|v| v.revision)
                    .filter(|r| *r != mod_rev)
                    .collect();
                if older.is_empty() {
                    rng.range(1, model.revision)
                } else {
                    older[rng.below(older.len() as u64) as usize]
                }
            } else {
                mod_rev
            }
        };
        match current {
            None => {
                let value = self.value();
                if stale && self.model.history.contains_key(&key) {
                    let expected = expected(&mut self.rng, &self.model, 0);
                    self.op(
                        "update of a deleted key",
                        StoreRequest::Update {
                            key,
                            value,
                            expected,
                        },
                    );
                } else {
                    self.op("create", StoreRequest::Create { key, value });
                }
            }
            Some(kv) => {
                let expected = expected(&mut self.rng, &self.model, kv.3);
                if self.rng.chance(35) {
                    self.op("delete", StoreRequest::Delete { key, expected });
                } else if self.rng.chance(10) {
                    let value = self.value();
                    self.op(
                        "create of an existing key",
                        StoreRequest::Create { key, value },
                    );
                } else {
                    let value = self.value();
                    self.op(
                        "update",
                        StoreRequest::Update {
                            key,
                            value,
                            expected,
                        },
                    );
                }
            }
        }
    }

    fn watch(&mut self) {
        let prefix = ["/m/", "/m/a/", "/m/b/"][self.rng.below(3) as usize].to_string();
        let since = self.past_revision();
        let upto = self
            .model
            .events_after(&prefix, since)
            .last()
            .map_or(since, |(r, _)| *r);
        self.op(
            "watch",
            StoreRequest::Watch {
                prefix,
                since,
                upto,
                timeout_ms: WATCH_TIMEOUT.as_millis() as u64,
            },
        );
    }

    fn compact(&mut self) {
        let (c, now) = (self.model.compact, self.model.revision);
        let revision = match self.rng.below(10) {
            0 => self.rng.range(1.max(c - 2), c.max(1)), // already compacted
            1 => now + 1 + self.rng.below(3) as Revision, // in the future
            2 => now,
            _ if now > c => self.rng.range(c + 1, now),
            _ => now,
        };
        let outcome = self.op("compact", StoreRequest::Compact { revision });
        // sometimes kill sled while its purge may still be running
        if outcome == Outcome::Done && self.rng.chance(15) {
            *self.counts.entry("sigkill during purge").or_default() += 1;
            self.sled().kill();
            self.after_restart();
        }
    }

    fn sled(&mut self) -> &mut SledChild {
        for s in &mut self.subjects {
            if let Kind::Sled(child) = &mut s.kind {
                return child;
            }
        }
        unreachable!()
    }

    fn after_restart(&mut self) {
        match self.sled().call(&StoreRequest::Integrity) {
            StoreReply::Done => {}
            other => self.fail(format!("sled integrity after a restart: {other:?}")),
        }
        // the restarted store answers exactly as before
        self.list(0);
    }

    fn check_retained(&mut self) {
        *self.counts.entry("retained versions").or_default() += 1;
        let want = self.model.retained();
        let current = self.model.revision;
        for i in 0..self.subjects.len() {
            let name = self.subjects[i].name;
            if let Some(got) = self.subjects[i].retained(current) {
                if got != want {
                    let extra: Vec<_> = got.iter().filter(|v| !want.contains(v)).collect();
                    let missing: Vec<_> = want.iter().filter(|v| !got.contains(v)).collect();
                    self.fail(format!(
                        "{name} keeps other versions than etcd's compaction at {} would\n  kept but should be gone: {extra:?}\n  gone but should be kept: {missing:?}",
                        self.model.compact
                    ));
                }
            }
        }
    }

    fn restart_etcd(&mut self) {
        for s in &mut self.subjects {
            if let Kind::Etcd { server, store } = &mut s.kind {
                server.local.kill();
                server.local.restart().unwrap();
                *store = Arc::new(self.rt.block_on(server.connect()));
            }
        }
    }

    fn step(&mut self) {
        let r = self.rng.below(1000);
        match r {
            0..=419 => self.write(),
            420..=519 => {
                let key = self.key();
                self.op("get", StoreRequest::Get { key });
            }
            520..=599 => self.list(0),
            600..=699 => {
                let revision = self.past_revision();
                self.list(revision);
            }
            700..=709 => {
                let revision = self.model.revision + 1 + self.rng.below(3) as Revision;
                self.list(revision);
            }
            710..=819 => self.watch(),
            820..=889 => self.compact(),
            890..=919 => self.check_retained(),
            920..=939 => {
                // a burst of updates to one key, so a purge has work to do
                let key = self.key();
                for _ in 0..20 {
                    let current = self.model.visible(&key, self.model.revision);
                    let value = self.value();
                    match current {
                        Some(kv) => self.op(
                            "update",
                            StoreRequest::Update {
                                key: key.clone(),
                                value,
                                expected: kv.3,
                            },
                        ),
                        None => self.op(
                            "create",
                            StoreRequest::Create {
                                key: key.clone(),
                                value,
                            },
                        ),
                    };
                }
            }
            940..=959 => {
                *self.counts.entry("clean restart").or_default() += 1;
                self.sled().restart();
                self.after_restart();
            }
            960..=989 => {
                *self.counts.entry("sigkill").or_default() += 1;
                let pause = Duration::from_millis(self.rng.below(5));
                std::thread::sleep(pause);
                self.sled().kill();
                self.after_restart();
            }
            _ => {
                if self.rng.chance(30) {
                    *self.counts.entry("etcd sigkill").or_default() += 1;
                    self.restart_etcd();
                } else {
                    let key = format!("/n/{}", self.rng.below(3));
                    self.op("get of a never written key", StoreRequest::Get { key });
                }
            }
        }
    }

    fn run(&mut self, ops: usize) {
        while self.step < ops {
            self.step();
            self.step += 1;
        }
        self.check_retained();
        println!(
            "seed {}: {} operations, {} writes, compact revision {}, all three backends agreed with the model: {:?}",
            self.seed,
            self.step,
            self.model.revision - 1,
            self.model.compact,
            self.counts
        );
    }
}

fn env_num(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn sled_and_memory_agree_with_etcd_and_the_model() {
    let ops = env_num("SKUA_MODEL_OPS").unwrap_or(1500) as usize;
    if let Some(seed) = env_num("SKUA_MODEL_SEED") {
        println!("replaying seed {seed}");
        Run::new(seed).run(ops);
        return;
    }
    let started = Instant::now();
    let seconds = env_num("SKUA_MODEL_SECONDS");
    let seeds = env_num("SKUA_MODEL_SEEDS").unwrap_or(2);
    let mut base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut done = 0u64;
    let mut total_ops = 0usize;
    loop {
        let more = match seconds {
            Some(s) => started.elapsed() < Duration::from_secs(s),
            None => done < seeds,
        };
        if !more {
            break;
        }
        base = base
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        println!("seed {base}");
        let mut run = Run::new(base);
        run.run(ops);
        total_ops += run.step;
        done += 1;
    }
    println!(
        "{done} seeds, {total_ops} operations in {:.0} s: no discrepancy",
        started.elapsed().as_secs_f64()
    );
}
