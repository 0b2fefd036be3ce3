//! Create-only kinds that are answered, not stored: TokenRequest
//! (`serviceaccounts/token`), TokenReview and SelfSubjectReview.

use super::object::{from_store, key};
use super::store_error;
use crate::api::meta::rfc3339;
use crate::api::registry;
use crate::apiserver::ApiContext;
use crate::apiserver::auth::UserInfo;
use crate::apiserver::status::ApiStatus;
use crate::apiserver::tokens::{
    DEFAULT_EXPIRATION_SECONDS, MIN_EXPIRATION_SECONDS, TokenClaims, TokenError,
};
use http::StatusCode;
use serde_json::{Value, json};

fn string_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn service_accounts() -> &'static registry::Resource {
    &crate::api::registry::SERVICEACCOUNTS
}

/// The uid of a service account, if it exists.
async fn service_account_uid(
    ctx: &ApiContext,
    namespace: &str,
    name: &str,
) -> Result<Option<String>, ApiStatus> {
    let got = ctx
        .store
        .get(&key(service_accounts(), Some(namespace), name))
        .await
        .map_err(store_error)?;
    match got.kv {
        Some(kv) => Ok(from_store(&kv)?
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .map(String::from)),
        None => Ok(None),
    }
}

/// Authenticates a bearer token: valid signature and audience, and a service account
/// that still exists with the same uid (a deleted account's tokens stop working).
pub async fn authenticate(
    ctx: &ApiContext,
    token: &str,
    audiences: &[String],
) -> Result<(TokenClaims, UserInfo), TokenError> {
    let claims = ctx.tokens.verify(token, audiences)?;
    if let Some((pod, uid)) = &claims.pod {
        // a token bound to a pod dies with it (upstream's bound-object check)
        let current = pod_of(ctx, &claims.namespace, pod)
            .await
            .map_err(|e| TokenError::Lookup(e.message))?;
        if current
            .as_ref()
            .and_then(|p| p.pointer("/metadata/uid")?.as_str())
            != Some(uid)
        {
            return Err(TokenError::BoundPodGone {
                namespace: claims.namespace.clone(),
                pod: pod.clone(),
            });
        }
    }
    match service_account_uid(ctx, &claims.namespace, &claims.service_account).await {
        Ok(Some(uid)) if uid == claims.service_account_uid => {
            let user = claims.user();
            Ok((claims, user))
        }
        Ok(_) => Err(TokenError::AccountGone {
            namespace: claims.namespace.clone(),
            name: claims.service_account.clone(),
        }),
        Err(e) => Err(TokenError::Lookup(e.message)),
    }
}

/// A pod, if it exists.
async fn pod_of(ctx: &ApiContext, namespace: &str, name: &str) -> Result<Option<Value>, ApiStatus> {
    let pods = &crate::api::registry::PODS;
    let got = ctx
        .store
        .get(&key(pods, Some(namespace), name))
        .await
        .map_err(store_error)?;
    got.kv.map(|kv| from_store(&kv)).transpose()
}

/// Upstream's longest token lifetime (validation): 2^32 seconds.
const MAX_EXPIRATION_SECONDS: i64 = 1 << 32;

fn invalid_request(name: &str, field: &str, detail: String) -> ApiStatus {
    ApiStatus::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        format!("TokenRequest.authentication.k8s.io \"{name}\" is invalid: {field}: {detail}"),
    )
    .with_details(json!({
        "name": name, "group": "authentication.k8s.io", "kind": "TokenRequest",
        "causes": [{"reason": "FieldValueInvalid", "message": detail, "field": field}],
    }))
}

