//! RBAC as upstream's `--authorization-mode=Node,RBAC`: a ServiceAccount gets what its
//! bindings grant, in their namespace, and nothing more; it cannot grant itself more
//! (escalation prevention); a binding's roleRef is fixed. Driven with kubectl 1.27 and
//! 1.33 using the account's own token.
// test helpers: a failed unwrap is a failed test
#![allow(clippy::unwrap_used)]

mod common;

use common::{SkuaServer, eventually, kubectl, kubectl_run};
use std::path::{Path, PathBuf};

/// A kubeconfig that authenticates with `token` only (no client certificate).
fn token_kubeconfig(server: &SkuaServer, name: &str, token: &str) -> PathBuf {
    let path = server.dir.path().join(format!("{name}.kubeconfig"));
    let ca = server.server_ca();
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:{}\n    certificate-authority: {}\nusers:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n",
            server.port,
            ca.display()
        ),
    )
    .unwrap();
    path
}

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
