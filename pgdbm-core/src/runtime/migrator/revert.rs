//! Reverting applied files with their down files, newest first.

use std::time::{Duration, Instant};

use sqlx::postgres::PgConnection;
use sqlx::types::time::PrimitiveDateTime;
use sqlx::{AssertSqlSafe, Connection};

use super::apply::pooler_refuses;
use super::tools::finish;
use super::{Migrator, exec, run_statements};
use crate::migrations::{DownMigration, Migration, MigrationSet};
use crate::runtime::error::{Error, Result};
use crate::template;

/// How far [`Migrator::revert`] goes back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RevertTarget {
    /// The newest `n` applied files.
    Steps(usize),
    /// Every applied file with a version above this one; this version stays applied (`To(0)`
    /// reverts everything).
    To(u128),
}

/// One file reverted.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RevertedFile {
    /// The up file whose history row was removed.
    pub filename: String,
    /// Its down file.
    pub down_file: String,
    /// How long the down file took.
    pub execution_time: Duration,
}

/// What [`Migrator::revert`] did (or, in a dry run, would do).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RevertReport {
    /// Files reverted, newest first (empty in a dry run).
    pub reverted: Vec<RevertedFile>,
    /// Files a dry run would revert, newest first (empty otherwise).
    pub would_revert: Vec<String>,
    /// Whether this was a dry run.
    pub dry_run: bool,
}

impl Migrator {
    /// Undoes applied files with their down files (`down/NNN_name.down.sql`), newest first:
    /// each down file and the removal of its history row in one transaction (a down file
    /// marked `-- pgdbm:no-transaction` runs statement by statement, then its row is removed).
    ///
    /// Everything is checked before anything runs: a file to revert without a down file, a
    /// modified or missing file, a bad placeholder in a down file, or (behind a transaction
    /// pooler) a no-transaction down file stops the revert with an error, and nothing changes.
    ///
    /// ```no_run
    /// # async fn demo(db: pgdbm_core::Database) -> pgdbm_core::Result<()> {
    /// use pgdbm_core::{Migrator, RevertTarget};
    /// let m = Migrator::new(&db, "./migrations", "myservice");
    /// let report = m.revert(RevertTarget::Steps(1)).await?;
    /// println!("reverted {:?}", report.reverted.iter().map(|f| &f.filename).collect::<Vec<_>>());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Migration`] naming the file for the refusals above (nothing changes), and for a
    /// down file that fails (with its position and [`Aftermath`](crate::Aftermath); the files
    /// before it stay reverted); the other errors of [`apply_pending`](Self::apply_pending)
    /// (reading the files, the lock, the connection, the history table).
    pub async fn revert(&self, target: RevertTarget) -> Result<RevertReport> {
        self.revert_inner(target, false).await
    }

    /// What [`revert`](Self::revert) would undo, with the same checks; changes nothing.
    ///
    /// # Errors
    ///
    /// [`Error::Migration`] for the refusals of [`revert`](Self::revert), and the errors of
    /// [`dry_run`](Self::dry_run) (reading the files and the history).
    pub async fn revert_dry_run(&self, target: RevertTarget) -> Result<RevertReport> {
        self.revert_inner(target, true).await
    }

    async fn revert_inner(&self, target: RevertTarget, dry_run: bool) -> Result<RevertReport> {
        self.check_names()?;
        let set = self.files()?;
        let mut conn = self.dedicated().await?;
        let r = async {
            let pooler = self.behind_transaction_pooler();
            // Plan under the lock on a direct connection; behind a pooler, plan first and check
            // each step again inside its locked transaction.
            let applied = if dry_run || pooler {
                self.read_applied(&mut conn).await?
            } else {
                self.lock(&mut conn).await?;
                self.applied(&mut conn).await?
            };
            self.check_drift(&set, &applied)?;
            let plan = revert_plan(&set, &applied, target);
            let rendered = self.render_down_files(&plan, pooler)?;
            if dry_run {
                return Ok(RevertReport {
                    reverted: Vec::new(),
                    would_revert: plan.iter().map(|m| m.filename.clone()).collect(),
                    dry_run: true,
                });
            }
            let mut done = Vec::new();
            for (m, (sql, map)) in plan.into_iter().zip(rendered) {
                done.push(self.revert_one(&mut conn, m, &sql, &map, pooler).await?);
            }
            Ok(RevertReport {
                reverted: done,
                would_revert: Vec::new(),
                dry_run: false,
            })
        }
        .await;
        let _ = conn.close().await;
        r
    }

