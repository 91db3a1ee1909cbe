//! A service that owns its database: the Rust twin of pgdbm's FastAPI example.
//!
//! `cargo run --example standalone_service` — reads config (environment and `.env`), connects,
//! applies `migrations/` for module `myservice`, verifies the queries it was compiled with against
//! the live schema (and refuses to start when one no longer fits), serves on 127.0.0.1:8000
//! (`PORT`, `BIND`), and on Ctrl-C / SIGTERM stops taking requests, finishes those in flight and
//! closes the pool.
//! Without `DATABASE_URL` it uses a local server (see `pgdbm::testing::database_url_or_local`).
//!
//! Routes: `POST /users` (`{"email", "name"}` → 201 `{"id", "email"}`; 409 duplicate email; 422 bad
//! body), `GET /users/{id}` (200 user; 404 `{"detail": "User not found"}`; 422 non-numeric id),
//! `GET /health` (200 when the database answers, 503 when not), `GET /ping` (no database),
//! `GET /metrics` (Prometheus text format: pgdbm's pool, query and migration series).

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use pgdbm::{Database, DatabaseConfig, Migrator, tsql, tsql_as};
use serde::{Deserialize, Serialize};

#[derive(Clone)]
struct AppState {
    db: Database,
    metrics: PrometheusHandle,
}

#[derive(Deserialize)]
struct NewUser {
    email: String,
    name: String,
}

#[derive(Serialize)]
struct Created {
    id: i64,
    email: String,
}

#[derive(Serialize)]
struct User {
    id: i64,
    email: String,
    name: Option<String>,
}

fn detail(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "detail": msg.into() }))).into_response()
}

/// A failure as a response, through pgdbm's one error type (`tsql!` gives a `sqlx::Error`,
/// which `pgdbm::Error::from` turns back into what pgdbm reported): 409 for a duplicate email,
/// 503 when no connection could be had within `acquire_timeout` (the pool waited through an
/// outage that lasted longer), 500 otherwise.
fn failed(route: &str, e: impl Into<pgdbm::Error>) -> Response {
    let e = e.into();
    if e.is_unique_violation() {
        return detail(
            StatusCode::CONFLICT,
            "A user with this email already exists",
        );
    }
    if matches!(e, pgdbm::Error::PoolTimeout { .. }) {
        // The pool logs the outage once; one line per request would flood the log.
        tracing::debug!(
            route,
            "database unavailable: no connection within acquire_timeout"
        );
        return detail(StatusCode::SERVICE_UNAVAILABLE, "Database unavailable");
    }
    tracing::error!(route, error = %e, "request failed");
    detail(StatusCode::INTERNAL_SERVER_ERROR, "Internal error")
}

async fn create_user(
    State(state): State<AppState>,
    body: Result<Json<NewUser>, JsonRejection>,
) -> Response {
    let Json(new) = match body {
        Ok(b) => b,
        Err(e) => return detail(StatusCode::UNPROCESSABLE_ENTITY, e.body_text()),
    };
    if new.email.trim().is_empty() || !new.email.contains('@') {
        return detail(
            StatusCode::UNPROCESSABLE_ENTITY,
            "email must be an email address",
        );
    }
    let row = tsql!(
        "INSERT INTO <<tables.users>> (email, name) VALUES ($1, $2) RETURNING id",
        new.email,
        new.name
    )
    .fetch_one(&state.db)
    .await;
    match row {
        Ok(row) => (
            StatusCode::CREATED,
            Json(Created {
                id: row.id,
                email: new.email,
            }),
        )
            .into_response(),
        Err(e) => failed("create_user", e),
    }
}

async fn get_user(State(state): State<AppState>, id: Result<Path<i64>, PathRejection>) -> Response {
    let Path(id) = match id {
        Ok(id) => id,
        Err(e) => return detail(StatusCode::UNPROCESSABLE_ENTITY, e.body_text()),
    };
    match tsql_as!(
        User,
        "SELECT id, email, name FROM <<tables.users>> WHERE id = $1",
        id
    )
    .fetch_optional(&state.db)
    .await
    {
        Ok(Some(user)) => Json(user).into_response(),
        Ok(None) => detail(StatusCode::NOT_FOUND, "User not found"),
        Err(e) => failed("get_user", e),
    }
}

/// 200 when the database answers; 503 at once while the pool is reconnecting to a lost server
/// (so a load balancer stops sending traffic), and 200 again as soon as it is back.
async fn health(State(state): State<AppState>) -> Response {
    let health = state.db.health().await;
    if health.is_healthy() {
        return Json(serde_json::json!({ "status": "ok" })).into_response();
    }
    let body = serde_json::json!({
        "status": "unavailable",
        "database": format!("{:?}", health.status).to_lowercase(),
        "outage_ms": health.outage.map(|d| d.as_millis() as u64),
    });
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

/// What Prometheus scrapes: pgdbm records through the `metrics` facade into the recorder
/// installed in `main`.
async fn metrics(State(state): State<AppState>) -> Response {
    (
        [("content-type", "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

/// For tests of graceful shutdown: a request that takes a while (only with
/// `PGDBM_EXAMPLE_DEBUG_ROUTES=1`).
async fn sleep(Path(ms): Path<u64>) -> Response {
    tokio::time::sleep(Duration::from_millis(ms.min(10_000))).await;
    Json(serde_json::json!({ "slept_ms": ms })).into_response()
}

fn app(db: Database, metrics: PrometheusHandle) -> Router {
    let mut router = Router::new()
        .route("/users", post(create_user))
        .route("/users/{id}", get(get_user))
        .route("/health", get(health))
        .route("/metrics", get(self::metrics))
        .route("/ping", get(|| async { "pong" }));
    if std::env::var("PGDBM_EXAMPLE_DEBUG_ROUTES").as_deref() == Ok("1") {
        router = router.route("/debug/sleep/{ms}", get(sleep));
    }
    router.with_state(AppState { db, metrics })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down: finishing requests in flight");
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    // Before `Database::connect`: the pool registers its series when it opens.
    let metrics = PrometheusBuilder::new().install_recorder()?;
    let upkeep = metrics.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    let url = pgdbm::testing::database_url_or_local("myservice").await?;
    // SAFETY: set before any other thread reads the environment.
    unsafe { std::env::set_var("DATABASE_URL", &url) };
    let config = DatabaseConfig::from_env()?
        .schema("myservice")
        .min_connections(5)
        .max_connections(20);
    let db = Database::connect(config).await?;
    let report = Migrator::new(
        &db,
        concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"),
        "myservice",
    )
    .apply_pending()
    .await?;
    tracing::info!(applied = report.applied.len(), "migrations up to date");
    // The queries this binary was compiled with, against the schema it is about to serve: a
    // hand-made ALTER or a newer release's migration that breaks one stops the start here,
    // not at the first request that runs it (and `health_check()` reports it from now on).
    let verified = db.verify_checked_queries(pgdbm::checked_queries!()).await?;
    if !verified.is_compatible() {
        for d in verified.breaking() {
            tracing::error!(query = %d.query, "{d}");
        }
        return Err(format!("refusing to start: {verified}").into());
    }
    tracing::info!(
        checked = verified.checked,
        elapsed_ms = verified.elapsed.as_millis() as u64,
        "checked queries match the schema"
    );

    let bind = std::env::var("BIND").unwrap_or_else(|_| "127.0.0.1".into());
    let port = std::env::var("PORT").unwrap_or_else(|_| "8000".into());
    let addr: SocketAddr = format!("{bind}:{port}").parse()?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app(db.clone(), metrics))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    db.close().await;
    tracing::info!("stopped");
    Ok(())
}
