#![doc = include_str!("lib.md")]
#![deny(missing_docs)]
#![warn(clippy::missing_errors_doc, clippy::return_self_not_must_use)]
#![forbid(unsafe_code)]
#![warn(rust_2018_idioms, unreachable_pub)]

// The everyday names, at the root.
/// The sqlx crate pgdbm is built on, for `sqlx::FromRow`, `sqlx::query!` and the types its
/// values decode into (`sqlx::types::time::PrimitiveDateTime`, …).
pub use pgdbm_core::sqlx;
pub use pgdbm_core::{
    CopyRow, Database, DatabaseConfig, Error, Migrator, Params, PoolConnection, Result, SharedPool,
    Tenants, Transaction,
};
/// Compile-time checked queries and the test attribute; see the crate documentation.
pub use pgdbm_macros::{
    checked_queries, embed_migrations, test, tsql, tsql_as, tsql_file, tsql_file_as,
    tsql_file_scalar, tsql_scalar, tsql_str,
};

/// Checked queries against a schema that moved on: what sqlx recorded for each query at build
/// time ([`RecordedQuery`](checked::RecordedQuery), embedded by [`checked_queries!`]) compared
/// with what the server says now ([`Database::verify_checked_queries`], `pgdbm prepare
/// --check-compat`).
pub mod checked {
    pub use pgdbm_core::checked::{
        Change, CheckedQueries, Column, DescribeError, Description, DifferenceKind,
        QueryDifference, RecordError, RecordedQuery, Rejection, SqlType, VerifyReport, check,
        compare, describe, sql_hash,
    };
}

/// How to reach the server: the enums of [`DatabaseConfig`].
pub mod config {
    pub use pgdbm_core::{PoolerMode, SslMode, TargetSessionAttrs};
}

/// The parts of [`Error`]: each variant's details, and the SQLSTATE codes callers ask about.
pub mod error {
    pub use pgdbm_core::ident::InvalidIdentifier;
    pub use pgdbm_core::template::{TemplateError, TemplateErrorKind};
    pub use pgdbm_core::{
        Aftermath, BlockingSession, ConnectError, Error, LockWaitError, MigrationError, QueryError,
        Result, TenantErrorKind, TimeoutError, TransactionLost, sqlstate,
    };
}

/// Migrations: the [`Migrator`] and its reports, embedded migration sets, and the files
/// themselves (reading, ordering, splitting, creating).
pub mod migrate {
    pub use pgdbm_core::migrations::{
        DownMigration, Migration, MigrationSet, MigrationVersion, REPEATABLE_DIR,
        RepeatableMigration, SourceError, Statement, checksum, create_migration_file,
        create_repeatable_file, is_repeatable, new_migration_filename, split_statements,
    };
    pub use pgdbm_core::{
        AppliedFile, BaselineReport, EmbeddedMigrations, FileState, FileStatus, HistoryEntry,
        MigrationReport, Migrator, Repair, ReportStatus, RevertReport, RevertTarget, RevertedFile,
    };
    /// Drift: a live schema compared with what its files make ([`Migrator::drift`]).
    pub use pgdbm_core::{
        Difference, Drift, DriftReport, ObjectKind, SchemaObject, SchemaSnapshot, compare_schemas,
    };
}

/// LISTEN/NOTIFY: a [`Listener`](events::Listener) on a session of its own that reconnects by
/// itself and says so ([`Event::Reconnected`](events::Event::Reconnected)), and
/// [`Database::notify`] / [`Transaction::notify`] to send.
pub mod events {
    pub use pgdbm_core::{Event, Listener, ListenerState, ListenerStatus, MAX_PAYLOAD_BYTES};
}

/// Schema-per-tenant on one shared pool: [`Tenants`] and what its fleet operations report.
pub mod tenants {
    pub use pgdbm_core::{
        FleetOptions, FleetReport, TenantErrorKind, TenantMigration, TenantPage, TenantProgress,
        Tenants,
    };
}

