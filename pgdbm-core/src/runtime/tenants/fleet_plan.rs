//! Before a fleet run touches any tenant: what is pending where, and lint of those files.
//!
//! The files pending differ between tenants when an earlier run stopped part-way (a failed
//! tenant, a canary stop, a killed process). Lint must see every file any tenant will apply,
//! and only those (files applied long ago are never linted again), so the plan reads every
//! tenant's history first, a hundred tenants to a statement (about 0.05 ms a tenant, against
//! the several milliseconds each migration takes), and groups the tenants by the files pending
//! for them: the union of those groups is what the run will apply.

use std::collections::{BTreeMap, HashMap, HashSet};

use futures_util::StreamExt;
use sqlx::AssertSqlSafe;

use super::Tenants;
use crate::ident::quote_identifier;
use crate::lint::{LintPolicy, LintReport, lint_run};
use crate::migrations::MigrationSet;
use crate::runtime::error::{Aftermath, Error, MigrationError, Result};
use crate::runtime::migrator::REPEATABLE_MODULE_SUFFIX;

/// How many tenants' histories one statement reads.
const PLAN_BATCH: usize = 100;

/// The history table of a tenant's migrator (the [`Migrator`](crate::Migrator) default, which
/// `Tenants` keeps).
const HISTORY: &str = "schema_migrations";

/// The files pending for each tenant (versioned files not applied, then repeatable files whose
/// text changed): `None` where its history could not be read (its own migration will say why).
pub(super) type Pending = Vec<Option<Vec<String>>>;

/// A tenant's history: file name to checksum, repeatable files under `repeatable/NAME.sql`.
type Applied = HashMap<String, String>;

impl Tenants {
    /// The files of `set` pending for each tenant, in `names`' order, and whether each tenant's
    /// history is exactly `set` (every file recorded with its checksum, no row of a file that
    /// is gone): such a tenant has nothing to do, and the run reports it up to date without
    /// connecting to it. Anything else (a modified or missing file, a history that could not
    /// be read) is left to the tenant's own migrator, which says what is wrong.
    pub(super) async fn pending_for(
        &self,
        names: &[&str],
        set: &MigrationSet,
    ) -> (Pending, Vec<bool>) {
        let batches: Vec<&[&str]> = names.chunks(PLAN_BATCH).collect();
        let read: Vec<Vec<Option<Applied>>> = futures_util::stream::iter(batches)
            .map(|batch| self.applied_in(batch))
            .buffered(2)
            .collect()
            .await;
        read.into_iter()
            .flatten()
            .map(|applied| match applied {
                Some(applied) => {
                    let versioned = set
                        .iter()
                        .filter(|m| !applied.contains_key(&m.filename))
                        .map(|m| m.filename.clone());
                    let repeatable = set
                        .repeatable()
                        .iter()
                        .filter(|r| applied.get(&r.filename) != Some(&r.checksum))
                        .map(|r| r.filename.clone());
                    let pending: Vec<String> = versioned.chain(repeatable).collect();
                    let current = pending.is_empty() && is_exactly(&applied, set);
                    (Some(pending), current)
                }
                None => (None, false),
            })
            .unzip()
    }

    /// The applied files of each tenant of `batch`, in one statement; tenant by tenant when
    /// that fails (one tenant without a history table fails the whole statement).
    async fn applied_in(&self, batch: &[&str]) -> Vec<Option<Applied>> {
        let selects: Vec<String> = batch
            .iter()
            .enumerate()
            .filter_map(|(i, name)| {
                let table = self.history_table(name)?;
                Some(format!(
                    "SELECT {i}::int4, filename::text, checksum::text FROM {table} WHERE module_name IN ($1, $2)"
                ))
            })
            .collect();
        if selects.len() == batch.len()
            && let Ok(rows) = self.read_history(&selects.join(" UNION ALL ")).await
        {
            let mut out = vec![Some(Applied::new()); batch.len()];
            for (i, file, checksum) in rows {
                if let Some(Some(files)) = usize::try_from(i).ok().and_then(|i| out.get_mut(i)) {
                    files.insert(file, checksum);
                }
            }
            return out;
        }
        let mut out = Vec::with_capacity(batch.len());
        for name in batch {
            let one = match self.history_table(name) {
                Some(table) => self
                    .read_history(&format!(
                        "SELECT 0::int4, filename::text, checksum::text FROM {table} WHERE module_name IN ($1, $2)"
                    ))
                    .await
                    .ok()
                    .map(|rows| rows.into_iter().map(|(_, f, c)| (f, c)).collect()),
                None => None,
            };
            out.push(one);
        }
        out
    }

