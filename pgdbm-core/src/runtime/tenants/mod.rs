//! Tenants: one schema per tenant on a shared pool, the same migrations in each, and handles
//! that run the module's `tsql!` queries in the tenant's schema.
//!
//! The registry is one table, `"pgdbm".tenants` (module, name, schema). `create` holds a
//! transaction-level advisory lock on (module, name) from start to end and inserts the registry
//! row last, in that transaction: a crash leaves the tenant unregistered (its schema, if made,
//! is picked up by the next `create`, since migrations resume), and of two concurrent creates
//! one wins and the other finds the row and answers "exists".
//!
//! Here: the type, its settings, lookups and the registry. `lifecycle` creates and drops one
//! tenant; `fleet` reads the registry a page at a time and migrates every tenant, through
//! `fleet_run` (lint first, canary, resumable with `run_record`, planned by `fleet_plan`).

mod drift;
mod fleet;
mod fleet_plan;
mod fleet_run;
mod lifecycle;
mod run_record;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::RwLock;

use super::database::Database;
use super::error::{Error, Result, TenantErrorKind};
use super::migrator::{EmbeddedMigrations, MigrationReport, Migrator};
use crate::ident::quote_identifier;
use crate::lint::{LintConfig, LintOptions, LintPolicy};

pub use fleet::{TenantMigration, TenantPage, TenantProgress};
pub use fleet_run::{FleetOptions, FleetReport};

/// How long `create` and `drop` wait for another one working on the same tenant, and how often
/// they look.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(300);
const LOCK_POLL: std::time::Duration = std::time::Duration::from_millis(50);

/// Where a tenant's migrations come from.
#[derive(Clone, Debug)]
enum Source {
    Dir(PathBuf),
    Embedded(EmbeddedMigrations),
}

/// The tenants of one module: create, look up, list, migrate and drop them.
///
/// ```no_run
/// # async fn demo() -> pgdbm_core::Result<()> {
/// use pgdbm_core::{DatabaseConfig, SharedPool, Tenants};
/// let pool = SharedPool::connect(DatabaseConfig::from_env()?).await?;
/// // The module's tsql! queries were checked for schema `myservice` (pgdbm.toml).
/// let tenants = Tenants::new(&pool, "myservice", "./migrations");
/// let acme = tenants.create("acme").await?; // schema "tenant_acme", migrated
/// // tsql!("SELECT … FROM <<tables.users>>").fetch_all(&acme) reads "tenant_acme".users
/// let same = tenants.get("acme").await?;
/// # Ok(()) }
/// ```
pub struct Tenants {
    pool: Database,
    module: String,
    compiled_schema: String,
    source: Source,
    prefix: String,
    registry: String,
    concurrency: usize,
    /// What each tenant's migrator, and a fleet run before any tenant, does with lint findings.
    lint_policy: LintPolicy,
    lint_options: LintOptions,
    handles: RwLock<HashMap<String, Database>>,
    /// Bounds concurrent creates and drops: each holds its transaction's connection while its
    /// migrations take another, so unbounded creates could hold every connection of the pool
    /// and wait for one more.
    writers: tokio::sync::Semaphore,
}

