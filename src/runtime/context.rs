//! What a component's control loops share for one term (a leadership term, an
//! agent's life): the client, one informer per resource started on first use, the
//! event recorder, and the tasks — stopped together.

use super::Tasks;
use super::events::Recorder;
use super::informer::Informer;
use crate::api::registry::Resource;
use crate::client::ApiClient;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What every control loop of one term shares: the client, the informers and the
/// event recorder.
pub struct Context {
    pub client: ApiClient,
    /// Events from the loops of this term.
    pub events: Recorder,
    informers: Mutex<HashMap<(&'static str, &'static str), Arc<Informer>>>,
    /// Every task of this leadership term: the loops, their feeders and resyncs, and
    /// the informers. [`Context::stop`] (or dropping the context) ends them all.
    tasks: Tasks,
}

impl Context {
    pub fn new(client: ApiClient) -> Arc<Context> {
        Arc::new(Context {
            events: Recorder::new(client.clone()),
            client,
            informers: Mutex::new(HashMap::new()),
            tasks: Tasks::new(),
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
            Informer::following(self.client.clone(), res, Some(field_selector));
        self.tasks.spawn(follow);
        informer
    }

    /// Runs `fut` as a task of this term.
    pub fn spawn(&self, fut: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(fut);
    }

    /// Ends the term: every loop and informer stops.
    pub fn stop(&self) {
        self.tasks.stop();
        self.informers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// The shared informer of a resource (started on first use).
    pub fn informer(&self, res: &'static Resource) -> Arc<Informer> {
        let mut map = self.informers.lock().unwrap_or_else(|e| e.into_inner());
        map.entry((res.group, res.plural))
            .or_insert_with(|| {
                let (informer, follow) = Informer::following(self.client.clone(), res, None);
                self.tasks.spawn(follow);
                informer
            })
            .clone()
    }
}
