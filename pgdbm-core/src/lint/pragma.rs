//! `-- pgdbm:lint-allow RULE reason`: allows the nearest following finding of `RULE`, one only.
//!
//! One, not every: a pragma is a reviewed exception for one statement, and a later unsafe
//! statement of the same kind must be reviewed on its own. A pragma must say why, so that the
//! exception can be reviewed: one without a reason allows nothing and is a finding itself.

use super::located::{Located, at_offset};
use super::{Finding, INVALID_PRAGMA, PARSE_ERROR, Severity, UNUSED_PRAGMA, unknown_rule};
use crate::migrations::Migration;

const MARKER: &str = "pgdbm:lint-allow";

/// A pragma line: where it ends, the rule and the reason.
struct Pragma<'a> {
    start: usize,
    end: usize,
    rule: &'a str,
    reason: &'a str,
}

/// The pragmas of `content`: full-line `--` comments starting with `pgdbm:lint-allow`.
fn pragmas(content: &str) -> Vec<Pragma<'_>> {
    let mut out = Vec::new();
    let mut start = 0;
    for line in content.split_inclusive('\n') {
        let end = start + line.len();
        let body = line.trim_start();
        if let Some(rest) = body
            .strip_prefix("--")
            .map(str::trim_start)
            .and_then(|b| b.strip_prefix(MARKER))
            .filter(|r| r.is_empty() || r.starts_with(char::is_whitespace))
        {
            let rest = rest.trim();
            let (rule, reason) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            out.push(Pragma {
                start: start + (line.len() - body.len()),
                end,
                rule,
                reason: reason.trim(),
            });
        }
        start = end;
    }
    out
}

/// squawk's own `-- squawk-ignore` comments, which squawk honours by itself: their offsets.
/// They would allow findings without a reason, so each is a finding.
fn squawk_ignores(content: &str) -> Vec<usize> {
    let mut out = Vec::new();
    let mut start = 0;
    for line in content.split_inclusive('\n') {
        let body = line.trim_start();
        if body
            .strip_prefix("--")
            .is_some_and(|b| b.trim_start().starts_with("squawk-ignore"))
        {
            out.push(start + (line.len() - body.len()));
        }
        start += line.len();
    }
    out
}

/// Marks the findings the pragmas of `m` allow, adds the pragmas' own findings, and returns
/// them all in file order.
pub(super) fn apply(m: &Migration, mut found: Vec<Located>) -> Vec<Finding> {
    found.sort_by_key(|l| l.offset);
    let mut own: Vec<Located> = squawk_ignores(&m.content)
        .into_iter()
        .map(|at| {
            at_offset(
                m,
                at,
                INVALID_PRAGMA,
                "a `squawk-ignore` comment hides findings without saying why".into(),
                Severity::Error,
                "write `-- pgdbm:lint-allow RULE reason` instead (it allows one finding, with the reason a reviewer needs)".into(),
            )
        })
        .collect();
    for p in pragmas(&m.content) {
        let problem = if p.rule.is_empty() {
            Some("this pragma names no rule".to_string())
        } else if p.rule != PARSE_ERROR && p.rule.parse::<squawk_linter::Rule>().is_err() {
            Some(unknown_rule(p.rule).to_string())
        } else if p.reason.is_empty() {
            Some(format!(
                "this pragma allows `{}` without saying why; a reviewer needs the reason",
                p.rule
            ))
        } else {
            None
        };
        if let Some(problem) = problem {
            own.push(at_offset(
                m,
                p.start,
                INVALID_PRAGMA,
                format!("{problem}; it allows nothing"),
                Severity::Error,
                "write `-- pgdbm:lint-allow RULE reason`, e.g. `-- pgdbm:lint-allow require-concurrent-index-creation the table has 40 rows`".into(),
            ));
            continue;
        }
        let rule = canonical(p.rule);
        let target = found.iter_mut().find(|l| {
            l.offset >= p.end
                && l.finding.allowed.is_none()
                && l.finding.severity == Severity::Error
                && l.finding.rule == rule
        });
        match target {
            Some(l) => l.finding.allowed = Some(p.reason.to_string()),
            None => own.push(at_offset(
                m,
                p.start,
                UNUSED_PRAGMA,
                format!("no `{rule}` finding follows this pragma, so it allows nothing"),
                Severity::Warning,
                "remove the pragma (or move it above the statement it is meant for)".into(),
            )),
        }
    }
    found.extend(own);
    found.sort_by_key(|l| l.offset);
    found.into_iter().map(|l| l.finding).collect()
}

/// squawk's spelling of a rule (`prefer-timestamptz` is also `prefer-timestamp-tz`).
fn canonical(rule: &str) -> String {
    rule.parse::<squawk_linter::Rule>()
        .map_or_else(|_| rule.to_string(), |r| r.to_string())
}
