//! Applying pending files: the run, one file, rendering.

use std::time::Instant;

use sqlx::Connection;
use sqlx::postgres::PgConnection;

use super::lock_wait::{GaveUp, is_lock_timeout};
use crate::migrations::{Migration, MigrationSet, line_col};
use crate::runtime::error::{Aftermath, BlockingSession, Error, MigrationError, Result};
use crate::runtime::observe::metrics::migration_run;
use crate::template;

use super::*;

impl Migrator {
    /// Applies every pending file, in order, each with its history row in one transaction
    /// (`-- pgdbm:no-transaction` files statement by statement). Refuses to run (and changes
    /// nothing) when an applied file was modified or, unless allowed, is missing.
    ///
    /// Behind a transaction pooler (see [`Migrator::transaction_pooler`]) each file takes the
    /// locks in its own transaction, and a pending no-transaction file is refused before
    /// anything runs.
    ///
    /// # Errors
    ///
    /// [`Error::Migration`] naming the file for a modified or missing applied file, a bad
    /// placeholder (nothing runs) and a file that fails (with its position and
    /// [`Aftermath`](crate::Aftermath)); without a file when the files cannot be read or the lock
    /// is not had within [`lock_timeout`](Self::lock_timeout). Also [`Error::Connect`],
    /// [`Error::Query`] (history table), and [`Error::Identifier`] / [`Error::Config`] for a bad
    /// table or module name.
    pub async fn apply_pending(&self) -> Result<MigrationReport> {
        let started = Instant::now();
        let r = self.run(false).await;
        if self.db.inner.pool.observer.metrics.is_some() {
            let applied = r.as_ref().map_or(0, |report| report.applied.len());
            let seconds = started.elapsed().as_secs_f64();
            migration_run(&self.module, applied, seconds, r.is_ok());
        }
        r
    }

    /// What `apply_pending` would do, without changing anything (not even creating the
    /// history table).
    ///
    /// # Errors
    ///
    /// The checks of [`apply_pending`](Self::apply_pending) that need no run: [`Error::Migration`]
    /// when the files cannot be read or an applied file was modified or is missing,
    /// [`Error::Connect`], [`Error::Query`] when the history cannot be read, and a bad table or
    /// module name.
    pub async fn dry_run(&self) -> Result<MigrationReport> {
        self.run(true).await
    }

    pub(super) async fn run(&self, dry_run: bool) -> Result<MigrationReport> {
        let started = Instant::now();
        self.check_names()?;
        let set = self.files()?;
        self.check_repeatables(&set)?;
        let mut conn = self.dedicated().await?;
        if !dry_run && self.behind_transaction_pooler() {
            let result = match self.run_pooled(&mut conn, &set, started).await {
                Ok(r) => {
                    self.with_repeatables(&mut conn, &set, false, started, r)
                        .await
                }
                Err(e) => Err(e),
            };
            let _ = conn.close().await;
            return result;
        }
        let result = async {
            let applied = if dry_run {
                self.read_applied(&mut conn).await?
            } else {
                self.lock(&mut conn).await?;
                self.ensure_table(&mut conn, false).await?;
                self.applied(&mut conn).await?
            };
            self.check_drift(&set, &applied)?;
            if !dry_run {
                self.check_lint(&set, &applied)?;
            }
            let skipped: Vec<String> = set
                .iter()
                .filter(|m| applied.iter().any(|a| a.0 == m.filename))
                .map(|m| m.filename.clone())
                .collect();
            let pending: Vec<&Migration> = set
                .iter()
                .filter(|m| !applied.iter().any(|a| a.0 == m.filename))
                .collect();
            if dry_run || pending.is_empty() {
                return Ok(MigrationReport {
                    status: if pending.is_empty() {
                        ReportStatus::UpToDate
                    } else {
                        ReportStatus::DryRun
                    },
                    applied: Vec::new(),
                    pending: if dry_run {
                        pending.iter().map(|m| m.filename.clone()).collect()
                    } else {
                        Vec::new()
                    },
                    skipped,
                    repeatable: Vec::new(),
                    repeatable_pending: Vec::new(),
                    total: set.len(),
                    total_time: started.elapsed(),
                });
            }
            // Render every pending file first: a bad placeholder in a later file must not leave
            // the earlier ones applied.
            let rendered = pending
                .iter()
                .map(|m| self.render(m))
                .collect::<Result<Vec<_>>>()?;
            let mut done = Vec::with_capacity(pending.len());
            let total = pending.len();
            // The session is the run's own (closed at the end), so its lock_timeout is set once.
            let pid = self.limit_lock_waits(&mut conn, false).await?;
            for (m, (sql, map)) in pending.into_iter().zip(rendered) {
                self.report_progress(done.len() + 1, total, &m.filename);
                let t = Instant::now();
                self.apply_one(&mut conn, pid, m, &sql, &map).await?;
                let file = AppliedFile {
                    filename: m.filename.clone(),
                    execution_time: t.elapsed(),
                };
                self.log_applied(&file);
                done.push(file);
            }
            Ok(MigrationReport {
                status: ReportStatus::Applied,
                applied: done,
                pending: Vec::new(),
                skipped,
                repeatable: Vec::new(),
                repeatable_pending: Vec::new(),
                total: set.len(),
                total_time: started.elapsed(),
            })
        }
        .await;
        // Repeatable files last, still under the session lock.
        let result = match result {
            Ok(r) => {
                self.with_repeatables(&mut conn, &set, dry_run, started, r)
                    .await
            }
            Err(e) => Err(e),
        };
        // Closing the session releases the advisory lock whatever happened; if this future is
        // dropped or panics instead, dropping the connection closes the socket, which does too.
        let _ = conn.close().await;
        result
    }

