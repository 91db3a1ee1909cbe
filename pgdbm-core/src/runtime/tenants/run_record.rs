//! The record of a fleet run: which tenants a run of one set of migration files has finished,
//! so that a run cut short (the process killed, the deploy aborted) is resumed by the next run
//! of the same files without connecting to the tenants it had finished.
//!
//! Each tenant's migration is exactly-once without it (its history table says what is applied),
//! so the record is only ever an optimisation and an honest summary: a tenant finished but not
//! yet marked is checked again by the next run and found up to date. It is a table beside the
//! registry, `"pgdbm".tenant_migration_progress` (module, fingerprint, tenant), created the
//! first time a run needs it. The fingerprint is the set's checksum over every file name and
//! checksum ([`MigrationSet::set_checksum`]), so a run of other files starts a record of its own.
//!
//! What is kept: a run that finishes every tenant deletes its rows (the next run checks every
//! tenant again, which is what "nothing recorded" should mean once a run is complete); a run
//! of other files deletes the rows of every earlier set of the module when it starts (tenants
//! finished for old files still need the new ones). So the table holds at most the rows of the
//! last unfinished run of each module.

use std::collections::HashSet;

use super::{Tenants, no_registry};
use crate::ident::quote_identifier;
use crate::migrations::MigrationSet;
use crate::runtime::error::Result;

/// The progress rows of one run: (module, fingerprint).
pub(super) struct RunRecord<'a> {
    tenants: &'a Tenants,
    fingerprint: String,
}

impl<'a> RunRecord<'a> {
    pub(super) fn new(tenants: &'a Tenants, set: &MigrationSet) -> Self {
        RunRecord {
            tenants,
            fingerprint: set.set_checksum(),
        }
    }

    fn table(&self) -> String {
        format!(
            "{}.tenant_migration_progress",
            quote_identifier(&self.tenants.registry)
        )
    }

    /// The tenants an earlier run of these files finished (none when nothing was recorded).
    pub(super) async fn done(&self) -> Result<HashSet<String>> {
        let rows: Vec<(String,)> = match self
            .tenants
            .pool
            .fetch_all(
                &format!(
                    "SELECT tenant FROM {} WHERE module = $1 AND fingerprint = $2",
                    self.table()
                ),
                (&self.tenants.module, &self.fingerprint),
            )
            .await
        {
            Ok(rows) => rows,
            Err(e) if no_registry(&e) => Vec::new(),
            Err(e) => return Err(e),
        };
        Ok(rows.into_iter().map(|(t,)| t).collect())
    }

    /// Makes the table if needed and forgets the module's runs of other files.
    pub(super) async fn start(&self) -> Result<()> {
        self.tenants.ensure_registry().await?;
        let mut conn = self.tenants.pool.acquire().await?;
        let table = format!(
            "CREATE TABLE IF NOT EXISTS {} (module text NOT NULL, fingerprint text NOT NULL, tenant text NOT NULL, finished_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (module, fingerprint, tenant))",
            self.table()
        );
        crate::runtime::pool::create_if_missing(conn.raw(), &table).await?;
        drop(conn);
        self.tenants
            .pool
            .execute(
                &format!(
                    "DELETE FROM {} WHERE module = $1 AND fingerprint <> $2",
                    self.table()
                ),
                (&self.tenants.module, &self.fingerprint),
            )
            .await?;
        Ok(())
    }

    /// Records `tenant` as finished. A failure to record is logged, not returned: the tenant's
    /// migration succeeded, and the next run only checks it again.
    pub(super) async fn mark(&self, tenant: &str) {
        let r = self
            .tenants
            .pool
            .execute(
                &format!(
                    "INSERT INTO {} (module, fingerprint, tenant) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    self.table()
                ),
                (&self.tenants.module, &self.fingerprint, tenant),
            )
            .await;
        if let Err(e) = r {
            tracing::warn!(tenant, error = %e, "pgdbm: could not record a finished tenant; the next run checks it again");
        }
    }

    /// Forgets this run: every tenant was finished.
    pub(super) async fn finish(&self) -> Result<()> {
        self.tenants
            .pool
            .execute(
                &format!(
                    "DELETE FROM {} WHERE module = $1 AND fingerprint = $2",
                    self.table()
                ),
                (&self.tenants.module, &self.fingerprint),
            )
            .await?;
        Ok(())
    }
}
