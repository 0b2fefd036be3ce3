//! The HA backend: the [`Store`] contract over an external etcd v3 cluster, exactly as
//! kube-apiserver uses etcd (compare-and-swap transactions on `mod_revision`, ranged
//! reads at a revision, prefix watches with previous values and progress requests).

use super::{
    Event, EventKind, GetResult, KeyValue, ListOptions, ListResult, Result, Revision, Store,
    StoreError, Watch, WatchMessage, WatchStream, list_start, prefix_end, validate_expected,
    validate_key,
};
use async_trait::async_trait;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, TlsOptions, Txn,
    TxnOp, TxnOpResponse, WatchOptions,
};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

/// Largest response accepted from etcd (a big list); kube-apiserver allows the same.
const MAX_RESPONSE_BYTES: usize = i32::MAX as usize;

/// How to reach the etcd cluster (`--datastore-endpoint` and the TLS files).
#[derive(Clone, Debug, Default)]
pub struct EtcdOptions {
    /// `http://` or `https://` URLs of the etcd members.
    pub endpoints: Vec<String>,
    /// CA file to verify the etcd servers (`--datastore-cafile`).
    pub ca_file: Option<PathBuf>,
    /// Client certificate for etcd (`--datastore-certfile`).
    pub cert_file: Option<PathBuf>,
    /// Client key for etcd (`--datastore-keyfile`).
    pub key_file: Option<PathBuf>,
}

/// See the module documentation.
pub struct EtcdStore {
    client: Client,
    /// Why progress notifications cannot be trusted on this etcd, if they cannot.
    progress_defect: Option<String>,
}

impl EtcdStore {
    /// Connects and checks that etcd answers.
    pub async fn connect(opts: &EtcdOptions) -> Result<EtcdStore> {
        if opts.endpoints.is_empty() {
            return Err(StoreError::InvalidArgument(
                "no etcd endpoint given; set --datastore-endpoint https://HOST:2379".into(),
            ));
        }
        for e in &opts.endpoints {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(StoreError::InvalidArgument(format!(
                    "datastore endpoint {e:?} is not an etcd URL; use http://HOST:2379 or https://HOST:2379"
                )));
            }
        }
        let plain: Vec<&String> = opts
            .endpoints
            .iter()
            .filter(|e| e.starts_with("http://"))
            .collect();
        if !plain.is_empty() {
            // every Secret of the cluster crosses this connection
            tracing::warn!(
                endpoints = ?plain,
                "the datastore is reached over plain http://: every object, Secrets included, crosses the network unencrypted and etcd cannot tell skua from anyone else; use https:// with --datastore-cafile, --datastore-certfile and --datastore-keyfile"
            );
        }
        let mut connect = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        if opts.endpoints.iter().any(|e| e.starts_with("https://")) {
            connect = connect.with_tls(tls_options(opts)?);
        }
        let client = Client::connect(&opts.endpoints, Some(connect))
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!(
                    "cannot connect to etcd at {}: {e}",
                    opts.endpoints.join(",")
                ))
            })?;
        let status = client.clone().status().await.map_err(|e| {
            StoreError::Unavailable(format!(
                "etcd at {} does not answer: {e}",
                opts.endpoints.join(",")
            ))
        })?;
        let progress_defect = progress_defect(status.version());
        if let Some(defect) = &progress_defect {
            tracing::warn!(%defect, "watch progress notifications disabled");
        }
        Ok(EtcdStore {
            client,
            progress_defect,
        })
    }

    fn kv(&self) -> etcd_client::KvClient {
        self.client
            .kv_client()
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    /// etcd's compacted-read error does not say which revision is the oldest kept; a
    /// watch from revision 1 is refused with exactly that number. Only called after
    /// etcd reported a compaction.
    async fn compact_revision(&self) -> Result<Revision> {
        // etcd refuses a watch from 1 only when the compact revision is above 1: when
        // a read at 1 still works, the compaction it reported is the one at 1
        let at_one = GetOptions::new().with_revision(1).with_count_only();
        if self
            .kv()
            .get("\u{1}skua-compaction-probe", Some(at_one))
            .await
            .is_ok()
        {
            return Ok(1);
        }
        let mut stream = self
            .client
            .watch_client()
            .watch(
                "\u{1}skua-compaction-probe",
                Some(WatchOptions::new().with_start_revision(1)),
            )
            .await
            .map_err(map_err)?;
        for _ in 0..3 {
            let message = tokio::time::timeout(Duration::from_secs(10), stream.message())
                .await
                .map_err(|_| {
                    StoreError::Unavailable("etcd did not say its compact revision".into())
                })?;
            match message.map_err(map_err)? {
                Some(resp) if resp.canceled() => return Ok(resp.compact_revision()),
                Some(_) => continue,
                None => break,
            }
        }
        Ok(0)
    }

    /// Refuses a watch from below the compact revision C at once, like the embedded
    /// backends do: the events after such a revision are not all kept (a deletion or
    /// superseded version at C may be gone), and etcd itself only refuses starts
    /// below C.
    async fn refuse_compacted_start(&self, prefix: &str, since: Revision) -> Result<()> {
        let probe = GetOptions::new().with_revision(since).with_count_only();
        match self.kv().get(prefix, Some(probe)).await {
            Ok(_) => Ok(()),
            Err(e) => match self.revision_error(e, since).await {
                StoreError::FutureRevision { .. } => Ok(()),
                err => Err(err),
            },
        }
    }

    /// Turns etcd's revision errors into the contract's, with the revisions filled in.
    async fn revision_error(&self, e: etcd_client::Error, requested: Revision) -> StoreError {
        let text = e.to_string();
        if text.contains("required revision has been compacted") {
            StoreError::Compacted {
                requested,
                compact_revision: self.compact_revision().await.unwrap_or(0),
            }
        } else if text.contains("required revision is a future revision") {
            StoreError::FutureRevision {
                requested,
                current: self.current_revision().await.unwrap_or(0),
            }
        } else {
            map_err(e)
        }
    }
}

