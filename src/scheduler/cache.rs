//! The scheduler's view of the cluster: every node with the pods placed on it, kept up
//! to date change by change from the shared informers (not rebuilt per decision), plus
//! the pods this scheduler has bound but the informer has not shown bound yet
//! ("assumed", as upstream calls them).

use super::plugins::NodeInfo;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Default)]
pub struct Cache {
    nodes: Vec<NodeInfo>,
    index: HashMap<String, usize>,
    /// pod key → (node name, assumed by this scheduler)
    placed: HashMap<String, (String, bool)>,
}

/// The node a pod occupies, if it occupies one: bound and not finished.
fn occupies(pod: &Value) -> Option<&str> {
    if matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    ) {
        return None;
    }
    pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty())
}

impl Cache {
    /// The nodes (present or known only from their pods; `place` skips the latter).
    pub fn nodes(&self) -> &[NodeInfo] {
        &self.nodes
    }

    fn slot(&mut self, name: &str) -> &mut NodeInfo {
        let i = match self.index.get(name) {
            Some(i) => *i,
            None => {
                self.nodes.push(NodeInfo::absent(name));
                self.index.insert(name.to_string(), self.nodes.len() - 1);
                self.nodes.len() - 1
            }
        };
        &mut self.nodes[i]
    }

    /// Drops the entry for `name` if nothing is left of it.
    fn tidy(&mut self, name: &str) {
        let Some(&i) = self.index.get(name) else {
            return;
        };
        if self.nodes[i].is_present() || !self.nodes[i].is_empty() {
            return;
        }
        self.index.remove(name);
        self.nodes.swap_remove(i);
        if let Some(moved) = self.nodes.get(i) {
            self.index.insert(moved.name().to_string(), i);
        }
    }

    pub fn node_changed(&mut self, name: &str, node: Option<Arc<Value>>) {
        match node {
            Some(n) => self.slot(name).set_node(n),
            None => {
                if let Some(&i) = self.index.get(name) {
                    self.nodes[i].clear_node();
                    self.tidy(name);
                }
            }
        }
    }

    fn unplace(&mut self, key: &str) {
        if let Some((node, _)) = self.placed.remove(key) {
            if let Some(&i) = self.index.get(&node) {
                self.nodes[i].remove(key);
            }
            self.tidy(&node);
        }
    }

    fn put(&mut self, key: &str, node: &str, pod: Arc<Value>, assumed: bool) {
        self.unplace(key);
        self.slot(node).insert(key.to_string(), pod);
        self.placed
            .insert(key.to_string(), (node.to_string(), assumed));
    }

    /// What the pod informer saw for `key` (`None`: the pod is gone).
    pub fn pod_changed(&mut self, key: &str, pod: Option<&Arc<Value>>) {
        match pod.and_then(|p| occupies(p).map(|n| (n, p))) {
            Some((node, p)) => self.put(key, node, p.clone(), false),
            None => {
                // a stale unbound copy must not undo this scheduler's own binding
                let bound_by_us = self.placed.get(key).is_some_and(|(_, assumed)| *assumed);
                let finished = pod.is_some_and(|p| {
                    occupies(p).is_none()
                        && !p["spec"]["nodeName"].as_str().is_none_or(str::is_empty)
                });
                if pod.is_none() || finished || !bound_by_us {
                    self.unplace(key);
                }
            }
        }
    }

    /// Counts `pod` on `node` from the moment this scheduler decides, before the
    /// binding is written.
    pub fn assume(&mut self, key: &str, node: &str, pod: Arc<Value>) {
        self.put(key, node, pod, true);
    }

    /// The binding failed: the pod is no longer counted (unless the informer has shown
    /// it bound meanwhile).
    pub fn forget(&mut self, key: &str) {
        if self.placed.get(key).is_some_and(|(_, assumed)| *assumed) {
            self.unplace(key);
        }
    }

    pub fn is_assumed(&self, key: &str) -> bool {
        self.placed.get(key).is_some_and(|(_, assumed)| *assumed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(node: &str, cpu: &str, phase: &str) -> Arc<Value> {
        Arc::new(json!({"metadata": {"namespace": "default", "name": "p"},
            "spec": {"nodeName": node, "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]},
            "status": {"phase": phase}}))
    }

    fn node(name: &str) -> Arc<Value> {
        Arc::new(
            json!({"metadata": {"name": name}, "status": {"allocatable": {"cpu": "4", "memory": "4Gi", "pods": "110"}}}),
        )
    }

    fn pods_on(cache: &Cache, name: &str) -> usize {
        cache
            .nodes()
            .iter()
            .find(|n| n.name() == name)
            .map_or(usize::MAX, |n| n.pods().count())
    }

    #[test]
    fn pods_are_counted_moved_and_released_change_by_change() {
        let mut c = Cache::default();
        c.node_changed("a", Some(node("a")));
        c.node_changed("b", Some(node("b")));
        // assumed, then a stale unbound copy arrives: still counted
        c.assume("default/p", "a", pod("a", "1", "Pending"));
        c.pod_changed("default/p", Some(&pod("", "1", "Pending")));
        assert_eq!(pods_on(&c, "a"), 1);
        assert!(c.is_assumed("default/p"));
        // the informer shows it bound: no longer assumed, counted once
        c.pod_changed("default/p", Some(&pod("a", "1", "Running")));
        assert!(!c.is_assumed("default/p"));
        assert_eq!(pods_on(&c, "a"), 1);
        c.forget("default/p");
        assert_eq!(pods_on(&c, "a"), 1, "forget only drops assumed pods");
        // finished pods free their node
        c.pod_changed("default/p", Some(&pod("a", "1", "Succeeded")));
        assert_eq!(pods_on(&c, "a"), 0);
        // a pod on a node not seen yet is kept; the node is not offered while absent
        c.pod_changed("default/q", Some(&pod("c", "1", "Running")));
        assert!(
            !c.nodes()
                .iter()
                .find(|n| n.name() == "c")
                .unwrap()
                .is_present()
        );
        c.node_changed("c", Some(node("c")));
        assert_eq!(pods_on(&c, "c"), 1);
        // the node goes while its pod stays; then the pod goes and nothing is left
        c.node_changed("c", None);
        assert_eq!(pods_on(&c, "c"), 1);
        c.pod_changed("default/q", None);
        assert_eq!(pods_on(&c, "c"), usize::MAX);
        assert_eq!(c.nodes().len(), 2);
        // a failed binding is forgotten
        c.assume("default/r", "b", pod("b", "1", "Pending"));
        c.forget("default/r");
        assert_eq!(pods_on(&c, "b"), 0);
    }
}
