//! Every tenant at once: the registry read a page at a time (keyset pagination on its primary
//! key), counted, and every tenant migrated (through `fleet_run`), with progress.

use futures_util::StreamExt;

use super::{Tenants, no_registry};
use crate::runtime::error::{Error, Result};
use crate::runtime::migrator::MigrationReport;

/// How many names `migrate_all` reads from the registry at a time: large enough that the
/// reads cost nothing beside the migrations, small enough that a run starts at once.
const WALK_PAGE: usize = 1000;

/// One page of tenant names, from [`Tenants::list_page`].
///
/// ```no_run
/// # async fn demo(tenants: pgdbm_core::Tenants) -> pgdbm_core::Result<()> {
/// let mut after: Option<String> = None;
/// loop {
///     let page = tenants.list_page(after.as_deref(), 500).await?;
///     for name in &page.names { println!("{name}"); }
///     match page.next { Some(next) => after = Some(next), None => break }
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TenantPage {
    /// The names, in the registry's order (the database collation's order of `name`), at most
    /// the `limit` asked for.
    pub names: Vec<String>,
    /// What to pass as `after` for the next page: the last name here when more follow; `None`
    /// when this page is the last (an exact answer: a page that ends the list says so).
    pub next: Option<String>,
}

/// What [`Tenants::migrate_all`] did for one tenant.
#[derive(Debug)]
#[non_exhaustive]
pub struct TenantMigration {
    /// The tenant.
    pub tenant: String,
    /// The migrator's report, or why this tenant failed (the others went on).
    pub outcome: Result<MigrationReport>,
    /// An earlier, unfinished run of the same files had finished this tenant, so this run
    /// skipped it without connecting to it; `outcome` is then an up-to-date report with no
    /// file lists (its history was not read).
    pub resumed: bool,
}

/// Where a [`Tenants::migrate_all_with`] run is, handed to its callback after each tenant.
#[derive(Debug)]
#[non_exhaustive]
pub struct TenantProgress<'a> {
    /// Tenants finished so far, this one included.
    pub done: usize,
    /// The tenants registered when the run began (never less than `done`: tenants created
    /// during the run may be migrated too).
    pub total: usize,
    /// How many of the `done` tenants failed.
    pub failed: usize,
    /// The tenant just finished, and its outcome.
    pub last: &'a TenantMigration,
}

/// Where the walk of the registry is.
enum Cursor {
    Start,
    After(String),
    End,
}

