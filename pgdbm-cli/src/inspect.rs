//! `pgdbm inspect …`: the debugging helpers of [`Database`] on the command line — a statement's
//! plan, lock waits, long-running statements, table sizes and the diagnostic report.

use std::time::Duration;

use pgdbm_core::sqlx::Arguments;
use pgdbm_core::sqlx::postgres::PgArguments;
use pgdbm_core::{Database, ExplainOptions, HealthReport, HealthStatus};

use crate::cli::{InspectCommand, InspectTarget, ModuleArgs};
use crate::context::{Context, Failure, Result, Target, fail};
use crate::exit::Code;
use crate::output::{BAD, GOOD, HEADING, PENDING, styled};

mod format;

use format::Align::{Left, Right};
pub use format::parse_duration;
use format::{duration, one_line, size, table, wait};

pub async fn run(ctx: &Context, cmd: InspectCommand) -> Result<Code> {
    // Module and schema are resolved (and refused) before any connection is made.
    let target = match &cmd {
        InspectCommand::Explain { target, .. } => one_target(ctx, target)?,
        _ => database_wide(),
    };
    let mut schemas: Vec<Option<String>> = Vec::new();
    if let InspectCommand::TableSizes { target } = &cmd {
        for t in ctx.targets(&module_args(target))? {
            if !schemas.contains(&t.schema) {
                schemas.push(t.schema);
            }
        }
    }
    let db = ctx.connect(&target).await?;
    let r = match cmd {
        InspectCommand::Explain {
            sql,
            params,
            analyze,
            buffers,
            verbose,
            ..
        } => explain(ctx, &db, &sql, params, analyze, buffers, verbose).await,
        InspectCommand::Blocking => blocking(ctx, &db).await,
        InspectCommand::LongRunning { threshold } => long_running(ctx, &db, threshold).await,
        InspectCommand::TableSizes { .. } => table_sizes(ctx, &db, &schemas).await,
        InspectCommand::Health => health(ctx, &db).await,
    };
    db.close().await;
    r
}

fn module_args(target: &InspectTarget) -> ModuleArgs {
    ModuleArgs {
        module: target.module.clone(),
        schema: target.schema.clone(),
        ..ModuleArgs::default()
    }
}

/// The one module (schema) `{{tables.x}}` renders into for `explain`.
fn one_target(ctx: &Context, target: &InspectTarget) -> Result<Target> {
    let mut targets = ctx.targets(&module_args(target))?;
    if targets.len() != 1 {
        let names: Vec<&str> = targets.iter().map(|t| t.module.as_str()).collect();
        return fail(format!(
            "pgdbm.toml declares several modules ({}) and no top-level one: pick the schema {{{{tables.x}}}} renders into with --module NAME or --schema NAME",
            names.join(", ")
        ));
    }
    Ok(targets.remove(0))
}

/// The commands about the whole database: the connection settings' schema does not matter.
fn database_wide() -> Target {
    Target {
        module: String::new(),
        dir: Default::default(),
        schema: None,
    }
}

/// Prints what `serde_json::to_value` made of a result.
fn print_json(ctx: &Context, db: &Database, value: serde_json::Result<serde_json::Value>) {
    ctx.print_json(value.expect("the results serialise"), db.schema());
}

async fn explain(
    ctx: &Context,
    db: &Database,
    sql: &str,
    params: Vec<String>,
    analyze: bool,
    buffers: bool,
    verbose: bool,
) -> Result<Code> {
    let mut args = PgArguments::default();
    for p in params {
        args.add(p).map_err(|e| Failure(e.to_string()))?;
    }
    let options = ExplainOptions::default()
        .analyze(analyze)
        .buffers(buffers)
        .verbose(verbose);
    let plan = db.explain(sql, args, options).await?;
    if ctx.json {
        print_json(ctx, db, serde_json::to_value(&plan));
    } else {
        println!("{plan}");
        if plan.analyzed {
            anstream::println!(
                "{}",
                styled(
                    PENDING,
                    "(--analyze ran the statement in a transaction and rolled it back)"
                )
            );
        }
    }
    Ok(Code::Ok)
}

async fn blocking(ctx: &Context, db: &Database) -> Result<Code> {
    let rows = db.blocking_queries().await?;
    if ctx.json {
        print_json(ctx, db, serde_json::to_value(&rows));
    } else if rows.is_empty() {
        anstream::println!("{}", styled(GOOD, "no query is waiting for a lock"));
    } else {
        table(
            &[
                ("BLOCKED PID", Right),
                ("WAITING", Right),
                ("WAITS ON", Left),
                ("BLOCKING PID", Right),
                ("BLOCKING STATE", Left),
                ("BLOCKED QUERY", Left),
                ("BLOCKING QUERY", Left),
            ],
            rows.iter()
                .map(|b| {
                    vec![
                        b.blocked_pid.to_string(),
                        duration(b.blocked_duration),
                        wait(&b.blocked_wait_event_type, &b.blocked_wait_event),
                        b.blocking_pid.to_string(),
                        b.blocking_state.clone().unwrap_or_default(),
                        one_line(&b.blocked_query, 48),
                        one_line(&b.blocking_query, 48),
                    ]
                })
                .collect(),
        );
    }
    Ok(Code::Ok)
}

