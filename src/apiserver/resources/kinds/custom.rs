//! Resources added at run time (custom resources): upstream's customResourceStrategy.
//! A new object has no status until its controller writes one through the status
//! subresource, and validation is the generic metadata checks only (the schema of a
//! CustomResourceDefinition is applied by the CRD issue's own validation).

use super::Strategy;
use serde_json::Value;

pub struct CustomResource;

impl Strategy for CustomResource {
    fn initial_status(&self, _obj: &Value) -> Option<Value> {
        None
    }
}