/// The pod a token request binds its token to (`spec.boundObjectRef`), checked as
/// upstream's token REST does: it exists, has the uid given, and runs as the account.
async fn bound_pod(
    ctx: &ApiContext,
    namespace: &str,
    account: &str,
    req: &Value,
) -> Result<Option<(String, String, Value)>, ApiStatus> {
    let Some(bound) = req.pointer("/spec/boundObjectRef").filter(|b| !b.is_null()) else {
        return Ok(None);
    };
    let kind = bound["kind"].as_str().unwrap_or("");
    let api_version = bound["apiVersion"].as_str().unwrap_or("v1");
    if kind != "Pod" || api_version != "v1" {
        return Err(ApiStatus::bad_request(format!(
            "cannot bind token to object of type {api_version}, Kind={kind}"
        )));
    }
    let name = bound["name"].as_str().unwrap_or("");
    let pod = pod_of(ctx, namespace, name)
        .await?
        .ok_or_else(|| ApiStatus::not_found("", "pods", name))?;
    let uid = pod
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if let Some(want) = bound["uid"].as_str().filter(|u| !u.is_empty()) {
        if want != uid {
            return Err(ApiStatus::new(
                StatusCode::CONFLICT,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on pods \"{name}\": the UID in the bound object reference ({want}) does not match the UID in record. The object might have been deleted and then recreated"
                ),
            ));
        }
    }
    let runs_as = pod
        .pointer("/spec/serviceAccountName")
        .and_then(Value::as_str)
        .unwrap_or("default");
    if runs_as != account {
        return Err(ApiStatus::bad_request(format!(
            "cannot bind token for serviceaccount \"{account}\" to pod running with different serviceaccount name."
        )));
    }
    Ok(Some((name.to_string(), uid, pod)))
}

/// NodeRestriction for token requests: a node asks only for tokens bound to a pod
/// scheduled on it (the account is one of its pods' already, by the authorizer).
fn node_may_request(
    caller: &UserInfo,
    req: &Value,
    bound: Option<&(String, String, Value)>,
) -> Result<(), ApiStatus> {
    let Some(node) = crate::apiserver::auth::node_of(caller) else {
        return Ok(());
    };
    let forbidden = |m: String| ApiStatus::new(StatusCode::FORBIDDEN, "Forbidden", m);
    let Some((_, _, pod)) = bound else {
        return Err(forbidden(format!(
            "node {node:?} requested token not bound to a pod"
        )));
    };
    if req
        .pointer("/spec/boundObjectRef/uid")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err(forbidden(format!(
            "node {node:?} requested token with a pod binding without a uid"
        )));
    }
    if pod.pointer("/spec/nodeName").and_then(Value::as_str) != Some(node) {
        return Err(forbidden(format!(
            "node {node:?} requested token bound to a pod scheduled on a different node"
        )));
    }
    Ok(())
}

/// `POST .../serviceaccounts/<name>/token`.
pub async fn token_request(
    ctx: &ApiContext,
    caller: &UserInfo,
    namespace: &str,
    name: &str,
    body: &[u8],
) -> Result<Value, ApiStatus> {
    let req: Value = serde_json::from_slice(body).map_err(|e| {
        ApiStatus::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
    })?;
    let expiration = match req.pointer("/spec/expirationSeconds") {
        None | Some(Value::Null) => DEFAULT_EXPIRATION_SECONDS,
        Some(v) => v.as_i64().ok_or_else(|| {
            invalid_request(
                name,
                "spec.expirationSeconds",
                format!("Invalid value: {v}: must be an integer number of seconds"),
            )
        })?,
    };
    if expiration < MIN_EXPIRATION_SECONDS {
        return Err(invalid_request(
            name,
            "spec.expirationSeconds",
            format!("Invalid value: {expiration}: may not specify a duration less than 10 minutes"),
        ));
    }
    if expiration > MAX_EXPIRATION_SECONDS {
        return Err(invalid_request(
            name,
            "spec.expirationSeconds",
            format!(
                "Invalid value: {expiration}: may not specify a duration larger than 2^32 seconds"
            ),
        ));
    }
    let expiration = ctx
        .tokens
        .max_expiration
        .map_or(expiration, |max| expiration.min(max));
    let uid = service_account_uid(ctx, namespace, name)
        .await?
        .ok_or_else(|| ApiStatus::not_found("", "serviceaccounts", name))?;
    let bound = bound_pod(ctx, namespace, name, &req).await?;
    node_may_request(caller, &req, bound.as_ref())?;
    let mut audiences = string_list(req.pointer("/spec/audiences"));
    if audiences.is_empty() {
        audiences.push(ctx.tokens.issuer.clone());
    }
    let expires = crate::api::meta::now_secs() + expiration;
    let claims = TokenClaims {
        namespace: namespace.into(),
        service_account: name.into(),
        service_account_uid: uid,
        audiences: audiences.clone(),
        expires,
        pod: bound.map(|(name, uid, _)| (name, uid)),
    };
    let token = ctx.tokens.issue(&claims).map_err(|e| {
        ApiStatus::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            e.to_string(),
        )
    })?;
    Ok(json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": null},
        "spec": {"audiences": audiences, "expirationSeconds": expiration, "boundObjectRef": req.pointer("/spec/boundObjectRef")},
        "status": {"token": token, "expirationTimestamp": rfc3339(expires)},
    }))
}