impl std::fmt::Debug for Tenants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenants")
            .field("module", &self.module)
            .field("compiled_schema", &self.compiled_schema)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Tenants {
    /// The tenants of `module` (its migrations history name) on `pool`'s shared pool, migrated
    /// from `dir`. The module's `tsql!` queries are taken to be checked for schema `module`;
    /// see [`compiled_schema`](Self::compiled_schema) when `pgdbm.toml` says otherwise.
    pub fn new(pool: &super::database::SharedPool, module: &str, dir: impl Into<PathBuf>) -> Self {
        Tenants::with_source(
            pool.database(None).expect("no schema is valid"),
            module,
            Source::Dir(dir.into()),
        )
    }

    /// Like [`new`](Self::new), with migrations compiled in by `embed_migrations!`.
    pub fn embedded(
        pool: &super::database::SharedPool,
        module: &str,
        files: EmbeddedMigrations,
    ) -> Self {
        Tenants::with_source(
            pool.database(None).expect("no schema is valid"),
            module,
            Source::Embedded(files),
        )
    }

    fn with_source(pool: Database, module: &str, source: Source) -> Self {
        let writers = tokio::sync::Semaphore::new((pool.config().max_connections / 2).max(1));
        Tenants {
            pool,
            module: module.to_string(),
            compiled_schema: module.to_string(),
            source,
            prefix: "tenant_".into(),
            registry: "pgdbm".into(),
            concurrency: 4,
            lint_policy: LintPolicy::default(),
            lint_options: LintOptions::default(),
            handles: RwLock::new(HashMap::new()),
            writers,
        }
    }

    /// The schema the module's `tsql!` queries were checked for (its `schema` in `pgdbm.toml`;
    /// default: the module name). Tenant handles re-target those queries to their own schema.
    #[must_use = "`Tenants` does nothing until a method such as `create` or `get` is called"]
    pub fn compiled_schema(mut self, schema: &str) -> Self {
        self.compiled_schema = schema.to_string();
        self
    }

    /// The prefix of tenant schemas (default `tenant_`: tenant `acme` lives in `tenant_acme`).
    #[must_use = "`Tenants` does nothing until a method such as `create` or `get` is called"]
    pub fn schema_prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.to_string();
        self
    }

    /// The schema of the registry table `tenants` (default `pgdbm`).
    #[must_use = "`Tenants` does nothing until a method such as `create` or `get` is called"]
    pub fn registry_schema(mut self, schema: &str) -> Self {
        self.registry = schema.to_string();
        self
    }

    /// How many tenants [`migrate_all`](Self::migrate_all) migrates at once (default 4).
    #[must_use = "`Tenants` does nothing until a method such as `create` or `get` is called"]
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// What the tenants' migrations do with lint findings in the files they are about to apply
    /// (default [`LintPolicy::Deny`]): see [`Migrator::lint`]. A fleet run
    /// ([`migrate_fleet`](Self::migrate_fleet)) lints every file pending on any tenant with it
    /// before touching any tenant.
    #[must_use = "`Tenants` does nothing until a method such as `create` or `get` is called"]
    pub fn lint(mut self, policy: LintPolicy) -> Self {
        self.lint_policy = policy;
        self
    }

    /// The lint policy and rules of pgdbm.toml's `[lint]`, as [`Migrator::lint_config`] takes
    /// them.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] (field `lint`) naming a rule squawk does not know.
    pub fn lint_config(mut self, config: &LintConfig) -> Result<Self> {
        self.lint_options =
            LintOptions::from_config(config).map_err(|e| Error::config("lint", e.to_string()))?;
        self.lint_policy = config.policy;
        Ok(self)
    }

    /// The schema of tenant `name`, after checking the name: lower-case letters, digits and
    /// `_`, starting with a letter, and short enough for the schema name to fit 63 bytes.
    ///
    /// # Errors
    ///
    /// [`Error::Tenant`] of kind [`InvalidName`](TenantErrorKind::InvalidName) for a name that
    /// breaks these rules, and [`Error::Identifier`] when the prefix makes the schema name invalid.
    pub fn schema_for(&self, name: &str) -> Result<String> {
        let ok = name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && self.prefix.len() + name.len() <= 63;
        if !ok {
            return Err(tenant_error(
                name,
                TenantErrorKind::InvalidName,
                format!(
                    "not a valid tenant name: use lower-case letters, digits and `_`, starting with a letter, at most {} characters",
                    63usize.saturating_sub(self.prefix.len())
                ),
            ));
        }
        let schema = format!("{}{name}", self.prefix);
        crate::ident::validate_identifier(&schema, crate::ident::IdentifierKind::Schema)?;
        Ok(schema)
    }

    fn table(&self) -> String {
        format!("{}.tenants", quote_identifier(&self.registry))
    }

    async fn ensure_registry(&self) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        let schema = format!(
            "CREATE SCHEMA IF NOT EXISTS {}",
            quote_identifier(&self.registry)
        );
        super::pool::create_if_missing(conn.raw(), &schema).await?;
        // The primary key's index on (module, name) is what `list_page` walks: `WHERE module =
        // $1 AND name > $2 ORDER BY name LIMIT n` is a range scan of it, whatever the size.
        let table = format!(
            "CREATE TABLE IF NOT EXISTS {} (module text NOT NULL, name text NOT NULL, schema_name text NOT NULL UNIQUE, created_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (module, name))",
            self.table()
        );
        super::pool::create_if_missing(conn.raw(), &table).await
    }

    /// Caches `handle` as tenant `name`'s (keeping one made meanwhile by another caller, so
    /// every caller shares one template cache).
    fn remember(&self, name: &str, handle: Database) -> Database {
        self.handles
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_string())
            .or_insert(handle)
            .clone()
    }

    fn migrator(&self, tenant: &Database) -> Migrator {
        match &self.source {
            Source::Dir(dir) => Migrator::new(tenant, dir.clone(), &self.module),
            Source::Embedded(files) => Migrator::embedded(tenant, *files, &self.module),
        }
        .lint(self.lint_policy)
        .lint_options(self.lint_options.clone())
    }

    /// Takes the transaction-level lock on (module, `name`), polling: a session blocked in
    /// `pg_advisory_xact_lock` holds a snapshot, which a `CREATE INDEX CONCURRENTLY` in the
    /// lock holder's migrations would wait for, and the two would wait on each other.
    async fn lock(&self, tx: &mut super::transaction::Transaction<'_>, name: &str) -> Result<()> {
        let key = format!("{}.{name}", self.module);
        let started = std::time::Instant::now();
        loop {
            let got: Option<bool> = tx
                .fetch_value(
                    "SELECT pg_try_advisory_xact_lock(hashtext('pgdbm_tenant'), hashtext($1))",
                    (&key,),
                )
                .await?;
            if got == Some(true) {
                return Ok(());
            }
            if started.elapsed() > LOCK_WAIT {
                return Err(Error::config(
                    "tenant",
                    format!(
                        "tenant `{name}` has been locked by another create or drop for {LOCK_WAIT:?}; try again later"
                    ),
                ));
            }
            tokio::time::sleep(LOCK_POLL).await;
        }
    }

    /// The handle of registered tenant `name`. An invalid or unknown name is an error, and no
    /// SQL is sent for an invalid one. Handles are cached by this `Tenants`: a tenant dropped by
    /// another process is still handed out here, and its queries fail (its schema is gone).
    ///
    /// # Errors
    ///
    /// [`Error::Tenant`] of kind [`InvalidName`](TenantErrorKind::InvalidName) (nothing is sent) or
    /// [`Unknown`](TenantErrorKind::Unknown) (not registered, or under another schema prefix); the
    /// pool's and queries' errors when the registry cannot be read.
    pub async fn get(&self, name: &str) -> Result<Database> {
        // Only valid names are cached, so a hit needs no validation (the per-request path).
        if let Some(h) = self
            .handles
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
        {
            return Ok(h.clone());
        }
        let schema = self.schema_for(name)?;
        let registered: Option<String> = match self
            .pool
            .fetch_value(
                &format!(
                    "SELECT schema_name FROM {} WHERE module = $1 AND name = $2",
                    self.table()
                ),
                (&self.module, name),
            )
            .await
        {
            Ok(v) => v,
            Err(e) if no_registry(&e) => None,
            Err(e) => return Err(e),
        };
        match registered {
            Some(s) if s == schema => {
                let handle = self.pool.tenant_handle(&schema, &self.compiled_schema)?;
                Ok(self.remember(name, handle))
            }
            Some(s) => Err(tenant_error(
                name,
                TenantErrorKind::Unknown,
                format!("registered with schema `{s}`, not `{schema}`: the schema prefix changed"),
            )),
            None => Err(tenant_error(
                name,
                TenantErrorKind::Unknown,
                "no such tenant",
            )),
        }
    }

    /// Applies pending migrations to the tenant `name` (an unknown tenant is an error), with the
    /// same migrator `create` and `migrate_all` use: history in its schema, under the module.
    ///
    /// # Errors
    ///
    /// The errors of [`get`](Self::get) for the name, then those of [`Migrator::apply_pending`].
    pub async fn migrate(&self, name: &str) -> Result<MigrationReport> {
        let handle = self.get(name).await?;
        self.migrator(&handle).apply_pending().await
    }
}

/// The registry table (or its schema) does not exist yet: there are no tenants.
fn no_registry(e: &Error) -> bool {
    matches!(e.code(), Some("42P01" | "3F000"))
}

fn tenant_error(name: &str, kind: TenantErrorKind, message: impl Into<String>) -> Error {
    Error::Tenant {
        tenant: name.to_string(),
        kind,
        message: message.into(),
    }
}
