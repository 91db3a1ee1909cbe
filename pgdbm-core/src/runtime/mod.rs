//! Everything that talks to a database (the `runtime` feature).

#[macro_use]
mod query_api;

pub mod checked;
mod config;
mod copy;
mod database;
mod drift;
mod error;
mod executor;
mod health;
mod inspect;
mod listen;
pub mod local_server;
mod migrator;
mod observe;
mod outage;
mod params;
mod pool;
mod query;
mod replicas;
mod tenants;
pub mod testing;
mod transaction;

pub use config::{DatabaseConfig, PoolerMode, SslMode, TargetSessionAttrs};
pub use database::{Database, SharedPool};
pub use drift::{
    Difference, Drift, DriftReport, ObjectKind, SchemaObject, SchemaSnapshot, compare_schemas,
};
pub use error::{
    Aftermath, BlockingSession, ConnectError, Error, LockWaitError, MigrationError, QueryError,
    Result, TenantErrorKind, TimeoutError, TransactionLost, sqlstate,
};
pub use health::{Health, HealthStatus};
pub use inspect::{
    BlockingQuery, Explain, ExplainOptions, HealthReport, LongRunningQuery, ReplicaLag, TableSize,
};
pub use listen::{Event, Listener, ListenerState, ListenerStatus, MAX_PAYLOAD_BYTES};
pub use migrator::{
    AppliedFile, BaselineReport, EmbeddedMigrations, FileState, FileStatus, HistoryEntry,
    MigrationReport, Migrator, Repair, ReportStatus, RevertReport, RevertTarget, RevertedFile,
};
pub use observe::metrics::metric_names;
pub use observe::operation::Operation;
pub use observe::stats::{QueryRecord, QueryStats};
pub use params::{CopyRow, Params};
pub use pool::{PoolConnection, PoolStats};
pub use replicas::ReplicaStatus;
pub use tenants::{
    FleetOptions, FleetReport, TenantMigration, TenantPage, TenantProgress, Tenants,
};
pub use transaction::Transaction;

/// The sqlx crate pgdbm is built on, for types such as `sqlx::FromRow` and `PgConnection`.
pub use sqlx;
