//! What only the embedded backend promises: slow watchers are cut off without slowing
//! writers, damaged or foreign data dirs are refused and left untouched, history is
//! kept bounded on disk under steady churn, and data survives a clean restart.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use skua::store::sled::{SledOptions, SledStore};
use skua::store::{ListOptions, Store, StoreError, WatchMessage};
use std::path::Path;
use std::time::Duration;

fn open_err(path: &Path) -> String {
    match SledStore::open(SledOptions::new(path)) {
        Err(StoreError::DataDir(msg)) => msg,
        Err(e) => panic!("expected a data-dir error, got {e}"),
        Ok(_) => panic!("opening {} must fail", path.display()),
    }
}

type Items = Vec<(Vec<u8>, Vec<u8>)>;

/// Every tree of a sled database with its contents (sled rewrites its own files when
/// it opens, so "untouched" is checked on the stored data, not on bytes).
fn contents(path: &Path) -> Vec<(Vec<u8>, Items)> {
    let db = sled::open(path).unwrap();
    let mut out = Vec::new();
    for name in db.tree_names() {
        let tree = db.open_tree(&name).unwrap();
        let items = tree
            .iter()
            .map(|kv| kv.unwrap())
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        out.push((name.to_vec(), items));
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_watcher_is_cut_off_and_never_blocks_writers() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = SledOptions::new(dir.path().join("db"));
    opts.watch_buffer = 16;
    let store = SledStore::open(opts).unwrap();
    let mut slow = store.watch("/s/", 0).await.unwrap();
    // 200 writes complete although `slow` reads nothing
    let writes = async {
        for i in 0..200 {
            store
                .create(&format!("/s/{i}"), b"x".to_vec())
                .await
                .unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(30), writes)
        .await
        .expect("writers were blocked");
    // a watcher that starts now still works: the cut-off hit only the slow one
    let mut fresh = store.watch("/s/", 0).await.unwrap();
    let r = store.create("/s/after", b"x".to_vec()).await.unwrap();
    match fresh.next().await {
        Some(Ok(WatchMessage::Event(e))) => assert_eq!(e.revision(), r),
        other => panic!("a new watcher must see the next write, got {other:?}"),
    }
    // the slow watcher was cut off from the live stream, but catches up from history:
    // every event, in order, none twice, and then the live ones again
    let mut seen = Vec::new();
    while seen.len() < 201 {
        match tokio::time::timeout(Duration::from_secs(10), slow.next()).await {
            Ok(Some(Ok(WatchMessage::Event(e)))) => seen.push(e.revision()),
            Ok(Some(Ok(WatchMessage::Progress(_)))) => {}
            other => panic!("the slow watcher must catch up, got {other:?} after {seen:?}"),
        }
    }
    let first = seen[0];
    assert_eq!(seen, (first..first + 201).collect::<Vec<_>>());
    assert_eq!(*seen.last().unwrap(), r);
    let live = store.create("/s/live", b"x".to_vec()).await.unwrap();
    match slow.next().await {
        Some(Ok(WatchMessage::Event(e))) => assert_eq!(e.revision(), live),
        other => panic!("the caught-up watcher must see live writes, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_watcher_whose_history_was_compacted_gets_410() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = SledOptions::new(dir.path().join("db"));
    opts.watch_buffer = 16;
    let store = SledStore::open(opts).unwrap();
    let mut slow = store.watch("/s/", 0).await.unwrap();
    let mut last = 0;
    for i in 0..100 {
        last = store
            .create(&format!("/s/{i}"), b"x".to_vec())
            .await
            .unwrap();
    }
    store.compact(last).await.unwrap();
    // what fitted in the buffer, in order, then the compaction ends the stream
    let mut prev = 0;
    loop {
        match slow.next().await {
            Some(Ok(WatchMessage::Event(e))) => {
                assert!(e.revision() > prev);
                prev = e.revision();
            }
            Some(Ok(WatchMessage::Progress(_))) => {}
            Some(Err(StoreError::Compacted { .. })) => break,
            other => panic!("expected Compacted, got {other:?}"),
        }
    }
    assert!(
        prev > 0 && prev < last,
        "only the buffered events came: {prev}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_a_restart_and_revisions_continue() {
    let dir = tempfile::tempdir().unwrap();
    let (r1, r2);
    {
        let store = common::open_sled(dir.path());
        r1 = store.create("/r/a", b"1".to_vec()).await.unwrap();
        r2 = store.update("/r/a", b"2".to_vec(), r1).await.unwrap();
        store.compact(r2).await.unwrap();
    }
    let store = common::open_sled(dir.path());
    assert_eq!(store.current_revision().await.unwrap(), r2);
    let kv = store.get("/r/a").await.unwrap().kv.unwrap();
    assert_eq!(
        (kv.value.as_slice(), kv.mod_revision, kv.create_revision),
        (&b"2"[..], r2, r1)
    );
    assert!(matches!(
        store.list("/r/", ListOptions { revision: r1, ..Default::default() }).await,
        Err(StoreError::Compacted { compact_revision, .. }) if compact_revision == r2
    ));
    assert!(store.create("/r/b", b"1".to_vec()).await.unwrap() > r2);
    store.check_integrity().unwrap();
}

#[test]
fn a_newer_format_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    drop(SledStore::open(SledOptions::new(&path)).unwrap());
    {
        let db = sled::open(&path).unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert("format", &7u32.to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    let before = contents(&path);
    let msg = open_err(&path);
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(
        msg.contains("newer skua") && msg.contains("format 7"),
        "{msg}"
    );
    assert_eq!(contents(&path), before, "the stored data must not change");
}

#[test]
fn a_damaged_store_is_never_initialised_over() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let store = SledStore::open(SledOptions::new(&path)).unwrap();
        rt.block_on(async {
            for i in 0..50 {
                store
                    .create(&format!("/d/{i}"), vec![b'x'; 500])
                    .await
                    .unwrap();
            }
        });
    }
    // overwrite the database file with garbage, keeping its size
    let db_file = path.join("db");
    let len = std::fs::metadata(&db_file).unwrap().len() as usize;
    std::fs::write(&db_file, vec![0xA5u8; len]).unwrap();
    let msg = open_err(&path);
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(
        msg.contains("move the directory away"),
        "the error says what to do: {msg}"
    );
    // and a second attempt still refuses: the first did not initialise anything
    let again = open_err(&path);
    assert_eq!(again, msg);
}

#[test]
fn foreign_data_and_a_file_in_place_of_the_dir_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let foreign = dir.path().join("foreign");
    {
        let db = sled::open(&foreign).unwrap();
        db.open_tree("versions").unwrap().insert("k", "v").unwrap();
        db.flush().unwrap();
    }
    assert!(open_err(&foreign).contains("did not write"));
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    assert!(open_err(&file).contains("not a directory"));
}

#[test]
fn a_store_in_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let _first = SledStore::open(SledOptions::new(&path)).unwrap();
    let msg = open_err(&path);
    assert!(msg.contains("in use by another process"), "{msg}");
}

/// kine/sqlite grows without bound under churn; with compaction this store must not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_on_disk_stays_bounded_under_steady_churn() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::open_sled(dir.path());
    let keys = 200;
    let value = vec![b'v'; 1024];
    let mut revs = vec![0; keys];
    for (i, r) in revs.iter_mut().enumerate() {
        *r = store
            .create(&format!("/churn/{i}"), value.clone())
            .await
            .unwrap();
    }
    let mut sizes = Vec::new();
    for _phase in 0..8 {
        for round in 0..20 {
            for (i, r) in revs.iter_mut().enumerate() {
                let mut v = value.clone();
                v[0] = round as u8;
                *r = store.update(&format!("/churn/{i}"), v, *r).await.unwrap();
            }
        }
        let now = store.current_revision().await.unwrap();
        store.compact(now).await.unwrap();
        store.wait_purged();
        sizes.push(store.size_on_disk().unwrap());
    }
    println!("size on disk after each phase of 4000 updates (bytes): {sizes:?}");
    // unbounded growth would be roughly linear: phase 8 near 8/3 of phase 3
    let settled = sizes[2];
    let late = sizes[5..].iter().copied().max().unwrap();
    assert!(
        late <= settled * 2,
        "the database keeps growing under churn: {sizes:?}"
    );
    store.check_integrity().unwrap();
    assert_eq!(
        store
            .list("/churn/", ListOptions::default())
            .await
            .unwrap()
            .count,
        keys
    );
}

/// Every Secret is in the datastore: opening it makes its directory 0700 and its files
/// 0600, also those an older install left readable, without following links.
#[test]
fn the_datastore_is_owner_only_after_opening() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    {
        let store = common::open_sled(dir.path());
        drop(store);
    }
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    // an older install's permissions, and a link pointing out of the store
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut files = Vec::new();
    for e in std::fs::read_dir(&db).unwrap().flatten() {
        if e.file_type().unwrap().is_file() {
            std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
            files.push(e.path());
        }
    }
    assert!(!files.is_empty());
    let outside = dir.path().join("outside");
    std::fs::write(&outside, "x").unwrap();
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::os::unix::fs::symlink(&outside, db.join("link")).unwrap();
    let store = common::open_sled(dir.path());
    assert_eq!(mode(&db), 0o700);
    for f in &files {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }
    assert_eq!(mode(&outside), 0o644, "a link is not followed");
    drop(store);
}
