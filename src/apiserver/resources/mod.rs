//! Generic storage-backed resources: get, list, watch, create, update (PUT), delete and
//! deletecollection, for every stored kind in the registry.

pub mod allocate;
mod bootstrap;
mod bootstrap_rbac;
mod create;
mod delete;
pub mod kinds;
mod list;
pub mod object;
mod pods;
pub mod reviews;
mod unstored;
pub mod watch;
pub use bootstrap::{bootstrap, bootstrap_dns_service, bootstrap_kubernetes_service};
pub use bootstrap_rbac::bootstrap_rbac;
pub use create::create;
pub use delete::delete;
#[cfg(test)]
pub use list::Selection;
#[cfg(test)]
mod admitted_tests;
mod write;

use super::ApiContext;
use super::auth::UserInfo;
use super::request_info::{RequestInfo, query_pairs};
use super::status::{ApiStatus, Body, json};
use crate::api::managed::{Actor, Operation};
use crate::api::registry::Resource;
use crate::store::{Store, StoreError};
use http::{Request, StatusCode};
use object::{decode, from_store, key};
use serde_json::{Value, json};
use std::sync::Arc;

/// Who writes and what a write passes through: the store, this server's service
/// ranges (Services' addresses come from them), the admission chain, the caller.
pub struct Writer<'a> {
    pub store: &'a dyn Store,
    pub ranges: Option<&'a allocate::ServiceRanges>,
    pub admission: &'a crate::apiserver::admission::Chain,
    pub user: &'a UserInfo,
}

impl ApiContext {
    /// How `user`'s requests write.
    pub fn writer<'a>(&'a self, user: &'a UserInfo) -> Writer<'a> {
        Writer {
            store: &*self.store,
            ranges: Some(&self.service_ranges),
            admission: &self.admission,
            user,
        }
    }
}

/// How objects go out: as they are, or as a `Table` of `kind` (server-side printing).
#[derive(Clone, Copy)]
pub struct Render {
    pub kind: Option<&'static str>,
    /// The resource (so the version) asked for: objects are converted to it.
    pub res: &'static Resource,
}

impl Render {
    /// One object (or one watch event's object).
    pub fn one(&self, obj: &Value) -> Value {
        let obj = crate::api::convert::to_version(obj.clone(), self.res);
        match self.kind {
            Some(kind) => {
                let rv = obj
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                crate::api::printers::table(
                    kind,
                    std::slice::from_ref(&obj),
                    rv,
                    true,
                    crate::api::meta::now_secs(),
                )
            }
            None => obj,
        }
    }
}

/// Adds `Warning` headers (RFC 7234 code 299), as upstream reports unknown fields.
pub(crate) fn with_warnings(
    mut resp: http::Response<Body>,
    warnings: &[String],
) -> http::Response<Body> {
    for w in warnings {
        let text = format!("299 - \"{}\"", w.replace('\\', "\\\\").replace('"', "\\\""));
        if let Ok(v) = http::HeaderValue::from_str(&text) {
            resp.headers_mut().append(http::header::WARNING, v);
        }
    }
    resp
}

/// Store errors in API terms.
pub fn store_error(e: StoreError) -> ApiStatus {
    match e {
        StoreError::Compacted {
            requested,
            compact_revision,
        } => ApiStatus::new(
            StatusCode::GONE,
            "Expired",
            format!("too old resource version: {requested} ({compact_revision})"),
        ),
        StoreError::Expired { revision } => ApiStatus::new(
            StatusCode::GONE,
            "Expired",
            format!("too old resource version: {revision}"),
        ),
        StoreError::FutureRevision { requested, current } => ApiStatus::new(
            StatusCode::GATEWAY_TIMEOUT,
            "Timeout",
            format!("Too large resource version: {requested}, current: {current}"),
        ),
        StoreError::Unavailable(m) => {
            ApiStatus::new(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", m)
        }
        other => ApiStatus::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            other.to_string(),
        ),
    }
}