async fn long_running(ctx: &Context, db: &Database, threshold: Duration) -> Result<Code> {
    let rows = db.long_running_queries(threshold).await?;
    if ctx.json {
        print_json(ctx, db, serde_json::to_value(&rows));
    } else if rows.is_empty() {
        anstream::println!(
            "{}",
            styled(
                GOOD,
                format!("no query has run for more than {}", duration(threshold))
            )
        );
    } else {
        table(
            &[
                ("PID", Right),
                ("DURATION", Right),
                ("STATE", Left),
                ("WAITS ON", Left),
                ("USER", Left),
                ("APPLICATION", Left),
                ("QUERY", Left),
            ],
            rows.iter()
                .map(|q| {
                    vec![
                        q.pid.to_string(),
                        duration(q.duration),
                        q.state.clone(),
                        wait(&q.wait_event_type, &q.wait_event),
                        q.user.clone().unwrap_or_default(),
                        q.application_name.clone(),
                        one_line(&q.query, 60),
                    ]
                })
                .collect(),
        );
    }
    Ok(Code::Ok)
}

async fn table_sizes(ctx: &Context, db: &Database, schemas: &[Option<String>]) -> Result<Code> {
    let mut rows = Vec::new();
    for schema in schemas {
        let handle = db.with_schema(schema.as_deref())?;
        rows.extend(handle.table_sizes().await?);
    }
    if ctx.json {
        print_json(ctx, db, serde_json::to_value(&rows));
        return Ok(Code::Ok);
    }
    if rows.is_empty() {
        let names: Vec<&str> = schemas
            .iter()
            .map(|s| s.as_deref().unwrap_or("public"))
            .collect();
        println!("no tables in schema {}", names.join(", "));
        return Ok(Code::Ok);
    }
    let latest = |a: &Option<String>, b: &Option<String>| match a.clone().max(b.clone()) {
        // `2025-01-31 12:00:00.123+00` → `2025-01-31 12:00`
        Some(t) => t.chars().take(16).collect(),
        None => "never".to_string(),
    };
    let count = |n: Option<i64>| n.map_or_else(|| "-".to_string(), |n| n.to_string());
    table(
        &[
            ("TABLE", Left),
            ("TOTAL", Right),
            ("HEAP", Right),
            ("INDEXES", Right),
            ("TOAST", Right),
            ("ROWS (EST.)", Right),
            ("DEAD ROWS", Right),
            ("LAST VACUUM", Left),
            ("LAST ANALYZE", Left),
        ],
        rows.iter()
            .map(|t| {
                vec![
                    format!("{}.{}", t.schema, t.table),
                    size(t.total_bytes),
                    size(t.table_bytes),
                    size(t.index_bytes),
                    size(t.toast_bytes),
                    count(t.row_estimate),
                    count(t.dead_rows),
                    latest(&t.last_vacuum, &t.last_autovacuum),
                    latest(&t.last_analyze, &t.last_autoanalyze),
                ]
            })
            .collect(),
    );
    Ok(Code::Ok)
}

async fn health(ctx: &Context, db: &Database) -> Result<Code> {
    let r = db.health_check().await?;
    if ctx.json {
        print_json(ctx, db, serde_json::to_value(&r));
    } else {
        print_health(&r);
    }
    Ok(match r.status {
        HealthStatus::Healthy => Code::Ok,
        _ => Code::Pending,
    })
}

fn print_health(r: &HealthReport) {
    let status = match r.status {
        HealthStatus::Healthy => styled(GOOD, "healthy"),
        HealthStatus::Degraded => styled(BAD, "degraded"),
        HealthStatus::Reconnecting => styled(BAD, "reconnecting"),
        _ => styled(BAD, "unhealthy"),
    };
    let (Some(version), Some(version_num), Some(in_recovery), Some(latency)) = (
        &r.server_version,
        r.server_version_num,
        r.in_recovery,
        r.latency,
    ) else {
        // The server could not be asked: the status and why.
        anstream::println!("{}  {status}", styled(HEADING, format!("{:<12}", "status")));
        for w in &r.warnings {
            anstream::println!("{} {w}", styled(PENDING, "warning:"));
        }
        return;
    };
    let role = match (in_recovery, r.replay_delay) {
        (false, _) => "primary".to_string(),
        (true, Some(d)) => format!("standby, replay {} behind", duration(d)),
        (true, None) => "standby".to_string(),
    };
    let queries = |n: u64| {
        if n == 1 {
            "1 query".to_string()
        } else {
            format!("{n} queries")
        }
    };
    let mut lines = vec![
        ("status", status),
        ("server", format!("{version} ({version_num})")),
        ("role", role),
        ("latency", duration(latency)),
        (
            "locks",
            format!("{} waiting for a lock", queries(r.blocked_queries)),
        ),
        (
            "long-running",
            format!(
                "{} running for more than 60 s",
                queries(r.long_running_queries)
            ),
        ),
    ];
    if r.replicas.is_empty() {
        lines.push(("replicas", "none".to_string()));
    }
    for rep in &r.replicas {
        let lag = rep.replay_lag.map_or_else(|| "-".to_string(), duration);
        let behind = rep
            .bytes_behind
            .map_or_else(|| "-".to_string(), |b| size(b.max(0) as u64));
        lines.push((
            "replica",
            format!(
                "{} {} {}, replay lag {lag}, {behind} behind",
                rep.application_name.as_deref().unwrap_or("(unnamed)"),
                rep.client_addr.as_deref().unwrap_or("local"),
                rep.state.as_deref().unwrap_or("?"),
            ),
        ));
    }
    for (label, value) in lines {
        anstream::println!("{}  {value}", styled(HEADING, format!("{label:<12}")));
    }
    for w in &r.warnings {
        anstream::println!("{} {w}", styled(PENDING, "warning:"));
    }
}
