//! Creates of the resources kept nowhere (upstream's create-only storages): the
//! reviews, answered at once, and the `bindings` resource, a pod's binding.

use super::{Writer, pods, reviews};
use crate::api::registry::{self, Resource};
use crate::apiserver::ApiContext;
use crate::apiserver::auth::UserInfo;
use crate::apiserver::status::ApiStatus;
use serde_json::Value;

/// The answer to a create of `res`, if it is one of these resources.
pub async fn create(
    ctx: &ApiContext,
    caller: &UserInfo,
    res: &Resource,
    namespace: Option<&str>,
    body: &[u8],
) -> Option<Result<Value, ApiStatus>> {
    let is = |r: &Resource| r.group == res.group && r.plural == res.plural;
    Some(if is(&registry::TOKENREVIEWS) {
        reviews::token_review(ctx, body).await
    } else if is(&registry::BINDINGS) {
        let pod = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|b| {
                b.pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .map(String::from)
            })
            .unwrap_or_default();
        let w: Writer<'_> = ctx.writer(caller);
        pods::bind(&w, namespace.unwrap_or_default(), &pod, body).await
    } else if is(&registry::SUBJECTACCESSREVIEWS) || is(&registry::SELFSUBJECTACCESSREVIEWS) {
        reviews::access_review(&ctx.rbac, res.kind, caller, body, None)
    } else if is(&registry::LOCALSUBJECTACCESSREVIEWS) {
        reviews::access_review(&ctx.rbac, res.kind, caller, body, namespace)
    } else if is(&registry::SELFSUBJECTRULESREVIEWS) {
        reviews::self_subject_rules_review(&ctx.rbac, caller, body)
    } else if is(&registry::SELFSUBJECTREVIEWS) {
        Ok(reviews::self_subject_review(caller))
    } else {
        return None;
    })
}
