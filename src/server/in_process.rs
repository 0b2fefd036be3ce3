//! The in-process transport: the server's own components (controllers, scheduler, the
//! control-plane labeller) reach the API router without TCP or TLS, under a system
//! identity. Built here, in the assembly layer, because it is the one place that
//! knows both the API server and the client.

use crate::apiserver::ApiContext;
use crate::apiserver::auth::UserInfo;
use crate::client::{ApiClient, ClientError, ResponseBody, Transport};
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use std::sync::Arc;

/// Requests handed to the router as `user`.
pub struct InProcess {
    ctx: Arc<ApiContext>,
    user: UserInfo,
}

impl InProcess {
    /// A client acting as `user` (a member of `system:masters`), sending `agent` as
    /// its User-Agent.
    pub fn client(ctx: Arc<ApiContext>, user: &str, agent: &str) -> ApiClient {
        let user = UserInfo {
            name: user.to_string(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
            ..Default::default()
        };
        ApiClient::new(Arc::new(InProcess { ctx, user }), agent)
    }

    /// A client acting as one of upstream's control-plane identities, authorized by
    /// RBAC like any other: the component users `system:kube-controller-manager` and
    /// `system:kube-scheduler`, the API server itself (`system:apiserver`), or else
    /// the `kube-system` service account `name` (a controller's own).
    pub fn acting_as(ctx: Arc<ApiContext>, name: &str, agent: &str) -> ApiClient {
        let authenticated = "system:authenticated".to_string();
        let user = match name {
            "system:apiserver" => UserInfo::apiserver(),
            "system:kube-controller-manager" | "system:kube-scheduler" => UserInfo {
                name: name.to_string(),
                groups: vec![authenticated],
                ..UserInfo::default()
            },
            account => UserInfo {
                name: format!("system:serviceaccount:kube-system:{account}"),
                groups: vec![
                    "system:serviceaccounts".into(),
                    "system:serviceaccounts:kube-system".into(),
                    authenticated,
                ],
                ..UserInfo::default()
            },
        };
        ApiClient::new(Arc::new(InProcess { ctx, user }), agent)
    }
}

#[async_trait::async_trait]
impl Transport for InProcess {
    async fn send(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<http::Response<ResponseBody>, ClientError> {
        let resp = crate::apiserver::routes::handle(req, self.user.clone(), self.ctx.clone())
            .await
            .unwrap_or_else(|never| match never {});
        Ok(resp.map(|b| b.map_err(|never| match never {}).boxed()))
    }
}
