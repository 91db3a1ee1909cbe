//! A fleet run: every tenant migrated with the care one database gets.
//!
//! Why each step. **Lint first**: a file lint denies would fail or lock every tenant in turn;
//! checked once before any tenant is touched, it is one refusal instead of a fleet half-done.
//! **Canary**: a file that breaks on real data usually breaks on the first tenants it meets;
//! stopping there leaves every other tenant on the schema that works. **Bounded
//! concurrency**: the fleet shares one server with the service it serves. **The run record**
//! (`run_record`): a run of 10,000 tenants killed at 6,000 resumes at 6,000, without
//! connecting to the tenants it had finished. **The report**: applied, up to date, done by an
//! earlier run, failed with its error, and not started, so nothing is left to guess.

use futures_util::StreamExt;

use super::Tenants;
use super::fleet::{TenantMigration, TenantProgress};
use super::fleet_plan::Pending;
use super::run_record::RunRecord;
use crate::migrations::MigrationSet;
use crate::runtime::error::Result;
use crate::runtime::migrator::{MigrationReport, ReportStatus};

/// How [`Tenants::migrate_fleet`] runs: a canary, how many tenants at once, whether to resume.
///
/// ```no_run
/// # async fn demo(tenants: pgdbm_core::Tenants) -> pgdbm_core::Result<()> {
/// use pgdbm_core::FleetOptions;
/// let report = tenants
///     .migrate_fleet(&FleetOptions::new().canary(5).concurrency(4))
///     .await?;
/// for t in report.failed() {
///     eprintln!("{}: {}", t.tenant, t.outcome.as_ref().unwrap_err());
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct FleetOptions {
    canary: usize,
    concurrency: Option<usize>,
    resume: bool,
}

impl Default for FleetOptions {
    fn default() -> Self {
        FleetOptions::new()
    }
}

impl FleetOptions {
    /// No canary, the `Tenants`' [`concurrency`](Tenants::concurrency), resuming an
    /// unfinished run of the same files.
    pub fn new() -> Self {
        FleetOptions {
            canary: 0,
            concurrency: None,
            resume: true,
        }
    }

    /// Migrate the first `n` tenants with files pending (in the registry's order) first, and
    /// stop there, touching no other tenant, if any of them fails (default 0: no canary).
    #[must_use = "options do nothing until passed to `migrate_fleet`"]
    pub fn canary(mut self, n: usize) -> Self {
        self.canary = n;
        self
    }

    /// How many tenants to migrate at once (default: the `Tenants`' own
    /// [`concurrency`](Tenants::concurrency)); at least 1.
    #[must_use = "options do nothing until passed to `migrate_fleet`"]
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = Some(n.max(1));
        self
    }

    /// Whether to skip the tenants an unfinished earlier run of the same files finished
    /// (default true). Off, every tenant is checked again (each one's history still keeps
    /// its files from running twice).
    #[must_use = "options do nothing until passed to `migrate_fleet`"]
    pub fn resume(mut self, resume: bool) -> Self {
        self.resume = resume;
        self
    }
}

/// What [`Tenants::migrate_fleet`] did.
#[derive(Debug)]
#[non_exhaustive]
pub struct FleetReport {
    /// Every tenant the run reached, in the registry's order: those migrated now (applied, up
    /// to date, or failed with the error) and those an earlier, unfinished run of the same
    /// files had finished ([`TenantMigration::resumed`]).
    pub tenants: Vec<TenantMigration>,
    /// Tenants not touched because a canary tenant failed, in the registry's order.
    pub not_started: Vec<String>,
    /// How many tenants the canary step migrated (0 without a canary).
    pub canary: usize,
    /// A canary tenant failed, so the run stopped before the others.
    pub canary_failed: bool,
}

impl FleetReport {
    /// Tenants that had files applied by this run.
    pub fn applied(&self) -> usize {
        self.tenants
            .iter()
            .filter(|t| matches!(&t.outcome, Ok(r) if !r.applied.is_empty()))
            .count()
    }

