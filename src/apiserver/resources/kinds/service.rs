//! Services: their cluster IPs and node ports are allocated when they are created
//! (so the answer to the create carries them), kept across updates, and released
//! when they are deleted (`allocate`).

use super::Strategy;
use crate::apiserver::resources::allocate::{self, ServiceRanges};
use crate::apiserver::status::ApiStatus;
use crate::store::Store;
use async_trait::async_trait;
use http::StatusCode;
use serde_json::Value;

pub struct Service;

#[async_trait]
impl Strategy for Service {
    fn prepare_for_update(&self, new: &mut Value, old: &Value) {
        allocate::keep_allocations(new, old);
    }

    async fn reserve(
        &self,
        store: &dyn Store,
        ranges: Option<&ServiceRanges>,
        svc: &mut Value,
    ) -> Result<(), ApiStatus> {
        let ranges = ranges.ok_or_else(|| {
            ApiStatus::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "a Service is created without this server's service ranges",
            )
        })?;
        allocate::allocate(store, ranges, svc).await.map(drop)
    }

    async fn release(&self, store: &dyn Store, svc: &Value) {
        allocate::release(store, svc).await;
    }
}
