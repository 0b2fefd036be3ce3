//! What admission says about a request besides yes or no: warnings for the client
//! (`Warning: 299 - "…"` headers, as upstream's warning recorder) and annotations for
//! the audit log (`pod-security.kubernetes.io/enforce-policy`, …). Kept per request
//! for the request's task, as upstream keeps them in the request's context.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// One request's warnings and audit annotations.
#[derive(Debug, Default)]
pub struct Notes {
    warnings: Mutex<Vec<String>>,
    annotations: Mutex<BTreeMap<String, String>>,
}

/// What a request's notes came to.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Taken {
    /// Warnings, each once, in order.
    pub warnings: Vec<String>,
    /// Audit annotations.
    pub annotations: BTreeMap<String, String>,
}

tokio::task_local! {
    static NOTES: Notes;
}

/// Runs `f` (a request) with its own notes, and returns them with its output.
pub async fn scope<F: std::future::Future>(f: F) -> (F::Output, Taken) {
    NOTES
        .scope(Notes::default(), async move {
            let out = f.await;
            let taken = NOTES
                .try_with(|n| Taken {
                    warnings: std::mem::take(
                        &mut *n.warnings.lock().unwrap_or_else(|e| e.into_inner()),
                    ),
                    annotations: std::mem::take(
                        &mut *n.annotations.lock().unwrap_or_else(|e| e.into_inner()),
                    ),
                })
                .unwrap_or_default();
            (out, taken)
        })
        .await
}

/// A warning for the client (the same text twice is sent once). Outside a request
/// (the server's own writes) it is dropped.
pub fn warn(text: impl Into<String>) {
    let text = text.into();
    let _ = NOTES.try_with(|n| {
        let mut w = n.warnings.lock().unwrap_or_else(|e| e.into_inner());
        if !w.contains(&text) {
            w.push(text);
        }
    });
}

/// An audit annotation; the first value given for a key stays (as upstream's).
pub fn annotate(key: impl Into<String>, value: impl Into<String>) {
    let _ = NOTES.try_with(|n| {
        n.annotations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.into())
            .or_insert_with(|| value.into());
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_request_keeps_its_own_notes() {
        let ((), a) = scope(async {
            warn("w1");
            warn("w1");
            annotate("k", "first");
            annotate("k", "second");
        })
        .await;
        assert_eq!(a.warnings, ["w1"]);
        assert_eq!(a.annotations["k"], "first");
        let ((), b) = scope(async { warn("w2") }).await;
        assert_eq!(b.warnings, ["w2"]);
        warn("outside a request: dropped");
    }
}
