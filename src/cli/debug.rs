//! Hidden helpers for tests. `store-writer` is the child process of the crash test:
//! it does acknowledged writes as fast as it can and reports each acknowledgement on
//! stdout, so the test knows exactly what must survive a SIGKILL. `store-serve` runs a
//! sled store in a process of its own and answers one [`StoreRequest`] per line of
//! stdin, so the model-based store test can SIGKILL it between (or during) operations.

use crate::store::sled::{DEFAULT_PURGE_CHUNK, SledOptions, SledStore};
use crate::store::{
    Event, GetResult, ListOptions, ListResult, Revision, Store, StoreError, WatchMessage,
};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The hidden `skua debug` commands.
#[derive(Subcommand, Debug)]
pub enum DebugCommand {
    /// Write to a sled store until killed, printing `ack <key> <revision>` per
    /// durable create, `counter <value> <revision>` per durable increment,
    /// `del-start <key>` before and `del <key> <revision>` after each durable delete
    /// (of a third of its own keys, and of a quarter of the keys earlier runs left),
    /// and `compact <revision>` per compaction (it compacts all the time).
    StoreWriter(StoreWriterArgs),
    /// Serve a sled store over stdin/stdout, one JSON request and reply per line.
    StoreServe(StoreServeArgs),
    /// `skua bench net`: accept TCP connections and read them to their end.
    NetSink(super::debug_net::SinkArgs),
    /// `skua bench net`: time new TCP connections (median and p99, µs).
    NetConnect(super::debug_net::ConnectArgs),
    /// `skua bench net`: send TCP as fast as possible (bits per second).
    NetBlast(super::debug_net::BlastArgs),
    /// `skua bench net`: program the overlay for static peers, as the agent would.
    OverlayApply(super::debug_net::OverlayApplyArgs),
    /// Fuzz one of the parsers an attacker feeds (scripts/fuzz.sh runs them all).
    Fuzz(FuzzArgs),
}

/// Flags of `skua debug fuzz`.
#[derive(Args, Debug)]
pub struct FuzzArgs {
    /// The target: json-patch, merge-patch, strategic-merge, label-selector,
    /// field-selector, manifest, protobuf, dns, x509, quantity.
    pub target: String,
    /// How long to run.
    #[arg(long, default_value = "60s", value_parser = super::config::parse_duration)]
    pub time: std::time::Duration,
    /// Stop after this many inputs.
    #[arg(long)]
    pub runs: Option<u64>,
    /// The run's seed (the same seed, the same inputs).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Where crashing inputs are written.
    #[arg(long, default_value = "fuzz-findings")]
    pub out: PathBuf,
    /// Write every Nth input to `<out>/<target>.last` before running it (to find the
    /// input of a stack overflow, which aborts the process).
    #[arg(long)]
    pub save_every: Option<u64>,
}

/// Flags of `skua debug store-writer`.
#[derive(Args, Debug)]
pub struct StoreWriterArgs {
    /// Directory of the sled store.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Key prefix; each run should use a new one.
    #[arg(long)]
    pub prefix: String,
    /// Concurrent writers.
    #[arg(long, default_value_t = 8)]
    pub writers: usize,
    /// Change-log entries a compaction's purge handles per step.
    #[arg(long, default_value_t = DEFAULT_PURGE_CHUNK)]
    pub purge_chunk: usize,
}

fn sled_options(data_dir: &std::path::Path, purge_chunk: usize) -> SledOptions {
    let mut opts = SledOptions::new(data_dir);
    opts.purge_chunk = purge_chunk;
    opts
}

/// Flags of `skua debug store-serve`.
#[derive(Args, Debug)]
pub struct StoreServeArgs {
    /// Directory of the sled store.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Change-log entries a compaction's purge handles per step.
    #[arg(long, default_value_t = DEFAULT_PURGE_CHUNK)]
    pub purge_chunk: usize,
}

/// One operation of `skua debug store-serve`, as a line of JSON on its stdin.
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum StoreRequest {
    /// [`Store::get`].
    Get {
        /// The key to read.
        key: String,
    },
    /// [`Store::list`].
    List {
        /// The key prefix to list.
        prefix: String,
        /// Revision to list at; `0` means the latest.
        revision: Revision,
        /// Maximum number of items to return; `0` means no limit.
        limit: usize,
        /// Inclusive key to start from (the previous page's continue key).
        continue_from: Option<String>,
    },
    /// [`Store::create`].
    Create {
        /// The key to create.
        key: String,
        /// Its value.
        value: Vec<u8>,
    },
    /// [`Store::update`].
    Update {
        /// The key to replace.
        key: String,
        /// Its new value.
        value: Vec<u8>,
        /// The `mod_revision` the key must still have.
        expected: Revision,
    },
    /// [`Store::delete`].
    Delete {
        /// The key to delete.
        key: String,
        /// The `mod_revision` the key must still have.
        expected: Revision,
    },
    /// [`Store::compact`].
    Compact {
        /// History before this revision is discarded.
        revision: Revision,
    },
    /// [`Store::current_revision`].
    Current,
    /// See [`collect_watch`].
    Watch {
        /// The key prefix to watch.
        prefix: String,
        /// The revision the watch starts after.
        since: Revision,
        /// The last revision to collect events up to.
        upto: Revision,
        /// How long to wait for the events, in milliseconds.
        timeout_ms: u64,
    },
    /// Waits until the background purge of the last compaction is done.
    WaitPurged,
    /// Every stored version (`SledStore::retained_versions`).
    Retained,
    /// `SledStore::check_integrity`.
    Integrity,
    /// Closes the store cleanly and exits.
    Shutdown,
}