impl Tenants {
    /// The registered tenants' names, sorted.
    ///
    /// # Errors
    ///
    /// The pool's and queries' errors ([`Error::PoolTimeout`], [`Error::Query`], …) when the
    /// registry cannot be read; no registry yet is an empty list.
    pub async fn list(&self) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = match self
            .pool
            .fetch_all(
                &format!(
                    "SELECT name FROM {} WHERE module = $1 ORDER BY name",
                    self.table()
                ),
                (&self.module,),
            )
            .await
        {
            Ok(rows) => rows,
            Err(e) if no_registry(&e) => Vec::new(),
            Err(e) => return Err(e),
        };
        Ok(rows.into_iter().map(|(n,)| n).collect())
    }

    /// At most `limit` registered tenant names, sorted, those after `after` (any string: it
    /// need not be a tenant; `None` starts at the first). Keyset pagination on the registry's
    /// primary key: every page costs the same however far into the list it is, and tenants
    /// created or dropped between pages neither repeat nor shift the others. Pass the page's
    /// [`next`](TenantPage::next) as `after` until it is `None`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a `limit` of 0 (nothing is sent); the pool's and queries'
    /// errors when the registry cannot be read. No registry yet is an empty last page.
    pub async fn list_page(&self, after: Option<&str>, limit: usize) -> Result<TenantPage> {
        if limit == 0 {
            return Err(Error::InvalidInput {
                operation: "list_page",
                message: "a page of 0 tenants never reaches the end of the list: pass a limit of at least 1".into(),
            });
        }
        // One row more than asked says whether another page follows, so the last page ends
        // with `next: None` instead of an empty page after it.
        let fetch = i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1;
        // Tenant names are never empty, and the empty string sorts before every other string in
        // every collation: one statement (one prepared plan, a range scan) serves both cases.
        let rows: Vec<(String,)> = match self
            .pool
            .fetch_all(
                &format!(
                    "SELECT name FROM {} WHERE module = $1 AND name > $2 ORDER BY name LIMIT $3",
                    self.table()
                ),
                (&self.module, after.unwrap_or(""), fetch),
            )
            .await
        {
            Ok(rows) => rows,
            Err(e) if no_registry(&e) => Vec::new(),
            Err(e) => return Err(e),
        };
        let mut names: Vec<String> = rows.into_iter().map(|(n,)| n).collect();
        let next = if names.len() > limit {
            names.truncate(limit);
            names.last().cloned()
        } else {
            None
        };
        Ok(TenantPage { names, next })
    }

    /// How many tenants are registered (a count of the module's rows in the registry's
    /// primary key: under a millisecond at 10,000 tenants), e.g. for the length of a progress
    /// bar.
    ///
    /// # Errors
    ///
    /// The pool's and queries' errors when the registry cannot be read; no registry yet is 0.
    pub async fn count(&self) -> Result<usize> {
        let n: Option<i64> = match self
            .pool
            .fetch_value(
                &format!("SELECT count(*) FROM {} WHERE module = $1", self.table()),
                (&self.module,),
            )
            .await
        {
            Ok(n) => n,
            Err(e) if no_registry(&e) => Some(0),
            Err(e) => return Err(e),
        };
        Ok(usize::try_from(n.unwrap_or(0)).unwrap_or(0))
    }

    /// Applies pending migrations to every tenant, [`concurrency`](Self::concurrency) at a time:
    /// [`migrate_fleet`](Self::migrate_fleet) with its default options (lint first, no canary,
    /// resuming an unfinished run of the same files). A failing tenant does not stop the
    /// others; each one's outcome is reported, in name order. A rerun applies what is still
    /// pending. [`migrate_all_with`](Self::migrate_all_with) also reports progress.
    ///
    /// # Errors
    ///
    /// Those of [`migrate_fleet_with`](Self::migrate_fleet_with), all before any tenant is
    /// touched; a tenant's own failure is in its [`TenantMigration::outcome`].
    pub async fn migrate_all(&self) -> Result<Vec<TenantMigration>> {
        self.migrate_all_with(|_| {}).await
    }

    /// [`migrate_all`](Self::migrate_all), calling `on_progress` after each tenant with the
    /// counts so far and that tenant's outcome (from the task awaiting this method, one call
    /// at a time), e.g. for a progress bar. The registry is read a page of 1,000 names at a
    /// time, and every tenant's history in statements of 100 tenants, before the first
    /// tenant is migrated (about 0.05 ms a tenant).
    ///
    /// ```no_run
    /// # async fn demo(tenants: pgdbm_core::Tenants) -> pgdbm_core::Result<()> {
    /// let outcomes = tenants
    ///     .migrate_all_with(|p| {
    ///         if let Err(e) = &p.last.outcome {
    ///             eprintln!("{}: {e}", p.last.tenant);
    ///         }
    ///         eprintln!("{}/{} ({} failed)", p.done, p.total, p.failed);
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// Those of [`migrate_fleet_with`](Self::migrate_fleet_with), all before any tenant is
    /// touched. A tenant's own failure is not an error of the run: it is in its
    /// [`TenantMigration::outcome`].
    pub async fn migrate_all_with<F>(&self, on_progress: F) -> Result<Vec<TenantMigration>>
    where
        F: FnMut(&TenantProgress<'_>),
    {
        let report = self
            .migrate_fleet_with(&super::FleetOptions::new(), on_progress)
            .await?;
        Ok(report.tenants)
    }

    /// Every registered name, read a page at a time as the consumer asks; a page that cannot be
    /// read is the stream's last item.
    pub(super) fn walk(&self) -> impl futures_util::Stream<Item = Result<String>> + '_ {
        futures_util::stream::unfold(Cursor::Start, move |cursor| async move {
            let after = match cursor {
                Cursor::Start => None,
                Cursor::After(name) => Some(name),
                Cursor::End => return None,
            };
            let page = self.list_page(after.as_deref(), WALK_PAGE).await;
            let cursor = match &page {
                Ok(TenantPage {
                    next: Some(next), ..
                }) => Cursor::After(next.clone()),
                _ => Cursor::End,
            };
            let items: Vec<Result<String>> = match page {
                Ok(page) => page.names.into_iter().map(Ok).collect(),
                Err(e) => vec![Err(e)],
            };
            Some((futures_util::stream::iter(items), cursor))
        })
        .flatten()
    }

    /// Migrates `tenant`, logging a failure.
    pub(super) async fn migrate_one(&self, tenant: String) -> TenantMigration {
        let outcome = self.migrate(&tenant).await;
        if let Err(e) = &outcome {
            tracing::warn!(tenant = %tenant, error = %e, "pgdbm: tenant migration failed");
        }
        TenantMigration {
            tenant,
            outcome,
            resumed: false,
        }
    }
}
