//! Create-only kinds that are answered, not stored: TokenRequest
//! (`serviceaccounts/token`), TokenReview and SelfSubjectReview.

use super::object::{from_store, key};
use super::store_error;
use crate::api::meta::rfc3339;
use crate::api::registry;
use crate::apiserver::ApiContext;
use crate::apiserver::auth::UserInfo;
use crate::apiserver::status::ApiStatus;
use crate::apiserver::tokens::{DEFAULT_EXPIRATION_SECONDS, MIN_EXPIRATION_SECONDS, TokenClaims};
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
    registry::find("", "v1", "serviceaccounts").expect("serviceaccounts are in the registry")
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
) -> Result<(TokenClaims, UserInfo), String> {
    let claims = ctx.tokens.verify(token, audiences)?;
    match service_account_uid(ctx, &claims.namespace, &claims.service_account).await {
        Ok(Some(uid)) if uid == claims.service_account_uid => {
            let user = claims.user();
            Ok((claims, user))
        }
        Ok(_) => Err(format!(
            "service account {}/{} has been deleted or replaced",
            claims.namespace, claims.service_account
        )),
        Err(e) => Err(e.message),
    }
}

/// `POST .../serviceaccounts/<name>/token`.
pub async fn token_request(
    ctx: &ApiContext,
    namespace: &str,
    name: &str,
    body: &[u8],
) -> Result<Value, ApiStatus> {
    let req: Value = serde_json::from_slice(body).map_err(|e| {
        ApiStatus::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
    })?;
    let uid = service_account_uid(ctx, namespace, name)
        .await?
        .ok_or_else(|| ApiStatus::not_found("", "serviceaccounts", name))?;
    let expiration = req
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(DEFAULT_EXPIRATION_SECONDS);
    if expiration < MIN_EXPIRATION_SECONDS {
        return Err(ApiStatus::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            format!(
                "TokenRequest.authentication.k8s.io \"{name}\" is invalid: spec.expirationSeconds: Invalid value: {expiration}: may not specify a duration less than 10 minutes"
            ),
        ));
    }
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
    };
    let token = ctx
        .tokens
        .issue(&claims)
        .map_err(|e| ApiStatus::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", e))?;
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
        Err(error) => json!({"authenticated": false, "user": {}, "error": error}),
    };
    Ok(json!({
        "kind": "TokenReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": null},
        "spec": req.get("spec").cloned().unwrap_or_else(|| json!({})),
        "status": status,
    }))
}

/// `POST /apis/authentication.k8s.io/v1/selfsubjectreviews` (`kubectl auth whoami`).
pub fn self_subject_review(caller: &UserInfo) -> Value {
    json!({
        "kind": "SelfSubjectReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": null},
        "status": {"userInfo": {"username": caller.name, "groups": caller.groups}},
    })
}