/// Media types accepted for request bodies that carry whole objects.
const OBJECT_TYPES: &[&str] = &[
    "application/json",
    "application/yaml",
    crate::apiserver::protobuf::MEDIA_TYPE,
];
/// Media types accepted for PATCH bodies.
const PATCH_TYPES: &[&str] = &[
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    APPLY_PATCH,
];
/// Server-side apply.
const APPLY_PATCH: &str = "application/apply-patch+yaml";

/// Upstream's 422 for bad request options (`CreateOptions`, `PatchOptions`, …).
fn invalid_options(options: &str, field: &str, reason: &str, detail: &str) -> ApiStatus {
    ApiStatus::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        format!("{options}.meta.k8s.io \"\" is invalid: {field}: {detail}"),
    )
    .with_details(json!({
        "group": "meta.k8s.io", "kind": options,
        "causes": [{"reason": reason, "message": detail, "field": field}],
    }))
}

fn user_agent<B>(req: &Request<B>) -> String {
    req.headers()
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// Who a write is recorded under in `managedFields`: the `fieldManager` parameter, or
/// else the client's User-Agent up to its first `/` (as upstream).
fn field_manager(
    query: &[(String, String)],
    user_agent: &str,
    options: &str,
) -> Result<Option<String>, ApiStatus> {
    let Some((_, m)) = query.iter().find(|(k, _)| k == "fieldManager") else {
        let ua: String = user_agent
            .split('/')
            .next()
            .unwrap_or("")
            .chars()
            .filter(|c| !c.is_control())
            .take(128)
            .collect();
        return Ok((!ua.is_empty()).then_some(ua));
    };
    if m.len() > 128 {
        return Err(invalid_options(
            options,
            "fieldManager",
            "FieldValueTooLong",
            "Too long: may not be more than 128 bytes",
        ));
    }
    if let Some((i, c)) = m.char_indices().find(|(_, c)| c.is_control()) {
        return Err(invalid_options(
            options,
            "fieldManager",
            "FieldValueInvalid",
            &format!(
                "Invalid value: {m:?}: invalid character U+{:04X} (at position {i})",
                c as u32
            ),
        ));
    }
    Ok((!m.is_empty()).then(|| m.clone()))
}

/// Reads a body of one of the `accepted` media types (415 otherwise); returns the media
/// type and the bytes.
async fn read_body<B>(req: Request<B>, accepted: &[&str]) -> Result<(String, Vec<u8>), ApiStatus>
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let content_type = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or(accepted[0]);
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    if !accepted.contains(&media.as_str()) {
        return Err(ApiStatus::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: {}",
                accepted.join(", ")
            ),
        ));
    }
    let buf = crate::apiserver::body::collect(req.into_body())
        .await?
        .to_vec();
    if media == crate::apiserver::protobuf::MEDIA_TYPE && !buf.is_empty() {
        // kubectl ≥ 1.32 sends its generator commands' objects as protobuf
        use crate::apiserver::protobuf::ProtobufError;
        let obj = crate::apiserver::protobuf::to_json(&buf).map_err(|e| {
            if matches!(e, ProtobufError::NoProtobufForm { .. }) {
                ApiStatus::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "UnsupportedMediaType",
                    e.to_string(),
                )
            } else {
                ApiStatus::bad_request(format!("the protobuf body cannot be decoded: {e}"))
            }
        })?;
        return Ok(("application/json".into(), obj.to_string().into_bytes()));
    }
    Ok((media, buf))
}

/// Serves a resource request (authentication and authorization are done).
pub async fn handle<B>(
    ctx: &Arc<ApiContext>,
    info: &RequestInfo,
    caller: &UserInfo,
    req: Request<B>,
) -> http::Response<Body>
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let protobuf = info.subresource.is_none()
        || matches!(
            info.subresource.as_deref(),
            Some("status" | "scale" | "binding" | "eviction" | "token" | "approval" | "finalize")
        );
    let protobuf = protobuf
        && req
            .headers()
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(crate::apiserver::protobuf::preferred);
    // server-side dry run is not implemented yet: refused, never carried out for real
    let dry_run = req
        .uri()
        .query()
        .map(crate::apiserver::request_info::query_pairs)
        .into_iter()
        .flatten()
        .any(|(k, v)| k == "dryRun" && !v.is_empty());
    if dry_run && !matches!(info.verb.as_str(), "get" | "list" | "watch") {
        return ApiStatus::bad_request(
            "dryRun is not supported by this server yet: the request was refused rather than carried out",
        )
        .response();
    }
    let resp = match dispatch(ctx, info, caller, req).await {
        Ok(resp) => resp,
        Err(status) => status.response(),
    };
    if protobuf {
        crate::apiserver::protobuf::transcode(resp, info.verb == "watch").await
    } else {
        resp
    }
}

