//! `pgdbm migrate drift [--all] [--tenants] [--shadow-url URL]`: the live schema of each module
//! (and with `--tenants` every tenant's) compared with a shadow database migrated from the same
//! files, through `Migrator::drift` and `Tenants::drift`. Exit 1 when anything differs.
//!
//! The shadow is `--shadow-url` (an empty database, or one drift migrated before), else a
//! scratch database on the throwaway server, made and dropped as `pgdbm prepare` does its own
//! (`prepare::with_scratch_database`): the live server is only read.

use pgdbm_core::migrations::MigrationSet;
use pgdbm_core::{DriftReport, FileState, SharedPool, Tenants};
use serde_json::{Value, json};

use crate::cli::ModuleArgs;
use crate::context::{Context, Failure, Result, Target};
use crate::exit::Code;
use crate::output::{BAD, GOOD, HEADING, PENDING, styled};
use crate::prepare::{connect_scratch, with_scratch_database};
use crate::test_server::{binaries, masked, throwaway};

/// How many tenant batches are read at once.
const TENANT_CONCURRENCY: usize = 4;

pub async fn run(
    ctx: &Context,
    modules: &ModuleArgs,
    tenants: bool,
    shadow_url: Option<&str>,
) -> Result<Code> {
    let targets = ctx.targets(modules)?;
    // Every module's files are read and checked before any database is touched.
    for t in &targets {
        MigrationSet::from_dir(&t.dir).map_err(|e| Failure(e.to_string()))?;
    }
    let reports = with_shadow(shadow_url, "drift", async |url: String| {
        // Every module in pgdbm.toml's order, each migrating the shadow (after the library's
        // checks that it is empty or was migrated by these files). Modules that share a schema
        // are reported once, by the last of them, when the shadow holds all of theirs.
        let mut reports = Vec::new();
        for (i, t) in targets.iter().enumerate() {
            let last_of_schema = !targets[i + 1..].iter().any(|o| o.schema == t.schema);
            if let Some(r) = live(ctx, t, modules, &url, tenants && last_of_schema).await?
                && last_of_schema
            {
                reports.push(r);
            }
            if tenants {
                reports.extend(tenant_reports(ctx, t, &url).await?);
            }
        }
        Ok(reports)
    })
    .await?;
    Ok(print(ctx, &reports))
}

/// Runs `work` with the shadow's URL: `shadow_url`, else a scratch database on the throwaway
/// server (started if needed), dropped afterwards whatever happened.
pub(crate) async fn with_shadow<T>(
    shadow_url: Option<&str>,
    purpose: &str,
    work: impl AsyncFnOnce(String) -> Result<T>,
) -> Result<T> {
    if let Some(url) = shadow_url {
        return work(url.to_string()).await;
    }
    let server = throwaway();
    let url = server.start_or_reuse(&binaries()?).await?;
    anstream::eprintln!(
        "pgdbm: no --shadow-url; the shadow is a scratch database on the throwaway server in {} ({})",
        server.root().display(),
        masked(&url)
    );
    with_scratch_database(&url, purpose, work).await
}

/// The live schema of `t` compared with the shadow, which [`Migrator::drift`] checks and
/// migrates first. `None` with a note when `skip_unmigrated` (`--tenants`) and the live schema
/// never ran the module's files (a module whose schema only its tenants use).
///
/// [`Migrator::drift`]: pgdbm_core::Migrator::drift
async fn live(
    ctx: &Context,
    t: &Target,
    modules: &ModuleArgs,
    shadow_url: &str,
    skip_unmigrated: bool,
) -> Result<Option<DriftReport>> {
    let db = ctx.connect(t).await?;
    let r = async {
        let m = ctx.migrator(&db, t, modules);
        let status = m.status().await?;
        let pending = status
            .iter()
            .filter(|f| f.state == FileState::Pending)
            .count();
        if skip_unmigrated && pending == status.len() {
            note(ctx, &format!(
                "module {} has applied nothing to schema {}: only its tenants are compared",
                m.module(),
                schema_name(t)
            ));
            return Ok(None);
        }
        if pending > 0 {
            note(ctx, &format!(
                "{pending} file(s) of module {} are pending on schema {}: what they make shows as missing; apply them first",
                m.module(),
                schema_name(t)
            ));
        }
        let shadow = connect_scratch(shadow_url, t).await?;
        let report = m.drift(&shadow).await;
        shadow.close().await;
        Ok::<_, Failure>(Some(report?))
    }
    .await;
    db.close().await;
    r
}