/// `POST /apis/authentication.k8s.io/v1/tokenreviews`.
pub async fn token_review(ctx: &ApiContext, body: &[u8]) -> Result<Value, ApiStatus> {
    let req: Value = serde_json::from_slice(body).map_err(|e| {
        ApiStatus::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
    })?;
    let token = req
        .pointer("/spec/token")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let audiences = string_list(req.pointer("/spec/audiences"));
    let status = match authenticate(ctx, token, &audiences).await {
        Ok((claims, user)) => json!({
            "authenticated": true,
            "user": {"username": user.name, "uid": claims.service_account_uid, "groups": user.groups},
            "audiences": claims.audiences,
        }),
        Err(error) => json!({"authenticated": false, "user": {}, "error": error.to_string()}),
    };
    Ok(json!({
        "kind": "TokenReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": null},
        "spec": req.get("spec").cloned().unwrap_or_else(|| json!({})),
        "status": status,
    }))
}

/// `POST /apis/authorization.k8s.io/v1/selfsubjectrulesreviews` (`kubectl auth can-i
/// --list`): every rule the caller holds in `spec.namespace`, from its
/// ClusterRoleBindings and that namespace's RoleBindings, as upstream's RBAC
/// `RulesFor` (neither merged nor deduplicated). What the Node authorizer grants a
/// node it cannot list, so the answer is then marked incomplete, as upstream's.
pub fn self_subject_rules_review(
    rbac: &crate::apiserver::rbac::Rbac,
    caller: &UserInfo,
    body: &[u8],
) -> Result<Value, ApiStatus> {
    let review: Value = serde_json::from_slice(body).map_err(|e| {
        ApiStatus::bad_request(format!("the SelfSubjectRulesReview is not valid JSON: {e}"))
    })?;
    let namespace = review["spec"]["namespace"].as_str().unwrap_or("");
    if namespace.is_empty() {
        return Err(ApiStatus::bad_request("no namespace on request"));
    }
    let who = crate::apiserver::rbac::Caller {
        name: &caller.name,
        groups: &caller.groups,
    };
    let (mut resource_rules, mut non_resource_rules) = (Vec::new(), Vec::new());
    for rule in rbac.rules_for(&who, namespace) {
        if !rule.resources.is_empty() {
            let mut r = rule.clone();
            r.non_resource_urls.clear();
            resource_rules.push(r.to_json());
        }
        if !rule.non_resource_urls.is_empty() {
            non_resource_rules
                .push(json!({"verbs": rule.verbs, "nonResourceURLs": rule.non_resource_urls}));
        }
    }
    let mut status = json!({
        "resourceRules": resource_rules,
        "nonResourceRules": non_resource_rules,
        "incomplete": false,
    });
    if crate::apiserver::auth::node_of(caller).is_some() {
        status["incomplete"] = json!(true);
        status["evaluationError"] = json!("node authorizer does not support user rule resolution");
    }
    Ok(json!({
        "kind": "SelfSubjectRulesReview",
        "apiVersion": "authorization.k8s.io/v1",
        "metadata": {"creationTimestamp": null},
        "spec": {},
        "status": status,
    }))
}