/// etcd before 3.4.25 and 3.5.8 may send a requested progress notification before
/// events at or below its revision (etcd issue #15220), which would turn into a wrong
/// Kubernetes bookmark; on those versions we do not ask for progress at all.
fn progress_defect(version: &str) -> Option<String> {
    let mut parts = version
        .trim_start_matches('v')
        .split(['.', '-', '+'])
        .map(|p| p.parse::<u64>().ok());
    let (major, minor, patch) = match (parts.next(), parts.next(), parts.next()) {
        (Some(Some(a)), Some(Some(b)), Some(Some(c))) => (a, b, c),
        _ => return Some(format!("etcd reports an unparsable version {version:?}")),
    };
    let fixed = match (major, minor) {
        (3, 4) => patch >= 25,
        (3, 5) => patch >= 8,
        (3, m) => m >= 6,
        (m, _) => m > 3,
    };
    (!fixed).then(|| {
        format!(
            "etcd {version} may send watch progress notifications ahead of events (etcd issue #15220); upgrade etcd to 3.4.25, 3.5.8 or later for watch bookmarks"
        )
    })
}

fn tls_options(opts: &EtcdOptions) -> Result<TlsOptions> {
    let read = |p: &PathBuf, what: &str| {
        std::fs::read(p).map_err(|e| {
            StoreError::InvalidArgument(format!("cannot read the etcd {what} {}: {e}", p.display()))
        })
    };
    let mut tls = TlsOptions::new();
    if let Some(ca) = &opts.ca_file {
        tls = tls.ca_certificate(Certificate::from_pem(read(
            ca,
            "CA file (--datastore-cafile)",
        )?));
    }
    match (&opts.cert_file, &opts.key_file) {
        (Some(cert), Some(key)) => {
            tls = tls.identity(Identity::from_pem(
                read(cert, "client certificate (--datastore-certfile)")?,
                read(key, "client key (--datastore-keyfile)")?,
            ));
        }
        (None, None) => {}
        _ => {
            return Err(StoreError::InvalidArgument(
                "--datastore-certfile and --datastore-keyfile must be given together".into(),
            ));
        }
    }
    Ok(tls)
}

