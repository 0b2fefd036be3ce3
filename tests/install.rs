//! install.sh keeps secrets out of the systemd unit and off the command line: the
//! argument handling (scripts/install-lib.sh, which install.sh sources) is run here
//! with hostile values; the whole installer builds a release and touches /etc, so it
//! is not run by the suite.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::process::Command;

const LIB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/install-lib.sh");

fn split(
    args: &[&str],
    env_file: &std::path::Path,
    args_file: &std::path::Path,
) -> std::process::Output {
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            ". {LIB}; fatal() {{ echo \"FATAL $*\" >&2; exit 1; }}; split_args \"$ARGS_OUT\" \"$@\" && write_env \"$ENV_OUT\""
        ))
        .arg("sh")
        .args(args)
        .env("ARGS_OUT", args_file)
        .env("ENV_OUT", env_file)
        .env("SKUA_URL", "https://10.0.0.1:6443")
        .output()
        .unwrap()
}

#[test]
fn secrets_go_to_an_owner_only_environment_file_and_nowhere_else() {
    let dir = tempfile::tempdir().unwrap();
    let (env_file, args_file) = (dir.path().join("skua.service.env"), dir.path().join("args"));
    let out = split(
        &[
            "server",
            "--tls-san",
            "my.host",
            "--token",
            r#"K10abc::server:s3"cr\et $(reboot)"#,
            "--datastore-endpoint=https://user:pass@etcd:2379",
            "--agent-token=workers",
            "-t=ignored-is-last",
        ],
        &env_file,
        &args_file,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // what stays on the command line (and in the unit) has no secret in it
    assert_eq!(
        std::fs::read_to_string(&args_file).unwrap(),
        "server\n--tls-san\nmy.host\n"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&env_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let env = std::fs::read_to_string(&env_file).unwrap();
    assert!(env.contains("SKUA_URL=\"https://10.0.0.1:6443\""), "{env}");
    assert!(
        env.contains(r#"SKUA_TOKEN="K10abc::server:s3\"cr\\et $(reboot)""#),
        "{env}"
    );
    assert!(env.contains("SKUA_TOKEN=\"ignored-is-last\""), "{env}");
    assert!(
        env.contains("SKUA_DATASTORE_ENDPOINT=\"https://user:pass@etcd:2379\""),
        "{env}"
    );
    assert!(env.contains("SKUA_AGENT_TOKEN=\"workers\""), "{env}");
    // systemd reads it back as written: each line one KEY="value"
    assert!(
        env.lines()
            .all(|l| l.starts_with("SKUA_") && l.ends_with('"')),
        "{env}"
    );
    // a value with a newline would add lines of its own: refused
    let out = split(&["--token", "a\nSKUA_X=1"], &env_file, &args_file);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("must not contain a newline"));
}
