//! prom-client's cluster protocol, with corral as the primary: at a scrape
//! of `--metrics`, every ready Node worker is asked for its app metrics
//! and the answers are collected for [`APP_METRICS_TIMEOUT`] at most. A
//! worker that does not answer in time is left out of that scrape (with a
//! rate-limited warning); nothing it does can hold a scrape longer.
//!
//! corral's Node agent answers for the worker (`agent.js`, "prom-client"):
//! the request is a Node internal message (`NODE_CORRAL_APP_METRICS`), which
//! keeps no channel referenced as a `'message'` listener would, and the
//! answer is prom-client's own (`prom-client:getMetricsRes`, with the
//! registries' `getMetricsAsJSON()`), read by [`app_families`].
//!
//! Scrapes collect one at a time, so the answers held are at most one per
//! worker; a scrape that came while another collected takes that one's
//! result, so none waits for more than the collection under way and its
//! own.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::oneshot;

use crate::control::status::WorkerState;
use crate::log::rate::warn_limited;
use crate::metrics::app_families::{self, Family};
use crate::primary::io::live_table::LiveTable;
use crate::protocol::envelope::Fields;
use crate::worker_key::WorkerKey;

/// How long a scrape waits for the workers' answers.
pub(crate) const APP_METRICS_TIMEOUT: Duration = Duration::from_secs(2);
/// prom-client's answer (`GET_METRICS_RES`).
const GET_METRICS_RES: &str = "prom-client:getMetricsRes";
/// corral's request, to its agent.
const REQUEST_CMD: &str = "NODE_CORRAL_APP_METRICS";

/// Whether `message` is an answer to a metrics request (then its `Value`
/// is built: [`AppMetrics::answer`] reads it whole).
pub(crate) fn is_answer(message: &Fields<'_>) -> bool {
    message.kind.as_str() == Some(GET_METRICS_RES)
}

pub(crate) struct AppMetrics {
    live_table: Arc<LiveTable>,
    next_request: AtomicU64,
    /// The collection under way, if any.
    pending: Mutex<Option<Pending>>,
    /// One collection at a time; the last one's result, and when it ended.
    turn: tokio::sync::Mutex<Option<(Instant, Vec<Family>)>>,
}

struct Pending {
    request: u64,
    /// The processes asked that have not answered, by slot and generation
    /// (a slot's next process is another).
    waiting: Vec<(u32, u32)>,
    answers: Vec<Vec<Family>>,
    /// Told when the last one answered.
    all_in: Option<oneshot::Sender<()>>,
}

impl AppMetrics {
    pub(crate) fn new(live_table: Arc<LiveTable>) -> Self {
        AppMetrics {
            live_table,
            next_request: AtomicU64::new(0),
            pending: Mutex::new(None),
            turn: tokio::sync::Mutex::new(None),
        }
    }

    /// Asks every ready worker for its metrics; the merged answers that
    /// came within [`APP_METRICS_TIMEOUT`].
    pub(crate) async fn collect(&self) -> Vec<Family> {
        let asked_at = Instant::now();
        let mut last = self.turn.lock().await;
        if let Some((ended, families)) = last.as_ref()
            && *ended >= asked_at
        {
            return families.clone();
        }
        let families = self.collect_now().await;
        *last = Some((Instant::now(), families.clone()));
        families
    }

    async fn collect_now(&self) -> Vec<Family> {
        let request = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (all_in, answered) = oneshot::channel();
        let ready = self.ready_workers();
        // Waited for before it is sent: an answer can come at once.
        *self.lock() = Some(Pending {
            request,
            waiting: ready.clone(),
            answers: Vec::new(),
            all_in: Some(all_in),
        });
        let line = request_line(request);
        for (id, generation) in ready {
            if self.live_table.send(id, line.clone()).is_err() {
                self.not_waited_for((id, generation));
            }
        }
        self.check_all_in();
        let _ = tokio::time::timeout(APP_METRICS_TIMEOUT, answered).await;
        let Some(pending) = self.lock().take() else {
            return Vec::new();
        };
        for (slot, _) in &pending.waiting {
            warn_limited!(
                event = "app_metrics_missing",
                worker = *slot,
                "worker {slot} did not send its app metrics within {}s: left out of this scrape",
                APP_METRICS_TIMEOUT.as_secs()
            );
        }
        app_families::aggregate(pending.answers)
    }

