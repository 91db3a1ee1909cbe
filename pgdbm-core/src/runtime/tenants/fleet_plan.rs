//! Before a fleet run touches any tenant: what is pending where, and lint of those files.
//!
//! The files pending differ between tenants when an earlier run stopped part-way (a failed
//! tenant, a canary stop, a killed process). Lint must see every file any tenant will apply,
//! and only those (files applied long ago are never linted again), so the plan reads every
//! tenant's history first, a hundred tenants to a statement (about 0.1 ms a tenant, against
//! the several milliseconds each migration takes), and groups the tenants by the files pending
//! for them: the union of those groups is what the run will apply.

use std::collections::{BTreeMap, HashSet};

use futures_util::StreamExt;
use sqlx::AssertSqlSafe;

use super::Tenants;
use crate::ident::quote_identifier;
use crate::migrations::MigrationSet;
use crate::runtime::error::{Error, Result};

/// How many tenants' histories one statement reads.
const PLAN_BATCH: usize = 100;

/// The history table of a tenant's migrator (the [`Migrator`](crate::Migrator) default, which
/// `Tenants` keeps).
const HISTORY: &str = "schema_migrations";

/// The files pending for each tenant: `None` where its history could not be read (its own
/// migration will say why).
pub(super) type Pending = Vec<Option<Vec<String>>>;

impl Tenants {
    /// The files of `set` not in each tenant's history, in `names`' order.
    pub(super) async fn pending_for(&self, names: &[&str], set: &MigrationSet) -> Pending {
        let batches: Vec<&[&str]> = names.chunks(PLAN_BATCH).collect();
        let read: Vec<Vec<Option<HashSet<String>>>> = futures_util::stream::iter(batches)
            .map(|batch| self.applied_in(batch))
            .buffered(2)
            .collect()
            .await;
        read.into_iter()
            .flatten()
            .map(|applied| {
                applied.map(|applied| {
                    set.iter()
                        .filter(|m| !applied.contains(&m.filename))
                        .map(|m| m.filename.clone())
                        .collect()
                })
            })
            .collect()
    }

    /// The applied files of each tenant of `batch`, in one statement; tenant by tenant when
    /// that fails (one tenant without a history table fails the whole statement).
    async fn applied_in(&self, batch: &[&str]) -> Vec<Option<HashSet<String>>> {
        let selects: Vec<String> = batch
            .iter()
            .enumerate()
            .filter_map(|(i, name)| {
                let table = self.history_table(name)?;
                Some(format!(
                    "SELECT {i}::int4, filename::text FROM {table} WHERE module_name = $1"
                ))
            })
            .collect();
        if selects.len() == batch.len()
            && let Ok(rows) = self.read_history(&selects.join(" UNION ALL ")).await
        {
            let mut out = vec![Some(HashSet::new()); batch.len()];
            for (i, file) in rows {
                if let Some(Some(files)) = usize::try_from(i).ok().and_then(|i| out.get_mut(i)) {
                    files.insert(file);
                }
            }
            return out;
        }
        let mut out = Vec::with_capacity(batch.len());
        for name in batch {
            let one = match self.history_table(name) {
                Some(table) => self
                    .read_history(&format!(
                        "SELECT 0::int4, filename::text FROM {table} WHERE module_name = $1"
                    ))
                    .await
                    .ok()
                    .map(|rows| rows.into_iter().map(|(_, f)| f).collect()),
                None => None,
            };
            out.push(one);
        }
        out
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
    async fn read_history(&self, sql: &str) -> Result<Vec<(i32, String)>> {
        let mut conn = self.pool.acquire().await?;
        sqlx::query_as::<_, (i32, String)>(AssertSqlSafe(sql.to_string()))
            .bind(&self.module)
            .persistent(false)
            .fetch_all(conn.raw())
            .await
            .map_err(|e| Error::query(sql, e))
    }
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
