//! `pgdbm prepare --check-compat <DIR|GIT-REF> [--new-against-old]`: would the previous
//! release's queries still work once the current migrations have run?
//!
//! In a rolling deploy the new release migrates while replicas of the old one still serve its
//! queries; with code shipped before its migrations, the new release's queries meet the old
//! schema. sqlx recorded what each compiled query relies on (`.sqlx/`), and pgdbm owns the
//! migrations, so both can be checked before the deploy: a scratch database is migrated as
//! `pgdbm prepare` migrates it, and each recorded query is described there and compared with
//! its record (`pgdbm_core::checked`).
//!
//! For each query that breaks, the migration file that broke it is found by migrating a second
//! scratch database one file at a time and describing the broken queries after each (only
//! those: the common case, nothing broken, costs one migration run and one describe per query).
//! Its call site comes from scanning the Rust files for the query's SQL (`compat/locate.rs`).

mod locate;
mod previous;
mod report;

use std::collections::HashSet;
use std::path::Path;
use std::time::Instant;

use pgdbm_core::checked::{QueryDifference, RecordedQuery, check};
use pgdbm_core::migrations::MigrationSet;
use pgdbm_core::project::Project;

use crate::cli::ModuleArgs;
use crate::context::{Context, Failure, Result, Target};
use crate::exit::Code;
use crate::prepare;
use crate::test_server::masked;

use locate::Location;
use previous::Previous;

/// Which queries meet which schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    /// The previous release's queries on the current migrations (rolling deploys).
    OldOnNew,
    /// The current queries on the previous release's migrations (`--new-against-old`).
    NewOnOld,
}

impl Direction {
    /// `old` or `new`: whose queries are checked.
    fn queries(self) -> &'static str {
        match self {
            Direction::OldOnNew => "old",
            Direction::NewOnOld => "new",
        }
    }
}

/// One query checked.
pub(crate) struct Checked {
    /// As recorded.
    pub query: RecordedQuery,
    /// How it differs on the schema checked, if it does.
    pub difference: Option<QueryDifference>,
    /// For a breaking difference: the migration file that broke it (old on new), or the one it
    /// needs (new on old), when one could be named.
    pub migration: Option<String>,
    /// Where it is written, if found.
    pub location: Option<Location>,
}

/// Runs the check; exit 1 when any query is incompatible.
pub async fn run(ctx: &Context, previous_arg: &str, new_against_old: bool) -> Result<Code> {
    let direction = if new_against_old {
        Direction::NewOnOld
    } else {
        Direction::OldOnNew
    };
    let (project, targets, modules) = prepare::modules(ctx, "pgdbm prepare --check-compat")?;
    let workspace = prepare::cargo_dir()?;
    let previous = Previous::resolve(previous_arg, &workspace)?;
    let files = tempfile::tempdir()
        .map_err(|e| Failure(format!("cannot create a temporary directory: {e}")))?;
    let (recorded, schema) = inputs(direction, &previous, &workspace, &targets, files.path())?;
    let (queries, skipped): (Vec<_>, Vec<_>) =
        recorded.into_iter().partition(RecordedQuery::is_postgres);
    notes(&queries, &skipped);

    let server_url = prepare::server_url(ctx, project).await?;
    let differences = prepare::with_scratch_database(&server_url, "compat", async |url| {
        let started = Instant::now();
        prepare::migrate(ctx, &schema, &modules, &url).await?;
        let migrated = started.elapsed();
        let differences = describe_all(&url, &queries).await?;
        anstream::eprintln!(
            "pgdbm: scratch database {} migrated ({}) in {} ms; {} queries described in {} ms",
            masked(&url),
            prepare::module_names(&schema),
            migrated.as_millis(),
            queries.len(),
            (started.elapsed() - migrated).as_millis()
        );
        Ok(differences)
    })
    .await?;

    let mut checked: Vec<Checked> = queries
        .into_iter()
        .zip(differences)
        .map(|(query, difference)| Checked {
            query,
            difference,
            migration: None,
            location: None,
        })
        .collect();
    name_migrations(
        ctx,
        &server_url,
        &targets,
        &modules,
        &workspace,
        direction,
        &mut checked,
    )
    .await?;
    let sources = match direction {
        Direction::OldOnNew => previous.rust_files()?,
        Direction::NewOnOld => previous::rust_files_in(&workspace),
    };
    add_locations(&mut checked, &sources, project);
    Ok(report::print(
        ctx.json,
        direction,
        &previous,
        &checked,
        skipped.len(),
    ))
}

