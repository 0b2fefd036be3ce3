//! RBAC as upstream's `--authorization-mode=Node,RBAC`: a ServiceAccount gets what its
//! bindings grant, in their namespace, and nothing more; it cannot grant itself more
//! (escalation prevention); a binding's roleRef is fixed. Driven with kubectl 1.27 and
//! 1.33 using the account's own token.
// test helpers: a failed unwrap is a failed test
#![allow(clippy::unwrap_used)]

mod common;

use common::{SkuaServer, eventually, kubectl, kubectl_run, token_kubeconfig};
use std::path::Path;

fn run_as(kubeconfig: &Path, version: &str, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(kubectl(version))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn a_service_account_gets_what_its_bindings_grant_and_cannot_grant_itself_more() {
    let server = SkuaServer::start();
    let admin = |args: &[&str]| {
        let (ok, out) = kubectl_run(&server, "1.33", args);
        assert!(ok, "{args:?}: {out}");
        out
    };
    admin(&["create", "namespace", "team"]);
    admin(&["create", "namespace", "other"]);
    admin(&["create", "serviceaccount", "ci", "-n", "team"]);
    admin(&["create", "serviceaccount", "ci", "-n", "other"]);
    let token = admin(&["create", "token", "ci", "-n", "team"]);
    let kc = token_kubeconfig(&server, "team-ci", token.trim());
    let ci = |version: &str, args: &[&str]| run_as(&kc, version, args);
    let user = "system:serviceaccount:team:ci";

    // nothing is granted yet
    for version in ["1.27", "1.33"] {
        let (ok, out) = ci(version, &["get", "pods", "-n", "team"]);
        assert!(
            !ok && out.contains(&format!(
                r#"pods is forbidden: User "{user}" cannot list resource "pods" in API group "" in the namespace "team""#
            )),
            "kubectl {version}: {out}"
        );
    }

    // a Role and a RoleBinding: reading pods in its namespace
    admin(&[
        "create",
        "role",
        "pod-reader",
        "--verb=get,list,watch",
        "--resource=pods",
        "-n",
        "team",
    ]);
    admin(&[
        "create",
        "rolebinding",
        "ci-reads",
        "--role=pod-reader",
        "--serviceaccount=team:ci",
        "-n",
        "team",
    ]);
    for version in ["1.27", "1.33"] {
        eventually(10, "the binding to take effect", || {
            ci(version, &["get", "pods", "-n", "team"]).0.then_some(())
        });
    }
    // `kubectl auth can-i` asks the same chain (SelfSubjectAccessReview)
    for version in ["1.27", "1.33"] {
        let (ok, out) = ci(version, &["auth", "can-i", "list", "pods", "-n", "team"]);
        assert!(ok && out.trim() == "yes", "kubectl {version}: {out}");
        let (ok, out) = ci(version, &["auth", "can-i", "delete", "pods", "-n", "team"]);
        assert!(!ok && out.trim() == "no", "kubectl {version}: {out}");
        let (ok, out) = ci(version, &["auth", "can-i", "list", "pods", "-n", "other"]);
        assert!(!ok && out.trim() == "no", "kubectl {version}: {out}");
    }
    // and a SubjectAccessReview asks it about someone else
    let review = server.dir.path().join("sar.json");
    std::fs::write(
        &review,
        format!(
            r#"{{"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": {{"user": "{user}", "groups": ["system:serviceaccounts"], "resourceAttributes": {{"namespace": "team", "verb": "watch", "resource": "pods"}}}}}}"#
        ),
    )
    .unwrap();
    // (client-side validation looks the kind up among CRDs, which come with issue 18)
    let out = admin(&[
        "create",
        "--validate=false",
        "-f",
        review.to_str().unwrap(),
        "-o",
        "jsonpath={.status.allowed}",
    ]);
    assert_eq!(out.trim(), "true");
    // and nothing beyond: another namespace, another resource, another verb
    let (ok, out) = ci("1.33", &["get", "pods", "-n", "other"]);
    assert!(!ok && out.contains(r#"in the namespace "other""#), "{out}");
    let (ok, out) = ci("1.33", &["get", "deployments", "-n", "team"]);
    assert!(
        !ok && out.contains(&format!(
            r#"deployments.apps is forbidden: User "{user}" cannot list resource "deployments" in API group "apps" in the namespace "team""#
        )),
        "{out}"
    );
    let (ok, out) = ci("1.27", &["delete", "pod", "web", "-n", "team"]);
    assert!(
        !ok && out.contains(&format!(
            r#"pods "web" is forbidden: User "{user}" cannot delete resource "pods" in API group "" in the namespace "team""#
        )),
        "{out}"
    );
    // the account of the same name in another namespace is another user
    let other = admin(&["create", "token", "ci", "-n", "other"]);
    let other_kc = token_kubeconfig(&server, "other-ci", other.trim());
    let (ok, out) = run_as(&other_kc, "1.33", &["get", "pods", "-n", "team"]);
    assert!(
        !ok && out.contains(r#"User "system:serviceaccount:other:ci" cannot list"#),
        "{out}"
    );

    // the right to write roles and bindings is not the right to grant anything
    admin(&[
        "create",
        "role",
        "rbac-editor",
        "--verb=create,get,list,update,patch",
        "--resource=roles,rolebindings",
        "-n",
        "team",
    ]);
    admin(&[
        "create",
        "rolebinding",
        "ci-rbac",
        "--role=rbac-editor",
        "--serviceaccount=team:ci",
        "-n",
        "team",
    ]);
    eventually(10, "the second binding to take effect", || {
        ci("1.33", &["get", "roles", "-n", "team"]).0.then_some(())
    });
    // what it holds, it may grant
    let (ok, out) = ci(
        "1.33",
        &[
            "create",
            "role",
            "mine",
            "--verb=get,list",
            "--resource=pods",
            "-n",
            "team",
        ],
    );
    assert!(ok, "{out}");
    let (ok, out) = ci(
        "1.33",
        &[
            "create",
            "rolebinding",
            "mine",
            "--role=mine",
            "--serviceaccount=team:ci",
            "-n",
            "team",
        ],
    );
    assert!(ok, "{out}");
    // what it does not hold, it may not
    let (ok, out) = ci(
        "1.33",
        &[
            "create",
            "role",
            "more",
            "--verb=get,delete",
            "--resource=pods,secrets",
            "-n",
            "team",
        ],
    );
    assert!(
        !ok && out.contains(&format!(
            r#"roles.rbac.authorization.k8s.io "more" is forbidden: user "{user}" (groups=["#
        )) && out.contains("is attempting to grant RBAC permissions not currently held:")
            && out.contains(r#"{APIGroups:[""], Resources:["pods"], Verbs:["delete"]}"#)
            && out.contains(r#"{APIGroups:[""], Resources:["secrets"], Verbs:["get" "delete"]}"#),
        "{out}"
    );
    assert!(!ci("1.33", &["get", "role", "more", "-n", "team"]).0);
    // a role large in every list (2 000 groups × resources × verbs: 8e9 parts when
    // broken down) is refused at once with a bounded message, not worked through
    let many = |p: &str| {
        (0..2000)
            .map(|i| format!("\"{p}{i}\""))
            .collect::<Vec<_>>()
            .join(",")
    };
    let bomb = server.dir.path().join("bomb.json");
    std::fs::write(
        &bomb,
        format!(
            r#"{{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"Role","metadata":{{"name":"bomb","namespace":"team"}},"rules":[{{"apiGroups":[{}],"resources":[{}],"verbs":[{}]}}]}}"#,
            many("g"),
            many("r"),
            many("v")
        ),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let (ok, out) = ci("1.33", &["create", "-f", bomb.to_str().unwrap()]);
    assert!(
        !ok && out.contains("is attempting to grant RBAC permissions not currently held"),
        "{}",
        &out[..out.len().min(2000)]
    );
    assert!(
        out.lines().count() < 1_100,
        "the refusal lists at most 1 000 rules: {} lines",
        out.lines().count()
    );
    assert!(!ci("1.33", &["get", "role", "bomb", "-n", "team"]).0);
    // the cluster administrator holds it whole: no breakdown, accepted
    admin(&["create", "-f", bomb.to_str().unwrap()]);
    admin(&["delete", "role", "bomb", "-n", "team"]);
    eprintln!("bomb refused and accepted in {:?}", started.elapsed());
    // nor bind a role that grants more, here or cluster-wide
    admin(&[
        "create",
        "clusterrole",
        "powerful",
        "--verb=*",
        "--resource=pods,secrets,configmaps",
    ]);
    let (ok, out) = ci(
        "1.27",
        &[
            "create",
            "rolebinding",
            "grab",
            "--clusterrole=powerful",
            "--serviceaccount=team:ci",
            "-n",
            "team",
        ],
    );
    assert!(
        !ok && out.contains(r#"rolebindings.rbac.authorization.k8s.io "grab" is forbidden"#)
            && out.contains("is attempting to grant RBAC permissions not currently held"),
        "{out}"
    );
    // nor raise a role it may update
    let (ok, out) = ci(
        "1.33",
        &[
            "patch",
            "role",
            "mine",
            "-n",
            "team",
            "--type=json",
            "-p",
            r#"[{"op": "add", "path": "/rules/0/verbs/-", "value": "delete"}]"#,
        ],
    );
    assert!(
        !ok && out.contains("is attempting to grant RBAC permissions not currently held"),
        "{out}"
    );

    // a binding's roleRef never changes, even for an administrator
    let (ok, out) = kubectl_run(
        &server,
        "1.33",
        &[
            "patch",
            "rolebinding",
            "ci-reads",
            "-n",
            "team",
            "--type=merge",
            "-p",
            r#"{"roleRef": {"name": "rbac-editor"}}"#,
        ],
    );
    assert!(
        !ok && out.contains("roleRef: Invalid value") && out.contains("cannot change roleRef"),
        "{out}"
    );

    // taking the bindings away takes the rights away
    admin(&["delete", "rolebinding", "ci-reads", "mine", "-n", "team"]);
    eventually(10, "the binding's removal to take effect", || {
        let (ok, out) = ci("1.33", &["get", "pods", "-n", "team"]);
        (!ok && out.contains("forbidden")).then_some(())
    });
}

/// An unauthenticated request (curl with the CA only): status code and body.
fn anonymous(server: &SkuaServer, path: &str, token: Option<&str>) -> (u16, String) {
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sS", "--cacert"])
        .arg(server.server_ca())
        .args(["-w", "\n%{http_code}"]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = cmd
        .arg(format!("https://127.0.0.1:{}{path}", server.port))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn impersonation_anonymous_requests_and_rules_reviews_follow_upstream() {
    let server = SkuaServer::start_with_config("anonymous-auth: true\n");
    let admin = |args: &[&str]| {
        let (ok, out) = kubectl_run(&server, "1.33", args);
        assert!(ok, "{args:?}: {out}");
        out
    };
    admin(&["create", "namespace", "team"]);
    admin(&["create", "serviceaccount", "ci", "-n", "team"]);
    let token = admin(&["create", "token", "ci", "-n", "team"]);
    let kc = token_kubeconfig(&server, "team-ci", token.trim());
    let ci = |version: &str, args: &[&str]| run_as(&kc, version, args);

    // impersonating needs the impersonate verb on that very user
    // (--raw: a refused impersonation also fails kubectl's discovery, which then
    // reports only "unknown")
    let pods = "/api/v1/namespaces/team/pods";
    for version in ["1.27", "1.33"] {
        let (ok, out) = ci(version, &["get", "--raw", pods, "--as", "alice"]);
        assert!(
            !ok && out.contains(r#"users "alice" is forbidden: User "system:serviceaccount:team:ci" cannot impersonate resource "users" in API group "" at the cluster scope"#),
            "{version}: {out}"
        );
    }
    admin(&[
        "create",
        "clusterrole",
        "impersonate-alice",
        "--verb=impersonate",
        "--resource=users",
        "--resource-name=alice",
    ]);
    admin(&[
        "create",
        "clusterrolebinding",
        "ci-impersonates",
        "--clusterrole=impersonate-alice",
        "--serviceaccount=team:ci",
    ]);
    let whoami = eventually(10, "the impersonation grant", || {
        let (ok, out) = ci("1.33", &["auth", "whoami", "--as", "alice"]);
        ok.then_some(out)
    });
    assert!(
        whoami.contains("alice") && whoami.contains("[system:authenticated]"),
        "{whoami}"
    );
    // as alice, the request has alice's rights (none), not the account's
    let (ok, out) = ci("1.27", &["get", "pods", "-n", "team", "--as", "alice"]);
    assert!(
        !ok && out.contains(r#"User "alice" cannot list resource "pods""#),
        "{out}"
    );
    // another user or a group each need their own grant
    let (ok, out) = ci("1.33", &["get", "pods", "--as", "bob"]);
    assert!(!ok && out.contains(r#"users "bob" is forbidden"#), "{out}");
    let (ok, out) = ci(
        "1.33",
        &[
            "get",
            "pods",
            "--as",
            "alice",
            "--as-group",
            "system:masters",
        ],
    );
    assert!(
        !ok && out.contains(r#"groups "system:masters" is forbidden: User "system:serviceaccount:team:ci" cannot impersonate resource "groups""#),
        "{out}"
    );
    // the administrator sees the impersonated user and groups
    let out = admin(&["auth", "whoami", "--as", "jane", "--as-group", "devs"]);
    assert!(
        out.contains("jane") && out.contains("[devs system:authenticated]"),
        "{out}"
    );

    // a namespace administrator (the aggregated admin role, bound in one namespace)
    admin(&[
        "create",
        "rolebinding",
        "team-admin",
        "--clusterrole=admin",
        "--user=alice",
        "-n",
        "team",
    ]);
    let as_alice = |version: &str, args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--as", "alice"]);
        kubectl_run(&server, version, &all)
    };
    eventually(10, "admin to be aggregated and bound", || {
        as_alice(
            "1.33",
            &[
                "create",
                "deployment",
                "web",
                "--image=busybox",
                "-n",
                "team",
            ],
        )
        .0
        .then_some(())
    });
    for version in ["1.27", "1.33"] {
        assert!(
            as_alice(
                version,
                &["get", "secrets,deployments,rolebindings", "-n", "team"]
            )
            .0
        );
        let (ok, out) = as_alice(version, &["get", "deployments", "-n", "default"]);
        assert!(!ok && out.contains(r#"User "alice" cannot list resource "deployments" in API group "apps" in the namespace "default""#), "{out}");
        let (ok, out) = as_alice(version, &["get", "nodes"]);
        assert!(!ok && out.contains("forbidden"), "{out}");
    }
    // it may hand out what it holds (edit), not more (cluster-admin)
    assert!(
        as_alice(
            "1.33",
            &[
                "create",
                "rolebinding",
                "bob-edits",
                "--clusterrole=edit",
                "--user=bob",
                "-n",
                "team"
            ]
        )
        .0
    );
    let (ok, out) = as_alice(
        "1.33",
        &[
            "create",
            "rolebinding",
            "grab",
            "--clusterrole=cluster-admin",
            "--user=alice",
            "-n",
            "team",
        ],
    );
    assert!(
        !ok && out.contains("is attempting to grant RBAC permissions not currently held"),
        "{out}"
    );
    // can-i, one question and the whole list
    let (ok, out) = as_alice("1.27", &["auth", "can-i", "delete", "pods", "-n", "team"]);
    assert!(ok && out.trim() == "yes", "{out}");
    let (ok, out) = as_alice(
        "1.33",
        &["auth", "can-i", "delete", "pods", "-n", "default"],
    );
    assert!(!ok && out.trim() == "no", "{out}");
    for version in ["1.27", "1.33"] {
        let (ok, out) = as_alice(version, &["auth", "can-i", "--list", "-n", "team"]);
        assert!(ok, "{out}");
        let header = out.lines().next().unwrap_or("");
        assert!(
            header.contains("Resources")
                && header.contains("Non-Resource URLs")
                && header.contains("Verbs"),
            "{out}"
        );
        assert!(
            out.lines()
                .any(|l| l.starts_with("deployments.apps ") && l.contains("create")),
            "{out}"
        );
        assert!(
            out.lines()
                .any(|l| l.starts_with("selfsubjectaccessreviews.authorization.k8s.io")),
            "{out}"
        );
    }
    let (ok, out) = ci("1.33", &["auth", "can-i", "--list", "-n", "default"]);
    assert!(ok && !out.contains("deployments"), "{out}");

    // anonymous: health and version through system:public-info-viewer, nothing else
    let (code, body) = anonymous(&server, "/version", None);
    assert_eq!(code, 200, "{body}");
    assert_eq!(anonymous(&server, "/readyz", None).0, 200);
    let (code, body) = anonymous(&server, "/api/v1/pods", None);
    assert_eq!(code, 403, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        status["message"],
        r#"pods is forbidden: User "system:anonymous" cannot list resource "pods" in API group "" at the cluster scope"#
    );
    let (code, body) = anonymous(&server, "/apis", None);
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains(r#"forbidden: User \"system:anonymous\" cannot get path \"/apis\""#),
        "{body}"
    );
    // a bad credential is never taken for anonymous
    let (code, body) = anonymous(&server, "/version", Some("not-a-token"));
    assert_eq!(code, 401, "{body}");
    assert!(body.contains(r#""reason":"Unauthorized""#), "{body}");
}

#[test]
fn the_default_policy_is_reconciled_at_start_and_anonymous_is_off_by_default() {
    let mut server = SkuaServer::start();
    let admin = |server: &SkuaServer, args: &[&str]| {
        let (ok, out) = kubectl_run(server, "1.33", args);
        assert!(ok, "{args:?}: {out}");
        out
    };
    // k3s' default: no credentials, no answer (even for the version)
    for path in ["/version", "/readyz", "/api"] {
        let (code, body) = anonymous(&server, path, None);
        assert_eq!(code, 401, "{path}: {body}");
    }
    // upstream's roles, annotated for reconciliation, and aggregated
    let view: serde_json::Value = eventually(10, "view to be aggregated", || {
        let out = admin(&server, &["get", "clusterrole", "view", "-o", "json"]);
        let view: serde_json::Value = serde_json::from_str(&out).unwrap();
        view["rules"]
            .as_array()
            .is_some_and(|r| r.len() > 5)
            .then_some(view)
    });
    assert_eq!(
        view["metadata"]["annotations"]["rbac.authorization.kubernetes.io/autoupdate"],
        "true"
    );
    let out = admin(&server, &["get", "clusterrolebindings"]);
    for name in [
        "cluster-admin",
        "system:basic-user",
        "system:public-info-viewer",
        "system:skua-controller",
    ] {
        assert!(
            out.lines().any(|l| l.starts_with(&format!("{name} "))),
            "{name}: {out}"
        );
    }
    // a deleted default comes back; one marked autoupdate=false is left as it is
    admin(&server, &["delete", "clusterrole", "system:discovery"]);
    admin(
        &server,
        &[
            "annotate",
            "clusterrole",
            "system:monitoring",
            "rbac.authorization.kubernetes.io/autoupdate=false",
            "--overwrite",
        ],
    );
    admin(
        &server,
        &[
            "patch",
            "clusterrole",
            "system:monitoring",
            "--type=json",
            "-p",
            r#"[{"op": "replace", "path": "/rules", "value": [{"verbs": ["get"], "nonResourceURLs": ["/metrics"]}]}]"#,
        ],
    );
    admin(
        &server,
        &["label", "clusterrole", "system:basic-user", "team=mine"],
    );
    server.restart();
    let out = admin(
        &server,
        &["get", "clusterrole", "system:discovery", "-o", "json"],
    );
    assert!(out.contains("/apis/*"), "{out}");
    let out = admin(
        &server,
        &["get", "clusterrole", "system:monitoring", "-o", "json"],
    );
    let monitoring: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        monitoring["rules"].as_array().map(Vec::len),
        Some(1),
        "{out}"
    );
    let out = admin(
        &server,
        &["get", "clusterrole", "system:basic-user", "--show-labels"],
    );
    assert!(out.contains("team=mine"), "a user's label stays: {out}");

    // kubectl auth reconcile: creates, then adds what is missing, idempotently
    let file = server.dir.path().join("rbac.yaml");
    let write = |verbs: &str| {
        std::fs::write(
            &file,
            format!("apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: reader, namespace: default}}\nrules:\n- apiGroups: ['']\n  resources: [pods]\n  verbs: [{verbs}]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: reader, namespace: default}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: reader}}\nsubjects:\n- {{kind: User, name: carol, apiGroup: rbac.authorization.k8s.io}}\n"),
        )
        .unwrap();
    };
    write("get");
    for version in ["1.27", "1.33"] {
        let out = admin(
            &server,
            &["auth", "reconcile", "-f", file.to_str().unwrap()],
        );
        assert!(
            out.contains("role.rbac.authorization.k8s.io/reader reconciled"),
            "{version}: {out}"
        );
        assert!(
            out.contains("rolebinding.rbac.authorization.k8s.io/reader reconciled"),
            "{out}"
        );
    }
    write("get, list");
    admin(
        &server,
        &["auth", "reconcile", "-f", file.to_str().unwrap()],
    );
    let out = admin(&server, &["get", "role", "reader", "-o", "json"]);
    assert!(out.contains("\"list\""), "{out}");
    write("watch");
    admin(
        &server,
        &[
            "auth",
            "reconcile",
            "--remove-extra-permissions",
            "-f",
            file.to_str().unwrap(),
        ],
    );
    let out = admin(&server, &["get", "role", "reader", "-o", "json"]);
    assert!(
        out.contains("\"watch\"") && !out.contains("\"list\""),
        "{out}"
    );
    let (ok, out) = kubectl_run(
        &server,
        "1.27",
        &["auth", "can-i", "watch", "pods", "--as", "carol"],
    );
    assert!(ok && out.trim() == "yes", "{out}");
}
