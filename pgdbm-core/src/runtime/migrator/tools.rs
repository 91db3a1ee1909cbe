//! Reading the state, and the tools that change the history without running files.

use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection};

use crate::migrations::Migration;
use crate::runtime::error::{Error, Result};

use super::*;

impl Migrator {
    /// Files not applied yet, in order.
    ///
    /// # Errors
    ///
    /// As [`dry_run`](Self::dry_run).
    pub async fn pending(&self) -> Result<Vec<String>> {
        Ok(self.dry_run().await?.pending)
    }

    /// Every file and history row with its state: the versioned files in order, then the
    /// history rows whose file is missing, then the repeatable files (`repeatable/*.sql`).
    ///
    /// # Errors
    ///
    /// [`Error::Migration`] when the files cannot be read, [`Error::Connect`], [`Error::Query`]
    /// when the history cannot be read, and [`Error::Identifier`] / [`Error::Config`] for a bad
    /// table or module name. A modified or missing file is a [`FileState`], not an error.
    pub async fn status(&self) -> Result<Vec<FileStatus>> {
        self.check_names()?;
        let set = self.files()?;
        let mut conn = self.dedicated().await?;
        let applied = self.read_applied(&mut conn).await;
        let repeatable = self.read_repeatable_rows(&mut conn, false).await;
        let _ = conn.close().await;
        let applied = applied?;
        let repeatable = repeatable?;
        let mut out = Vec::new();
        for m in set.iter() {
            let state = match applied.iter().find(|a| a.0 == m.filename) {
                None => FileState::Pending,
                Some((_, checksum, at)) if *checksum == m.checksum => {
                    FileState::Applied { applied_at: *at }
                }
                Some((_, checksum, _)) => FileState::Modified {
                    recorded: checksum.clone(),
                    current: m.checksum.clone(),
                },
            };
            out.push(FileStatus {
                filename: m.filename.clone(),
                state,
            });
        }
        for (filename, _, at) in &applied {
            if set.get(filename).is_none() {
                out.push(FileStatus {
                    filename: filename.clone(),
                    state: FileState::Missing { applied_at: *at },
                });
            }
        }
        out.extend(self.repeatable_status(&set, &repeatable));
        Ok(out)
    }

    /// Checks the applied files' checksums (and missing files) without applying anything.
    ///
    /// # Errors
    ///
    /// [`Error::Migration`] naming the first applied file that was modified or is missing (unless
    /// [`allow_missing`](Self::allow_missing)), and the errors of [`status`](Self::status).
    pub async fn verify(&self) -> Result<()> {
        self.check_names()?;
        let set = self.files()?;
        let mut conn = self.dedicated().await?;
        let applied = self.read_applied(&mut conn).await;
        let _ = conn.close().await;
        self.check_drift(&set, &applied?)
    }

    /// The last `limit` history rows of this module, newest first, repeatable files' rows
    /// (module `<module>:repeatable`) included.
    ///
    /// # Errors
    ///
    /// [`Error::Connect`] when no connection opens, [`Error::Query`] when the history cannot be
    /// read, and [`Error::Identifier`] / [`Error::Config`] for a bad table or module name. No
    /// history table is an empty list.
    pub async fn history(&self, limit: i64) -> Result<Vec<HistoryEntry>> {
        self.check_names()?;
        let mut conn = self.dedicated().await?;
        // One transaction: its statements share a server connection even behind a pooler.
        exec(&mut conn, "BEGIN").await?;
        let r = async {
            if !self.table_exists(&mut conn).await? {
                return Ok(Vec::new());
            }
            let sql = format!(
                "SELECT filename::text, checksum::text, module_name::text, \
                 applied_at, applied_by::text, execution_time_ms \
                 FROM {} WHERE module_name = $1 OR module_name IS NULL OR module_name = $3 \
                 ORDER BY applied_at DESC, id DESC LIMIT $2",
                self.qualified_table()
            );
            type Row = (
                String,
                String,
                Option<String>,
                PrimitiveDateTime,
                Option<String>,
                Option<i32>,
            );
            let rows: Vec<Row> = sqlx::query_as(AssertSqlSafe(sql.clone()))
                .bind(&self.module)
                .bind(limit)
                .bind(self.repeatable_module())
                .persistent(false)
                .fetch_all(&mut conn)
                .await
                .map_err(|e| Error::query(sql, e))?;
            Ok(rows
                .into_iter()
                .map(|r| HistoryEntry {
                    filename: r.0,
                    checksum: r.1,
                    module_name: r.2,
                    applied_at: r.3,
                    applied_by: r.4,
                    execution_time_ms: r.5,
                })
                .collect())
        }
        .await;
        let _ = exec(&mut conn, "COMMIT").await;
        let _ = conn.close().await;
        r
    }