    /// Tenants this run found with nothing pending.
    pub fn up_to_date(&self) -> usize {
        self.tenants
            .iter()
            .filter(|t| !t.resumed && matches!(&t.outcome, Ok(r) if r.applied.is_empty()))
            .count()
    }

    /// Tenants skipped because an earlier, unfinished run of the same files finished them
    /// (not connected to).
    pub fn resumed(&self) -> usize {
        self.tenants.iter().filter(|t| t.resumed).count()
    }

    /// The tenants that failed, each with its error in [`TenantMigration::outcome`].
    pub fn failed(&self) -> impl Iterator<Item = &TenantMigration> {
        self.tenants.iter().filter(|t| t.outcome.is_err())
    }

    /// No tenant failed and none was left unstarted.
    pub fn is_success(&self) -> bool {
        self.not_started.is_empty() && self.failed().next().is_none()
    }
}

/// The counts handed to the progress callback, and what the run finished.
struct Progress<F> {
    total: usize,
    failed: usize,
    finished: Vec<(usize, TenantMigration)>,
    on_progress: F,
}

impl<F: FnMut(&TenantProgress<'_>)> Progress<F> {
    fn push(&mut self, i: usize, t: TenantMigration) {
        self.failed += usize::from(t.outcome.is_err());
        self.finished.push((i, t));
        (self.on_progress)(&TenantProgress {
            done: self.finished.len(),
            total: self.total.max(self.finished.len()),
            failed: self.failed,
            last: &self.finished[self.finished.len() - 1].1,
        });
    }
}

impl Tenants {
    /// Migrates every tenant as `options` say: lint of every file pending on any tenant first
    /// (nothing is touched if a file fails it), then the canary tenants, then the others,
    /// a bounded number at a time, each finished tenant recorded so that a run cut short is
    /// resumed by the next run of the same files. A failing tenant does not stop the others
    /// (except in the canary step); its error is in the report.
    ///
    /// # Errors
    ///
    /// Those of [`migrate_fleet_with`](Self::migrate_fleet_with).
    pub async fn migrate_fleet(&self, options: &FleetOptions) -> Result<FleetReport> {
        self.migrate_fleet_with(options, |_| {}).await
    }

