//! Hidden helpers for tests. `store-writer` is the child process of the crash test:
//! it does acknowledged writes as fast as it can and reports each acknowledgement on
//! stdout, so the test knows exactly what must survive a SIGKILL.

use crate::store::sled::{SledOptions, SledStore};
use crate::store::{Store, StoreError};
use clap::{Args, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Subcommand, Debug)]
pub enum DebugCommand {
    /// Write to a sled store until killed, printing `ack <key> <revision>` per
    /// durable create and `counter <value> <revision>` per durable increment.
    StoreWriter(StoreWriterArgs),
    /// `skua bench net`: accept TCP connections and read them to their end.
    NetSink(super::debug_net::SinkArgs),
    /// `skua bench net`: time new TCP connections (median and p99, µs).
    NetConnect(super::debug_net::ConnectArgs),
    /// `skua bench net`: send TCP as fast as possible (bits per second).
    NetBlast(super::debug_net::BlastArgs),
    /// `skua bench net`: program the overlay for static peers, as the agent would.
    OverlayApply(super::debug_net::OverlayApplyArgs),
}

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
}

/// The value stored under `key` by the writer: self-describing, so a torn or foreign
/// value is recognised.
pub fn crash_value(key: &str) -> Vec<u8> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{key}|{h:016x}|{}", "x".repeat(200)).into_bytes()
}

pub async fn run(cmd: DebugCommand) -> anyhow::Result<()> {
    match cmd {
        DebugCommand::StoreWriter(a) => store_writer(a).await,
        DebugCommand::NetSink(a) => super::debug_net::sink(a),
        DebugCommand::NetConnect(a) => super::debug_net::connect(a),
        DebugCommand::NetBlast(a) => super::debug_net::blast(a),
        DebugCommand::OverlayApply(a) => super::debug_net::overlay_apply(a).await,
    }
}

fn report(line: String) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.flush();
}

async fn store_writer(a: StoreWriterArgs) -> anyhow::Result<()> {
    let store: Arc<dyn Store> = Arc::new(SledStore::open(SledOptions::new(&a.data_dir))?);
    let counter = format!("{}/counter", a.prefix);
    if let Err(e) = store.create(&counter, b"0".to_vec()).await {
        if !matches!(e, StoreError::AlreadyExists { .. }) {
            return Err(e.into());
        }
    }
    report("ready\n".into());
    let mut tasks = Vec::new();
    for w in 0..a.writers {
        let store = store.clone();
        let prefix = a.prefix.clone();
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0u64.. {
                let key = format!("{prefix}/{w}/{i}");
                let rev = store.create(&key, crash_value(&key)).await?;
                report(format!("ack {key} {rev}\n"));
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