async fn dispatch<B>(
    ctx: &Arc<ApiContext>,
    info: &RequestInfo,
    caller: &UserInfo,
    req: Request<B>,
) -> Result<http::Response<Body>, ApiStatus>
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let not_found = ApiStatus::unknown_path;
    let res = ctx
        .registry
        .find(&info.group, &info.version, &info.resource)
        .ok_or_else(not_found)?;
    let namespace = if res.namespaced {
        info.namespace.as_deref()
    } else {
        None
    };
    if res.namespaced && namespace.is_none() && !matches!(info.verb.as_str(), "list" | "watch") {
        return Err(not_found());
    }
    if !res.namespaced && info.namespace.is_some() && res.plural != "namespaces" {
        return Err(not_found());
    }
    if let Some(sub) = info.subresource.as_deref() {
        return subresource(ctx, caller, res, namespace, info, sub, req).await;
    }
    if !res.is_stored() {
        if info.verb != "create" {
            return Err(not_found());
        }
        let (_, body) = read_body(req, OBJECT_TYPES).await?;
        return match unstored::create(ctx, caller, res, namespace, &body).await {
            Some(answer) => answer.map(|o| json(StatusCode::CREATED, &o)),
            None => Err(not_found()),
        };
    }
    if !res.verbs.contains(&info.verb.as_str()) || (info.verb == "create" && info.name.is_some()) {
        return Err(ApiStatus::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!(
                "the server does not allow this method on the requested resource ({} {})",
                info.verb, res.plural
            ),
        ));
    }
    let query = query_pairs(req.uri().query().unwrap_or(""));
    let as_table = req
        .headers()
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(crate::api::printers::wants_table);
    let render = Render {
        kind: as_table.then_some(res.kind),
        res,
    };
    let field_validation = crate::apiserver::openapi::FieldValidation::from_query(
        query
            .iter()
            .find(|(k, _)| k == "fieldValidation")
            .map(|(_, v)| v.as_str()),
    )?;
    let check = |obj: &Value| {
        crate::apiserver::openapi::check_fields(
            res.group,
            res.version,
            res.kind,
            obj,
            field_validation,
        )
    };
    let name = info.name.clone().unwrap_or_default();
    let user_agent = user_agent(&req);
    let actor = |options: &str, operation: Operation| {
        field_manager(&query, &user_agent, options).map(|m| Actor {
            manager: m.unwrap_or_default(),
            operation,
            subresource: String::new(),
            api_version: res.group_version(),
        })
    };
    match info.verb.as_str() {
        "get" => get(ctx, res, namespace, &name)
            .await
            .map(|o| json(StatusCode::OK, &render.one(&o))),
        "list" => list::list(ctx, res, namespace, &query, render).await,
        "watch" => watch::watch(ctx.clone(), res, namespace, &query, render).await,
        "create" => {
            let actor = actor("CreateOptions", Operation::Update)?;
            let (media, body) = read_body(req, OBJECT_TYPES).await?;
            let obj = decode(res, &media, &body)?;
            let warnings = check(&obj)?;
            let obj = create(&ctx.writer(caller), res, namespace, obj, Some(&actor)).await?;
            Ok(with_warnings(json(StatusCode::CREATED, &obj), &warnings))
        }
        "update" => {
            let actor = actor("UpdateOptions", Operation::Update)?;
            let (media, body) = read_body(req, OBJECT_TYPES).await?;
            let obj = decode(res, &media, &body)?;
            let warnings = check(&obj)?;
            let obj =
                write::update(&ctx.writer(caller), res, namespace, &name, obj, &actor).await?;
            Ok(with_warnings(json(StatusCode::OK, &obj), &warnings))
        }
        "delete" => {
            // DeleteOptions as JSON, YAML or protobuf (client-go's typed clients, Helm's
            // release storage among them, send protobuf)
            let (media, body) = read_body(req, OBJECT_TYPES).await?;
            let body = if media == "application/yaml" && !body.is_empty() {
                serde_saphyr::from_slice::<Value>(&body)
                    .map_err(|e| ApiStatus::bad_request(format!("invalid DeleteOptions: {e}")))?
                    .to_string()
                    .into_bytes()
            } else {
                body
            };
            delete(&ctx.writer(caller), res, namespace, &name, &body)
                .await
                .map(|s| json(StatusCode::OK, &s))
        }
        "deletecollection" => {
            list::delete_collection(ctx, &ctx.writer(caller), res, namespace, &query).await
        }
        "patch" => {
            let is_apply = req
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|t| t.split(';').next().unwrap_or("").trim() == APPLY_PATCH);
            let force = query
                .iter()
                .find(|(k, _)| k == "force")
                .map(|(_, v)| v.as_str());
            if is_apply {
                let actor = actor("PatchOptions", Operation::Apply)?;
                if !query
                    .iter()
                    .any(|(k, v)| k == "fieldManager" && !v.is_empty())
                {
                    return Err(invalid_options(
                        "PatchOptions",
                        "fieldManager",
                        "FieldValueRequired",
                        "Required value: is required for apply patch",
                    ));
                }
                let (_, body) = read_body(req, PATCH_TYPES).await?;
                let (obj, warnings, created) = write::apply(
                    &ctx.writer(caller),
                    res,
                    namespace,
                    &name,
                    &body,
                    &check,
                    &actor,
                    force == Some("true"),
                )
                .await?;
                let code = if created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                };
                return Ok(with_warnings(json(code, &obj), &warnings));
            }
            if force.is_some() {
                return Err(invalid_options(
                    "PatchOptions",
                    "force",
                    "FieldValueForbidden",
                    "Forbidden: may not be specified for non-apply patch",
                ));
            }
            let actor = actor("PatchOptions", Operation::Update)?;
            let (media, body) = read_body(req, PATCH_TYPES).await?;
            let (obj, warnings) = write::patch(
                &ctx.writer(caller),
                res,
                namespace,
                &name,
                &media,
                &body,
                &check,
                &actor,
            )
            .await?;
            Ok(with_warnings(json(StatusCode::OK, &obj), &warnings))
        }
        _ => Err(not_found()),
    }
}

