//! Start-up of a node: join → containerd → kubelet → proxy → overlay → dns.
//! Not built yet: this is where issue #5 lands.

use crate::cli::AgentArgs;

/// Runs `skua agent`.
pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    anyhow::bail!(
        "skua agent cannot join {} yet: the agent (containerd, kubelet, networking) is not part of this build",
        args.server.as_deref().unwrap_or("a server")
    )
}
