//! pgdbm's background-worker pattern: workers claim jobs with `FOR UPDATE SKIP LOCKED`, write a
//! result row, retry a failed job up to `MAX_ATTEMPTS`, park a job that keeps failing, and stop
//! cleanly on SIGTERM / Ctrl-C after finishing the job in hand.
//!
//! `cargo run --example background_worker` (`DATABASE_URL`, else a local server). Env:
//! `WORKER_ID`, `CONCURRENCY` (tasks, default 2), `MAX_ATTEMPTS` (3), `JOB_DELAY_MS` (simulated
//! work, 5), `EXIT_WHEN_IDLE=1` (stop once the queue is empty), `ENQUEUE=N` (add N demo jobs first),
//! `WAKE` (`listen`, the default, or `poll`), `WAKE_FALLBACK_MS` (5000).
//!
//! A job is claimed inside the transaction that records its outcome, so a worker killed mid-job
//! (even with SIGKILL) leaves it queued for another: every job is done exactly once.
//!
//! Idle workers sleep until they are woken. With `WAKE=listen` a trigger on the queue
//! (`worker_migrations/002_notify_on_enqueue.sql`) sends a NOTIFY on `jobs_<schema>` when an
//! enqueuing transaction commits, and one listener per process wakes the idle tasks at once; they
//! also look every `WAKE_FALLBACK_MS` and whenever the listener reconnects (a notification sent
//! while it was away is lost, so the queue is re-scanned). `WAKE=poll` looks every 100 ms, as
//! before: each idle task then costs the server ten transactions a second.

use std::sync::Arc;
use std::time::Duration;

use pgdbm::events::Event;
use pgdbm::{Database, DatabaseConfig, Migrator};
use tokio::sync::watch;

struct Settings {
    worker: String,
    max_attempts: i32,
    delay: Duration,
    exit_when_idle: bool,
    /// How long an idle task sleeps when nothing wakes it.
    idle_wait: Duration,
}

/// Polling every 100 ms: the wait of `WAKE=poll`, and before the listener is up.
const POLL: Duration = Duration::from_millis(100);
/// After a failed round (the server restarting), wait this long before the next.
const ERROR_PAUSE: Duration = Duration::from_millis(200);
/// Consecutive failed rounds before a task gives up (about a minute).
const MAX_ERRORS: u32 = 300;

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
    let job: Option<(i64, String, i32, String)> = tx
        .fetch_optional(
            "SELECT id, payload, attempts, clock_timestamp()::text FROM {{tables.jobs}} \
             WHERE status = 'queued' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
            (),
        )
        .await?;
    let Some((id, payload, attempts, claimed_at)) = job else {
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
                "UPDATE {{tables.jobs}} SET status = 'done', attempts = attempts + 1, updated_at = now(), \
                 started_at = coalesce(started_at, $2::timestamptz) WHERE id = $1",
                (id, &claimed_at),
            )
            .await?;
        }
        Err(error) => {
            let parked = attempts + 1 >= s.max_attempts;
            tx.execute(
                "UPDATE {{tables.jobs}} SET attempts = attempts + 1, last_error = $2, updated_at = now(), \
                 status = CASE WHEN $3 THEN 'parked' ELSE 'queued' END, \
                 started_at = coalesce(started_at, $4::timestamptz) WHERE id = $1",
                (id, &error, parked, &claimed_at),
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

/// One task: processes jobs until the queue is empty, then sleeps until woken (`wake` changes)
/// or `idle_wait` passes. A failed round (the server restarting, a lost connection) is retried:
/// the transaction that claimed a job rolled back with it, so the job is still queued.
async fn worker_loop(
    db: Database,
    s: Arc<Settings>,
    mut stop: watch::Receiver<bool>,
    mut wake: watch::Receiver<u64>,
) -> pgdbm::Result<()> {
    let mut idle_rounds = 0;
    let mut errors = 0;
    while !*stop.borrow() {
        // Marks the wake-ups so far as seen before looking: one that comes while this task
        // looks makes `changed` below return at once, so none is missed.
        wake.borrow_and_update();
        match process_one(&db, &s).await {
            Ok(true) => {
                idle_rounds = 0;
                errors = 0;
                continue;
            }
            Ok(false) => errors = 0,
            Err(e) => {
                errors += 1;
                if errors >= MAX_ERRORS {
                    return Err(e);
                }
                tracing::warn!(error = %e, "a round failed; retrying");
                tokio::time::sleep(ERROR_PAUSE).await;
                continue;
            }
        }
        idle_rounds += 1;
        if s.exit_when_idle && idle_rounds >= 5 {
            break;
        }
        let wait = if s.exit_when_idle { POLL } else { s.idle_wait };
        tokio::select! {
            // A stop request ends the wait too.
            _ = stop.changed() => {}
            woken = tokio::time::timeout(wait, wake.changed()) => {
                if let Ok(Err(_)) = woken {
                    // Nothing wakes this task any more (no listener): poll.
                    tokio::time::sleep(POLL).await;
                }
            }
        }
    }
    Ok(())
}

/// Wakes the idle tasks on every notification of the queue's channel, and on every
/// reconnection of the listener (notifications sent while it was away were lost: look again).
async fn wake_on_notify(db: Database, wake: watch::Sender<u64>) {
    let mut listener = match db.listener().await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "no listener; idle workers only poll");
            return;
        }
    };
    if let Err(e) = listener.listen("jobs_{{schema}}").await {
        tracing::warn!(error = %e, "cannot listen; idle workers only poll");
        return;
    }
    // Jobs enqueued before the listener was up: look once.
    wake.send_modify(|n| *n += 1);
    loop {
        match listener.recv().await {
            Ok(Event::Reconnected { after }) => {
                tracing::info!(?after, "listener back; re-scanning the queue");
                wake.send_modify(|n| *n += 1);
            }
            Ok(_) => wake.send_modify(|n| *n += 1),
            Err(pgdbm::Error::PoolClosed) => return,
            Err(e) => tracing::warn!(error = %e, "listener"),
        }
    }
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
        idle_wait: match std::env::var("WAKE").as_deref() {
            Ok("poll") => POLL,
            Ok("listen") | Err(_) => Duration::from_millis(env_or("WAKE_FALLBACK_MS", 5000)),
            Ok(other) => return Err(format!("WAKE={other}: use listen or poll").into()),
        },
    });
    let (wake, woken) = watch::channel(0u64);
    // Polling keeps the sender (so `changed` waits its whole timeout); listening hands it to
    // the task that wakes the workers.
    let _polling = if settings.idle_wait != POLL {
        tokio::spawn(wake_on_notify(db.clone(), wake));
        None
    } else {
        Some(wake)
    };
    let (stop, stopping) = watch::channel(false);
    {
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
            stop.send_replace(true);
        });
    }
    tracing::info!(worker = %settings.worker, concurrency, "worker started");
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            tokio::spawn(worker_loop(
                db.clone(),
                settings.clone(),
                stopping.clone(),
                woken.clone(),
            ))
        })
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
