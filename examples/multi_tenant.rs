//! A multi-tenant service: one shared pool, one schema per tenant, the same migrations in each.
//!
//! `cargo run --example multi_tenant` — reads config (environment and `.env`), opens a shared pool
//! (`search_path` pinned to `pg_catalog`), serves on 127.0.0.1:8000 (`PORT`, `BIND`), and on
//! Ctrl-C / SIGTERM stops taking requests, finishes those in flight and closes the pool.
//! Without `DATABASE_URL` it uses a local server (see `pgdbm::testing::database_url_or_local`).
//!
//! Tenants belong to module `myservice`: tenant `acme` lives in schema `tenant_acme`, migrated
//! from `migrations/`, and the `tsql!` queries below (checked at compile time for schema
//! `myservice`, see `pgdbm.toml`) run in the schema of the tenant handle they are given.
//!
//! Routes: `POST /tenants` (`{"name"}` → 201 `{"name"}`; 409 exists; 422 invalid name or bad
//! body), `GET /tenants` (200 names, sorted), `POST /t/{tenant}/users` (`{"email", "name"}` → 201
//! `{"id", "email"}`; 409 duplicate email in that tenant; 422 bad body), `GET /t/{tenant}/users`
//! (200 the tenant's users by id), `GET /t/{tenant}/users/{id}` (200 user; 404 `{"detail": "User
//! not found"}`; 422 non-numeric id). An unknown tenant is 404 `{"detail": "Tenant not found"}`,
//! an invalid tenant name 422; neither sends a query to any tenant's schema. `GET /health` (200
//! when the database answers, 503 when not), `GET /ping` (no database).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use pgdbm::tenants::TenantErrorKind;
use pgdbm::{Database, DatabaseConfig, SharedPool, Tenants, tsql, tsql_as};
use serde::{Deserialize, Serialize};

#[derive(Clone)]
struct AppState {
    /// The pool's own handle (no schema): for `/health`.
    db: Database,
    tenants: Arc<Tenants>,
}

#[derive(Deserialize)]
struct NewTenant {
    name: String,
}

#[derive(Serialize)]
struct Tenant {
    name: String,
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

/// Any failure as a response, through pgdbm's one error type (`tsql!` gives a `sqlx::Error`,
/// which `pgdbm::Error::from` turns back into what pgdbm reported): 404 unknown tenant, 409 a
/// tenant or user that exists already, 422 invalid name, 503 no connection within
/// `acquire_timeout`, 500 otherwise.
fn failed(route: &str, e: impl Into<pgdbm::Error>) -> Response {
    let e = e.into();
    match &e {
        pgdbm::Error::Tenant { kind, .. } => match kind {
            TenantErrorKind::Unknown => return detail(StatusCode::NOT_FOUND, "Tenant not found"),
            TenantErrorKind::Exists => {
                return detail(
                    StatusCode::CONFLICT,
                    "A tenant with this name already exists",
                );
            }
            TenantErrorKind::InvalidName => {
                return detail(StatusCode::UNPROCESSABLE_ENTITY, e.to_string());
            }
            _ => {}
        },
        pgdbm::Error::PoolTimeout { .. } => {
            // The pool logs the outage once; one line per request would flood the log.
            tracing::debug!(
                route,
                "database unavailable: no connection within acquire_timeout"
            );
            return detail(StatusCode::SERVICE_UNAVAILABLE, "Database unavailable");
        }
        _ if e.is_unique_violation() => {
            return detail(
                StatusCode::CONFLICT,
                "A user with this email already exists",
            );
        }
        _ => {}
    }
    tracing::error!(route, error = %e, "request failed");
    detail(StatusCode::INTERNAL_SERVER_ERROR, "Internal error")
}

/// The handle of registered tenant `name`, or the response that refuses the request. An invalid
/// name is refused without any SQL; an unknown one after one registry lookup.
async fn tenant(state: &AppState, route: &str, name: &str) -> Result<Database, Response> {
    state.tenants.get(name).await.map_err(|e| failed(route, e))
}

async fn create_tenant(
    State(state): State<AppState>,
    body: Result<Json<NewTenant>, JsonRejection>,
) -> Response {
    let Json(new) = match body {
        Ok(b) => b,
        Err(e) => return detail(StatusCode::UNPROCESSABLE_ENTITY, e.body_text()),
    };
    match state.tenants.create(&new.name).await {
        Ok(_) => {
            tracing::info!(tenant = %new.name, "tenant created");
            (StatusCode::CREATED, Json(Tenant { name: new.name })).into_response()
        }
        Err(e) => failed("create_tenant", e),
    }
}

async fn list_tenants(State(state): State<AppState>) -> Response {
    match state.tenants.list().await {
        Ok(names) => Json(names).into_response(),
        Err(e) => failed("list_tenants", e),
    }
}

async fn create_user(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Result<Json<NewUser>, JsonRejection>,
) -> Response {
    let db = match tenant(&state, "create_user", &name).await {
        Ok(db) => db,
        Err(r) => return r,
    };
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
    .fetch_one(&db)
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

async fn list_users(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    let db = match tenant(&state, "list_users", &name).await {
        Ok(db) => db,
        Err(r) => return r,
    };
    match tsql_as!(
        User,
        "SELECT id, email, name FROM <<tables.users>> ORDER BY id"
    )
    .fetch_all(&db)
    .await
    {
        Ok(users) => Json(users).into_response(),
        Err(e) => failed("list_users", e),
    }
}

async fn get_user(
    State(state): State<AppState>,
    path: Result<Path<(String, i64)>, PathRejection>,
) -> Response {
    let Path((name, id)) = match path {
        Ok(p) => p,
        Err(e) => return detail(StatusCode::UNPROCESSABLE_ENTITY, e.body_text()),
    };
    let db = match tenant(&state, "get_user", &name).await {
        Ok(db) => db,
        Err(r) => return r,
    };
    match tsql_as!(
        User,
        "SELECT id, email, name FROM <<tables.users>> WHERE id = $1",
        id
    )
    .fetch_optional(&db)
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

fn app(db: Database, tenants: Arc<Tenants>) -> Router {
    Router::new()
        .route("/tenants", post(create_tenant).get(list_tenants))
        .route("/t/{tenant}/users", post(create_user).get(list_users))
        .route("/t/{tenant}/users/{id}", get(get_user))
        .route("/health", get(health))
        .route("/ping", get(|| async { "pong" }))
        .with_state(AppState { db, tenants })
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
    let url = pgdbm::testing::database_url_or_local("multi_tenant").await?;
    // SAFETY: set before any other thread reads the environment.
    unsafe { std::env::set_var("DATABASE_URL", &url) };
    let config = DatabaseConfig::from_env()?
        .min_connections(5)
        .max_connections(20);
    let pool = SharedPool::connect(config).await?;
    let db = pool.database(None)?;
    let tenants = Arc::new(Tenants::new(
        &pool,
        "myservice",
        concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"),
    ));
    tracing::info!(tenants = tenants.list().await?.len(), "tenants registered");

    let bind = std::env::var("BIND").unwrap_or_else(|_| "127.0.0.1".into());
    let port = std::env::var("PORT").unwrap_or_else(|_| "8000".into());
    let addr: SocketAddr = format!("{bind}:{port}").parse()?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app(db, tenants))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    pool.close().await;
    tracing::info!("stopped");
    Ok(())
}