    /// Pooler mode: one transaction per file, each taking the locks and reading the history
    /// anew, as pgdbm (Python) 0.5.0 does behind a pooler.
    async fn run_pooled(
        &self,
        conn: &mut PgConnection,
        set: &MigrationSet,
        started: Instant,
    ) -> Result<MigrationReport> {
        // Before anything runs: drift, no-transaction files, placeholders.
        let applied = self.read_applied(conn).await?;
        self.check_drift(set, &applied)?;
        self.check_lint(set, &applied)?;
        let pending: Vec<&Migration> = set
            .iter()
            .filter(|m| !applied.iter().any(|a| a.0 == m.filename))
            .collect();
        if let Some(m) = pending.iter().find(|m| m.no_transaction) {
            return Err(pooler_refuses(&m.filename));
        }
        for m in &pending {
            self.render(m)?;
        }
        let mut done = Vec::new();
        let mut first = true;
        let mut attempt = 1;
        let skipped = loop {
            self.begin_step(conn, first).await?;
            let step = async {
                if first {
                    self.ensure_table(conn, true).await?;
                }
                let applied = self.applied(conn).await?;
                self.check_drift(set, &applied)?;
                let Some(m) = set
                    .iter()
                    .find(|m| !applied.iter().any(|a| a.0 == m.filename))
                else {
                    return Ok(Step::UpToDate(applied));
                };
                if m.no_transaction {
                    return Err(pooler_refuses(&m.filename));
                }
                let (sql, map) = self.render(m)?;
                self.report_progress(
                    done.len() + 1,
                    pending.len().max(done.len() + 1),
                    &m.filename,
                );
                let t = Instant::now();
                // The row goes first: a file that commits by itself commits its row with it.
                let id = self.insert_history(conn, m, None).await?;
                // SET LOCAL: the server connection goes back to the pooler's other clients.
                let pid = self.limit_lock_waits(conn, true).await?;
                let (r, blockers) = self.execute_watched(conn, pid, &sql).await;
                if let Err(e) = r {
                    let _ = exec(conn, "ROLLBACK").await;
                    if is_lock_timeout(&e) {
                        return Ok(Step::LockTimeout(m, map, e, blockers));
                    }
                    return Err(self.file_error(conn, m, &sql, &map, e, false).await);
                }
                self.set_execution_time(conn, id, elapsed_ms(t)).await?;
                Ok(Step::Applied(AppliedFile {
                    filename: m.filename.clone(),
                    execution_time: t.elapsed(),
                }))
            }
            .await;
            first = false;
            match step {
                Ok(Step::Applied(file)) => {
                    exec(conn, "COMMIT").await?;
                    self.log_applied(&file);
                    done.push(file);
                    attempt = 1;
                }
                Ok(Step::UpToDate(applied)) => {
                    exec(conn, "COMMIT").await?;
                    break applied;
                }
                // Rolled back already; the next step takes the locks and reads the history
                // again, so another runner may have applied the file meanwhile.
                Ok(Step::LockTimeout(m, map, e, blockers)) => {
                    let gave_up = GaveUp {
                        error: e,
                        attempts: attempt,
                        blockers,
                    };
                    self.retry_or_give_up(m, &map, gave_up).await?;
                    attempt += 1;
                }
                Err(e) => {
                    let _ = exec(conn, "ROLLBACK").await;
                    return Err(e);
                }
            }
        };
        let skipped: Vec<String> = set
            .iter()
            .filter(|m| {
                skipped.iter().any(|a| a.0 == m.filename)
                    && !done.iter().any(|d: &AppliedFile| d.filename == m.filename)
            })
            .map(|m| m.filename.clone())
            .collect();
        Ok(MigrationReport {
            status: if done.is_empty() {
                ReportStatus::UpToDate
            } else {
                ReportStatus::Applied
            },
            applied: done,
            pending: Vec::new(),
            skipped,
            repeatable: Vec::new(),
            repeatable_pending: Vec::new(),
            total: set.len(),
            total_time: started.elapsed(),
        })
    }