/// A user as `authentication.k8s.io` shows it (empty fields left out).
fn user_info(u: &UserInfo) -> Value {
    let mut out = json!({"username": u.name, "groups": u.groups});
    if !u.uid.is_empty() {
        out["uid"] = json!(u.uid);
    }
    if !u.extra.is_empty() {
        out["extra"] = json!(u.extra);
    }
    out
}

/// `POST /apis/authentication.k8s.io/v1/selfsubjectreviews` (`kubectl auth whoami`).
pub fn self_subject_review(caller: &UserInfo) -> Value {
    json!({
        "kind": "SelfSubjectReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": null},
        "status": {"userInfo": user_info(caller)},
    })
}
/// The verdict of a SubjectAccessReview (or its Local and Self forms): would `user`
/// be allowed what `spec` describes? Answered by the same authorizer every request
/// goes through.
pub fn access_review(
    rbac: &crate::apiserver::rbac::Rbac,
    kind: &str,
    user: &UserInfo,
    body: &[u8],
    namespace: Option<&str>,
) -> Result<Value, ApiStatus> {
    use crate::apiserver::request_info::RequestInfo;
    let review: Value = serde_json::from_slice(body)
        .map_err(|e| ApiStatus::bad_request(format!("the {kind} is not valid JSON: {e}")))?;
    let spec = &review["spec"];
    let attrs = &spec["resourceAttributes"];
    let non = &spec["nonResourceAttributes"];
    if !attrs.is_object() && !non.is_object() {
        let detail = "exactly one of nonResourceAttributes or resourceAttributes must be specified";
        return Err(ApiStatus::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            format!("{kind}.authorization.k8s.io \"\" is invalid: spec.resourceAttributes: Required value: {detail}"),
        )
        .with_details(json!({
            "group": "authorization.k8s.io", "kind": kind,
            "causes": [{"reason": "FieldValueRequired", "message": format!("Required value: {detail}"), "field": "spec.resourceAttributes"}],
        })));
    }
    let s = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(String::from);
    let info = if attrs.is_object() {
        RequestInfo {
            path: String::new(),
            is_resource_request: true,
            verb: s(&attrs["verb"]).unwrap_or_default(),
            prefix: if s(&attrs["group"]).is_some() {
                "apis"
            } else {
                "api"
            }
            .into(),
            group: s(&attrs["group"]).unwrap_or_default(),
            version: s(&attrs["version"]).unwrap_or_default(),
            namespace: namespace
                .map(String::from)
                .or_else(|| s(&attrs["namespace"])),
            resource: s(&attrs["resource"]).unwrap_or_default(),
            name: s(&attrs["name"]),
            subresource: s(&attrs["subresource"]),
            field_selector: s(&attrs["fieldSelector"]["rawSelector"]),
        }
    } else {
        RequestInfo {
            path: s(&non["path"]).unwrap_or_default(),
            is_resource_request: false,
            verb: s(&non["verb"]).unwrap_or_default(),
            prefix: String::new(),
            group: String::new(),
            version: String::new(),
            namespace: None,
            resource: String::new(),
            name: None,
            subresource: None,
            field_selector: None,
        }
    };
    let subject = if kind == "SelfSubjectAccessReview" {
        user.clone()
    } else {
        UserInfo {
            name: s(&spec["user"]).unwrap_or_default(),
            groups: string_list(spec.get("groups")),
            ..Default::default()
        }
    };
    let allowed = crate::apiserver::auth::authorize(rbac, &subject, &info);
    let mut out = review.clone();
    out["apiVersion"] = json!("authorization.k8s.io/v1");
    out["kind"] = json!(kind);
    if out["metadata"].is_null() {
        out["metadata"] = json!({});
    }
    out["status"] = if allowed {
        json!({"allowed": true, "reason": "allowed by skua's authorizer"})
    } else {
        json!({"allowed": false})
    };
    Ok(out)
}
