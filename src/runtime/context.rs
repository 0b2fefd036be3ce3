//! What a component's control loops share for one term (a leadership term, an
//! agent's life): one informer per resource started on first use and the tasks,
//! stopped together; and what each loop has of its own: the client it writes with
//! (its identity, as upstream's controllers each act as their own service account)
//! and the event recorder.

use super::Tasks;
use super::events::Recorder;
use super::informer::Informer;
use crate::api::registry::Resource;
use crate::client::ApiClient;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// One control loop's view of its term: its own client and event recorder, and the
/// informers and tasks every loop of the term shares.
pub struct Context {
    /// What the loop writes with (its identity).
    pub client: ApiClient,
    /// Events from the loop, under its identity.
    pub events: Recorder,
    shared: Arc<Shared>,
}

/// What the loops of one term share.
struct Shared {
    /// What the informers list and watch with (the component's own identity).
    client: ApiClient,
    informers: Mutex<HashMap<(&'static str, &'static str), Arc<Informer>>>,
    /// Every task of this term: the loops, their feeders and resyncs, and the
    /// informers. [`Context::stop`] ends them all.
    tasks: Tasks,
}

impl Context {
    /// A term whose informers and loops all use `client`.
    pub fn new(client: ApiClient) -> Arc<Context> {
        Arc::new(Context {
            events: Recorder::new(client.clone()),
            client: client.clone(),
            shared: Arc::new(Shared {
                client,
                informers: Mutex::new(HashMap::new()),
                tasks: Tasks::new(),
            }),
        })
    }

    /// The same term (informers, tasks) for a loop that writes as `client`.
    pub fn acting_as(&self, client: ApiClient) -> Arc<Context> {
        Arc::new(Context {
            events: Recorder::new(client.clone()),
            client,
            shared: self.shared.clone(),
        })
    }

    /// An informer of what `field_selector` selects of `group`/`plural`, for one loop
    /// alone (not shared), owned by this term.
    pub fn selected_informer(
        &self,
        res: &'static Resource,
        field_selector: String,
    ) -> Arc<Informer> {
        let (informer, follow) =
            Informer::following(self.shared.client.clone(), res, Some(field_selector));
        self.shared.tasks.spawn(follow);
        informer
    }

    /// Runs `fut` as a task of this term.
    pub fn spawn(&self, fut: impl std::future::Future<Output = ()> + Send + 'static) {
        self.shared.tasks.spawn(fut);
    }

    /// Ends the term: every loop and informer stops.
    pub fn stop(&self) {
        self.shared.tasks.stop();
        self.shared
            .informers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// The shared informer of a resource (started on first use).
    pub fn informer(&self, res: &'static Resource) -> Arc<Informer> {
        let mut map = self
            .shared
            .informers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        map.entry((res.group, res.plural))
            .or_insert_with(|| {
                let (informer, follow) = Informer::following(self.shared.client.clone(), res, None);
                self.shared.tasks.spawn(follow);
                informer
            })
            .clone()
    }
}
