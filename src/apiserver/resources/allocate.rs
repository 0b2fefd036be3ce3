//! Cluster IPs and node ports for Services, allocated when a Service is created (as
//! upstream's service storage does, so the answer to the create already carries them)
//! and released when it is deleted. Each allocated IP or port is a key in the store,
//! created only if absent: two Services can never get the same one, even racing.

use super::store_error;
use crate::apiserver::status::ApiStatus;
use crate::store::{Store, StoreError};
use http::StatusCode;
use serde_json::{Value, json};
use std::net::Ipv4Addr;

const IPS: &str = "/registry/ranges/serviceips/";
const PORTS: &str = "/registry/ranges/servicenodeports/";

/// Where Service addresses and node ports come from.
#[derive(Clone, Debug)]
pub struct ServiceRanges {
    /// First address of `--service-cidr` and how many addresses it has.
    pub base: u32,
    pub size: u32,
    /// `--service-node-port-range`.
    pub node_ports: (u16, u16),
}

impl ServiceRanges {
    /// `None` unless the network is a /8 to /30.
    pub fn new(
        service_cidr: crate::config::Ipv4Net,
        node_ports: crate::config::PortRange,
    ) -> Option<ServiceRanges> {
        if !(8..=30).contains(&service_cidr.prefix) {
            return None;
        }
        Some(ServiceRanges {
            base: u32::from(service_cidr.addr),
            size: u32::try_from(service_cidr.size()).ok()?,
            node_ports: (node_ports.first, node_ports.last),
        })
    }

    /// The first usable address (the `kubernetes` Service's).
    pub fn first(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base + 1)
    }

    fn contains(&self, ip: Ipv4Addr) -> bool {
        let v = u32::from(ip);
        v > self.base && v < self.base + self.size - 1
    }
}

fn invalid(svc: &Value, field: &str, value: &str, why: &str) -> ApiStatus {
    let name = svc["metadata"]["name"].as_str().unwrap_or("");
    let message = format!("Invalid value: {value}: {why}");
    ApiStatus::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        format!("Service \"{name}\" is invalid: {field}: {message}"),
    )
    .with_details(json!({"name": name, "kind": "Service", "causes": [{"reason": "FieldValueInvalid", "message": message, "field": field}]}))
}

/// Reserves `key` for `owner`; false if someone else holds it.
async fn reserve(store: &dyn Store, key: &str, owner: &str) -> Result<bool, ApiStatus> {
    match store.create(key, owner.as_bytes().to_vec()).await {
        Ok(_) => Ok(true),
        Err(StoreError::AlreadyExists { .. }) => {
            let held = store.get(key).await.map_err(store_error)?;
            Ok(held.kv.is_some_and(|kv| kv.value == owner.as_bytes()))
        }
        Err(e) => Err(store_error(e)),
    }
}

/// Who holds an allocation: namespace, name and uid (a Service created again under
/// the same name is someone else).
fn owner_of(svc: &Value) -> String {
    format!(
        "{}/{}/{}",
        svc["metadata"]["namespace"].as_str().unwrap_or(""),
        svc["metadata"]["name"].as_str().unwrap_or(""),
        svc["metadata"]["uid"].as_str().unwrap_or("")
    )
}

/// Gives a new Service its cluster IP and node ports (keeping any it asks for, if
/// free). Returns the keys reserved, to release if the Service is not stored after all.
pub async fn allocate(
    store: &dyn Store,
    ranges: &ServiceRanges,
    svc: &mut Value,
) -> Result<Vec<String>, ApiStatus> {
    let owner = owner_of(svc);
    let mut taken = Vec::new();
    let result = allocate_into(store, ranges, svc, &owner, &mut taken).await;
    if result.is_err() {
        for k in &taken {
            let _ = free(store, k, &owner).await;
        }
    }
    result.map(|()| taken)
}

