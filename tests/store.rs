//! The `Store` conformance suite and the watch checker, run against every backend:
//! memory, sled, and a real etcd started on 127.0.0.1 for each test.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use common::{Backend, conformance, watch_checker};

macro_rules! every_backend {
    ($($backend:ident),*) => {$(
        mod $backend {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn create_if_absent() {
                let b = Backend::$backend().await;
                conformance::create_if_absent(&*b.store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn watched_writes_are_readable() {
                let b = Backend::$backend().await;
                conformance::watched_writes_are_readable(b.store.clone()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn cas_under_contention_ends_at_exactly_n() {
                let b = Backend::$backend().await;
                conformance::cas_under_contention(b.store.clone()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn update_and_delete_are_guarded_by_revision() {
                let b = Backend::$backend().await;
                conformance::update_and_delete_are_guarded(&*b.store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn list_pages_form_one_consistent_snapshot() {
                let b = Backend::$backend().await;
                conformance::list_pages_consistently(&*b.store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn list_at_past_revisions() {
                let b = Backend::$backend().await;
                conformance::list_at_past_revisions(&*b.store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn compaction_reports_the_oldest_available_revision() {
                let b = Backend::$backend().await;
                conformance::compaction_discards_history(&*b.store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn compacting_the_first_revision_twice() {
                let b = Backend::$backend().await;
                conformance::compacting_the_first_revision_twice(&*b.store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn deleted_keys_stay_deleted_across_compactions() {
                let b = Backend::$backend().await;
                conformance::deleted_keys_stay_deleted_across_compactions(&b).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn updates_never_fall_back_across_compactions() {
                let b = Backend::$backend().await;
                conformance::updates_never_fall_back_across_compactions(&b).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn watch_resumes_exactly_after_its_revision() {
                let b = Backend::$backend().await;
                conformance::watch_resumes_exactly_after(&*b.store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn watch_guarantees_hold_under_concurrent_writers() {
                let b = Backend::$backend().await;
                let rec = watch_checker::record(b.store.clone(), 8, 150).await;
                match watch_checker::check_recording(&rec) {
                    Ok(summary) => println!("{}: {summary}", stringify!($backend)),
                    Err(violation) => panic!("{}: {violation}", stringify!($backend)),
                }
            }
        }
    )*};
}

every_backend!(memory, sled, etcd);

/// Debian's etcd 3.4.23 has etcd#15220 (progress notifications ahead of events): the
/// backend must refuse progress requests there with an error that says why, rather
/// than hand out wrong bookmarks. On a fixed etcd it must deliver them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_progress_requests_follow_the_server_version() {
    let b = Backend::etcd().await;
    let mut w = b.store.watch("/p/", 0).await.unwrap();
    let r = b.store.create("/p/a", b"1".to_vec()).await.unwrap();
    if b.store.supports_progress() {
        w.request_progress().await.unwrap();
        loop {
            match w.next().await.unwrap().unwrap() {
                skua::store::WatchMessage::Progress(p) => break assert!(p >= r),
                skua::store::WatchMessage::Event(_) => continue,
            }
        }
    } else {
        match w.request_progress().await {
            Err(skua::store::StoreError::Unsupported(why)) => {
                assert!(why.contains("15220"), "{why}")
            }
            other => panic!("a defective etcd must refuse progress requests, got {other:?}"),
        }
    }
}

/// The checker itself must catch each kind of violation, or its passing means nothing.
mod checker_catches {
    use super::watch_checker::{History, Op, check_stream};
    use skua::store::{Event, EventKind, KeyValue, WatchMessage};

    fn op(revision: i64, key: &str, value: &str) -> Op {
        Op {
            revision,
            key: key.into(),
            kind: EventKind::Put,
            value: value.into(),
        }
    }

    fn ev(revision: i64, key: &str, value: &str, prev: Option<(i64, &str)>) -> WatchMessage {
        let kv = |r, v: &str| KeyValue {
            key: key.into(),
            value: v.into(),
            create_revision: r,
            mod_revision: r,
        };
        WatchMessage::Event(Event {
            kind: EventKind::Put,
            kv: kv(revision, value),
            prev: prev.map(|(r, v)| kv(r, v)),
        })
    }

    fn history() -> History {
        History::new([op(2, "/p/a", "1"), op(3, "/p/b", "1"), op(4, "/p/a", "2")])
    }

    fn good() -> Vec<WatchMessage> {
        vec![
            ev(2, "/p/a", "1", None),
            ev(3, "/p/b", "1", None),
            ev(4, "/p/a", "2", Some((2, "1"))),
        ]
    }

    fn violation(stream: Vec<WatchMessage>) -> String {
        check_stream(&history(), "/p/", 1, 4, &stream).expect_err("the checker missed a violation")
    }

    #[test]
    fn nothing_in_a_correct_stream() {
        let mut s = good();
        s.insert(2, WatchMessage::Progress(3));
        check_stream(&history(), "/p/", 1, 4, &s).unwrap();
    }

    #[test]
    fn reordering() {
        let mut s = good();
        s.swap(0, 1);
        assert!(violation(s).starts_with("ordered"));
    }

    #[test]
    fn duplicates() {
        let mut s = good();
        s.insert(1, s[0].clone());
        assert!(violation(s).starts_with("unique"));
    }

    #[test]
    fn gaps() {
        let mut s = good();
        s.remove(1);
        assert!(violation(s).starts_with("reliable"));
    }

    #[test]
    fn partial_changes() {
        let mut s = good();
        s[2] = ev(4, "/p/a", "2", None); // previous version lost
        assert!(violation(s).starts_with("atomic"));
        let mut s = good();
        s[1] = ev(3, "/p/b", "other", None);
        assert!(violation(s).starts_with("atomic"));
    }

    #[test]
    fn early_bookmarks() {
        let mut s = good();
        s.insert(1, WatchMessage::Progress(3)); // revision 3 not yet delivered
        assert!(violation(s).starts_with("bookmarkable"));
    }
}
