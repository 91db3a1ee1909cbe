//! Applying repeatable files (`repeatable/*.sql`) after the versioned ones of a run.
//!
//! Their history rows sit in the same table under a module of their own,
//! `<module>:repeatable`, with the file name `repeatable/NAME.sql`. pgdbm (Python) 0.5.0 reads
//! the history only through `WHERE module_name = $1 OR module_name IS NULL` (pending files,
//! history, rollback): it never sees these rows, so it neither counts them nor lists them as
//! skipped, and it never reads `repeatable/` either. Our own readers of the module's history
//! (the missing-file check, `revert`, `repair`, `baseline`) use the same filter, so a repeatable
//! row can never pass for a versioned file that went missing, nor be reverted as one.
//!
//! Each changed file runs in a transaction with the upsert of its row (under the run's lock; in
//! transaction-pooler mode the transaction takes the locks itself and reads the row again), so
//! a failure changes neither. Rows whose file is gone are forgotten by the next run, so a file
//! removed and later added back with the same text runs again.

use std::time::Instant;

use sqlx::AssertSqlSafe;
use sqlx::postgres::PgConnection;

use super::lock_wait::{GaveUp, is_lock_timeout};
use super::tools::finish;
use super::*;
use crate::migrations::{Migration, MigrationVersion, RepeatableMigration};
use crate::runtime::error::{BlockingSession, Error, Result};

/// What is appended to the module name to record repeatable files.
pub(crate) const REPEATABLE_MODULE_SUFFIX: &str = ":repeatable";

/// `(filename, checksum, applied_at)` of a repeatable file's history row.
type Row = (String, String, PrimitiveDateTime);

/// How one attempt at a repeatable file ended (errors aside).
enum Attempt {
    /// Applied (not committed yet), or `None`: already applied with this text.
    Done(Option<AppliedFile>),
    /// A statement gave up waiting for a lock; the transaction was rolled back.
    LockTimeout(sqlx::Error, Vec<BlockingSession>),
}

impl Migrator {
    /// The module the history records this migrator's repeatable files under.
    pub(super) fn repeatable_module(&self) -> String {
        format!("{}{REPEATABLE_MODULE_SUFFIX}", self.module)
    }

    /// Checks made before a run changes anything: the module name leaves room for the suffix,
    /// and every repeatable file's placeholders render (a bad one must not be found only after
    /// the versioned files ran).
    pub(super) fn check_repeatables(&self, set: &MigrationSet) -> Result<()> {
        if set.repeatable().is_empty() {
            return Ok(());
        }
        if self.repeatable_module().len() > 100 {
            return Err(Error::config(
                "module",
                format!(
                    "the module name must be at most {} characters when there are repeatable files: they are recorded under module `<module>{REPEATABLE_MODULE_SUFFIX}` in module_name VARCHAR(100)",
                    100 - REPEATABLE_MODULE_SUFFIX.len()
                ),
            ));
        }
        for r in set.repeatable() {
            self.render_file(&r.filename, &r.content, "applied")?;
        }
        Ok(())
    }

