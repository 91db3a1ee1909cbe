//! `pgdbm migrate lint`: every migration file of the chosen module(s), linted on its own (no
//! database: which files are pending is unknown, so every earlier file counts as deployed).
//! Exit 1 when a finding is not allowed by a `-- pgdbm:lint-allow RULE reason` pragma.

use pgdbm_core::lint::{Finding, LintOptions, LintReport, Severity, lint_standalone};
use pgdbm_core::migrations::MigrationSet;
use serde_json::{Value, json};

use crate::cli::ModuleArgs;
use crate::context::{Context, Failure, Result, Target};
use crate::exit::Code;
use crate::output::{self, BAD, GOOD, PENDING, styled};

pub fn run(ctx: &Context, args: &ModuleArgs) -> Result<Code> {
    let options = match &ctx.project {
        Some(p) => LintOptions::from_config(&p.lint)
            .map_err(|e| Failure(format!("{}: [lint]: {e}", p.path.display())))?,
        None => LintOptions::new(),
    };
    let targets = ctx.targets(args)?;
    let mut reports = Vec::with_capacity(targets.len());
    // Every module's files are read before anything is printed: a bad directory fails alone.
    for t in &targets {
        let set = MigrationSet::from_dir(&t.dir).map_err(|e| Failure(e.to_string()))?;
        reports.push(lint_standalone(set.iter(), t.schema.as_deref(), &options));
    }
    let denied = reports.iter().any(|r| !r.is_clean());
    if ctx.json {
        let docs = targets.iter().zip(&reports).map(|(t, r)| document(t, r));
        output::json(&Value::Array(docs.collect()));
    } else {
        for (t, r) in targets.iter().zip(&reports) {
            if targets.len() > 1 {
                output::module_heading(&t.module, t.schema.as_deref());
            }
            human(t, r);
        }
    }
    Ok(if denied { Code::Error } else { Code::Ok })
}

fn path(t: &Target, f: &Finding) -> String {
    t.dir.join(&f.file).display().to_string()
}

fn human(t: &Target, r: &LintReport) {
    for f in &r.findings {
        let level = match (&f.allowed, f.severity) {
            (Some(_), _) => styled(GOOD, "allowed"),
            (None, Severity::Error) => styled(BAD, "error"),
            (None, Severity::Warning) => styled(PENDING, "warning"),
        };
        anstream::println!(
            "{}:{}:{}: {level} [{}] {}",
            path(t, f),
            f.line,
            f.column,
            f.rule,
            f.message
        );
        match &f.allowed {
            Some(reason) => println!("  allowed: {reason}"),
            None => println!("  safe rewrite: {}", f.rewrite),
        }
    }
    let denied = r.denied().count();
    let allowed = r.findings.iter().filter(|f| f.allowed.is_some()).count();
    let summary = format!(
        "{} file(s) linted in {}: {denied} unsafe, {allowed} allowed",
        r.files_linted,
        t.dir.display()
    );
    if denied == 0 {
        anstream::println!("{}", styled(GOOD, summary));
    } else {
        anstream::println!("{}", styled(BAD, summary));
    }
}

fn document(t: &Target, r: &LintReport) -> Value {
    let findings: Vec<Value> = r
        .findings
        .iter()
        .map(|f| {
            json!({
                "file": f.file,
                "path": path(t, f),
                "line": f.line,
                "column": f.column,
                "rule": f.rule,
                "severity": match f.severity { Severity::Error => "error", Severity::Warning => "warning" },
                "message": f.message,
                "help": f.help,
                "rewrite": f.rewrite,
                "allowed": f.allowed,
                "denied": f.is_denied(),
            })
        })
        .collect();
    json!({
        "module": t.module,
        "schema": t.schema,
        "dir": t.dir.display().to_string(),
        "files_linted": r.files_linted,
        "clean": r.is_clean(),
        "findings": findings,
    })
}