/// The answer to a [`StoreRequest`], as one line of JSON on stdout.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum StoreReply {
    /// The answer to a `get`.
    Get(GetResult),
    /// The answer to a `list`.
    List(ListResult),
    /// The revision of a write, or the current revision.
    Revision(Revision),
    /// The events a `watch` collected.
    Events(Vec<Event>),
    /// Every stored version: key, revision and whether it is a deletion.
    Versions(Vec<(String, Revision, bool)>),
    /// The request succeeded with nothing to return.
    Done,
    /// The request failed.
    Error(StoreError),
}

/// Watches `prefix` from `since` and collects the events up to and including revision
/// `upto` (none when `upto <= since`: only the start is checked). Gives up after
/// `timeout` and returns what came; a failed start or stream is the error.
pub async fn collect_watch(
    store: &dyn Store,
    prefix: &str,
    since: Revision,
    upto: Revision,
    timeout: Duration,
) -> Result<Vec<Event>, StoreError> {
    let mut w = store.watch(prefix, since).await?;
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = since;
    while last < upto {
        match tokio::time::timeout_at(deadline, w.next()).await {
            Ok(Some(Ok(WatchMessage::Event(e)))) => {
                last = e.revision();
                events.push(e);
            }
            Ok(Some(Ok(WatchMessage::Progress(_)))) => {}
            Ok(Some(Err(e))) => return Err(e),
            Ok(None) => return Err(StoreError::Unavailable("the watch ended".into())),
            Err(_) => break,
        }
    }
    Ok(events)
}

/// Applies one request to `store`.
pub async fn serve_one(store: &dyn Store, req: StoreRequest) -> StoreReply {
    let reply = match req {
        StoreRequest::Get { key } => store.get(&key).await.map(StoreReply::Get),
        StoreRequest::List {
            prefix,
            revision,
            limit,
            continue_from,
        } => {
            let opts = ListOptions {
                revision,
                limit,
                continue_from,
            };
            store.list(&prefix, opts).await.map(StoreReply::List)
        }
        StoreRequest::Create { key, value } => {
            store.create(&key, value).await.map(StoreReply::Revision)
        }
        StoreRequest::Update {
            key,
            value,
            expected,
        } => store
            .update(&key, value, expected)
            .await
            .map(StoreReply::Revision),
        StoreRequest::Delete { key, expected } => {
            store.delete(&key, expected).await.map(StoreReply::Revision)
        }
        StoreRequest::Compact { revision } => {
            store.compact(revision).await.map(|()| StoreReply::Done)
        }
        StoreRequest::Current => store.current_revision().await.map(StoreReply::Revision),
        StoreRequest::Watch {
            prefix,
            since,
            upto,
            timeout_ms,
        } => collect_watch(
            store,
            &prefix,
            since,
            upto,
            Duration::from_millis(timeout_ms),
        )
        .await
        .map(StoreReply::Events),
        StoreRequest::WaitPurged
        | StoreRequest::Retained
        | StoreRequest::Integrity
        | StoreRequest::Shutdown => Err(StoreError::Unsupported(format!(
            "{req:?} needs the sled store itself"
        ))),
    };
    reply.unwrap_or_else(StoreReply::Error)
}

async fn store_serve(a: StoreServeArgs) -> anyhow::Result<()> {
    let sled = Arc::new(SledStore::open(sled_options(&a.data_dir, a.purge_chunk))?);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(1);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    report("ready\n".into());
    while let Some(line) = rx.recv().await {
        let req: StoreRequest = serde_json::from_str(&line)?;
        let reply = match req {
            StoreRequest::WaitPurged => {
                let sled = sled.clone();
                tokio::task::spawn_blocking(move || sled.wait_purged()).await?;
                StoreReply::Done
            }
            StoreRequest::Retained => sled
                .retained_versions()
                .map_or_else(StoreReply::Error, StoreReply::Versions),
            StoreRequest::Integrity => sled
                .check_integrity()
                .map_or_else(StoreReply::Error, |()| StoreReply::Done),
            StoreRequest::Shutdown => break,
            req => serve_one(&*sled, req).await,
        };
        report(format!("{}\n", serde_json::to_string(&reply)?));
    }
    drop(sled);
    report(format!("{}\n", serde_json::to_string(&StoreReply::Done)?));
    Ok(())
}

