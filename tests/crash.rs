//! Crash test: acknowledged writes survive SIGKILL at random moments, and nothing
//! deleted before the crash is readable after it, across compactions (issue 14).
//!
//! sled: a child `skua debug store-writer` creates, deletes (a third of its own keys,
//! and a quarter of the keys earlier cycles left, which lived across compactions) and
//! compacts as fast as it can and prints every acknowledgement; it is SIGKILLed (often
//! in the middle of a purge), the store is reopened and checked, again and again.
//! etcd: the same against a real etcd that is SIGKILLed under load and restarted.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use skua::cli::debug::{compact_continually, crash_value};
use skua::store::{ListOptions, Revision, Store, StoreError};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CYCLES: usize = 24;

struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            | 1;
        println!("random seed {seed}");
        Rng(seed)
    }

    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Duration::from_millis(lo + self.0 % (hi - lo))
    }
}

/// What a writer reported, in the order it happened.
enum Report {
    /// A create, acknowledged at a revision.
    Ack(String, Revision),
    /// A delete was sent: until it is acknowledged the key may or may not exist.
    DeleteStarted(String),
    /// A delete, acknowledged at a revision.
    Deleted(String, Revision),
    /// A compaction to a revision, done.
    Compacted(Revision),
}

/// Everything acknowledged so far, and the checks made after each restart.
#[derive(Default)]
struct Ledger {
    acked: BTreeMap<String, Revision>,
    /// Keys whose deletion was acknowledged: they must never be readable again.
    deleted: BTreeSet<String>,
    max_revision: Revision,
    compactions: usize,
    /// The highest acknowledged compaction.
    compacted: Revision,
    counters: BTreeMap<String, u64>,
    lost: usize,
    resurrected: usize,
}

impl Ledger {
    /// Records one cycle's acknowledgements; they must all be newer than any before.
    fn record(&mut self, cycle: usize, reports: Vec<Report>, counter: u64) {
        let counter_key = format!("/crash/{cycle}/counter");
        let floor = self.max_revision;
        let acknowledged = |key: &str, rev: Revision, max: &mut Revision| {
            assert!(
                rev > floor,
                "cycle {cycle}: revision {rev} of {key} is not above {floor}, acknowledged before the crash: a revision was reused"
            );
            *max = (*max).max(rev);
        };
        for report in reports {
            match report {
                Report::Ack(key, rev) => {
                    acknowledged(&key, rev, &mut self.max_revision);
                    self.acked.insert(key, rev);
                }
                Report::DeleteStarted(key) => {
                    self.acked.remove(&key);
                }
                Report::Deleted(key, rev) => {
                    acknowledged(&key, rev, &mut self.max_revision);
                    self.deleted.insert(key);
                }
                Report::Compacted(rev) => {
                    self.compactions += 1;
                    self.compacted = self.compacted.max(rev);
                }
            }
        }
        let c = self.counters.entry(counter_key).or_default();
        *c = (*c).max(counter);
    }

    /// The test's verdict, in the words the issue asks for.
    fn finish(&self) {
        println!(
            "lost acknowledged writes: {}, deleted keys readable again: {} in {CYCLES} cycles ({} live and {} deleted keys acknowledged, {} compactions, last revision {})",
            self.lost,
            self.resurrected,
            self.acked.len(),
            self.deleted.len(),
            self.compactions,
            self.max_revision
        );
        assert_eq!(self.lost, 0);
        assert_eq!(self.resurrected, 0);
        assert!(
            self.acked.len() > CYCLES && self.deleted.len() > CYCLES,
            "too little progress to prove anything"
        );
    }