    /// [`migrate_fleet`](Self::migrate_fleet), calling `on_progress` after each tenant (those
    /// resumed first, at once), from the task awaiting this method, one call at a time.
    ///
    /// # Errors
    ///
    /// Before any tenant is touched: [`Error::Migration`](crate::Error::Migration) when the
    /// files cannot be read, lint's refusal of a pending file, and the pool's and queries'
    /// errors when the registry or the run record cannot be read or made. A tenant's own
    /// failure is not an error of the run: it is in the report.
    pub async fn migrate_fleet_with<F>(
        &self,
        options: &FleetOptions,
        on_progress: F,
    ) -> Result<FleetReport>
    where
        F: FnMut(&TenantProgress<'_>),
    {
        let set = self.migrator(&self.pool).files()?;
        let record = RunRecord::new(self, &set);
        let names = self.names().await?;
        let done = if options.resume {
            record.done().await?
        } else {
            Default::default()
        };
        let mut progress = Progress {
            total: names.len(),
            failed: 0,
            finished: Vec::with_capacity(names.len()),
            on_progress,
        };
        let (resumed, todo): (Places<'_>, Places<'_>) = names
            .iter()
            .map(String::as_str)
            .enumerate()
            .partition(|(_, n)| done.contains(*n));
        let todo_names: Vec<&str> = todo.iter().map(|(_, n)| *n).collect();
        let (pending, current) = self.pending_for(&todo_names, &set).await;
        self.lint_first(&todo_names, &pending, &set)?;
        // Tenants whose history is exactly these files: up to date, never connected to.
        let (todo, pending): (Vec<_>, Vec<_>) = todo
            .into_iter()
            .zip(pending)
            .zip(current)
            .filter_map(|((t, files), current)| {
                if current {
                    progress.push(t.0, up_to_date_tenant(t.1, &set, false));
                    None
                } else {
                    Some((t, files))
                }
            })
            .unzip();
        if !todo.is_empty() {
            record.start().await?;
        }
        if !resumed.is_empty() {
            tracing::info!(module = %self.module, resumed = resumed.len(), "pgdbm: resuming an unfinished tenant migration run of these files");
        }
        for (i, name) in resumed {
            progress.push(i, up_to_date_tenant(name, &set, true));
        }
        let (canary, rest) = split_canary(todo, &pending, options.canary);
        let concurrency = options.concurrency.unwrap_or(self.concurrency);
        let canary_count = canary.len();
        let failed_before = progress.failed;
        self.migrate_each(canary, concurrency, &record, &mut progress)
            .await;
        let canary_failed = progress.failed > failed_before;
        let not_started = if canary_failed {
            rest.into_iter().map(|(_, n)| n.to_string()).collect()
        } else {
            self.migrate_each(rest, concurrency, &record, &mut progress)
                .await;
            Vec::new()
        };
        let mut finished = progress.finished;
        finished.sort_by_key(|(i, _)| *i);
        let report = FleetReport {
            tenants: finished.into_iter().map(|(_, t)| t).collect(),
            not_started,
            canary: canary_count,
            canary_failed,
        };
        // Every tenant is done: forget the run. A failure to forget is only logged (the
        // migrations succeeded); the rows left make the next run of these files skip every
        // tenant, which is what it would find anyway.
        if report.is_success()
            && !report.tenants.is_empty()
            && let Err(e) = record.finish().await
        {
            tracing::warn!(module = %self.module, error = %e, "pgdbm: could not delete the record of a finished tenant migration run");
        }
        Ok(report)
    }

    /// Every registered name, in the registry's order, read a page at a time.
    async fn names(&self) -> Result<Vec<String>> {
        let mut walk = std::pin::pin!(self.walk());
        let mut names = Vec::new();
        while let Some(name) = walk.next().await {
            names.push(name?);
        }
        Ok(names)
    }

    /// Migrates `tenants`, `concurrency` at a time, recording each one finished.
    async fn migrate_each<F: FnMut(&TenantProgress<'_>)>(
        &self,
        tenants: Places<'_>,
        concurrency: usize,
        record: &RunRecord<'_>,
        progress: &mut Progress<F>,
    ) {
        let mut work = std::pin::pin!(
            futures_util::stream::iter(tenants)
                .map(|(i, name)| async move {
                    let t = self.migrate_one(name.to_string()).await;
                    if t.outcome.is_ok() {
                        record.mark(name).await;
                    }
                    (i, t)
                })
                .buffer_unordered(concurrency)
        );
        while let Some((i, t)) = work.next().await {
            progress.push(i, t);
        }
    }
}

/// A tenant with nothing to do, reported up to date without connecting to it: an earlier run
/// of these files finished it (`resumed`), or its history is exactly these files.
fn up_to_date_tenant(name: &str, set: &MigrationSet, resumed: bool) -> TenantMigration {
    TenantMigration {
        tenant: name.to_string(),
        outcome: Ok(MigrationReport {
            status: ReportStatus::UpToDate,
            applied: Vec::new(),
            pending: Vec::new(),
            // As the tenant's migrator would report it: every file already applied.
            skipped: set.iter().map(|m| m.filename.clone()).collect(),
            repeatable: Vec::new(),
            repeatable_pending: Vec::new(),
            total: set.len(),
            total_time: std::time::Duration::ZERO,
        }),
        resumed,
    }
}

/// Tenants with their place in the registry's order.
type Places<'n> = Vec<(usize, &'n str)>;

/// The first `n` tenants with files pending (or whose history could not be read), and the
/// others, each in the registry's order.
fn split_canary<'n>(todo: Places<'n>, pending: &Pending, n: usize) -> (Places<'n>, Places<'n>) {
    let mut canary = Vec::with_capacity(n);
    let mut rest = Vec::with_capacity(todo.len());
    for (t, files) in todo.into_iter().zip(pending) {
        let has_work = files.as_ref().is_none_or(|f| !f.is_empty());
        if canary.len() < n && has_work {
            canary.push(t);
        } else {
            rest.push(t);
        }
    }
    (canary, rest)
}