/// The queries to check and the modules (with the migrations) of the schema to check them on.
/// `scratch` holds migration files read from a git ref.
fn inputs(
    direction: Direction,
    previous: &Previous,
    workspace: &Path,
    targets: &[Target],
    scratch: &Path,
) -> Result<(Vec<RecordedQuery>, Vec<Target>)> {
    Ok(match direction {
        Direction::OldOnNew => {
            anstream::eprintln!(
                "pgdbm: old queries from {previous}{}; schema: the current migrations",
                previous.sqlx_shown()
            );
            (previous.queries()?, targets.to_vec())
        }
        Direction::NewOnOld => {
            let sqlx = workspace.join(".sqlx");
            anstream::eprintln!(
                "pgdbm: new queries from {}; schema: the migrations of {previous}",
                sqlx.display()
            );
            let queries = RecordedQuery::read_dir(&sqlx).map_err(|e| {
                Failure(format!(
                    "{e}; --new-against-old checks this workspace's .sqlx/ (`pgdbm prepare` writes it)"
                ))
            })?;
            (queries, previous.migrations(workspace, targets, scratch)?)
        }
    })
}

/// Says which recorded queries are skipped (recorded for another database) or look edited by
/// hand.
fn notes(queries: &[RecordedQuery], skipped: &[RecordedQuery]) {
    for q in queries.iter().filter(|q| !q.hash_matches()) {
        anstream::eprintln!(
            "{} .sqlx/query-{}.json holds SQL that does not hash to its name (edited by hand?); sqlx would refuse it, pgdbm checks it anyway: {}",
            crate::output::styled(crate::output::PENDING, "warning:"),
            q.hash,
            report::short(&q.query)
        );
    }
    for q in skipped {
        anstream::eprintln!(
            "pgdbm: skipped a query recorded for {}, not PostgreSQL: {}",
            q.db_name,
            report::short(&q.query)
        );
    }
}

/// Describes every query on the scratch database at `url`: its difference from the record, if
/// any.
async fn describe_all(
    url: &str,
    queries: &[RecordedQuery],
) -> Result<Vec<Option<QueryDifference>>> {
    let db = pgdbm_core::Database::connect(prepare::scratch_config(url)?).await?;
    let result = async {
        let mut conn = db.acquire().await?;
        let mut out = Vec::with_capacity(queries.len());
        for q in queries {
            out.push(check(conn.raw(), q).await.map_err(describe_failed)?);
        }
        Ok(out)
    }
    .await;
    db.close().await;
    result
}

fn describe_failed(e: pgdbm_core::sqlx::Error) -> Failure {
    Failure(format!(
        "describing a query on the scratch database failed ({e}); the server or the connection failed, not the query: run the check again"
    ))
}

/// Names, for each breaking difference, the migration file responsible: a second scratch
/// database is migrated one file at a time (the current migrations, in `prepare`'s order) and
/// the broken queries are described after each file.
async fn name_migrations(
    ctx: &Context,
    server_url: &str,
    targets: &[Target],
    modules: &ModuleArgs,
    workspace: &Path,
    direction: Direction,
    checked: &mut [Checked],
) -> Result<()> {
    let broken: Vec<usize> = (0..checked.len())
        .filter(|&i| {
            checked[i]
                .difference
                .as_ref()
                .is_some_and(QueryDifference::is_breaking)
        })
        .collect();
    if broken.is_empty() {
        return Ok(());
    }
    let queries: Vec<&RecordedQuery> = broken.iter().map(|&i| &checked[i].query).collect();
    let walk = prepare::with_scratch_database(server_url, "compat_walk", async |url| {
        walk(ctx, &url, targets, modules, workspace, &queries).await
    })
    .await?;
    for (k, &i) in broken.iter().enumerate() {
        // Old queries: the last file after which one that matched stopped matching. New
        // queries: the last file after which one that did not match started to.
        let to = direction == Direction::NewOnOld;
        checked[i].migration = last_flip(&walk.matches[k], to).map(|s| walk.steps[s].clone());
    }
    Ok(())
}

/// What a file-by-file migration saw.
struct Walk {
    /// The migration files, in the order applied (paths as shown).
    steps: Vec<String>,
    /// Per query, per step: whether it matched its record after that file.
    matches: Vec<Vec<bool>>,
}

