//! A closed-loop HTTP load driver: N clients each issuing GETs back to back, recording every
//! request's start, latency and outcome.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

/// The outcome of one request.
#[derive(Debug, Clone)]
pub struct Sample {
    pub started: Instant,
    pub latency: Duration,
    /// The response status, if a response arrived.
    pub status: Option<u16>,
    /// Why the request (or reading its body) failed, with the error's source chain.
    pub error: Option<String>,
}

/// Running load; [`Load::stop`] ends it and hands back the samples.
pub struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<Vec<Sample>>>,
}

impl Load {
    /// Spawns `clients` tasks (on the current tokio runtime), each with its own keep-alive
    /// client, looping GET `url` until stopped.
    pub fn start(url: String, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|_| {
                let (url, stop) = (url.clone(), stop.clone());
                tokio::spawn(async move {
                    let client = reqwest::Client::builder()
                        .pool_max_idle_per_host(1)
                        .timeout(Duration::from_secs(60))
                        .build()
                        .expect("build reqwest client");
                    let mut samples = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        samples.push(get(&client, &url).await);
                    }
                    samples
                })
            })
            .collect();
        Load { stop, tasks }
    }

    /// Stops the clients, letting in-flight requests finish; returns every sample ordered by
    /// start time.
    pub async fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for task in self.tasks {
            all.extend(task.await.expect("load client task panicked"));
        }
        all.sort_by_key(|s| s.started);
        all
    }
}

async fn get(client: &reqwest::Client, url: &str) -> Sample {
    let started = Instant::now();
    let (status, error) = match client.get(url).send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            // Read the whole body so the connection can be reused.
            (Some(status), resp.bytes().await.err().map(|e| chain(&e)))
        }
        Err(e) => (None, Some(chain(&e))),
    };
    Sample {
        started,
        latency: started.elapsed(),
        status,
        error,
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// Samples that did not end in a complete 200 response.
pub fn failures(samples: &[Sample]) -> Vec<&Sample> {
    samples
        .iter()
        .filter(|s| s.status != Some(200) || s.error.is_some())
        .collect()
}

/// The longest latency among `samples` (zero if there are none).
pub fn longest(samples: &[Sample]) -> Duration {
    samples.iter().map(|s| s.latency).max().unwrap_or_default()
}