    /// Each planned file's down file, rendered; refused (before anything runs) when one is
    /// missing, or cannot run behind a transaction pooler.
    fn render_down_files(
        &self,
        plan: &[&Migration],
        pooler: bool,
    ) -> Result<Vec<(String, template::OffsetMap)>> {
        let mut rendered = Vec::with_capacity(plan.len());
        for m in plan {
            let Some(down) = &m.down else {
                return Err(Error::migration(
                    Some(&m.filename),
                    format!(
                        "cannot revert it: there is no down file `down/{}.down.sql`; nothing was reverted. Write the down file, or revert fewer files (stop above version {})",
                        m.filename.trim_end_matches(".sql"),
                        m.version.text
                    ),
                    None,
                ));
            };
            if pooler && down.no_transaction {
                return Err(pooler_refuses(&down.filename));
            }
            rendered.push(self.render_file(&down.filename, &down.content, "reverted")?);
        }
        Ok(rendered)
    }

    /// Reverts file `m` with its rendered down file `sql` and removes its history row: in one
    /// transaction, or statement by statement for a no-transaction down file.
    async fn revert_one(
        &self,
        conn: &mut PgConnection,
        m: &Migration,
        sql: &str,
        map: &template::OffsetMap,
        pooler: bool,
    ) -> Result<RevertedFile> {
        let down = m.down.as_ref().expect("render_down_files checked it");
        let t = Instant::now();
        if down.no_transaction {
            // Direct connection only (refused behind a pooler); the session lock is held.
            tracing::warn!(file = %down.filename, "pgdbm: running a no-transaction down migration statement by statement; a failure leaves earlier statements applied");
            if let Err((offset, text, e)) = run_statements(conn, sql).await {
                let as_file = down_as_migration(m, down);
                return Err(self.statement_error(&as_file, map, offset, text, e, true));
            }
            exec(conn, "BEGIN").await?;
            let r = self.delete_history(conn, &m.filename).await;
            finish(conn, r).await?;
        } else {
            self.begin_step(conn, false).await?;
            let r = self
                .revert_in_transaction(conn, m, down, sql, map, pooler)
                .await;
            finish(conn, r).await?;
        }
        let execution_time = t.elapsed();
        tracing::info!(
            file = %m.filename,
            down_file = %down.filename,
            module = %self.module,
            schema = self.db.schema().unwrap_or(""),
            elapsed_ms = execution_time.as_millis() as u64,
            "pgdbm: reverted migration"
        );
        Ok(RevertedFile {
            filename: m.filename.clone(),
            down_file: down.filename.clone(),
            execution_time,
        })
    }

    /// The statements of one transactional revert step, inside its transaction; behind a
    /// pooler, after checking again that the file is still applied.
    async fn revert_in_transaction(
        &self,
        conn: &mut PgConnection,
        m: &Migration,
        down: &DownMigration,
        sql: &str,
        map: &template::OffsetMap,
        pooler: bool,
    ) -> Result<()> {
        if pooler {
            let now = self.applied(conn).await?;
            if !now.iter().any(|a| a.0 == m.filename) {
                return Err(Error::migration(
                    Some(&m.filename),
                    "another runner changed the history while this revert ran (the file is no longer applied); the files before it were reverted, this one and later were not. Check `status` and run again",
                    None,
                ));
            }
        }
        if let Err(e) = sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
            .execute(&mut *conn)
            .await
        {
            let _ = exec(conn, "ROLLBACK").await;
            let as_file = down_as_migration(m, down);
            return Err(self.file_error(conn, &as_file, sql, map, e, true).await);
        }
        self.delete_history(conn, &m.filename).await?;
        Ok(())
    }
}

/// The applied files to revert, newest first, as `target` says.
fn revert_plan<'s>(
    set: &'s MigrationSet,
    applied: &[(String, String, PrimitiveDateTime)],
    target: RevertTarget,
) -> Vec<&'s Migration> {
    let mut plan: Vec<&Migration> = set
        .iter()
        .filter(|m| applied.iter().any(|a| a.0 == m.filename))
        .collect();
    plan.reverse();
    match target {
        RevertTarget::Steps(n) => plan.truncate(n),
        RevertTarget::To(v) => plan.retain(|m| m.version.number > v),
    }
    plan
}

/// The down file in the shape the error helpers take, so its errors name the down file, its
/// statement and position exactly as an up file's do.
fn down_as_migration(m: &Migration, down: &DownMigration) -> Migration {
    Migration {
        filename: down.filename.clone(),
        content: down.content.clone(),
        no_transaction: down.no_transaction,
        down: None,
        ..m.clone()
    }
}