/// Compacts `store` every 15 ms to 40 revisions before the latest, calling `done` with
/// each revision compacted to; runs until a compaction fails. The crash tests' load.
pub async fn compact_continually(
    store: Arc<dyn Store>,
    mut done: impl FnMut(Revision) + Send,
) -> Result<(), StoreError> {
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(15)).await;
        let target = store.current_revision().await? - 40;
        if target > last {
            match store.compact(target).await {
                Ok(()) => done(target),
                Err(StoreError::Compacted { .. }) => {}
                Err(e) => return Err(e),
            }
            last = target;
        }
    }
}

/// The value stored under `key` by the writer: self-describing, so a torn or foreign
/// value is recognised.
pub fn crash_value(key: &str) -> Vec<u8> {
    format!("{key}|{:016x}|{}", fnv1a(key), "x".repeat(200)).into_bytes()
}

fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Runs a `skua debug` command.
pub async fn run(cmd: DebugCommand) -> anyhow::Result<()> {
    match cmd {
        DebugCommand::StoreWriter(a) => store_writer(a).await,
        DebugCommand::StoreServe(a) => store_serve(a).await,
        DebugCommand::NetSink(a) => super::debug_net::sink(a),
        DebugCommand::NetConnect(a) => super::debug_net::connect(a),
        DebugCommand::NetBlast(a) => super::debug_net::blast(a),
        DebugCommand::OverlayApply(a) => super::debug_net::overlay_apply(a).await,
        DebugCommand::Fuzz(a) => {
            let report = super::fuzz::fuzz(&a.target, a.time, a.runs, a.seed, &a.out, a.save_every)
                .map_err(|e| anyhow::anyhow!(e))?;
            println!(
                "{}: {} inputs in {:.0} s ({:.0}/s), corpus {}, no crash",
                report.target,
                report.runs,
                report.elapsed.as_secs_f64(),
                report.runs as f64 / report.elapsed.as_secs_f64().max(0.001),
                report.corpus
            );
            Ok(())
        }
    }
}

fn report(line: String) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.flush();
}

async fn store_writer(a: StoreWriterArgs) -> anyhow::Result<()> {
    let store: Arc<dyn Store> =
        Arc::new(SledStore::open(sled_options(&a.data_dir, a.purge_chunk))?);
    let counter = format!("{}/counter", a.prefix);
    if let Err(e) = store.create(&counter, b"0".to_vec()).await {
        if !matches!(e, StoreError::AlreadyExists { .. }) {
            return Err(e.into());
        }
    }
    report("ready\n".into());
    let mut tasks = Vec::new();
    // delete some of what earlier runs left: keys that lived across their compactions
    {
        let store = store.clone();
        let prefix = format!("{}/", a.prefix);
        tasks.push(tokio::spawn(async move {
            let earlier = store.list("/crash/", ListOptions::default()).await?;
            for kv in earlier.kvs {
                let pick = fnv1a(&format!("{}{prefix}", kv.key)) % 4;
                if kv.key.starts_with(&prefix) || kv.key.ends_with("/counter") || pick != 0 {
                    continue;
                }
                report(format!("del-start {}\n", kv.key));
                let rev = store.delete(&kv.key, kv.mod_revision).await?;
                report(format!("del {} {rev}\n", kv.key));
            }
            Ok::<(), StoreError>(())
        }));
    }
    // compact all the time, keeping a little history, so crashes hit purges
    tasks.push(tokio::spawn(compact_continually(store.clone(), |r| {
        report(format!("compact {r}\n"))
    })));
    for w in 0..a.writers {
        let store = store.clone();
        let prefix = a.prefix.clone();
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0u64.. {
                let key = format!("{prefix}/{w}/{i}");
                let rev = store.create(&key, crash_value(&key)).await?;
                report(format!("ack {key} {rev}\n"));
                if i % 3 == 1 {
                    report(format!("del-start {key}\n"));
                    let rev = store.delete(&key, rev).await?;
                    report(format!("del {key} {rev}\n"));
                }
                if i % 4 == 0 {
                    loop {
                        let Some(kv) = store.get(&counter).await?.kv else {
                            break;
                        };
                        let n: u64 = String::from_utf8_lossy(&kv.value).parse().unwrap_or(0);
                        match store
                            .update(&counter, (n + 1).to_string().into_bytes(), kv.mod_revision)
                            .await
                        {
                            Ok(rev) => {
                                report(format!("counter {} {rev}\n", n + 1));
                                break;
                            }
                            Err(StoreError::Conflict { .. }) => continue,
                            Err(e) => return Err(e),
                        }
                    }
                }
            }
            Ok::<(), StoreError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}