/// Every tenant of `t`'s module compared with a shadow schema of its own
/// (`pgdbm_drift_<module>`): the tenants' migrator keeps its own history table, so it never
/// shares a schema with the module's.
async fn tenant_reports(ctx: &Context, t: &Target, shadow_url: &str) -> Result<Vec<DriftReport>> {
    let config = ctx
        .database_config()?
        .min_connections(1)
        .max_connections(TENANT_CONCURRENCY + 2)
        .retry_attempts(1)
        .create_schema(false);
    let pool = SharedPool::connect(config).await?;
    let mut tenants = Tenants::new(&pool, &t.module, &t.dir).concurrency(TENANT_CONCURRENCY);
    if let Some(schema) = &t.schema {
        tenants = tenants.compiled_schema(schema);
    }
    let r = tenants_against_shadow(&tenants, &t.module, shadow_url).await;
    pool.close().await;
    r
}

/// `tenants.drift` against the shadow schema `pgdbm_drift_<module>` of the database
/// `shadow_url` names (for `pgdbm migrate drift --tenants` and `pgdbm tenants migrate --drift`).
pub(crate) async fn tenants_against_shadow(
    tenants: &Tenants,
    module: &str,
    shadow_url: &str,
) -> Result<Vec<DriftReport>> {
    let schema: String = format!("pgdbm_drift_{module}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(63)
        .collect();
    let shadow = connect_scratch(
        shadow_url,
        &Target {
            module: module.to_string(),
            dir: Default::default(),
            schema: Some(schema),
        },
    )
    .await?;
    let r = tenants.drift(&shadow).await;
    shadow.close().await;
    Ok(r?)
}

fn schema_name(t: &Target) -> &str {
    t.schema.as_deref().unwrap_or("public")
}

fn note(ctx: &Context, text: &str) {
    if !ctx.json {
        anstream::eprintln!("{} {text}", styled(PENDING, "note:"));
    }
}

/// Prints the reports (JSON: one document per schema, with where it acted) and says how the
/// process exits: 1 when any schema drifted.
pub(crate) fn print(ctx: &Context, reports: &[DriftReport]) -> Code {
    let drifted = reports.iter().filter(|r| !r.is_clean()).count();
    if ctx.json {
        let docs: Vec<Value> = reports
            .iter()
            .map(|r| {
                let mut doc = serde_json::to_value(r).unwrap_or(Value::Null);
                doc["target"] = ctx.target_json(Some(&r.schema));
                doc
            })
            .collect();
        crate::output::json(&json!(docs));
    } else {
        print_text(reports, drifted);
    }
    if drifted > 0 { Code::Error } else { Code::Ok }
}

fn print_text(reports: &[DriftReport], drifted: usize) {
    let tenants = reports.iter().filter(|r| r.tenant.is_some()).count();
    for r in reports {
        // A fleet's clean tenants are counted at the end, not listed one by one.
        if r.tenant.is_some() && r.is_clean() {
            continue;
        }
        let what = match &r.tenant {
            Some(t) => format!("tenant {t} (schema {}, module {})", r.schema, r.module),
            None => format!("schema {} (module {})", r.schema, r.module),
        };
        if r.is_clean() {
            anstream::println!("{what}: {}", styled(GOOD, "no drift"));
            continue;
        }
        anstream::println!(
            "{what}: {}",
            styled(BAD, format!("{} difference(s)", r.differences.len()))
        );
        for d in &r.differences {
            println!("  {d}");
        }
    }
    if tenants > 0 {
        let with = reports
            .iter()
            .filter(|r| r.tenant.is_some() && !r.is_clean())
            .count();
        anstream::println!(
            "{} {tenants} tenant(s) compared, {with} with drift",
            styled(HEADING, "tenants:")
        );
    }
    if drifted > 0 {
        anstream::eprintln!(
            "{} {drifted} schema(s) differ from their migrations: make the change a migration, or undo it",
            styled(BAD, "drift:")
        );
    }
}
