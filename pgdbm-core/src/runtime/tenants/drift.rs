//! Drift of a tenant fleet: one shadow schema migrated with the tenants' files, and every
//! tenant's schema compared with it, read a batch of schemas per catalog statement and a
//! bounded number of batches at a time.

use futures_util::{StreamExt, TryStreamExt};

use super::Tenants;
use crate::runtime::database::Database;
use crate::runtime::drift::{
    Difference, Drift, DriftReport, ObjectKind, SchemaSnapshot, compare_schemas, migrate_shadow,
    read_snapshots, refused, same_place,
};
use crate::runtime::error::Result;

/// Tenant schemas read by one catalog statement: large enough that 200 tenants take a
/// handful of statements, small enough that one statement's result stays small.
const BATCH: usize = 50;

/// Names read from the registry at a time.
const PAGE: usize = 1000;

/// The history table of tenant schemas (the migrator's default, as `Tenants` uses it).
const HISTORY_TABLE: &str = "schema_migrations";

impl Tenants {
    /// Compares every tenant's schema with what the tenants' migrations make: migrates
    /// `shadow` (a handle on a scratch database, or on a schema of its own) with the same
    /// files and module, then reads every registered tenant's catalog (a batch of 50 schemas
    /// per statement, [`concurrency`](Self::concurrency) batches at a time) and compares it
    /// with the shadow's. One report per tenant, in name order; a clean tenant's has no
    /// differences. A tenant whose schema is gone reports it missing.
    ///
    /// ```no_run
    /// # async fn demo(tenants: pgdbm_core::Tenants, scratch: pgdbm_core::Database) -> pgdbm_core::Result<()> {
    /// for report in tenants.drift(&scratch).await? {
    ///     for d in &report.differences {
    ///         eprintln!("{}: {d}", report.tenant.as_deref().unwrap_or_default());
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// The shadow must be empty or migrated before by these files (see
    /// [`Migrator::drift`](crate::Migrator::drift)); it must not be a tenant's schema.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) (nothing changed) for a shadow that
    /// is a tenant's schema, holds objects no migration recorded or was migrated with other
    /// versions of the files; the errors of
    /// [`Migrator::apply_pending`](crate::Migrator::apply_pending) on the shadow; the registry's
    /// and the catalog reads' pool and query errors.
    pub async fn drift(&self, shadow: &Database) -> Result<Vec<DriftReport>> {
        let shadow_schema = shadow.schema().unwrap_or("public");
        let probe = self.pool.with_schema(Some(shadow_schema))?;
        if shadow_schema.starts_with(&self.prefix) && same_place(&probe, shadow).await? {
            return Err(refused(format!(
                "the shadow `{shadow_schema}` is a tenant's schema on the tenants' own database: give drift a scratch database (or a schema outside the `{}` prefix)",
                self.prefix
            )));
        }
        let expected = migrate_shadow(&self.migrator(shadow)).await?;
        let mut batches: Vec<Vec<String>> = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.list_page(after.as_deref(), PAGE).await?;
            batches.extend(page.names.chunks(BATCH).map(<[String]>::to_vec));
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let done: Vec<Vec<DriftReport>> = futures_util::stream::iter(batches)
            .map(|names| self.drift_batch(names, &expected))
            .buffer_unordered(self.concurrency)
            .try_collect()
            .await?;
        let mut reports: Vec<DriftReport> = done.into_iter().flatten().collect();
        reports.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        Ok(reports)
    }

    /// The reports of the tenants `names`, their schemas read by one statement.
    async fn drift_batch(
        &self,
        names: Vec<String>,
        expected: &SchemaSnapshot,
    ) -> Result<Vec<DriftReport>> {
        let schemas: Vec<String> = names
            .iter()
            .map(|n| self.schema_for(n))
            .collect::<Result<_>>()?;
        let mut snapshots = read_snapshots(&self.pool, &schemas, HISTORY_TABLE).await?;
        Ok(names
            .into_iter()
            .zip(schemas)
            .map(|(tenant, schema)| {
                let differences = match snapshots.remove(&schema) {
                    Some(actual) => compare_schemas(expected, &actual),
                    None => vec![Difference {
                        kind: ObjectKind::Schema,
                        name: schema.clone(),
                        table: None,
                        drift: Drift::Missing,
                    }],
                };
                DriftReport {
                    schema,
                    module: self.module.clone(),
                    tenant: Some(tenant),
                    differences,
                }
            })
            .collect())
    }
}