    /// Lints the files pending anywhere, before any tenant is touched: once per distinct set
    /// of pending files, as one run applies them (a table an earlier file of the set creates
    /// is new), with the tenants' policy and rules. A tenant whose history could not be read
    /// is left to its own migrator, which lints what it finds pending before applying it.
    ///
    /// # Errors
    ///
    /// Under [`LintPolicy::Deny`], [`Error::Migration`] carrying the [`LintReport`] (every
    /// denied finding of every set, once) when a finding is not allowed by a pragma.
    pub(super) fn lint_first(
        &self,
        names: &[&str],
        pending: &Pending,
        set: &MigrationSet,
    ) -> Result<()> {
        if self.lint_policy == LintPolicy::Off {
            return Ok(());
        }
        let mut report = LintReport::default();
        let mut linted: HashSet<&str> = HashSet::new();
        let mut refused: Option<(usize, &str)> = None;
        for (files, tenants) in pending_groups(names, pending) {
            let schema = self.schema_for(tenants[0]).ok();
            let group = lint_run(
                files.iter().filter_map(|f| set.get(f)),
                schema.as_deref(),
                &self.lint_options,
            );
            if !group.is_clean() {
                let (count, first) = refused.unwrap_or((0, tenants[0]));
                refused = Some((count + tenants.len(), first));
            }
            for f in group.findings {
                if !report.findings.contains(&f) {
                    report.findings.push(f);
                }
            }
            linted.extend(
                files
                    .iter()
                    .filter_map(|f| set.get(f))
                    .map(|m| m.filename.as_str()),
            );
        }
        report.files_linted = linted.len();
        let Some((count, first_tenant)) = refused.filter(|_| self.lint_policy == LintPolicy::Deny)
        else {
            for f in report.findings.iter().filter(|f| f.allowed.is_none()) {
                tracing::warn!(file = %f.file, line = f.line, rule = %f.rule, module = %self.module, rewrite = %f.rewrite, "pgdbm: migration lint: {}", f.message);
            }
            return Ok(());
        };
        let first = report.denied().next().expect("a denied finding");
        Err(Error::Migration(Box::new(MigrationError {
            file: Some(first.file.clone()),
            position: Some((first.line, first.column)),
            statement: None,
            message: format!(
                "lint refused files pending on {count} tenant(s) (`{first_tenant}` first): no tenant was touched. {report}, or set [lint] policy = \"warn\" in pgdbm.toml (Tenants::lint) to apply anyway"
            ),
            aftermath: Aftermath::Unchanged,
            source: Some(Box::new(report)),
        })))
    }

    fn history_table(&self, name: &str) -> Option<String> {
        let schema = self.schema_for(name).ok()?;
        Some(format!(
            "{}.{}",
            quote_identifier(&schema),
            quote_identifier(HISTORY)
        ))
    }

    /// Runs one plan statement unprepared: each is used once, and a prepared statement per
    /// batch would only crowd the pool's statement caches.
    async fn read_history(&self, sql: &str) -> Result<Vec<(i32, String, String)>> {
        let mut conn = self.pool.acquire().await?;
        sqlx::query_as::<_, (i32, String, String)>(AssertSqlSafe(sql.to_string()))
            .bind(&self.module)
            .bind(format!("{}{REPEATABLE_MODULE_SUFFIX}", self.module))
            .persistent(false)
            .fetch_all(conn.raw())
            .await
            .map_err(|e| Error::query(sql, e))
    }
}

/// Whether `applied` records exactly the files of `set`, each with its checksum.
fn is_exactly(applied: &Applied, set: &MigrationSet) -> bool {
    let versioned = set.iter().map(|m| (&m.filename, &m.checksum));
    let repeatable = set.repeatable().iter().map(|r| (&r.filename, &r.checksum));
    let mut expected = 0;
    for (file, checksum) in versioned.chain(repeatable) {
        if applied.get(file) != Some(checksum) {
            return false;
        }
        expected += 1;
    }
    applied.len() == expected
}

/// The tenants grouped by the files pending for them (a nonempty set each), in order: the
/// first tenant of each group stands for it when the group's files are linted.
pub(super) fn pending_groups<'n>(
    names: &[&'n str],
    pending: &Pending,
) -> BTreeMap<Vec<String>, Vec<&'n str>> {
    let mut groups: BTreeMap<Vec<String>, Vec<&'n str>> = BTreeMap::new();
    for (name, files) in names.iter().zip(pending) {
        if let Some(files) = files.as_ref().filter(|f| !f.is_empty()) {
            groups.entry(files.clone()).or_default().push(name);
        }
    }
    groups
}