fn map_err(e: etcd_client::Error) -> StoreError {
    match &e {
        etcd_client::Error::GRpcStatus(s)
            if matches!(
                s.code(),
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
            ) =>
        {
            StoreError::Unavailable(format!("etcd: {}", s.message()))
        }
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => {
            StoreError::Unavailable(format!("etcd: {e}"))
        }
        _ => StoreError::Backend(format!("etcd: {e}")),
    }
}

fn to_kv(kv: &etcd_client::KeyValue) -> Result<KeyValue> {
    Ok(KeyValue {
        key: String::from_utf8(kv.key().to_vec())
            .map_err(|_| StoreError::Backend("etcd returned a key that is not UTF-8".into()))?,
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
    })
}

fn header_revision(h: Option<&etcd_client::ResponseHeader>) -> Result<Revision> {
    h.map(|h| h.revision())
        .ok_or_else(|| StoreError::Backend("etcd response without a header".into()))
}

impl EtcdStore {
    /// A compare-and-swap on `mod_revision` (0: "does not exist"), returning the
    /// revision of the write or the conflicting version.
    async fn guarded(&self, key: &str, expected: Revision, op: TxnOp) -> Result<Revision> {
        let compare = if expected == 0 {
            Compare::create_revision(key, CompareOp::Equal, 0)
        } else {
            Compare::mod_revision(key, CompareOp::Equal, expected)
        };
        let txn = Txn::new()
            .when([compare])
            .and_then([op])
            .or_else([TxnOp::get(key, None)]);
        let resp = self.kv().txn(txn).await.map_err(map_err)?;
        if resp.succeeded() {
            return header_revision(resp.header());
        }
        let current = match resp.op_responses().into_iter().next() {
            Some(TxnOpResponse::Get(get)) => get.kvs().first().map(to_kv).transpose()?,
            _ => None,
        };
        Err(if expected == 0 {
            StoreError::AlreadyExists {
                key: key.to_string(),
            }
        } else {
            StoreError::Conflict {
                key: key.to_string(),
                expected,
                current,
            }
        })
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<GetResult> {
        validate_key(key)?;
        let resp = self.kv().get(key, None).await.map_err(map_err)?;
        Ok(GetResult {
            kv: resp.kvs().first().map(to_kv).transpose()?,
            revision: header_revision(resp.header())?,
        })
    }

    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListResult> {
        let start = list_start(prefix, &opts)?;
        let mut end = prefix_end(prefix.as_bytes());
        if end.is_empty() {
            end = vec![0]; // etcd: "every key from the start key on"
        }
        let mut get = GetOptions::new()
            .with_range(end)
            .with_revision(opts.revision);
        if opts.limit > 0 {
            get = get.with_limit(opts.limit as i64);
        }
        let resp = match self.kv().get(start, Some(get)).await {
            Ok(resp) => resp,
            Err(e) => return Err(self.revision_error(e, opts.revision).await),
        };
        let kvs = resp.kvs().iter().map(to_kv).collect::<Result<Vec<_>>>()?;
        Ok(ListResult {
            count: usize::try_from(resp.count()).unwrap_or(0),
            more: resp.more(),
            revision: if opts.revision == 0 {
                header_revision(resp.header())?
            } else {
                opts.revision
            },
            kvs,
        })
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Revision> {
        validate_key(key)?;
        self.guarded(key, 0, TxnOp::put(key, value, None)).await
    }

    async fn update(&self, key: &str, value: Vec<u8>, expected: Revision) -> Result<Revision> {
        validate_key(key)?;
        validate_expected(expected)?;
        self.guarded(key, expected, TxnOp::put(key, value, None))
            .await
    }

    async fn delete(&self, key: &str, expected: Revision) -> Result<Revision> {
        validate_key(key)?;
        validate_expected(expected)?;
        self.guarded(key, expected, TxnOp::delete(key, None)).await
    }

    async fn watch(&self, prefix: &str, since: Revision) -> Result<Watch> {
        let mut options = WatchOptions::new().with_prev_key();
        if self.progress_defect.is_none() {
            options = options.with_progress_notify();
        }
        options = match prefix_end(prefix.as_bytes()) {
            end if end.is_empty() => options.with_range(vec![0]),
            end => options.with_range(end),
        };
        if since != 0 {
            self.refuse_compacted_start(prefix, since).await?;
            options = options.with_start_revision(since + 1);
        }
        let stream = self
            .client
            .watch_client()
            .watch(prefix, Some(options))
            .await
            .map_err(map_err)?;
        if since != 0 {
            // a compaction to `since + 1` between the check and the watch: etcd
            // accepts a start at the compact revision, but may have dropped a deletion
            // there (etcd#18089)
            self.refuse_compacted_start(prefix, since).await?;
        }
        Ok(Watch::new(Box::new(EtcdWatch {
            stream,
            pending: VecDeque::new(),
            since,
            finished: false,
            progress_defect: self.progress_defect.clone(),
        })))
    }

    async fn current_revision(&self) -> Result<Revision> {
        let resp = self
            .kv()
            .get("\u{1}", Some(GetOptions::new().with_count_only()))
            .await
            .map_err(map_err)?;
        header_revision(resp.header())
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        match self.kv().compact(revision, None).await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.revision_error(e, revision).await),
        }
    }