    /// Forgets that `filename` was applied (for development: the next run applies it again).
    /// Returns whether a row was removed. It does not undo the file's changes. A repeatable
    /// file is named by its path, `repeatable/NAME.sql`.
    ///
    /// # Errors
    ///
    /// [`Error::Connect`], [`Error::Query`] when the history row cannot be deleted,
    /// [`Error::Migration`] when the lock is not had within [`lock_timeout`](Self::lock_timeout),
    /// and a bad table or module name.
    pub async fn mark_unapplied(&self, filename: &str) -> Result<bool> {
        self.check_names()?;
        let mut conn = self.dedicated().await?;
        let r = async {
            if !self.read_table_exists(&mut conn).await? {
                return Ok(false);
            }
            self.begin_step(&mut conn, true).await?;
            let r = self.delete_history(&mut conn, filename).await;
            finish(&mut conn, r).await
        }
        .await;
        let _ = conn.close().await;
        r
    }

    /// Accepts the current checksum of an applied file that was changed on purpose (a comment,
    /// a reformat): its history row takes the file's checksum, and the old and new checksums
    /// are logged at WARN. Nothing else changes; the file is not run.
    ///
    /// An error, changing nothing, when the file is not in the set or not applied. Returns
    /// [`Repair::changed`] `false` when the checksums already match.
    ///
    /// # Errors
    ///
    /// [`Error::Migration`] naming `filename` when it is not in the set or not applied, and the
    /// errors of [`apply_pending`](Self::apply_pending) that do not come from running a file
    /// (unreadable files, the lock, the connection, the history table, a bad name).
    pub async fn repair(&self, filename: &str) -> Result<Repair> {
        self.repair_inner(filename, false).await
    }

    /// What [`repair`](Self::repair) would do; changes nothing.
    ///
    /// # Errors
    ///
    /// As [`repair`](Self::repair), without waiting for the lock.
    pub async fn repair_dry_run(&self, filename: &str) -> Result<Repair> {
        self.repair_inner(filename, true).await
    }

    async fn repair_inner(&self, filename: &str, dry_run: bool) -> Result<Repair> {
        self.check_names()?;
        if crate::migrations::is_repeatable(filename) {
            return Err(Error::migration(
                Some(filename),
                "a repeatable file needs no repair: the next run applies it again with its new text; nothing was changed",
                None,
            ));
        }
        let set = self.files()?;
        let Some(m) = set.get(filename) else {
            return Err(Error::migration(
                Some(filename),
                format!(
                    "there is no such file among the migrations of module `{}`; nothing was changed. Name the file as `status` lists it",
                    self.module
                ),
                None,
            ));
        };
        let mut conn = self.dedicated().await?;
        let r = async {
            if dry_run {
                let applied = self.read_applied(&mut conn).await?;
                return repair_plan(m, &applied, &self.module);
            }
            self.begin_step(&mut conn, true).await?;
            let r = async {
                let applied = self.applied(&mut conn).await?;
                let plan = repair_plan(m, &applied, &self.module)?;
                if plan.changed {
                    let sql = format!(
                        "UPDATE {} SET checksum = $1 WHERE filename = $2 AND (module_name = $3 OR module_name IS NULL)",
                        self.qualified_table()
                    );
                    sqlx::query(AssertSqlSafe(sql.clone()))
                        .bind(&plan.current)
                        .bind(filename)
                        .bind(&self.module)
                        .persistent(false)
                        .execute(&mut conn)
                        .await
                        .map_err(|e| Error::query(sql, e))?;
                }
                Ok(plan)
            }
            .await;
            let plan = finish(&mut conn, r).await?;
            if plan.changed {
                tracing::warn!(
                    file = %filename,
                    module = %self.module,
                    schema = self.db.schema().unwrap_or(""),
                    old_checksum = %plan.recorded,
                    new_checksum = %plan.current,
                    "pgdbm: repaired the recorded checksum of an applied migration"
                );
            }
            Ok(plan)
        }
        .await;
        let _ = conn.close().await;
        r
    }

    /// Records files as applied without running them, for a database that already has what
    /// they create (one that predates pgdbm, or restored from a dump): every file up to and
    /// including version `to` (all files when `None`) that is not in the history yet, in one
    /// transaction. Files after `to` stay pending.
    ///
    /// An error, changing nothing, when `to` is not the version of a file, or when an applied
    /// file was modified or is missing (as for [`apply_pending`](Self::apply_pending)).
    ///
    /// # Errors
    ///
    /// [`Error::Migration`] when `to` is no file's version, and the errors of
    /// [`apply_pending`](Self::apply_pending) before any file runs (unreadable files, a modified or
    /// missing applied file, the lock, the connection, the history table).
    pub async fn baseline(&self, to: Option<u128>) -> Result<BaselineReport> {
        self.baseline_inner(to, false).await
    }

