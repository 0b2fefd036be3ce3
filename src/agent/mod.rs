//! Start-up of a node: join → containerd → kubelet → proxy → overlay → dns.
//! Joining is built (`join.rs`); running pods on the node is issue #5's next part.

pub mod join;

use crate::cli::AgentArgs;
use anyhow::Context as _;

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_ascii_lowercase())
        .unwrap_or_else(|_| "skua-agent".into())
}

/// Runs `skua agent`.
pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let server = args.server.clone().ok_or_else(|| {
        anyhow::anyhow!(
            "--server (or SKUA_URL) is required: the https://HOST:6443 of a skua server"
        )
    })?;
    let token_text = match (&args.common.token, &args.token_file) {
        (Some(t), _) => t.clone(),
        (None, Some(file)) => std::fs::read_to_string(file)
            .with_context(|| format!("reading the join token from {}", file.display()))?,
        (None, None) => anyhow::bail!(
            "--token (or SKUA_TOKEN, or SKUA_TOKEN_FILE) is required: the server's <data-dir>/server/node-token"
        ),
    };
    let token = crate::pki::join::Token::parse(&token_text).map_err(|e| anyhow::anyhow!(e))?;
    let name = args
        .common
        .node_name
        .clone()
        .unwrap_or_else(hostname)
        .to_ascii_lowercase();
    let dir = args.common.data_dir.join("agent");
    let joined = join::join(
        &server,
        &token,
        &name,
        &args.node_ip,
        &args.node_password_file,
        &dir,
    )
    .await?;
    tracing::info!(node = %name, server = %server, kubeconfig = %joined.kubeconfig.display(), "joined");
    anyhow::bail!(
        "joined {server} as node {name} (certificates in {}); running pods on this node (containerd, kubelet) is not part of this build yet",
        joined.dir.display()
    )
}
