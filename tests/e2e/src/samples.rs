//! What a live event stream says about migrations' readings: each reading with the
//! migration it was reported on, and the gaps between a migration's readings.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use converge_testkit::SseReader;
pub use converge_testkit::now_ms;
use serde_json::Value;

/// One `migration` event's sample as the stream delivered it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The migration.
    pub id: String,
    /// Its VM.
    pub vm_uuid: String,
    /// When the reading was taken (unix ms).
    pub at_ms: i64,
}

/// Every sampled `migration` event and every `host` event of a live stream, until dropped.
#[derive(Debug)]
pub struct Recorder {
    samples: Arc<Mutex<Vec<Seen>>>,
    /// Every `host` event's host, in order.
    pub hosts: Arc<Mutex<Vec<Value>>>,
    /// Every pass boundary announced, as (migration, iteration).
    pub iterations: Arc<Mutex<Vec<(String, u64)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    /// Opens a stream for `cookie`'s session and records it.
    pub async fn open(base: &str, cookie: &str) -> Self {
        let mut reader = SseReader::open(base, cookie, None).await.reader;
        reader.patience = Duration::from_secs(600);
        let samples = Arc::new(Mutex::new(Vec::new()));
        let hosts = Arc::new(Mutex::new(Vec::new()));
        let iterations = Arc::new(Mutex::new(Vec::new()));
        let (s, h, i) = (samples.clone(), hosts.clone(), iterations.clone());
        let task = tokio::spawn(async move {
            while let Some(event) = reader.next().await {
                let Ok(data) = serde_json::from_str::<Value>(&event.data) else {
                    continue;
                };
                match event.event.as_str() {
                    "migration" if !data["sample"].is_null() => {
                        if let Some(iteration) = data["iteration"]["iteration"].as_u64() {
                            let id = data["migration"]["id"].as_str().unwrap_or_default();
                            i.lock().unwrap().push((id.to_owned(), iteration));
                        }
                        s.lock().unwrap().push(Seen {
                            id: data["migration"]["id"].as_str().unwrap_or_default().into(),
                            vm_uuid: data["migration"]["vm_uuid"]
                                .as_str()
                                .unwrap_or_default()
                                .into(),
                            at_ms: data["sample"]["at_ms"].as_i64().unwrap_or_default(),
                        });
                    }
                    "host" => h.lock().unwrap().push(data["host"].clone()),
                    _ => {}
                }
            }
        });
        Self {
            samples,
            hosts,
            iterations,
            task,
        }
    }

    /// The readings so far.
    pub fn samples(&self) -> Vec<Seen> {
        self.samples.lock().unwrap().clone()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Gaps between consecutive readings of migration `id` taken in `[from_ms, to_ms]`, ms.
pub fn gaps(seen: &[Seen], id: &str, from_ms: i64, to_ms: i64) -> Vec<i64> {
    let mut at: Vec<i64> = seen
        .iter()
        .filter(|s| s.id == id && (from_ms..=to_ms).contains(&s.at_ms))
        .map(|s| s.at_ms)
        .collect();
    at.sort_unstable();
    at.dedup();
    at.windows(2).map(|w| w[1] - w[0]).collect()
}

/// The `p`th percentile of `values` (nearest rank; 0 when empty).
pub fn percentile(values: &[i64], p: f64) -> i64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}