    /// The history rows of this migrator's repeatable files, by file name; none when there is no
    /// history table yet. `table_known`: the run has made sure the table exists, which saves
    /// the look (a run reads these rows once, on every start of the service).
    pub(super) async fn read_repeatable_rows(
        &self,
        conn: &mut PgConnection,
        table_known: bool,
    ) -> Result<Vec<Row>> {
        if !table_known && !self.table_exists(conn).await? {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT filename::text, checksum::text, applied_at FROM {} \
             WHERE module_name = $1 ORDER BY filename",
            self.qualified_table()
        );
        sqlx::query_as(AssertSqlSafe(sql.clone()))
            .bind(self.repeatable_module())
            .persistent(false)
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| Error::query(sql, e))
    }

    /// Completes `report` with the repeatable files: in a dry run, lists those that would run;
    /// otherwise applies each one whose checksum differs from its row's (or has no row), then
    /// forgets the rows of files that are gone. Called after the versioned files, still under the
    /// run's lock.
    pub(super) async fn with_repeatables(
        &self,
        conn: &mut PgConnection,
        set: &MigrationSet,
        dry_run: bool,
        started: Instant,
        mut report: MigrationReport,
    ) -> Result<MigrationReport> {
        // Not in a dry run, the run has created the history table already.
        let rows = self.read_repeatable_rows(conn, !dry_run).await?;
        let changed: Vec<&RepeatableMigration> = set
            .repeatable()
            .iter()
            .filter(|r| {
                !rows
                    .iter()
                    .any(|(f, c, _)| *f == r.filename && *c == r.checksum)
            })
            .collect();
        if dry_run {
            report.repeatable_pending = changed.iter().map(|r| r.filename.clone()).collect();
            if report.status == ReportStatus::UpToDate && !changed.is_empty() {
                report.status = ReportStatus::DryRun;
            }
            return Ok(report);
        }
        for r in changed {
            if let Some(file) = self.apply_repeatable(conn, r).await? {
                tracing::info!(
                    file = %file.filename,
                    module = %self.module,
                    schema = self.db.schema().unwrap_or(""),
                    elapsed_ms = file.execution_time.as_millis() as u64,
                    "pgdbm: applied repeatable migration"
                );
                report.repeatable.push(file);
            }
        }
        let gone: Vec<String> = rows
            .into_iter()
            .filter(|(f, ..)| set.get_repeatable(f).is_none())
            .map(|(f, ..)| f)
            .collect();
        if !gone.is_empty() {
            self.forget_repeatables(conn, &gone).await?;
        }
        if report.status == ReportStatus::UpToDate && !report.repeatable.is_empty() {
            report.status = ReportStatus::Applied;
        }
        report.total_time = started.elapsed();
        Ok(report)
    }

    /// Runs one repeatable file and upserts its row, in one transaction; `None` when its row
    /// already holds its checksum (another runner applied it between plan and step). Like a
    /// versioned file, each attempt waits at most `ddl_lock_timeout` for a lock and is retried
    /// with backoff on a lock timeout.
    async fn apply_repeatable(
        &self,
        conn: &mut PgConnection,
        r: &RepeatableMigration,
    ) -> Result<Option<AppliedFile>> {
        let (sql, map) = self.render_file(&r.filename, &r.content, "applied")?;
        let mut attempt = 1;
        loop {
            self.begin_step(conn, false).await?;
            let step = async {
                // SET LOCAL: this transaction only, in either mode.
                let pid = self.limit_lock_waits(conn, true).await?;
                if self.recorded_checksum(conn, &r.filename).await? == Some(r.checksum.clone()) {
                    return Ok(Attempt::Done(None));
                }
                let t = Instant::now();
                let (run, blockers) = self.execute_watched(conn, pid, &sql).await;
                if let Err(e) = run {
                    let _ = exec(conn, "ROLLBACK").await;
                    if is_lock_timeout(&e) {
                        return Ok(Attempt::LockTimeout(e, blockers));
                    }
                    let as_file = as_migration(r);
                    return Err(self.file_error(conn, &as_file, &sql, &map, e, false).await);
                }
                self.record_repeatable(conn, r, elapsed_ms(t)).await?;
                Ok(Attempt::Done(Some(AppliedFile {
                    filename: r.filename.clone(),
                    execution_time: t.elapsed(),
                })))
            }
            .await;
            match step {
                Ok(Attempt::Done(file)) => return finish(conn, Ok(file)).await,
                // Rolled back already.
                Ok(Attempt::LockTimeout(e, blockers)) => {
                    let gave_up = GaveUp {
                        error: e,
                        attempts: attempt,
                        blockers,
                    };
                    self.retry_or_give_up(&as_migration(r), &map, gave_up)
                        .await?;
                    attempt += 1;
                }
                Err(e) => return finish(conn, Err(e)).await,
            }
        }
    }

    async fn recorded_checksum(
        &self,
        conn: &mut PgConnection,
        filename: &str,
    ) -> Result<Option<String>> {
        let sql = format!(
            "SELECT checksum::text FROM {} WHERE filename = $1 AND module_name = $2",
            self.qualified_table()
        );
        sqlx::query_scalar(AssertSqlSafe(sql.clone()))
            .bind(filename)
            .bind(self.repeatable_module())
            .persistent(false)
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| Error::query(sql, e))
    }

    /// Updates the file's row (checksum, time, role, duration), or inserts it the first time.
    async fn record_repeatable(
        &self,
        conn: &mut PgConnection,
        r: &RepeatableMigration,
        ms: i32,
    ) -> Result<()> {
        let table = self.qualified_table();
        let update = format!(
            "UPDATE {table} SET checksum = $1, execution_time_ms = $2, \
             applied_at = CURRENT_TIMESTAMP, applied_by = CURRENT_USER \
             WHERE filename = $3 AND module_name = $4"
        );
        let insert = format!(
            "INSERT INTO {table} (checksum, execution_time_ms, filename, module_name) \
             VALUES ($1, $2, $3, $4)"
        );
        for sql in [update, insert] {
            let done = sqlx::query(AssertSqlSafe(sql.clone()))
                .bind(&r.checksum)
                .bind(ms)
                .bind(&r.filename)
                .bind(self.repeatable_module())
                .persistent(false)
                .execute(&mut *conn)
                .await
                .map_err(|e| Error::query(sql, e))?;
            if done.rows_affected() > 0 {
                break;
            }
        }
        Ok(())
    }

    /// Removes the rows of repeatable files that are no longer in the set.
    async fn forget_repeatables(&self, conn: &mut PgConnection, gone: &[String]) -> Result<()> {
        self.begin_step(conn, false).await?;
        let sql = format!(
            "DELETE FROM {} WHERE module_name = $1 AND filename = ANY($2)",
            self.qualified_table()
        );
        let r = sqlx::query(AssertSqlSafe(sql.clone()))
            .bind(self.repeatable_module())
            .bind(gone)
            .persistent(false)
            .execute(&mut *conn)
            .await
            .map(|_| ())
            .map_err(|e| Error::query(sql, e));
        finish(conn, r).await?;
        for f in gone {
            tracing::info!(file = %f, module = %self.module, schema = self.db.schema().unwrap_or(""), "pgdbm: forgot the history row of a repeatable migration whose file is gone (what it created stays)");
        }
        Ok(())
    }

    /// The repeatable files' rows of [`Migrator::status`]: applied, pending (never applied),
    /// changed (applied again by the next run), and missing (the next run forgets the row).
    pub(super) fn repeatable_status(&self, set: &MigrationSet, rows: &[Row]) -> Vec<FileStatus> {
        let mut out: Vec<FileStatus> = set
            .repeatable()
            .iter()
            .map(|r| {
                let state = match rows.iter().find(|row| row.0 == r.filename) {
                    None => FileState::Pending,
                    Some((_, c, at)) if *c == r.checksum => FileState::Applied { applied_at: *at },
                    Some((_, c, _)) => FileState::Changed {
                        recorded: c.clone(),
                        current: r.checksum.clone(),
                    },
                };
                FileStatus {
                    filename: r.filename.clone(),
                    state,
                }
            })
            .collect();
        out.extend(
            rows.iter()
                .filter(|(f, ..)| set.get_repeatable(f).is_none())
                .map(|(f, _, at)| FileStatus {
                    filename: f.clone(),
                    state: FileState::Missing { applied_at: *at },
                }),
        );
        out
    }
}

/// The repeatable file in the shape the error helpers take, so its errors name the file, its
/// statement and position as a versioned file's do.
fn as_migration(r: &RepeatableMigration) -> Migration {
    Migration {
        filename: r.filename.clone(),
        version: MigrationVersion {
            number: 0,
            text: String::new(),
        },
        name: r.name.clone(),
        content: r.content.clone(),
        checksum: r.checksum.clone(),
        no_transaction: false,
        down: None,
    }
}
