//! `pgdbm migrate …`.

use indicatif::{ProgressBar, ProgressStyle};
use pgdbm_core::{FileState, Migrator, ReportStatus, RevertTarget};
use serde_json::{Value, json};

use crate::cli::{MigrateAction, MigrateCommand};
use crate::context::{Context, Result, Target, fail};
use crate::exit::Code;
use crate::output::{self, BAD, GOOD, PENDING, styled, timestamp};

pub async fn run(ctx: &Context, cmd: MigrateCommand) -> Result<Code> {
    if let MigrateAction::Create { name, repeatable } = &cmd.action {
        let dir = ctx.targets(&cmd.modules)?.remove(0).dir;
        let path = if *repeatable {
            pgdbm_core::migrations::create_repeatable_file(&dir, name)
        } else {
            pgdbm_core::migrations::create_migration_file(&dir, name)
        }
        .map_err(|e| crate::context::Failure(e.to_string()))?;
        println!("created {}", path.display());
        return Ok(Code::Ok);
    }
    if let MigrateAction::Drift {
        tenants,
        shadow_url,
    } = &cmd.action
    {
        return crate::drift::run(ctx, &cmd.modules, *tenants, shadow_url.as_deref()).await;
    }
    if let MigrateAction::Lint = &cmd.action {
        return crate::lint::run(ctx, &cmd.modules);
    }
    let mut targets = ctx.targets(&cmd.modules)?;
    // Every module's files are read and checked before any connection is made.
    for t in &targets {
        pgdbm_core::migrations::MigrationSet::from_dir(&t.dir)
            .map_err(|e| crate::context::Failure(e.to_string()))?;
    }
    let revert = matches!(cmd.action, MigrateAction::Revert { .. });
    if revert {
        // Dependents go back before what they depend on.
        targets.reverse();
        if targets.len() > 1 {
            // Every module is checked (down files, drift) before any module's revert runs.
            for t in &targets {
                let db = ctx.connect(t).await?;
                let r = ctx
                    .migrator(&db, t, &cmd.modules)
                    .revert_dry_run(revert_target(&cmd.action))
                    .await;
                db.close().await;
                r?;
            }
        }
    }
    let announce = targets.len() > 1 && !ctx.json;
    let mut code = Code::Ok;
    let mut documents = Vec::new();
    for t in &targets {
        let db = ctx.connect(t).await?;
        let m = ctx.migrator(&db, t, &cmd.modules);
        if announce {
            output::module_heading(m.module(), db.schema());
        }
        let r = one(ctx, &cmd.action, &m, t).await;
        db.close().await;
        let (c, doc) = r?;
        if c != Code::Ok {
            code = c;
        }
        if let Some(mut doc) = doc {
            doc["module"] = json!(m.module());
            doc["schema"] = json!(t.schema);
            doc["target"] = ctx.target_json(t.schema.as_deref());
            documents.push(doc);
        }
    }
    if ctx.json {
        output::json(&Value::Array(documents));
    }
    Ok(code)
}

fn revert_target(action: &MigrateAction) -> RevertTarget {
    match action {
        MigrateAction::Revert { to: Some(v), .. } => RevertTarget::To(*v),
        MigrateAction::Revert { steps, .. } => RevertTarget::Steps(steps.unwrap_or(1)),
        _ => RevertTarget::Steps(1),
    }
}

/// What one module's run of an action gives: its exit code, and its JSON document when
/// `--json` is on.
type Outcome = Result<(Code, Option<Value>)>;

/// Runs `action` on one module.
async fn one(ctx: &Context, action: &MigrateAction, m: &Migrator, target: &Target) -> Outcome {
    let json = ctx.json;
    match action {
        MigrateAction::Apply { dry_run: false } => apply(m, json).await,
        MigrateAction::Apply { dry_run: true } | MigrateAction::DryRun => dry_run(m, json).await,
        MigrateAction::Pending => pending(m, json).await,
        MigrateAction::Status { check } => status(m, json, *check).await,
        MigrateAction::History { limit } => history(m, json, *limit).await,
        MigrateAction::Verify => verify(m, json).await,
        MigrateAction::MarkUnapplied { file } => mark_unapplied(m, file).await,
        MigrateAction::Repair { file, dry_run } => repair(m, file, *dry_run).await,
        MigrateAction::Baseline { to, dry_run } => baseline(m, *to, *dry_run).await,
        MigrateAction::Revert { dry_run, .. } => revert(m, revert_target(action), *dry_run).await,
        MigrateAction::Drift { .. } => fail("internal: drift is handled before connecting"),
        MigrateAction::Create { .. } | MigrateAction::Lint => fail(format!(
            "internal: create and lint are handled before connecting ({})",
            target.dir.display()
        )),
    }
}

