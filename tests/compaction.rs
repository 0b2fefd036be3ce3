//! Issue 14 end to end: with the real `skua server` on its embedded sled store, objects
//! deleted (or updated) after living across a compaction stay deleted (or updated)
//! through further compactions, a clean restart and a SIGKILL; and a client creating,
//! merge-patching, deleting and reading ConfigMaps against a model while the server
//! compacts every second sees no discrepancy (the check that found 257 in 6 845
//! operations before the fix).
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use common::{SkuaServer, admin_request, admin_request_as, eventually};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const CMS: &str = "/api/v1/namespaces/default/configmaps";
const SECRETS: &str = "/api/v1/namespaces/default/secrets";

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn rv(obj: &Value) -> i64 {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn create_cm(server: &SkuaServer, name: &str, state: &str) -> i64 {
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name}, "data": {"state": state}});
    let (code, out) = admin_request(server, "POST", CMS, Some(&body.to_string()));
    assert_eq!(code, 201, "create {name}: {out}");
    rv(&json_of(&out))
}

/// Whether the server's compaction has passed `revision`: a list at exactly the
/// revision before it (read from the datastore, never from the watch cache) is
/// refused with 410 Expired once the history it needs is gone.
fn compacted_past(server: &SkuaServer, revision: i64) -> bool {
    let (code, _) = admin_request(
        server,
        "GET",
        &format!(
            "{CMS}?resourceVersion={}&resourceVersionMatch=Exact",
            revision - 1
        ),
        None,
    );
    code == 410
}

/// The ConfigMaps `prefix*` as a list shows them: name → (state, resourceVersion).
fn listed(server: &SkuaServer, prefix: &str) -> (i64, BTreeMap<String, (String, i64)>) {
    let (code, out) = admin_request(server, "GET", CMS, None);
    assert_eq!(code, 200, "{out}");
    let list = json_of(&out);
    let items = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|cm| cm["metadata"]["name"].as_str().unwrap().starts_with(prefix))
        .map(|cm| {
            (
                cm["metadata"]["name"].as_str().unwrap().to_string(),
                (cm["data"]["state"].as_str().unwrap().to_string(), rv(cm)),
            )
        })
        .collect();
    (rv(&list), items)
}

/// Point reads and the list agree with `want`, and deleted objects answer 404 to
/// GET, PATCH and DELETE.
fn check(
    server: &SkuaServer,
    want: &BTreeMap<String, (String, i64)>,
    deleted: &[String],
    when: &str,
) {
    let (_, got) = listed(server, "zombie-");
    assert_eq!(&got, want, "{when}: the list");
    for (name, (state, version)) in want {
        let (code, out) = admin_request(server, "GET", &format!("{CMS}/{name}"), None);
        assert_eq!(code, 200, "{when}: GET {name}: {out}");
        let cm = json_of(&out);
        assert_eq!(
            (cm["data"]["state"].as_str().unwrap(), rv(&cm)),
            (state.as_str(), *version),
            "{when}: GET {name}"
        );
    }
    for name in deleted {
        let path = format!("{CMS}/{name}");
        let (code, out) = admin_request(server, "GET", &path, None);
        assert_eq!(code, 404, "{when}: deleted {name} came back: {out}");
        let (code, out) = admin_request_as(
            server,
            "PATCH",
            &path,
            "application/merge-patch+json",
            Some(r#"{"data":{"state":"patched"}}"#),
        );
        assert_eq!(code, 404, "{when}: PATCH of deleted {name}: {out}");
        let (code, out) = admin_request(server, "DELETE", &path, None);
        assert_eq!(code, 404, "{when}: DELETE of deleted {name}: {out}");
    }
    let (code, out) = admin_request(server, "GET", &format!("{SECRETS}/revoked"), None);
    assert_eq!(code, 404, "{when}: the deleted Secret came back: {out}");
}

#[test]
fn deleted_objects_stay_deleted_across_compactions_and_restarts() {
    let mut server = SkuaServer::start_with_config("datastore-compaction-interval: 1s\n");
    let mut want = BTreeMap::new();
    let mut first = 0;
    for i in 0..10 {
        let name = format!("zombie-{i}");
        let version = create_cm(&server, &name, "alive");
        first = if first == 0 { version } else { first };
        want.insert(name, ("alive".to_string(), version));
    }
    let secret = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "revoked"}, "data": {"token": "czNjcmV0"}});
    let (code, out) = admin_request(&server, "POST", SECRETS, Some(&secret.to_string()));
    assert_eq!(code, 201, "{out}");
    let secret_rv = rv(&json_of(&out));
    // every object lives across a compaction
    eventually(30, "a compaction past the creations", || {
        compacted_past(&server, secret_rv).then_some(())
    });
    // then half are deleted and half updated
    let mut deleted = Vec::new();
    let mut last = 0;
    for i in 0..10 {
        let name = format!("zombie-{i}");
        let path = format!("{CMS}/{name}");
        if i % 2 == 0 {
            let (code, out) = admin_request(&server, "DELETE", &path, None);
            assert_eq!(code, 200, "{out}");
            want.remove(&name);
            deleted.push(name);
        } else {
            let (code, out) = admin_request_as(
                &server,
                "PATCH",
                &path,
                "application/merge-patch+json",
                Some(r#"{"data":{"state":"updated"}}"#),
            );
            assert_eq!(code, 200, "{out}");
            let version = rv(&json_of(&out));
            want.insert(name, ("updated".to_string(), version));
            last = version;
        }
    }
    let (code, out) = admin_request(&server, "DELETE", &format!("{SECRETS}/revoked"), None);
    assert_eq!(code, 200, "{out}");
    check(&server, &want, &deleted, "right after the deletions");
    // compactions past the deletions and updates; keep looking for a while, as the
    // purge after each compaction runs in the background
    let (now, _) = listed(&server, "zombie-");
    assert!(now > last);
    eventually(30, "a compaction past the deletions", || {
        compacted_past(&server, now).then_some(())
    });
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        check(&server, &want, &deleted, "after compactions");
        std::thread::sleep(Duration::from_millis(250));
    }
    server.restart();
    check(&server, &want, &deleted, "after a clean restart");
    // history for another compaction after the restart
    let extra = create_cm(&server, "other", "x");
    eventually(30, "a compaction after the restart", || {
        compacted_past(&server, extra).then_some(())
    });
    check(
        &server,
        &want,
        &deleted,
        "after a compaction after the restart",
    );
    server.crash_restart();
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        check(&server, &want, &deleted, "after a SIGKILL and restart");
        std::thread::sleep(Duration::from_millis(250));
    }
    // a deleted name is free again: creating it is not refused as AlreadyExists
    let version = create_cm(&server, "zombie-0", "reborn");
    want.insert("zombie-0".to_string(), ("reborn".to_string(), version));
    deleted.retain(|n| n != "zombie-0");
    check(
        &server,
        &want,
        &deleted,
        "after creating a deleted name again",
    );
}