    /// The ready workers, by slot and generation.
    fn ready_workers(&self) -> Vec<(u32, u32)> {
        self.live_table
            .list()
            .into_iter()
            .filter(|worker| worker.state == WorkerState::Ready)
            .map(|worker| (worker.id, worker.generation))
            .collect()
    }

    /// Takes worker `from`'s answer `message`, if it answers the request
    /// under way and was asked; only then is it read.
    pub(crate) fn answer(&self, from: WorkerKey, message: &Value) {
        let slot = from.slot;
        let process = (slot, from.generation);
        let request = message.get("requestId").and_then(Value::as_u64);
        let awaited = |pending: &Option<Pending>| {
            pending
                .as_ref()
                .is_some_and(|p| Some(p.request) == request && p.waiting.contains(&process))
        };
        if !awaited(&self.lock()) {
            return;
        }
        let read = read_answer(slot, message);
        let mut pending = self.lock();
        if !awaited(&pending) {
            return;
        }
        if let Some(current) = pending.as_mut() {
            current.waiting.retain(|&asked| asked != process);
            current.answers.extend(read);
        }
        drop(pending);
        self.check_all_in();
    }

    /// The collection under way no longer waits for `process`.
    fn not_waited_for(&self, process: (u32, u32)) {
        if let Some(current) = self.lock().as_mut() {
            current.waiting.retain(|&asked| asked != process);
        }
    }

    /// The process `worker` exited: the collection under way does not wait
    /// for it.
    pub(crate) fn gone(&self, worker: WorkerKey) {
        self.not_waited_for((worker.slot, worker.generation));
        self.check_all_in();
    }

    /// Tells the waiting scrape once every worker asked has answered.
    fn check_all_in(&self) {
        let mut pending = self.lock();
        if let Some(current) = pending.as_mut().filter(|p| p.waiting.is_empty())
            && let Some(all_in) = current.all_in.take()
        {
            let _ = all_in.send(());
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Pending>> {
        self.pending
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

fn request_line(request: u64) -> Vec<u8> {
    let mut line = serde_json::json!({ "cmd": REQUEST_CMD, "requestId": request }).to_string();
    line.push('\n');
    line.into_bytes()
}

/// Worker `slot`'s metrics from its answer, or a warning why they are not
/// used.
fn read_answer(slot: u32, message: &Value) -> Option<Vec<Family>> {
    if let Some(error) = message.get("error") {
        let error = crate::protocol::message::shown(error);
        warn_limited!(
            event = "app_metrics_failed",
            worker = slot,
            "worker {slot}: prom-client could not collect its metrics: {error}"
        );
        return None;
    }
    let metrics = message.get("metrics").unwrap_or(&Value::Null);
    match app_families::read_answer(metrics) {
        Ok((families, left_out)) => {
            if let Some(name) = left_out.first() {
                warn_limited!(
                    event = "app_metrics_left_out",
                    worker = slot,
                    "worker {slot}: app metric {name} left out: names starting with corral_ are \
                     corral's own"
                );
            }
            Some(families)
        }
        Err(why) => {
            warn_limited!(
                event = "app_metrics_refused",
                worker = slot,
                "worker {slot}: its app metrics were not used: {why}"
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_is_a_node_internal_message_on_one_line() {
        let line = String::from_utf8(request_line(7)).expect("text");
        assert_eq!(
            line,
            "{\"cmd\":\"NODE_CORRAL_APP_METRICS\",\"requestId\":7}\n"
        );
    }

    #[test]
    fn answers_are_known_by_prom_clients_type() {
        let fields = |line: &'static str| match crate::protocol::envelope::read(line.as_bytes()) {
            Ok(crate::protocol::envelope::WorkerLine::User(user)) => user.fields,
            other => panic!("{other:?}"),
        };
        assert!(is_answer(&fields(
            r#"{"type":"prom-client:getMetricsRes","requestId":1}"#
        )));
        assert!(!is_answer(&fields(r#"{"type":"other"}"#)));
        assert!(!is_answer(&fields(r#"["prom-client:getMetricsRes"]"#)));
    }
}