/// `status` and `scale`; the node-side subresources answer 503 until the kubelet exists.
async fn subresource<B>(
    ctx: &Arc<ApiContext>,
    caller: &UserInfo,
    res: &'static Resource,
    namespace: Option<&str>,
    info: &RequestInfo,
    sub: &str,
    req: Request<B>,
) -> Result<http::Response<Body>, ApiStatus>
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let not_found = ApiStatus::unknown_path;
    let known = res
        .subresources
        .iter()
        .find(|s| s.name == sub)
        .ok_or_else(not_found)?;
    if !known.verbs.contains(&info.verb.as_str()) {
        return Err(ApiStatus::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!(
                "the server does not allow this method on the requested resource ({} {}/{sub})",
                info.verb, res.plural
            ),
        ));
    }
    let name = info.name.clone().unwrap_or_default();
    let w = ctx.writer(caller);
    let query = query_pairs(req.uri().query().unwrap_or(""));
    let user_agent = user_agent(&req);
    let options = if info.verb == "patch" {
        "PatchOptions"
    } else {
        "UpdateOptions"
    };
    let actor = Actor {
        manager: field_manager(&query, &user_agent, options)?.unwrap_or_default(),
        operation: Operation::Update,
        subresource: sub.to_string(),
        api_version: res.group_version(),
    };
    match (sub, info.verb.as_str()) {
        ("log", "get") => {
            let pod = get(ctx, res, namespace, &name).await?;
            super::proxy::pod_log(ctx, &pod, &query).await
        }
        ("exec" | "attach" | "portforward", _) => {
            let pod = get(ctx, res, namespace, &name).await?;
            let mut req = req;
            super::proxy::stream(ctx, &pod, sub, &mut req).await
        }
        ("proxy", "get") if res.kind == "Node" => {
            // the kubelet's own path follows `/proxy`
            let full = req.uri().path().to_string();
            let marker = format!("/nodes/{name}/proxy");
            let rest = full.split_once(&marker).map_or("", |(_, r)| r);
            let mut path = if rest.is_empty() {
                "/".to_string()
            } else {
                rest.to_string()
            };
            if let Some(q) = req.uri().query() {
                path.push('?');
                path.push_str(q);
            }
            super::proxy::to_kubelet(ctx, &name, &path).await
        }
        ("proxy", _) => Err(ApiStatus::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            format!(
                "{}/{sub} with this verb is not proxied by this skua build yet (nodes/proxy GET is)",
                res.plural
            ),
        )),
        ("status", "get") => get(ctx, res, namespace, &name)
            .await
            .map(|o| json(StatusCode::OK, &o)),
        ("binding", "create") => {
            let (_, body) = read_body(req, OBJECT_TYPES).await?;
            pods::bind(&w, namespace.unwrap_or_default(), &name, &body)
                .await
                .map(|o| json(StatusCode::CREATED, &o))
        }
        ("eviction", "create") => {
            let (_, body) = read_body(req, OBJECT_TYPES).await?;
            pods::evict(&w, namespace.unwrap_or_default(), &name, &body)
                .await
                .map(|o| json(StatusCode::CREATED, &o))
        }
        ("token", "create") => {
            let (_, body) = read_body(req, OBJECT_TYPES).await?;
            reviews::token_request(ctx, caller, namespace.unwrap_or_default(), &name, &body)
                .await
                .map(|o| json(StatusCode::CREATED, &o))
        }
        ("status" | "scale", "update" | "patch") => {
            // a whole object (PUT) or a patch of one (PATCH); the writer keeps only its part
            let patch = info.verb == "patch";
            let (media, body) =
                read_body(req, if patch { PATCH_TYPES } else { OBJECT_TYPES }).await?;
            let media = patch.then_some(media.as_str());
            let written = if sub == "status" {
                write::status(&w, res, namespace, &name, media, &body, &actor).await?
            } else {
                write::scale(&w, res, namespace, &name, media, &body, &actor).await?
            };
            Ok(json(StatusCode::OK, &written))
        }
        ("finalize", "update") => {
            // only spec.finalizers changes; emptied on a terminating namespace, the
            // namespace goes
            let (_, body) = read_body(req, OBJECT_TYPES).await?;
            let wanted: Value = serde_json::from_slice(&body).map_err(|e| {
                ApiStatus::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
            })?;
            let sent = object::sent_resource_version(&wanted)?;
            let finalizers = wanted
                .pointer("/spec/finalizers")
                .cloned()
                .unwrap_or_else(|| json!([]));
            if !finalizers.is_array() {
                return Err(ApiStatus::bad_request(
                    "spec.finalizers must be a list of strings",
                ));
            }
            let written = write::finalize(&w, res, &name, sent, &|cur| {
                let mut next = cur.clone();
                next["spec"]["finalizers"] = finalizers.clone();
                Ok(next)
            })
            .await?;
            Ok(json(StatusCode::OK, &written))
        }
        ("scale", "get") => get(ctx, res, namespace, &name)
            .await
            .map(|o| json(StatusCode::OK, &write::scale_of(&o))),
        _ => Err(not_found()),
    }
}

async fn get(
    ctx: &ApiContext,
    res: &Resource,
    namespace: Option<&str>,
    name: &str,
) -> Result<Value, ApiStatus> {
    let got = ctx
        .store
        .get(&key(res, namespace, name))
        .await
        .map_err(store_error)?;
    let kv = got
        .kv
        .ok_or_else(|| ApiStatus::not_found(res.group, res.plural, name))?;
    Ok(crate::api::convert::to_version(from_store(&kv)?, res))
}