async fn allocate_into(
    store: &dyn Store,
    ranges: &ServiceRanges,
    svc: &mut Value,
    owner: &str,
    taken: &mut Vec<String>,
) -> Result<(), ApiStatus> {
    let ty = svc["spec"]["type"]
        .as_str()
        .unwrap_or("ClusterIP")
        .to_string();
    if ty != "ExternalName" {
        match svc["spec"]["clusterIP"].as_str().filter(|s| !s.is_empty()) {
            Some("None") => svc["spec"]["clusterIPs"] = json!(["None"]),
            Some(ip) => {
                let parsed: Ipv4Addr = ip.parse().map_err(|_| {
                    invalid(
                        svc,
                        "spec.clusterIPs",
                        &format!("[]string{{\"{ip}\"}}"),
                        "must be a valid IP address",
                    )
                })?;
                if !ranges.contains(parsed) {
                    return Err(invalid(
                        svc,
                        "spec.clusterIPs",
                        &format!("[]string{{\"{ip}\"}}"),
                        &format!(
                            "failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {}/{}",
                            Ipv4Addr::from(ranges.base),
                            32 - ranges.size.trailing_zeros()
                        ),
                    ));
                }
                let key = format!("{IPS}{ip}");
                if !reserve(store, &key, owner).await? {
                    return Err(invalid(
                        svc,
                        "spec.clusterIPs",
                        &format!("[]string{{\"{ip}\"}}"),
                        &format!("failed to allocate IP {ip}: provided IP is already allocated"),
                    ));
                }
                taken.push(key);
                svc["spec"]["clusterIPs"] = json!([ip]);
            }
            None => {
                // dynamic addresses start past the lowest sixteenth (kept for static ones)
                let usable = ranges.size.saturating_sub(2);
                let start = (usable / 16).max(1);
                let seed = crate::api::meta::new_uid()
                    .bytes()
                    .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
                let span = usable.saturating_sub(start).max(1);
                let mut found = None;
                for i in 0..span {
                    let ip =
                        Ipv4Addr::from(ranges.base + 1 + start + (seed.wrapping_add(i) % span));
                    let key = format!("{IPS}{ip}");
                    if reserve(store, &key, owner).await? {
                        taken.push(key);
                        found = Some(ip);
                        break;
                    }
                }
                let ip = found.ok_or_else(|| {
                    ApiStatus::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "InternalError",
                        "Internal error occurred: failed to allocate a serviceIP: range is full",
                    )
                })?;
                svc["spec"]["clusterIP"] = json!(ip.to_string());
                svc["spec"]["clusterIPs"] = json!([ip.to_string()]);
            }
        }
    }
    if ty == "NodePort" || ty == "LoadBalancer" {
        let (lo, hi) = ranges.node_ports;
        let count = svc["spec"]["ports"].as_array().map_or(0, Vec::len);
        for i in 0..count {
            let protocol = svc["spec"]["ports"][i]["protocol"]
                .as_str()
                .unwrap_or("TCP")
                .to_string();
            let field = format!("spec.ports[{i}].nodePort");
            match svc["spec"]["ports"][i]["nodePort"].as_u64() {
                Some(p) => {
                    if p < u64::from(lo) || p > u64::from(hi) {
                        return Err(invalid(
                            svc,
                            &field,
                            &p.to_string(),
                            &format!(
                                "provided port is not in the valid range. The range of valid ports is {lo}-{hi}"
                            ),
                        ));
                    }
                    let key = format!("{PORTS}{protocol}/{p}");
                    if !reserve(store, &key, owner).await? {
                        return Err(invalid(
                            svc,
                            &field,
                            &p.to_string(),
                            "provided port is already allocated",
                        ));
                    }
                    taken.push(key);
                }
                None => {
                    let span = u32::from(hi - lo) + 1;
                    let seed = crate::api::meta::new_uid()
                        .bytes()
                        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
                    let mut found = None;
                    for j in 0..span {
                        let p = u32::from(lo) + (seed.wrapping_add(j) % span);
                        let key = format!("{PORTS}{protocol}/{p}");
                        if reserve(store, &key, owner).await? {
                            taken.push(key);
                            found = Some(p);
                            break;
                        }
                    }
                    let p = found.ok_or_else(|| {
                        ApiStatus::new(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "InternalError",
                            "Internal error occurred: failed to allocate a nodePort: range is full",
                        )
                    })?;
                    svc["spec"]["ports"][i]["nodePort"] = json!(p);
                }
            }
        }
    }
    Ok(())
}

async fn free(store: &dyn Store, key: &str, owner: &str) -> Result<(), ApiStatus> {
    let held = store.get(key).await.map_err(store_error)?;
    if let Some(kv) = held.kv.filter(|kv| kv.value == owner.as_bytes()) {
        match store.delete(key, kv.mod_revision).await {
            Ok(_) | Err(StoreError::Conflict { .. }) => {}
            Err(e) => return Err(store_error(e)),
        }
    }
    Ok(())
}

/// Releases what a deleted Service held.
pub async fn release(store: &dyn Store, svc: &Value) {
    let owner = owner_of(svc);
    let mut keys: Vec<String> = svc["spec"]["clusterIPs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|ip| *ip != "None")
        .map(|ip| format!("{IPS}{ip}"))
        .collect();
    for p in svc["spec"]["ports"].as_array().into_iter().flatten() {
        if let Some(n) = p["nodePort"].as_u64() {
            keys.push(format!(
                "{PORTS}{}/{n}",
                p["protocol"].as_str().unwrap_or("TCP")
            ));
        }
    }
    for k in keys {
        if let Err(e) = free(store, &k, &owner).await {
            tracing::warn!(key = %k, error = %e.message, "could not release a service allocation");
        }
    }
}

/// Carries the allocations of `current` into an update that leaves them out (a PUT
/// of an edited manifest without `clusterIP`, as `kubectl replace` sends).
pub fn keep_allocations(next: &mut Value, current: &Value) {
    for f in ["clusterIP", "clusterIPs"] {
        if next["spec"][f].is_null() && !current["spec"][f].is_null() {
            next["spec"][f] = current["spec"][f].clone();
        }
    }
    let ty = next["spec"]["type"].as_str().unwrap_or("ClusterIP");
    if ty != "NodePort" && ty != "LoadBalancer" {
        return;
    }
    let old_ports = current["spec"]["ports"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for p in next["spec"]["ports"].as_array_mut().into_iter().flatten() {
        if p["nodePort"].is_null() {
            if let Some(o) = old_ports
                .iter()
                .find(|o| o["port"] == p["port"] && o["protocol"] == p["protocol"])
            {
                if !o["nodePort"].is_null() {
                    p["nodePort"] = o["nodePort"].clone();
                }
            }
        }
    }
}