    /// What [`baseline`](Self::baseline) would record; changes nothing (not even creating the
    /// history table).
    ///
    /// # Errors
    ///
    /// As [`baseline`](Self::baseline), without waiting for the lock.
    pub async fn baseline_dry_run(&self, to: Option<u128>) -> Result<BaselineReport> {
        self.baseline_inner(to, true).await
    }

    async fn baseline_inner(&self, to: Option<u128>, dry_run: bool) -> Result<BaselineReport> {
        self.check_names()?;
        let set = self.files()?;
        if let Some(v) = to
            && !set.iter().any(|m| m.version.number == v)
        {
            let known: Vec<&str> = set.iter().map(|m| m.version.text.as_str()).collect();
            return Err(Error::migration(
                None,
                format!(
                    "no migration of module `{}` has version {v}; nothing was recorded. The versions are: {}",
                    self.module,
                    if known.is_empty() {
                        "(none)".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
                None,
            ));
        }
        let plan = |applied: &[(String, String, PrimitiveDateTime)]| {
            let mut report = BaselineReport {
                recorded: Vec::new(),
                already_applied: Vec::new(),
                dry_run,
            };
            for m in set
                .iter()
                .filter(|m| to.is_none_or(|v| m.version.number <= v))
            {
                if applied.iter().any(|a| a.0 == m.filename) {
                    report.already_applied.push(m.filename.clone());
                } else {
                    report.recorded.push(m.filename.clone());
                }
            }
            report
        };
        let mut conn = self.dedicated().await?;
        let r = async {
            if dry_run {
                let applied = self.read_applied(&mut conn).await?;
                self.check_drift(&set, &applied)?;
                return Ok(plan(&applied));
            }
            if !self.behind_transaction_pooler() {
                self.lock(&mut conn).await?;
                self.ensure_table(&mut conn, false).await?;
            }
            self.begin_step(&mut conn, false).await?;
            let r = async {
                if self.behind_transaction_pooler() {
                    self.ensure_table(&mut conn, true).await?;
                }
                let applied = self.applied(&mut conn).await?;
                self.check_drift(&set, &applied)?;
                let report = plan(&applied);
                for name in &report.recorded {
                    let m = set.get(name).expect("planned from the set");
                    self.insert_history(&mut conn, m, None).await?;
                }
                Ok(report)
            }
            .await;
            let report = finish(&mut conn, r).await?;
            for f in &report.recorded {
                tracing::info!(file = %f, module = %self.module, schema = self.db.schema().unwrap_or(""), "pgdbm: baselined migration (recorded as applied, not run)");
            }
            Ok(report)
        }
        .await;
        let _ = conn.close().await;
        r
    }

    /// Whether the history table exists, read in a transaction of its own (pooler-safe).
    async fn read_table_exists(&self, conn: &mut PgConnection) -> Result<bool> {
        exec(conn, "BEGIN").await?;
        let r = self.table_exists(conn).await;
        let _ = exec(conn, "COMMIT").await;
        r
    }
}

/// Commits the step if it succeeded, rolls it back if not.
pub(super) async fn finish<T>(conn: &mut PgConnection, r: Result<T>) -> Result<T> {
    match r {
        Ok(v) => {
            exec(conn, "COMMIT").await?;
            Ok(v)
        }
        Err(e) => {
            let _ = exec(conn, "ROLLBACK").await;
            Err(e)
        }
    }
}

fn repair_plan(
    m: &Migration,
    applied: &[(String, String, PrimitiveDateTime)],
    module: &str,
) -> Result<Repair> {
    let Some((_, recorded, _)) = applied.iter().find(|a| a.0 == m.filename) else {
        return Err(Error::migration(
            Some(&m.filename),
            format!(
                "the file is not applied to module `{module}`, so there is no checksum to repair; nothing was changed. Apply it instead"
            ),
            None,
        ));
    };
    Ok(Repair {
        filename: m.filename.clone(),
        changed: *recorded != m.checksum,
        recorded: recorded.clone(),
        current: m.checksum.clone(),
    })
}

/// What [`Migrator::repair`] did (or, in a dry run, would do).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Repair {
    /// The file.
    pub filename: String,
    /// The checksum the history held.
    pub recorded: String,
    /// The file's checksum now, which the history holds after the repair.
    pub current: String,
    /// Whether the two differed (`false`: nothing to repair).
    pub changed: bool,
}

/// What [`Migrator::baseline`] recorded (or, in a dry run, would record).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BaselineReport {
    /// Files recorded as applied without being run, in order.
    pub recorded: Vec<String>,
    /// Files up to the version that were applied already.
    pub already_applied: Vec<String>,
    /// Whether this was a dry run (nothing was recorded).
    pub dry_run: bool,
}