    fn log_applied(&self, file: &AppliedFile) {
        tracing::info!(
            file = %file.filename,
            module = %self.module,
            schema = self.db.schema().unwrap_or(""),
            elapsed_ms = file.execution_time.as_millis() as u64,
            "pgdbm: applied migration"
        );
    }

    pub(super) fn render(&self, m: &Migration) -> Result<(String, template::OffsetMap)> {
        self.render_file(&m.filename, &m.content, "applied")
    }

    /// Renders a file's placeholders for this migrator's schema; a bad one is an error at its
    /// line and column, saying nothing was `done` (applied, reverted).
    pub(super) fn render_file(
        &self,
        filename: &str,
        content: &str,
        done: &str,
    ) -> Result<(String, template::OffsetMap)> {
        template::render_with_map(content, self.db.schema()).map_err(|e| {
            Error::Migration(Box::new(MigrationError {
                file: Some(filename.to_string()),
                position: Some(line_col(content, e.offset)),
                statement: None,
                message: format!("{e}; nothing was {done}"),
                aftermath: Aftermath::Unchanged,
                source: Some(Box::new(e)),
            }))
        })
    }

    /// Applies one file with its history row. A statement that runs into the lock timeout
    /// rolls the file back and the file is tried again (see `lock_wait.rs`); `pid` is the
    /// connection's backend, whose blockers are named if every attempt fails.
    pub(super) async fn apply_one(
        &self,
        conn: &mut PgConnection,
        pid: i32,
        m: &Migration,
        rendered: &str,
        map: &template::OffsetMap,
    ) -> Result<()> {
        let started = Instant::now();
        if m.no_transaction {
            tracing::warn!(file = %m.filename, "pgdbm: running a no-transaction migration statement by statement; a failure leaves earlier statements applied");
            if let Err(f) = self
                .run_statements_retried(conn, pid, &m.filename, rendered)
                .await
            {
                if is_lock_timeout(&f.error) {
                    let at = Some((f.offset, f.text));
                    let after = Aftermath::PartlyApplied;
                    return Err(self.lock_wait_exhausted(
                        m,
                        map,
                        at,
                        GaveUp {
                            error: f.error,
                            attempts: f.attempts,
                            blockers: f.blockers,
                        },
                        after,
                    ));
                }
                return Err(self.statement_error(m, map, f.offset, f.text, f.error, false));
            }
            self.insert_history(conn, m, Some(elapsed_ms(started)))
                .await?;
            return Ok(());
        }
        let mut attempt = 1;
        loop {
            exec(conn, "BEGIN").await?;
            let (r, blockers) = self.execute_watched(conn, pid, rendered).await;
            let Err(e) = r else { break };
            let _ = exec(conn, "ROLLBACK").await;
            if !is_lock_timeout(&e) {
                return Err(self.file_error(conn, m, rendered, map, e, false).await);
            }
            let gave_up = GaveUp {
                error: e,
                attempts: attempt,
                blockers,
            };
            self.retry_or_give_up(m, map, gave_up).await?;
            attempt += 1;
        }
        if let Err(e) = self
            .insert_history(conn, m, Some(elapsed_ms(started)))
            .await
        {
            let _ = exec(conn, "ROLLBACK").await;
            return Err(e);
        }
        // A file written with its own BEGIN/COMMIT (as pgdbm's create_migration does) has
        // committed already; COMMIT then only warns.
        exec(conn, "COMMIT").await
    }
}

/// How one transaction of a pooler-mode run ended.
enum Step<'m, A> {
    /// The next pending file was applied (not committed yet).
    Applied(AppliedFile),
    /// Nothing was pending: the history read in this transaction.
    UpToDate(A),
    /// The file ran into the lock timeout and was rolled back.
    LockTimeout(
        &'m Migration,
        template::OffsetMap,
        sqlx::Error,
        Vec<BlockingSession>,
    ),
}

/// The refusal of a no-transaction file in pooler mode.
pub(super) fn pooler_refuses(filename: &str) -> Error {
    Error::migration(
        Some(filename),
        "this file is marked `-- pgdbm:no-transaction`, and the migrator is in transaction-pooler mode, where a statement outside a transaction can land on any server connection and no lock covers it; nothing was applied. Apply it through a direct URL to PostgreSQL (or a session-mode pool) and run again",
        None,
    )
}