    async fn verify(&mut self, cycle: usize, store: &dyn Store) {
        let all = store.list("/crash/", ListOptions::default()).await.unwrap();
        let stored: BTreeMap<&str, &skua::store::KeyValue> =
            all.kvs.iter().map(|kv| (kv.key.as_str(), kv)).collect();
        for (key, rev) in &self.acked {
            match stored.get(key.as_str()) {
                Some(kv) if kv.mod_revision == *rev && kv.value == crash_value(key) => {}
                other => {
                    self.lost += 1;
                    eprintln!("cycle {cycle}: acknowledged {key}@{rev} came back as {other:?}");
                }
            }
        }
        // an acknowledged compaction survived the crash too
        if self.compacted > 1 {
            let older = ListOptions {
                revision: self.compacted - 1,
                ..Default::default()
            };
            match store.list("/crash/", older).await {
                Err(StoreError::Compacted {
                    compact_revision, ..
                }) => assert!(compact_revision >= self.compacted),
                other => panic!(
                    "cycle {cycle}: a read below the acknowledged compaction {} must be refused, got {:?}",
                    self.compacted,
                    other.map(|l| l.revision)
                ),
            }
        }
        // nothing deleted before the crash is readable, by a list or a point read
        for key in &self.deleted {
            let listed = stored.get(key.as_str());
            let read = store.get(key).await.unwrap().kv;
            if listed.is_some() || read.is_some() {
                self.resurrected += 1;
                eprintln!(
                    "cycle {cycle}: {key} was deleted before the crash and came back: listed at {:?}, read at {:?}",
                    listed.map(|kv| kv.mod_revision),
                    read.map(|kv| kv.mod_revision)
                );
            }
        }
        // a point read agrees with the list
        if let Some((key, rev)) = self.acked.iter().next_back() {
            assert_eq!(
                store.get(key).await.unwrap().kv.map(|kv| kv.mod_revision),
                Some(*rev)
            );
        }
        // nothing half-visible: every stored value is complete and self-consistent
        for kv in &all.kvs {
            if kv.key.ends_with("/counter") {
                let n: u64 = String::from_utf8_lossy(&kv.value)
                    .parse()
                    .expect("counter is a number");
                let acked = self.counters.get(&kv.key).copied().unwrap_or(0);
                assert!(
                    n >= acked,
                    "cycle {cycle}: {} is {n}, below the acknowledged {acked}",
                    kv.key
                );
            } else {
                assert_eq!(
                    kv.value,
                    crash_value(&kv.key),
                    "cycle {cycle}: torn value under {}",
                    kv.key
                );
            }
        }
        let current = store.current_revision().await.unwrap();
        assert!(
            current >= self.max_revision,
            "cycle {cycle}: revision went back to {current}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let mut rng = Rng::seeded();
    let mut ledger = Ledger::default();
    for cycle in 0..CYCLES {
        let mut child = Command::new(env!("CARGO_BIN_EXE_skua"))
            .args([
                "debug",
                "store-writer",
                "--prefix",
                &format!("/crash/{cycle}"),
                // tiny purge steps, so kills land between them
                "--purge-chunk",
                "3",
            ])
            .arg("--data-dir")
            .arg(&db)
            .env("SKUA_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => {
                        let _ = tx.send(l);
                    }
                    Err(_) => break,
                }
            }
        });
        let first = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("writer did not start");
        assert_eq!(first, "ready");
        std::thread::sleep(rng.millis(30, 400));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        // `lines()` yields a final line without newline too; only complete reports
        // count (a torn `del-start` line is harmless: its delete was never sent)
        let mut reports = Vec::new();
        let mut counter = 0;
        for line in rx.try_iter() {
            let parts: Vec<&str> = line.split(' ').collect();
            match parts.as_slice() {
                ["ack", key, rev] => {
                    if let Ok(rev) = rev.parse() {
                        reports.push(Report::Ack(key.to_string(), rev));
                    }
                }
                ["del-start", key] => reports.push(Report::DeleteStarted(key.to_string())),
                ["del", key, rev] => {
                    if let Ok(rev) = rev.parse() {
                        reports.push(Report::Deleted(key.to_string(), rev));
                    }
                }
                ["compact", rev] => {
                    if let Ok(rev) = rev.parse() {
                        reports.push(Report::Compacted(rev));
                    }
                }
                ["counter", n, _] => counter = counter.max(n.parse().unwrap_or(0)),
                _ => {}
            }
        }
        ledger.record(cycle, reports, counter);
        let store = common::open_sled(dir.path());
        store.check_integrity().unwrap();
        ledger.verify(cycle, &store).await;
        // and again once the purge the crash interrupted has finished
        store.wait_purged();
        store.check_integrity().unwrap();
        ledger.verify(cycle, &store).await;
        drop(store);
    }
    ledger.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_acknowledged_writes_survive_sigkill() {
    let mut etcd = common::EtcdServer::start();
    let mut rng = Rng::seeded();
    let mut ledger = Ledger::default();
    for cycle in 0..CYCLES {
        let store: Arc<dyn Store> = Arc::new(etcd.connect().await);
        ledger.verify(cycle, &*store).await;
        let acks = Arc::new(Mutex::new(Vec::new()));
        let counter = Arc::new(Mutex::new(0u64));
        let prefix = format!("/crash/{cycle}");
        let _ = store
            .create(&format!("{prefix}/counter"), b"0".to_vec())
            .await;
        let mut tasks = Vec::new();
        for w in 0..8 {
            let (store, acks, counter, prefix) =
                (store.clone(), acks.clone(), counter.clone(), prefix.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0u64.. {
                    let key = format!("{prefix}/{w}/{i}");
                    let rev = store.create(&key, crash_value(&key)).await?;
                    acks.lock().unwrap().push(Report::Ack(key.clone(), rev));
                    if i % 3 == 1 {
                        acks.lock()
                            .unwrap()
                            .push(Report::DeleteStarted(key.clone()));
                        let rev = store.delete(&key, rev).await?;
                        acks.lock().unwrap().push(Report::Deleted(key, rev));
                    }
                    if i % 4 == 0 {
                        let kv = store.get(&format!("{prefix}/counter")).await?.kv.unwrap();
                        let n: u64 = String::from_utf8_lossy(&kv.value).parse().unwrap();
                        match store
                            .update(&kv.key, (n + 1).to_string().into_bytes(), kv.mod_revision)
                            .await
                        {
                            Ok(_) => {
                                let mut c = counter.lock().unwrap();
                                *c = (*c).max(n + 1);
                            }
                            Err(StoreError::Conflict { .. }) => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
                Ok::<(), StoreError>(())
            }));
        }
        {
            let acks = acks.clone();
            tasks.push(tokio::spawn(compact_continually(store.clone(), move |r| {
                acks.lock().unwrap().push(Report::Compacted(r))
            })));
        }
        // the kill comes at a random moment once the writers are under way (a freshly
        // restarted etcd on a loaded machine may take a while for its first write)
        let started = Instant::now();
        while acks.lock().unwrap().is_empty() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "cycle {cycle}: no progress"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(rng.millis(30, 400)).await;
        etcd.local.kill(); // SIGKILL under load
        for t in tasks {
            t.abort();
        }
        let acks = std::mem::take(&mut *acks.lock().unwrap());
        ledger.record(cycle, acks, *counter.lock().unwrap());
        drop(store);
        etcd.local.restart().unwrap();
    }
    let store = etcd.connect().await;
    ledger.verify(CYCLES, &store).await;
    ledger.finish();
}
