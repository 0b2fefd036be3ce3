//! The `Store` contract, checked the same way against every backend.

use skua::store::{EventKind, ListOptions, Revision, Store, StoreError, WatchMessage};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(10);

async fn next_msg(w: &mut skua::store::Watch) -> WatchMessage {
    tokio::time::timeout(TIMEOUT, w.next())
        .await
        .expect("watch message did not arrive in time")
        .expect("watch ended")
        .expect("watch failed")
}

async fn next_event(w: &mut skua::store::Watch) -> skua::store::Event {
    loop {
        match next_msg(w).await {
            WatchMessage::Event(e) => return e,
            WatchMessage::Progress(_) => continue,
        }
    }
}

pub async fn create_if_absent(store: &dyn Store) {
    let before = store.current_revision().await.unwrap();
    let rev = store.create("/c/a", b"one".to_vec()).await.unwrap();
    assert!(rev > before, "a write gets a new, higher revision");
    match store.create("/c/a", b"two".to_vec()).await {
        Err(StoreError::AlreadyExists { key }) => assert_eq!(key, "/c/a"),
        other => panic!("second create must fail with AlreadyExists, got {other:?}"),
    }
    let got = store.get("/c/a").await.unwrap();
    let kv = got.kv.expect("created key is readable");
    assert_eq!(kv.value, b"one");
    assert_eq!((kv.create_revision, kv.mod_revision), (rev, rev));
    assert!(got.revision >= rev);
    assert_eq!(store.current_revision().await.unwrap(), rev);
    assert!(store.get("/c/missing").await.unwrap().kv.is_none());
}

/// N tasks each add one to a counter with optimistic retries: the result is exactly N.
pub async fn cas_under_contention(store: Arc<dyn Store>) {
    const N: usize = 64;
    let start = store.create("/cas/counter", b"0".to_vec()).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..N {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut current = store.get("/cas/counter").await.unwrap().kv.unwrap();
            let mut conflicts = 0u32;
            loop {
                let n: u64 = String::from_utf8_lossy(&current.value).parse().unwrap();
                match store
                    .update(
                        "/cas/counter",
                        (n + 1).to_string().into_bytes(),
                        current.mod_revision,
                    )
                    .await
                {
                    Ok(rev) => return (rev, conflicts),
                    Err(StoreError::Conflict {
                        current: Some(kv), ..
                    }) => {
                        conflicts += 1;
                        current = kv;
                    }
                    Err(e) => panic!("unexpected error under contention: {e}"),
                }
            }
        }));
    }
    let mut revisions = Vec::new();
    for t in tasks {
        revisions.push(t.await.unwrap().0);
    }
    let kv = store.get("/cas/counter").await.unwrap().kv.unwrap();
    assert_eq!(String::from_utf8_lossy(&kv.value), N.to_string());
    revisions.sort();
    revisions.dedup();
    assert_eq!(
        revisions.len(),
        N,
        "every successful write has its own revision"
    );
    assert!(revisions[0] > start);
    assert_eq!(
        kv.create_revision, start,
        "updates keep the create revision"
    );
}