/// `migrate apply`, with a progress bar on a terminal.
async fn apply(m: &Migrator, json: bool) -> Outcome {
    let pending = m.pending().await?;
    let bar = (!json && pending.len() > 1 && output::stderr_is_terminal()).then(|| {
        let bar = ProgressBar::new(pending.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}").expect("a valid template"),
        );
        bar
    });
    let m = match &bar {
        Some(b) => {
            let b = b.clone();
            m.clone().on_progress(move |_, _, file| {
                b.set_message(file.to_string());
                b.inc(1)
            })
        }
        None => m.clone(),
    };
    let report = m.apply_pending().await;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let report = report?;
    let applied: Vec<Value> = report
        .applied
        .iter()
        .map(|a| json!({"file": a.filename, "ms": a.execution_time.as_millis() as u64}))
        .collect();
    let repeatable: Vec<Value> = report
        .repeatable
        .iter()
        .map(|a| json!({"file": a.filename, "ms": a.execution_time.as_millis() as u64}))
        .collect();
    if !json {
        if report.status == ReportStatus::UpToDate {
            anstream::println!(
                "{} ({} applied)",
                styled(GOOD, "up to date"),
                report.skipped.len()
            );
        }
        crate::output::applied(&report.applied);
        crate::output::applied(&report.repeatable);
    }
    Ok((
        Code::Ok,
        json.then(|| json!({"applied": applied, "repeatable": repeatable})),
    ))
}

/// `migrate apply --dry-run`, `migrate dry-run`.
async fn dry_run(m: &Migrator, json: bool) -> Outcome {
    let report = m.dry_run().await?;
    if !json {
        if report.pending.is_empty() && report.repeatable_pending.is_empty() {
            anstream::println!("{}", styled(GOOD, "up to date"));
        }
        for f in report.pending.iter().chain(&report.repeatable_pending) {
            anstream::println!("{} {f}", styled(PENDING, "would apply"));
        }
    }
    Ok((
        Code::Ok,
        json.then(|| json!({"pending": report.pending, "repeatable": report.repeatable_pending})),
    ))
}

/// `migrate pending`.
async fn pending(m: &Migrator, json: bool) -> Outcome {
    let pending = m.pending().await?;
    if !json {
        for f in &pending {
            println!("{f}");
        }
    }
    Ok((Code::Ok, json.then(|| json!({"pending": pending}))))
}

/// `migrate status [--check]`.
async fn status(m: &Migrator, json: bool, check: bool) -> Outcome {
    let status = m.status().await?;
    let mut off = false;
    let mut rows = Vec::new();
    for s in &status {
        let (state, text, extra) = match &s.state {
            FileState::Applied { applied_at } => (
                "applied",
                styled(GOOD, format!("applied {}", timestamp(applied_at))),
                json!({"applied_at": timestamp(applied_at)}),
            ),
            FileState::Pending => ("pending", styled(PENDING, "pending"), json!({})),
            FileState::Modified { recorded, current } => (
                "modified",
                styled(
                    BAD,
                    format!("MODIFIED (recorded {recorded}, file {current})"),
                ),
                json!({"recorded": recorded, "current": current}),
            ),
            FileState::Changed { recorded, current } => (
                "changed",
                styled(
                    PENDING,
                    format!(
                        "changed, applied again next run (recorded {recorded}, file {current})"
                    ),
                ),
                json!({"recorded": recorded, "current": current}),
            ),
            FileState::Missing { applied_at }
                if pgdbm_core::migrations::is_repeatable(&s.filename) =>
            {
                (
                    "missing",
                    styled(
                        PENDING,
                        format!(
                            "removed (applied {}; the next run forgets it)",
                            timestamp(applied_at)
                        ),
                    ),
                    json!({"applied_at": timestamp(applied_at)}),
                )
            }
            FileState::Missing { applied_at } => (
                "missing",
                styled(BAD, format!("MISSING (applied {})", timestamp(applied_at))),
                json!({"applied_at": timestamp(applied_at)}),
            ),
            other => ("unknown", format!("{other:?}"), json!({})),
        };
        off |= state != "applied";
        if !json {
            anstream::println!("{:<40} {text}", s.filename);
        }
        let mut row = json!({"file": s.filename, "state": state});
        if let (Value::Object(row), Value::Object(extra)) = (&mut row, extra) {
            row.extend(extra);
        }
        rows.push(row);
    }
    let code = if check && off {
        Code::Pending
    } else {
        Code::Ok
    };
    Ok((code, json.then(|| json!({"files": rows}))))
}

