//! pgdbm's background-worker pattern: workers claim jobs with `FOR UPDATE SKIP LOCKED`, write a
//! result row, retry a failed job up to `MAX_ATTEMPTS`, park a job that keeps failing, and stop
//! cleanly on SIGTERM / Ctrl-C after finishing the job in hand.
//!
//! `cargo run --example background_worker` (`DATABASE_URL`, else a local server). Env:
//! `WORKER_ID`, `CONCURRENCY` (tasks, default 2), `MAX_ATTEMPTS` (3), `JOB_DELAY_MS` (simulated
//! work, 5), `EXIT_WHEN_IDLE=1` (stop once the queue is empty), `ENQUEUE=N` (add N demo jobs first).
//!
//! A job is claimed inside the transaction that records its outcome, so a worker killed mid-job
//! (even with SIGKILL) leaves it queued for another: every job is done exactly once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pgdbm::{Database, DatabaseConfig, Migrator};

struct Settings {
    worker: String,
    max_attempts: i32,
    delay: Duration,
    exit_when_idle: bool,
}

/// The work itself: payloads starting with `fail` always fail; `flaky` fails on the first try.
async fn run_job(payload: &str, attempts_before: i32, delay: Duration) -> Result<String, String> {
    tokio::time::sleep(delay).await;
    if payload.starts_with("fail") {
        return Err(format!("cannot process {payload}"));
    }
    if payload.starts_with("flaky") && attempts_before == 0 {
        return Err("transient failure".into());
    }
    Ok(payload.to_uppercase())
}

/// Claims and processes one job; `Ok(false)` when the queue is empty.
async fn process_one(db: &Database, s: &Settings) -> pgdbm::Result<bool> {
    let mut tx = db.transaction().await?;
    let job: Option<(i64, String, i32)> = tx
        .fetch_optional(
            "SELECT id, payload, attempts FROM {{tables.jobs}} WHERE status = 'queued' \
             ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
            (),
        )
        .await?;
    let Some((id, payload, attempts)) = job else {
        tx.rollback().await?;
        return Ok(false);
    };
    match run_job(&payload, attempts, s.delay).await {
        Ok(result) => {
            tx.execute(
                "INSERT INTO {{tables.job_results}} (job_id, result, worker) VALUES ($1, $2, $3)",
                (id, result, &s.worker),
            )
            .await?;
            tx.execute(
                "UPDATE {{tables.jobs}} SET status = 'done', attempts = attempts + 1, updated_at = now() WHERE id = $1",
                (id,),
            )
            .await?;
        }
        Err(error) => {
            let parked = attempts + 1 >= s.max_attempts;
            tx.execute(
                "UPDATE {{tables.jobs}} SET attempts = attempts + 1, last_error = $2, updated_at = now(), \
                 status = CASE WHEN $3 THEN 'parked' ELSE 'queued' END WHERE id = $1",
                (id, &error, parked),
            )
            .await?;
            if parked {
                tracing::warn!(job = id, %error, "job parked after {} attempts", attempts + 1);
            }
        }
    }
    tx.commit().await?;
    Ok(true)
}

async fn worker_loop(db: Database, s: Arc<Settings>, stop: Arc<AtomicBool>) -> pgdbm::Result<()> {
    let mut idle_rounds = 0;
    while !stop.load(Ordering::SeqCst) {
        if process_one(&db, &s).await? {
            idle_rounds = 0;
            continue;
        }
        idle_rounds += 1;
        if s.exit_when_idle && idle_rounds >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let url = pgdbm::testing::database_url_or_local("worker").await?;
    let concurrency: usize = env_or("CONCURRENCY", 2);
    let db = Database::connect(
        DatabaseConfig::new(url)
            .schema("worker")
            .min_connections(1)
            .max_connections(concurrency + 1),
    )
    .await?;
    Migrator::new(
        &db,
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples/worker_migrations"),
        "worker",
    )
    .apply_pending()
    .await?;
    let enqueue: usize = env_or("ENQUEUE", 0);
    if enqueue > 0 {
        let jobs = (0..enqueue).map(|i| (format!("job-{i}"),));
        db.copy_in("jobs", &["payload"], jobs).await?;
        tracing::info!(enqueue, "enqueued demo jobs");
    }
    let settings = Arc::new(Settings {
        worker: std::env::var("WORKER_ID")
            .unwrap_or_else(|_| format!("worker-{}", std::process::id())),
        max_attempts: env_or("MAX_ATTEMPTS", 3),
        delay: Duration::from_millis(env_or("JOB_DELAY_MS", 5)),
        exit_when_idle: std::env::var("EXIT_WHEN_IDLE").as_deref() == Ok("1"),
    });
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            let ctrl_c = tokio::signal::ctrl_c();
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
            tracing::info!("stopping after the jobs in hand");
            stop.store(true, Ordering::SeqCst);
        });
    }
    tracing::info!(worker = %settings.worker, concurrency, "worker started");
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| tokio::spawn(worker_loop(db.clone(), settings.clone(), stop.clone())))
        .collect();
    let mut failed = None;
    for t in tasks {
        if let Err(e) = t.await? {
            failed.get_or_insert(e);
        }
    }
    db.close().await;
    if let Some(e) = failed {
        return Err(e.into());
    }
    tracing::info!("worker stopped");
    Ok(())
}