/// Migrates the scratch database at `url` one file at a time, describing `queries` after each.
/// Each file is copied into a directory of its own that grows by one file per step, so the
/// migrator applies exactly that file, recorded in the history as usual.
async fn walk(
    ctx: &Context,
    url: &str,
    targets: &[Target],
    modules: &ModuleArgs,
    workspace: &Path,
    queries: &[&RecordedQuery],
) -> Result<Walk> {
    let steps_dir = tempfile::tempdir()
        .map_err(|e| Failure(format!("cannot create a temporary directory: {e}")))?;
    let describer = pgdbm_core::Database::connect(prepare::scratch_config(url)?).await?;
    let mut walk = Walk {
        steps: Vec::new(),
        matches: vec![Vec::new(); queries.len()],
    };
    let result = async {
        let mut conn = describer.acquire().await?;
        for (i, t) in targets.iter().enumerate() {
            let set = MigrationSet::from_dir(&t.dir).map_err(|e| Failure(e.to_string()))?;
            let step = Target {
                dir: steps_dir.path().join(i.to_string()),
                ..t.clone()
            };
            std::fs::create_dir_all(&step.dir).map_err(|e| Failure(e.to_string()))?;
            let db = prepare::connect_scratch(url, t).await?;
            for m in set.iter() {
                let applied = async {
                    std::fs::write(step.dir.join(&m.filename), &m.content)
                        .map_err(|e| Failure(format!("cannot copy {}: {e}", m.filename)))?;
                    // A scratch database migrated file by file: lint is `migrate apply`'s job, and
                    // here each file would be linted as if the earlier ones were deployed.
                    ctx.migrator(&db, &step, modules)
                        .lint(pgdbm_core::lint::LintPolicy::Off)
                        .apply_pending()
                        .await?;
                    Ok::<_, Failure>(())
                }
                .await;
                if let Err(e) = applied {
                    db.close().await;
                    return Err(e);
                }
                walk.steps.push(shown(&t.dir.join(&m.filename), workspace));
                // The cache would answer with the description from before this file.
                pgdbm_core::sqlx::Connection::clear_cached_statements(conn.raw())
                    .await
                    .map_err(describe_failed)?;
                for (k, q) in queries.iter().enumerate() {
                    let difference = check(conn.raw(), q).await.map_err(describe_failed)?;
                    walk.matches[k].push(!difference.is_some_and(|d| d.is_breaking()));
                }
            }
            db.close().await;
        }
        Ok(())
    }
    .await;
    describer.close().await;
    result.map(|()| walk)
}

/// The last step after which `states` turned to `to` (before the first step nothing matches).
fn last_flip(states: &[bool], to: bool) -> Option<usize> {
    (0..states.len())
        .rev()
        .find(|&s| states[s] == to && (if s == 0 { to } else { states[s - 1] != to }))
}

/// `path` relative to the workspace when it is inside it.
fn shown(path: &Path, workspace: &Path) -> String {
    path.strip_prefix(workspace)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Finds where each query that differs is written.
fn add_locations(checked: &mut [Checked], sources: &[(String, String)], project: &Project) {
    let wanted: HashSet<&str> = checked
        .iter()
        .filter(|c| c.difference.is_some())
        .map(|c| c.query.hash.as_str())
        .collect();
    if wanted.is_empty() {
        return;
    }
    let mut schemas: Vec<String> = std::iter::once(&project.default_module)
        .chain(&project.modules)
        .filter_map(|m| m.schema.clone())
        .chain(std::env::var("PGDBM_SCHEMA").ok().filter(|s| !s.is_empty()))
        .collect();
    schemas.sort();
    schemas.dedup();
    let found = locate::locate(sources, &schemas, &wanted);
    for c in checked.iter_mut() {
        c.location = found.get(&c.query.hash).cloned();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_named_is_the_last_that_flipped_the_query() {
        // Matched after file 1, broken by file 2.
        assert_eq!(last_flip(&[true, false, false], false), Some(1));
        // Broken, fixed, broken again: the last break counts.
        assert_eq!(last_flip(&[true, false, true, false], false), Some(3));
        // Never matched along the way: no single file broke it.
        assert_eq!(last_flip(&[false, false], false), None);
        // A new query that needs file 2 (created by it).
        assert_eq!(last_flip(&[false, true, true], true), Some(1));
        assert_eq!(last_flip(&[true, true], true), Some(0));
    }
}