/// `migrate history`.
async fn history(m: &Migrator, json: bool, limit: i64) -> Outcome {
    let history = m.history(limit).await?;
    if !json {
        for h in &history {
            println!(
                "{}  {:<40} {:>6} ms  by {}",
                timestamp(&h.applied_at),
                h.filename,
                h.execution_time_ms.unwrap_or(0),
                h.applied_by.as_deref().unwrap_or_default()
            );
        }
    }
    let rows: Vec<Value> = history
        .iter()
        .map(|h| {
            json!({
                "file": h.filename, "checksum": h.checksum, "module": h.module_name,
                "applied_at": timestamp(&h.applied_at), "applied_by": h.applied_by,
                "execution_time_ms": h.execution_time_ms,
            })
        })
        .collect();
    Ok((Code::Ok, json.then(|| json!({"history": rows}))))
}

/// `migrate verify`.
async fn verify(m: &Migrator, json: bool) -> Outcome {
    m.verify().await?;
    if !json {
        anstream::println!("{}", styled(GOOD, "checksums match"));
    }
    Ok((Code::Ok, json.then(|| json!({"verified": true}))))
}

/// `migrate mark-unapplied FILE`.
async fn mark_unapplied(m: &Migrator, file: &str) -> Outcome {
    let removed = m.mark_unapplied(file).await?;
    println!(
        "{file}: {}",
        if removed {
            "forgotten; it runs again next time (its changes stay)"
        } else {
            "was not recorded; nothing changed"
        }
    );
    Ok((Code::Ok, None))
}

/// `migrate repair FILE [--dry-run]`.
async fn repair(m: &Migrator, file: &str, dry_run: bool) -> Outcome {
    let r = if dry_run {
        m.repair_dry_run(file).await?
    } else {
        m.repair(file).await?
    };
    match (r.changed, dry_run) {
        (false, _) => println!("{file}: checksum already matches; nothing to repair"),
        (true, true) => anstream::println!(
            "{} {file}: recorded {} -> file {}",
            styled(PENDING, "would repair"),
            r.recorded,
            r.current
        ),
        (true, false) => anstream::println!(
            "{} {file}: recorded {} -> file {}",
            styled(GOOD, "repaired"),
            r.recorded,
            r.current
        ),
    }
    Ok((Code::Ok, None))
}

/// `migrate baseline [--to VERSION] [--dry-run]`.
async fn baseline(m: &Migrator, to: Option<u128>, dry_run: bool) -> Outcome {
    let r = if dry_run {
        m.baseline_dry_run(to).await?
    } else {
        m.baseline(to).await?
    };
    let verb = if dry_run { "would record" } else { "recorded" };
    for f in &r.recorded {
        println!("{verb} {f} as applied (not run)");
    }
    println!(
        "{} file(s) {verb}, {} already applied",
        r.recorded.len(),
        r.already_applied.len()
    );
    Ok((Code::Ok, None))
}

/// `migrate revert [--to VERSION | --steps N] [--dry-run]`.
async fn revert(m: &Migrator, target: RevertTarget, dry_run: bool) -> Outcome {
    if dry_run {
        let r = m.revert_dry_run(target).await?;
        for f in &r.would_revert {
            anstream::println!("{} {f}", styled(PENDING, "would revert"));
        }
        if r.would_revert.is_empty() {
            println!("nothing to revert");
        }
    } else {
        let r = m.revert(target).await?;
        for f in &r.reverted {
            anstream::println!(
                "{} {} with {} ({} ms)",
                styled(GOOD, "reverted"),
                f.filename,
                f.down_file,
                f.execution_time.as_millis()
            );
        }
        if r.reverted.is_empty() {
            println!("nothing to revert");
        }
    }
    Ok((Code::Ok, None))
}