    fn backend(&self) -> &'static str {
        "etcd"
    }

    fn supports_progress(&self) -> bool {
        self.progress_defect.is_none()
    }
}

struct EtcdWatch {
    stream: etcd_client::WatchStream,
    pending: VecDeque<WatchMessage>,
    since: Revision,
    finished: bool,
    progress_defect: Option<String>,
}

#[async_trait]
impl WatchStream for EtcdWatch {
    async fn next(&mut self) -> Option<Result<WatchMessage>> {
        loop {
            if let Some(msg) = self.pending.pop_front() {
                return Some(Ok(msg));
            }
            if self.finished {
                return None;
            }
            let resp = match self.stream.message().await {
                Ok(Some(resp)) => resp,
                Ok(None) => {
                    self.finished = true;
                    return Some(Err(StoreError::Unavailable(
                        "the etcd watch stream closed".into(),
                    )));
                }
                Err(e) => {
                    self.finished = true;
                    return Some(Err(map_err(e)));
                }
            };
            if resp.canceled() {
                self.finished = true;
                return Some(Err(if resp.compact_revision() > 0 {
                    StoreError::Compacted {
                        requested: self.since,
                        compact_revision: resp.compact_revision(),
                    }
                } else {
                    StoreError::Unavailable(format!(
                        "etcd cancelled the watch: {}",
                        resp.cancel_reason()
                    ))
                }));
            }
            if resp.events().is_empty() {
                if resp.created() {
                    continue;
                }
                match header_revision(resp.header()) {
                    Ok(revision) => return Some(Ok(WatchMessage::Progress(revision))),
                    Err(e) => return Some(Err(e)),
                }
            }
            for event in resp.events() {
                let Some(kv) = event.kv() else { continue };
                let converted = to_kv(kv).and_then(|kv| {
                    let prev = event.prev_kv().map(to_kv).transpose()?;
                    let kind = match event.event_type() {
                        etcd_client::EventType::Put => EventKind::Put,
                        etcd_client::EventType::Delete => EventKind::Delete,
                    };
                    Ok(Event { kind, kv, prev })
                });
                match converted {
                    Ok(e) => self.pending.push_back(WatchMessage::Event(e)),
                    Err(e) => {
                        self.finished = true;
                        return Some(Err(e));
                    }
                }
            }
        }
    }

    async fn request_progress(&mut self) -> Result<()> {
        if let Some(defect) = &self.progress_defect {
            return Err(StoreError::Unsupported(defect.clone()));
        }
        self.stream.request_progress().await.map_err(map_err)
    }
}

#[cfg(test)]
mod tests {
    use super::progress_defect;

    #[test]
    fn progress_is_trusted_only_on_fixed_etcd_versions() {
        for bad in ["3.4.23", "3.5.7", "3.3.0", "v3.4.24", "nonsense"] {
            assert!(progress_defect(bad).is_some(), "{bad}");
        }
        for good in ["3.4.25", "3.5.8", "3.5.21", "3.6.0", "v3.4.37"] {
            assert!(progress_defect(good).is_none(), "{good}");
        }
    }
}