/// What the pool and the server say about themselves: health checks, statement plans, lock
/// waits, long-running statements, table sizes, replicas.
pub mod inspect {
    pub use pgdbm_core::{
        BlockingQuery, Explain, ExplainOptions, Health, HealthReport, HealthStatus,
        LongRunningQuery, PoolStats, ReplicaLag, ReplicaStatus, TableSize,
    };
}

/// What pgdbm records for an operator: the metric names, the operation label, and the
/// in-process query statistics.
pub mod observe {
    pub use pgdbm_core::{Operation, QueryRecord, QueryStats, metric_names};
}

/// Test support: a fresh migrated database per test (`#[pgdbm::test]`,
/// [`TestDatabase`](testing::TestDatabase)), the server it runs on, and PostgreSQL clusters of
/// your own.
pub mod testing {
    pub use pgdbm_core::local_server::{
        IDLE_ENV, LocalCluster, THROWAWAY_DIR_ENV, ThrowawayServer, find_binaries,
        postgres_bin_dirs,
    };
    pub use pgdbm_core::testing::{
        ServerDiscovery, ServerSource, TEST_DATABASE_PREFIX, TableSnapshot, TestDatabase,
        TestDatabaseBuilder, TestDatabaseFactory, TestOutcome, TestServer, database_url_or_local,
        drop_stale_test_databases, local_database_url, stop_throwaway, test_server,
    };
}

/// `{{tables.users}}` / `<<tables.users>>` templating, as [`Database::render`] applies it.
pub mod template {
    pub use pgdbm_core::template::{Placeholder, Target, placeholders, render};
}

/// Identifiers: validation and quoting of schema, table and other names.
pub mod ident {
    pub use pgdbm_core::ident::{
        IdentifierKind, MAX_IDENTIFIER_LEN, is_valid_identifier, quote_identifier,
        validate_identifier,
    };
}

/// `pgdbm.toml`: the project file the macros, the CLI and pgdbm (Python) share.
pub mod project {
    pub use pgdbm_core::project::{
        Environment, FILE_NAME, Location, MigrationsDir, ModuleConfig, ModuleMode, Project,
        ProjectError, ProjectInfo, SharedPoolConfig,
    };
}

/// Migration lint: squawk's rules over the files `apply` is about to run ([`Migrator::lint`],
/// [`Migrator::lint_pending`], `pgdbm migrate lint`).
pub mod lint {
    pub use pgdbm_core::lint::{
        Finding, INVALID_PRAGMA, LintConfig, LintOptions, LintPolicy, LintReport, PARSE_ERROR,
        Severity, TEMPLATE_ERROR, UNUSED_PRAGMA, UnknownLintPolicy, UnknownRule, lint_run,
        lint_standalone,
    };
}

/// For `build.rs`: rebuild when a migration file is added. Depend on `pgdbm-core` with
/// `default-features = false` in `[build-dependencies]` (no database driver built for the host)
/// and call `pgdbm_core::build::rerun_if_migrations_change()`; this is the same module.
pub mod build {
    pub use pgdbm_core::build::{rerun_if_migrations_change, watched_paths};
}

/// What the macros expand to; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use pgdbm_core::EmbeddedMigrations;
    pub use pgdbm_core::testing::{run, run_in_transaction};
}

/// The README's Rust snippets, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The guide's Rust snippets (`docs/`), compiled as doctests, so that they keep to the current
/// API.
#[cfg(doctest)]
pub mod guide_doctests {
    #[doc = include_str!("../docs/configuration.md")]
    pub struct Configuration;
    #[doc = include_str!("../docs/queries.md")]
    pub struct Queries;
    #[doc = include_str!("../docs/migrations.md")]
    pub struct Migrations;
    #[doc = include_str!("../docs/testing.md")]
    pub struct Testing;
    #[doc = include_str!("../docs/tenants.md")]
    pub struct Tenants;
    #[doc = include_str!("../docs/events.md")]
    pub struct Events;
    #[doc = include_str!("../docs/failures.md")]
    pub struct Failures;
    #[doc = include_str!("../docs/servers.md")]
    pub struct Servers;
    #[doc = include_str!("../docs/operations.md")]
    pub struct Operations;
}