/// The issue's randomized check through the API, against a model, with the server
/// compacting every second: creates, merge patches, deletes and reads of 30
/// ConfigMaps for a while, then a restart, then reads of everything.
#[test]
fn a_client_sees_no_discrepancy_while_the_server_compacts() {
    let mut server = SkuaServer::start_with_config("datastore-compaction-interval: 1s\n");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("seed {seed}");
    let mut rng = seed;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    // name → state, for the objects that exist
    let mut model: BTreeMap<String, String> = BTreeMap::new();
    let mut ops = 0;
    let mut discrepancies = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(25) {
        ops += 1;
        let name = format!("cm-{}", next(30));
        let path = format!("{CMS}/{name}");
        let state = format!("s{ops}");
        let exists = model.contains_key(&name);
        match next(4) {
            0 => {
                let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": name}, "data": {"state": state}});
                let (code, out) = admin_request(&server, "POST", CMS, Some(&body.to_string()));
                match (exists, code) {
                    (false, 201) => {
                        model.insert(name, state);
                    }
                    (true, 409) => {}
                    _ => discrepancies
                        .push(format!("create {name} (exists: {exists}): {code} {out}")),
                }
            }
            1 => {
                let patch = json!({"data": {"state": state}}).to_string();
                let (code, out) = admin_request_as(
                    &server,
                    "PATCH",
                    &path,
                    "application/merge-patch+json",
                    Some(&patch),
                );
                match (exists, code) {
                    (true, 200) => {
                        model.insert(name, state);
                    }
                    (false, 404) => {}
                    _ => {
                        discrepancies.push(format!("patch {name} (exists: {exists}): {code} {out}"))
                    }
                }
            }
            2 => {
                let (code, out) = admin_request(&server, "DELETE", &path, None);
                match (exists, code) {
                    (true, 200) => {
                        model.remove(&name);
                    }
                    (false, 404) => {}
                    _ => discrepancies
                        .push(format!("delete {name} (exists: {exists}): {code} {out}")),
                }
            }
            _ => {
                let (code, out) = admin_request(&server, "GET", &path, None);
                let got = (code == 200)
                    .then(|| json_of(&out)["data"]["state"].as_str().map(String::from))
                    .flatten();
                if code != 200 && code != 404 || got.as_ref() != model.get(&name) {
                    discrepancies.push(format!(
                        "get {name}: {code} {got:?}, the model has {:?}",
                        model.get(&name)
                    ));
                }
            }
        }
    }
    let check_all = |server: &SkuaServer, when: &str| {
        let (_, listed) = listed(server, "cm-");
        let listed: BTreeMap<String, String> =
            listed.into_iter().map(|(k, (s, _))| (k, s)).collect();
        assert_eq!(listed, model, "{when}: the list and the model disagree");
    };
    println!(
        "{ops} operations in {:.0} s against a server compacting every second: {} discrepancies",
        started.elapsed().as_secs_f64(),
        discrepancies.len()
    );
    assert!(discrepancies.is_empty(), "seed {seed}: {discrepancies:#?}");
    check_all(&server, "after the run");
    // give the compactor a few more rounds over the final state, then restart
    std::thread::sleep(Duration::from_secs(3));
    check_all(&server, "after more compactions");
    server.restart();
    check_all(&server, "after a restart");
}
