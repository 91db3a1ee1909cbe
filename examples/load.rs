//! A load driver for the standalone service: many concurrent keep-alive clients against one or
//! more URLs, each for a fixed time; prints requests/s, p50 and p99.
//!
//! ```text
//! cargo run --release --example standalone_service &          # in one terminal
//! curl -s -X POST localhost:8000/users -H 'content-type: application/json' -d '{"email":"a@example.com","name":"A"}'
//! cargo run --release --example load -- http://127.0.0.1:8000/users/1 http://127.0.0.1:8000/ping
//! ```
//! Env: `CLIENTS` (default 64), `SECONDS` (default 10 per URL).

use std::time::{Duration, Instant};

#[tokio::main]
async fn main() {
    let urls: Vec<String> = std::env::args().skip(1).collect();
    if urls.is_empty() {
        eprintln!("usage: load URL [URL …]   (CLIENTS, SECONDS from the environment)");
        std::process::exit(2);
    }
    let clients: usize = std::env::var("CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let secs: f64 = std::env::var("SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10.0);
    println!("{clients} clients, {secs} s per URL\n");
    println!(
        "{:<44} {:>10} {:>9} {:>9} {:>8}",
        "url", "req/s", "p50 ms", "p99 ms", "errors"
    );
    for url in urls {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(clients)
            .build()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs_f64(secs);
        let tasks: Vec<_> = (0..clients)
            .map(|_| {
                let client = client.clone();
                let url = url.clone();
                tokio::spawn(async move {
                    let mut lat = Vec::new();
                    let mut errors = 0u64;
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        match client.get(&url).send().await {
                            Ok(r) if r.status().is_success() => {
                                let _ = r.bytes().await;
                                lat.push(t.elapsed());
                            }
                            _ => errors += 1,
                        }
                    }
                    (lat, errors)
                })
            })
            .collect();
        let started = Instant::now();
        let mut all = Vec::new();
        let mut errors = 0;
        for t in tasks {
            let (lat, e) = t.await.unwrap();
            all.extend(lat);
            errors += e;
        }
        let elapsed = started.elapsed().as_secs_f64();
        all.sort();
        let pct = |p: f64| {
            all.get(((all.len() as f64 - 1.0) * p) as usize)
                .map_or(0.0, |d| d.as_secs_f64() * 1e3)
        };
        println!(
            "{:<44} {:>10.0} {:>9.2} {:>9.2} {:>8}",
            url,
            all.len() as f64 / elapsed,
            pct(0.50),
            pct(0.99),
            errors
        );
    }
}