pub async fn update_and_delete_are_guarded(store: &dyn Store) {
    let r1 = store.create("/g/k", b"v1".to_vec()).await.unwrap();
    let r2 = store.update("/g/k", b"v2".to_vec(), r1).await.unwrap();
    match store.update("/g/k", b"stale".to_vec(), r1).await {
        Err(StoreError::Conflict {
            expected,
            current: Some(kv),
            ..
        }) => {
            assert_eq!(expected, r1);
            assert_eq!((kv.mod_revision, kv.value.as_slice()), (r2, &b"v2"[..]));
        }
        other => panic!("stale update must conflict with the current version, got {other:?}"),
    }
    match store.delete("/g/k", r1).await {
        Err(StoreError::Conflict {
            current: Some(kv), ..
        }) => assert_eq!(kv.mod_revision, r2),
        other => panic!("stale delete must conflict, got {other:?}"),
    }
    assert_eq!(store.get("/g/k").await.unwrap().kv.unwrap().value, b"v2");
    let r3 = store.delete("/g/k", r2).await.unwrap();
    assert!(r3 > r2);
    assert!(store.get("/g/k").await.unwrap().kv.is_none());
    match store.delete("/g/k", r2).await {
        Err(StoreError::Conflict { current: None, .. }) => {}
        other => {
            panic!("deleting a deleted key must conflict with no current version, got {other:?}")
        }
    }
    match store.update("/g/missing", b"x".to_vec(), r2).await {
        Err(StoreError::Conflict { current: None, .. }) => {}
        other => panic!("updating a missing key must conflict, got {other:?}"),
    }
    let r4 = store.create("/g/k", b"again".to_vec()).await.unwrap();
    let kv = store.get("/g/k").await.unwrap().kv.unwrap();
    assert_eq!(
        (kv.create_revision, kv.mod_revision),
        (r4, r4),
        "a re-created key starts afresh"
    );
    assert!(matches!(
        store.update("/g/k", b"x".to_vec(), 0).await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert!(matches!(
        store.create("", b"x".to_vec()).await,
        Err(StoreError::InvalidKey { .. })
    ));
    assert!(matches!(
        store.create("/g/\0", b"x".to_vec()).await,
        Err(StoreError::InvalidKey { .. })
    ));
}

pub async fn list_pages_consistently(store: &dyn Store) {
    for i in 0..25 {
        store
            .create(&format!("/l/items/{i:03}"), format!("v{i}").into_bytes())
            .await
            .unwrap();
    }
    // neighbours that share a textual prefix but are outside the listed prefix
    store.create("/l/items", b"parent".to_vec()).await.unwrap();
    store
        .create("/l/itemsx/1", b"other".to_vec())
        .await
        .unwrap();

    let page1 = store
        .list(
            "/l/items/",
            ListOptions {
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((page1.kvs.len(), page1.count, page1.more), (10, 25, true));
    // writes between pages must not show up in later pages of the same list
    store
        .create("/l/items/0105", b"late".to_vec())
        .await
        .unwrap();
    let first_key = page1.kvs[0].clone();
    store
        .delete(&first_key.key, first_key.mod_revision)
        .await
        .unwrap();
    let mut all = page1.kvs.clone();
    let mut next = page1.continue_key();
    let mut pages = 1;
    while let Some(cont) = next {
        let page = store
            .list(
                "/l/items/",
                ListOptions {
                    revision: page1.revision,
                    limit: 10,
                    continue_from: Some(cont),
                },
            )
            .await
            .unwrap();
        assert_eq!(page.revision, page1.revision);
        assert_eq!(
            page.count,
            25 - all.len(),
            "count covers the rest of the range"
        );
        all.extend(page.kvs.clone());
        next = page.continue_key();
        pages += 1;
    }
    assert_eq!(pages, 3);
    let keys: Vec<_> = all.iter().map(|kv| kv.key.clone()).collect();
    let expected: Vec<_> = (0..25).map(|i| format!("/l/items/{i:03}")).collect();
    assert_eq!(
        keys, expected,
        "pages are the whole snapshot, in key order, without the later writes"
    );
    assert_eq!(all[7].value, b"v7");

    let latest = store
        .list("/l/items/", ListOptions::default())
        .await
        .unwrap();
    assert_eq!(latest.count, 25, "one deleted, one added");
    assert!(!latest.more);
    assert!(latest.kvs.iter().any(|kv| kv.key == "/l/items/0105"));
    assert!(!latest.kvs.iter().any(|kv| kv.key == first_key.key));
    let everything = store.list("/l/", ListOptions::default()).await.unwrap();
    assert_eq!(everything.count, 27);
    assert!(matches!(
        store
            .list(
                "/l/items/",
                ListOptions {
                    continue_from: Some("/m/".into()),
                    ..Default::default()
                }
            )
            .await,
        Err(StoreError::InvalidArgument(_))
    ));
}

pub async fn list_at_past_revisions(store: &dyn Store) {
    let r1 = store.create("/h/a", b"a1".to_vec()).await.unwrap();
    let r2 = store.update("/h/a", b"a2".to_vec(), r1).await.unwrap();
    let r3 = store.create("/h/b", b"b1".to_vec()).await.unwrap();
    let r4 = store.delete("/h/a", r2).await.unwrap();
    let at = |revision: Revision| ListOptions {
        revision,
        ..Default::default()
    };
    let values = |l: skua::store::ListResult| {
        l.kvs
            .into_iter()
            .map(|kv| {
                (
                    kv.key,
                    String::from_utf8(kv.value).unwrap(),
                    kv.mod_revision,
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        values(store.list("/h/", at(r1)).await.unwrap()),
        vec![("/h/a".into(), "a1".into(), r1)]
    );
    assert_eq!(
        values(store.list("/h/", at(r2)).await.unwrap()),
        vec![("/h/a".into(), "a2".into(), r2)]
    );
    assert_eq!(
        values(store.list("/h/", at(r3)).await.unwrap()),
        vec![
            ("/h/a".into(), "a2".into(), r2),
            ("/h/b".into(), "b1".into(), r3)
        ]
    );
    assert_eq!(
        values(store.list("/h/", at(r4)).await.unwrap()),
        vec![("/h/b".into(), "b1".into(), r3)]
    );
    assert_eq!(store.list("/h/", at(r1)).await.unwrap().revision, r1);
    match store.list("/h/", at(r4 + 1000)).await {
        Err(StoreError::FutureRevision { requested, current }) => {
            assert_eq!(requested, r4 + 1000);
            assert!(current >= r4);
        }
        other => panic!("a future revision must be refused, got {other:?}"),
    }
}

pub async fn compaction_discards_history(store: &dyn Store) {
    let r1 = store.create("/x/a", b"a1".to_vec()).await.unwrap();
    let r2 = store.update("/x/a", b"a2".to_vec(), r1).await.unwrap();
    let r3 = store.create("/x/b", b"b1".to_vec()).await.unwrap();
    let r4 = store.delete("/x/b", r3).await.unwrap();
    let r5 = store.update("/x/a", b"a3".to_vec(), r2).await.unwrap();
    store.compact(r3).await.unwrap();
    let at = |revision: Revision| ListOptions {
        revision,
        ..Default::default()
    };
    match store.list("/x/", at(r2)).await {
        Err(StoreError::Compacted {
            requested,
            compact_revision,
        }) => {
            assert_eq!(requested, r2);
            assert_eq!(
                compact_revision, r3,
                "the error names the oldest available revision"
            );
        }
        other => panic!("a compacted revision must be refused, got {other:?}"),
    }
    // the compact revision itself, and everything after, is intact
    let snap = store.list("/x/", at(r3)).await.unwrap();
    let got: Vec<_> = snap
        .kvs
        .iter()
        .map(|kv| (kv.key.as_str(), kv.value.as_slice()))
        .collect();
    assert_eq!(got, vec![("/x/a", &b"a2"[..]), ("/x/b", &b"b1"[..])]);
    assert_eq!(store.list("/x/", at(r4)).await.unwrap().kvs.len(), 1);
    assert_eq!(store.get("/x/a").await.unwrap().kv.unwrap().value, b"a3");
    match store.watch("/x/", r1).await {
        Err(StoreError::Compacted {
            compact_revision, ..
        }) => assert_eq!(compact_revision, r3),
        Ok(mut w) => match tokio::time::timeout(TIMEOUT, w.next()).await.unwrap() {
            Some(Err(StoreError::Compacted {
                compact_revision, ..
            })) => assert_eq!(compact_revision, r3),
            other => panic!("a watch from before the compaction must fail, got {other:?}"),
        },
        Err(e) => panic!("unexpected error {e}"),
    }
    // a watch from the compact revision works, with previous values; from just before
    // it, the events at the compact revision may be gone (etcd removes a deletion
    // there), so it is refused
    match store.watch("/x/", r3 - 1).await {
        Err(StoreError::Compacted {
            requested,
            compact_revision,
        }) => assert_eq!((requested, compact_revision), (r3 - 1, r3)),
        other => panic!(
            "a watch from before the compact revision must be refused, got {:?}",
            other.map(|_| ())
        ),
    }
    let mut w = store.watch("/x/", r3).await.unwrap();
    let e = next_event(&mut w).await;
    assert_eq!((e.kind, e.revision()), (EventKind::Delete, r4));
    assert_eq!(e.prev.unwrap().value, b"b1");
    let e = next_event(&mut w).await;
    assert_eq!(e.revision(), r5);
    assert_eq!(e.prev.unwrap().value, b"a2");
    assert!(matches!(
        store.compact(r3).await,
        Err(StoreError::Compacted { .. })
    ));
    assert!(matches!(
        store.compact(r5 + 1000).await,
        Err(StoreError::FutureRevision { .. })
    ));
    store.compact(r5).await.unwrap();
    assert_eq!(store.list("/x/", at(r5)).await.unwrap().kvs.len(), 1);
}

/// A watch from revision R delivers exactly the events after R, then live ones.
pub async fn watch_resumes_exactly_after(store: &dyn Store) {
    let mut revs = Vec::new();
    revs.push(store.create("/w/a", b"1".to_vec()).await.unwrap());
    store.create("/v/outside", b"x".to_vec()).await.unwrap();
    revs.push(store.update("/w/a", b"2".to_vec(), revs[0]).await.unwrap());
    revs.push(store.create("/w/b", b"1".to_vec()).await.unwrap());
    revs.push(store.delete("/w/a", revs[1]).await.unwrap());

    let mut w = store.watch("/w/", revs[1]).await.unwrap();
    let e = next_event(&mut w).await;
    assert_eq!(
        (e.kind, e.kv.key.as_str(), e.revision()),
        (EventKind::Put, "/w/b", revs[2])
    );
    assert!(e.prev.is_none());
    let e = next_event(&mut w).await;
    assert_eq!(
        (e.kind, e.kv.key.as_str(), e.revision()),
        (EventKind::Delete, "/w/a", revs[3])
    );
    let prev = e.prev.expect("a delete carries the deleted value");
    assert_eq!(
        (prev.value.as_slice(), prev.mod_revision),
        (&b"2"[..], revs[1])
    );

    // "from now" sees only later writes
    let mut now = store.watch("/w/", 0).await.unwrap();
    let r5 = store.update("/w/b", b"2".to_vec(), revs[2]).await.unwrap();
    for w in [&mut w, &mut now] {
        let e = next_event(w).await;
        assert_eq!(
            (e.kv.key.as_str(), e.revision(), e.kv.value.as_slice()),
            ("/w/b", r5, &b"2"[..])
        );
        assert_eq!(e.prev.unwrap().mod_revision, revs[2]);
        assert_eq!(e.kv.create_revision, revs[2]);
    }
    // a progress request is answered in order with the events (or refused up front
    // by a backend that cannot keep that promise; see the etcd version test)
    if !store.supports_progress() {
        assert!(matches!(
            now.request_progress().await,
            Err(StoreError::Unsupported(_))
        ));
        return;
    }
    now.request_progress().await.unwrap();
    match next_msg(&mut now).await {
        WatchMessage::Progress(r) => {
            assert!(r >= r5, "progress {r} must cover the delivered event {r5}")
        }
        WatchMessage::Event(e) => panic!("unexpected event {e:?}"),
    }
}

/// Whoever hears of a write from a watch can read it at once (controllers act on what
/// they are told: a scheduler binding a pod it just heard of must find the pod).
pub async fn watched_writes_are_readable(store: Arc<dyn Store>) {
    let mut w = store.watch("/r/", 0).await.unwrap();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..200 {
                store
                    .create(&format!("/r/{i:04}"), b"x".to_vec())
                    .await
                    .unwrap();
            }
        })
    };
    for _ in 0..200 {
        let e = next_event(&mut w).await;
        let got = store.get(&e.kv.key).await.unwrap();
        assert!(
            got.kv.is_some(),
            "{} was announced at revision {} but a read at revision {} does not find it",
            e.kv.key,
            e.revision(),
            got.revision
        );
    }
    writer.await.unwrap();
}

fn at(revision: Revision) -> ListOptions {
    ListOptions {
        revision,
        ..Default::default()
    }
}

/// Every key under `prefix` with its value and revisions, as a list at `revision`
/// (0: the latest) returns them.
async fn snapshot(
    store: &dyn Store,
    prefix: &str,
    revision: Revision,
) -> (Revision, BTreeMap<String, (Vec<u8>, Revision, Revision)>) {
    let list = store.list(prefix, at(revision)).await.unwrap();
    let items = list
        .kvs
        .into_iter()
        .map(|kv| (kv.key, (kv.value, kv.create_revision, kv.mod_revision)))
        .collect();
    (list.revision, items)
}

/// The list at the latest revision, each key's point read, and the list at `from`
/// followed by a watch from `from` up to `last_write` (the last write under `prefix`)
/// all say the same: what `expected` holds (key → value, mod revision).
async fn assert_reads_agree(
    store: &dyn Store,
    prefix: &str,
    from: Revision,
    last_write: Revision,
    expected: &[(&str, &str, Revision)],
    context: &str,
) {
    let (_, latest) = snapshot(store, prefix, 0).await;
    let want: BTreeMap<String, (Vec<u8>, Revision)> = expected
        .iter()
        .map(|(k, v, r)| (k.to_string(), (v.as_bytes().to_vec(), *r)))
        .collect();
    let got: BTreeMap<String, (Vec<u8>, Revision)> = latest
        .iter()
        .map(|(k, (v, _, r))| (k.clone(), (v.clone(), *r)))
        .collect();
    assert_eq!(got, want, "{context}: the list at the latest revision");
    for key in ["a", "b", "c", "d"].map(|k| format!("{prefix}{k}")) {
        let kv = store.get(&key).await.unwrap().kv;
        assert_eq!(
            kv.map(|kv| (kv.value, kv.mod_revision)),
            want.get(&key).cloned(),
            "{context}: a point read of {key}"
        );
    }
    // replaying the watch from `from` onto the list at `from` gives the latest list
    let (_, mut replayed) = snapshot(store, prefix, from).await;
    if last_write > from {
        let mut w = store.watch(prefix, from).await.unwrap();
        let mut last = from;
        while last < last_write {
            match tokio::time::timeout(TIMEOUT, w.next()).await {
                Ok(Some(Ok(WatchMessage::Event(e)))) => {
                    assert!(e.revision() > last, "{context}: watch out of order");
                    last = e.revision();
                    match e.kind {
                        EventKind::Put => {
                            replayed.insert(
                                e.kv.key.clone(),
                                (e.kv.value, e.kv.create_revision, e.kv.mod_revision),
                            );
                        }
                        EventKind::Delete => {
                            assert!(
                                replayed.remove(&e.kv.key).is_some(),
                                "{context}: a deletion of {} the list did not hold",
                                e.kv.key
                            );
                        }
                    }
                }
                Ok(Some(Ok(WatchMessage::Progress(_)))) => {}
                other => panic!("{context}: watch from {from} failed: {other:?}"),
            }
        }
    }
    assert_eq!(
        replayed, latest,
        "{context}: the list at {from} plus the watch from {from} disagree with the latest list"
    );
}

/// Issue 14: a key that lived across one compaction and was then updated and deleted
/// must stay deleted after the next compaction (sled's purge brought the version the
/// first compaction kept back to life). Lists, point reads and watches agree.
pub async fn deleted_keys_stay_deleted_across_compactions(b: &super::Backend) {
    let store = &*b.store;
    let r1 = store.create("/z/a", b"a1".to_vec()).await.unwrap();
    let r2 = store.create("/z/b", b"b1".to_vec()).await.unwrap();
    let r3 = store.create("/z/c", b"c1".to_vec()).await.unwrap();
    // first compaction: past every creation, so each key's only version is the one
    // reads at r3 need
    store.compact(r3).await.unwrap();
    b.settle().await;
    assert_reads_agree(
        store,
        "/z/",
        r3,
        r3,
        &[("/z/a", "a1", r1), ("/z/b", "b1", r2), ("/z/c", "c1", r3)],
        "after the first compaction",
    )
    .await;
    let r4 = store.update("/z/a", b"a2".to_vec(), r1).await.unwrap();
    let r5 = store.delete("/z/a", r4).await.unwrap();
    let r6 = store.delete("/z/b", r2).await.unwrap();
    assert_reads_agree(
        store,
        "/z/",
        r3,
        r6,
        &[("/z/c", "c1", r3)],
        "after the deletions",
    )
    .await;
    // second compaction: past the deletions
    store.compact(r6).await.unwrap();
    b.settle().await;
    for key in ["/z/a", "/z/b"] {
        assert_eq!(
            store.get(key).await.unwrap().kv,
            None,
            "{key} was deleted before the second compaction and must stay deleted"
        );
    }
    if let Some(kept) = b.retained("/z/").await {
        assert_eq!(
            kept,
            vec![("/z/c".to_string(), r3, false)],
            "the versions kept after the second compaction"
        );
    }
    assert_reads_agree(
        store,
        "/z/",
        r6,
        r6,
        &[("/z/c", "c1", r3)],
        "after the second compaction",
    )
    .await;
    assert_eq!(snapshot(store, "/z/", r6).await.1.len(), 1);
    assert!(r5 < r6);
    // a deleted key can be created again, as a new object, and a create is not
    // refused as AlreadyExists by a stale version
    let r7 = store.create("/z/a", b"a3".to_vec()).await.unwrap();
    match store.create("/z/b", b"b2".to_vec()).await {
        Ok(_) => {}
        Err(e) => panic!("creating the deleted /z/b again must work, got {e}"),
    }
    let r8 = store.current_revision().await.unwrap();
    // a third compaction, and a write outside the prefix to compact past
    let r9 = store.create("/y/other", b"x".to_vec()).await.unwrap();
    store.compact(r9).await.unwrap();
    b.settle().await;
    let a = store.get("/z/a").await.unwrap().kv.unwrap();
    assert_eq!(
        (a.value.as_slice(), a.create_revision, a.mod_revision),
        (&b"a3"[..], r7, r7)
    );
    assert_reads_agree(
        store,
        "/z/",
        r9,
        r8,
        &[("/z/a", "a3", r7), ("/z/b", "b2", r8), ("/z/c", "c1", r3)],
        "after the third compaction",
    )
    .await;
    // deleting again after yet another compaction: gone for good
    let r10 = store.delete("/z/c", r3).await.unwrap();
    let r11 = store.delete("/z/a", r7).await.unwrap();
    assert_reads_agree(
        store,
        "/z/",
        r9,
        r11,
        &[("/z/b", "b2", r8)],
        "after the last deletions",
    )
    .await;
    store.compact(r11).await.unwrap();
    b.settle().await;
    assert!(r10 < r11);
    assert_reads_agree(
        store,
        "/z/",
        r11,
        r11,
        &[("/z/b", "b2", r8)],
        "after the fourth compaction",
    )
    .await;
    if let Some(kept) = b.retained("/z/").await {
        assert_eq!(
            kept,
            vec![("/z/b".to_string(), r8, false)],
            "the versions kept after the fourth compaction"
        );
    }
}

/// Issue 14, update-only histories: whatever the compactions, reads return the newest
/// version, a list at the compact revision returns the version of that moment, and a
/// watch from the compact revision delivers the later updates with their previous
/// values.
pub async fn updates_never_fall_back_across_compactions(b: &super::Backend) {
    let store = &*b.store;
    let mut rev = store.create("/u/a", b"0".to_vec()).await.unwrap();
    let mut history = vec![(rev, 0u32)];
    let other = store.create("/u/b", b"fixed".to_vec()).await.unwrap();
    let mut compacted = 0;
    for round in 0..6u32 {
        for i in 1..=3u32 {
            let n = round * 3 + i;
            rev = store
                .update("/u/a", n.to_string().into_bytes(), rev)
                .await
                .unwrap();
            history.push((rev, n));
        }
        // compact to the middle of this round's updates, or to its end
        let (target, value_then) = if round % 2 == 0 {
            history[history.len() - 2]
        } else {
            history[history.len() - 1]
        };
        if target > compacted {
            store.compact(target).await.unwrap();
            compacted = target;
        }
        b.settle().await;
        // exactly what etcd keeps: the version of the compact revision and later ones
        if let Some(kept) = b.retained("/u/").await {
            let mut want: Vec<_> = history
                .iter()
                .filter(|(r, _)| *r >= target)
                .map(|(r, _)| ("/u/a".to_string(), *r, false))
                .collect();
            want.push(("/u/b".to_string(), other, false));
            assert_eq!(kept, want, "round {round}: the versions kept");
        }
        let newest = history.last().unwrap();
        let kv = store.get("/u/a").await.unwrap().kv.unwrap();
        assert_eq!(
            (kv.value, kv.mod_revision),
            (newest.1.to_string().into_bytes(), newest.0),
            "round {round}: a point read returns the newest version"
        );
        let (_, latest) = snapshot(store, "/u/", 0).await;
        assert_eq!(
            latest.get("/u/a").map(|(v, _, r)| (v.clone(), *r)),
            Some((newest.1.to_string().into_bytes(), newest.0)),
            "round {round}: a list returns the newest version"
        );
        assert_eq!(latest.get("/u/b").map(|(_, _, r)| *r), Some(other));
        let (_, then) = snapshot(store, "/u/", compacted).await;
        assert_eq!(
            then.get("/u/a").map(|(v, _, _)| v.clone()),
            Some(value_then.to_string().into_bytes()),
            "round {round}: a list at the compact revision {compacted}"
        );
        // the watch from the compact revision delivers each later update once, with
        // the version it replaced
        let later: Vec<_> = history.iter().filter(|(r, _)| *r > compacted).collect();
        let mut w = store.watch("/u/", compacted).await.unwrap();
        let mut prev_value = value_then;
        for (r, n) in later {
            let e = next_event(&mut w).await;
            assert_eq!(
                (e.kind, e.revision(), e.kv.value.clone()),
                (EventKind::Put, *r, n.to_string().into_bytes()),
                "round {round}: watch from {compacted}"
            );
            assert_eq!(
                e.prev.map(|p| p.value),
                Some(prev_value.to_string().into_bytes()),
                "round {round}: previous value of the event at {r}"
            );
            prev_value = *n;
        }
    }
}

/// A compaction at the first revision of a fresh store, then the same again: refused
/// as compacted, naming revision 1 (etcd's own report of it needed a second look:
/// a watch from revision 1, its usual probe, is not refused at compact revision 1).
pub async fn compacting_the_first_revision_twice(store: &dyn Store) {
    let first = store.current_revision().await.unwrap();
    assert_eq!(first, 1, "a fresh store starts at revision 1");
    store.compact(first).await.unwrap();
    let again = tokio::time::timeout(TIMEOUT, store.compact(first))
        .await
        .expect("the second compaction must answer");
    assert_eq!(
        again,
        Err(StoreError::Compacted {
            requested: 1,
            compact_revision: 1
        })
    );
    let r = store.create("/f/a", b"1".to_vec()).await.unwrap();
    assert_eq!(
        store.list("/f/", at(first)).await.unwrap().kvs.len(),
        0,
        "the compact revision itself stays readable"
    );
    store.compact(r).await.unwrap();
    assert_eq!(store.get("/f/a").await.unwrap().kv.unwrap().mod_revision, r);
}
