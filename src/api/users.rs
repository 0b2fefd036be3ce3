//! Identities with a fixed meaning (upstream's `k8s.io/apiserver/pkg/authentication/user`
//! and k3s' own), shared by whoever issues them (PKI) and whoever checks them (the API
//! server's authorizers).

/// The identity agents run their network functions under (k3s' `system:k3s-controller`):
/// NetworkPolicy needs every pod's labels and address, and the namespaces' labels,
/// which a node credential must not give.
pub const AGENT_CONTROLLER_USER: &str = "system:skua-controller";
