//! What `--check-compat` prints: a block per query that breaks, a shorter one per query that
//! changed compatibly, and one summary line; or, with `--json`, one document.

use pgdbm_core::checked::{DifferenceKind, QueryDifference};
use pgdbm_core::compiled;
use serde_json::{Value, json};

use super::previous::Previous;
use super::{Checked, Direction};
use crate::exit::Code;
use crate::output::{BAD, PENDING, styled};

/// The longest query text shown in a heading.
const SHOWN: usize = 100;

/// `sql` for a heading: without pgdbm's marker comment, on one line, at most [`SHOWN`]
/// characters.
pub(crate) fn short(sql: &str) -> String {
    let body = compiled::parse(sql).map_or(sql, |m| m.body);
    let one_line = body.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= SHOWN {
        return one_line;
    }
    let cut: String = one_line.chars().take(SHOWN - 1).collect();
    format!("{cut}…")
}

fn breaking(c: &Checked) -> bool {
    c.difference
        .as_ref()
        .is_some_and(QueryDifference::is_breaking)
}

/// Prints the outcome; exit 1 when any query is incompatible.
pub(crate) fn print(
    json: bool,
    direction: Direction,
    previous: &Previous,
    checked: &[Checked],
    skipped: usize,
) -> Code {
    let incompatible = checked.iter().filter(|c| breaking(c)).count();
    if json {
        crate::output::json(&document(direction, previous, checked, skipped));
    } else {
        human(direction, previous, checked, skipped);
    }
    if incompatible == 0 {
        return Code::Ok;
    }
    let advice = match direction {
        Direction::OldOnNew => format!(
            "{} of {} would fail while replicas of that release still run during the deploy: keep the old schema working (add columns nullable, backfill, switch reads, drop or rename in a later release; see `Rolling deploys` in docs/queries.md)",
            queries(incompatible),
            previous.name()
        ),
        Direction::NewOnOld => format!(
            "{} of this release would fail on the schema of {} until the new migrations run: deploy the migrations first, or make them queries the old schema can also answer",
            queries(incompatible),
            previous.name()
        ),
    };
    crate::output::error(&advice);
    Code::Error
}

/// `1 query`, `2 queries`.
fn queries(n: usize) -> String {
    if n == 1 {
        "1 query".to_string()
    } else {
        format!("{n} queries")
    }
}

fn human(direction: Direction, previous: &Previous, checked: &[Checked], skipped: usize) {
    for c in checked.iter().filter(|c| breaking(c)) {
        anstream::println!("{} {}", styled(BAD, "incompatible:"), short(&c.query.query));
        details(direction, previous, c);
    }
    for c in checked
        .iter()
        .filter(|c| c.difference.is_some() && !breaking(c))
    {
        anstream::println!(
            "{} {}",
            styled(PENDING, "changed, still compatible:"),
            short(&c.query.query)
        );
        details(direction, previous, c);
    }
    let incompatible = checked.iter().filter(|c| breaking(c)).count();
    let compatible = checked
        .iter()
        .filter(|c| c.difference.is_some() && !breaking(c))
        .count();
    let mut summary = format!(
        "{} {} queries checked, {incompatible} incompatible",
        checked.len(),
        direction.queries()
    );
    if compatible > 0 {
        summary.push_str(&format!(", {compatible} changed compatibly"));
    }
    if skipped > 0 {
        summary.push_str(&format!(", {skipped} skipped (not PostgreSQL)"));
    }
    anstream::println!("{summary}");
}

/// The indented lines under a query's heading: its file, call site, migration and differences.
fn details(direction: Direction, previous: &Previous, c: &Checked) {
    anstream::println!("  .sqlx/query-{}.json", c.query.hash);
    if let Some(l) = &c.location {
        let tree = match direction {
            Direction::OldOnNew => format!(" (in {})", previous.name()),
            Direction::NewOnOld => String::new(),
        };
        anstream::println!("  written at {}:{}{tree}", l.file, l.line);
    }
    if breaking(c) {
        match (direction, &c.migration) {
            (Direction::OldOnNew, Some(m)) => anstream::println!("  broken by {m}"),
            (Direction::OldOnNew, None) => anstream::println!(
                "  broken by no single migration file (it matches after none of them)"
            ),
            (Direction::NewOnOld, Some(m)) => {
                anstream::println!("  needs {m} (the schema of {} is older)", previous.name())
            }
            (Direction::NewOnOld, None) => {}
        }
    }
    if let Some(d) = &c.difference {
        for line in d.to_string().lines() {
            anstream::println!("  {line}");
        }
    }
    anstream::println!();
}

/// The `--json` document.
fn document(
    direction: Direction,
    previous: &Previous,
    checked: &[Checked],
    skipped: usize,
) -> Value {
    let queries: Vec<Value> = checked
        .iter()
        .filter_map(|c| {
            let d = c.difference.as_ref()?;
            let (rejected, changes) = match &d.kind {
                DifferenceKind::Rejected(r) => (json!(r), Vec::new()),
                DifferenceKind::Changed(changes) => (
                    Value::Null,
                    changes
                        .iter()
                        .map(|ch| json!({"change": ch.to_string(), "breaking": ch.is_breaking()}))
                        .collect(),
                ),
                _ => (Value::Null, Vec::new()),
            };
            Some(json!({
                "hash": c.query.hash,
                "query": c.query.query,
                "breaking": d.is_breaking(),
                "location": c.location.as_ref().map(|l| json!({"file": l.file, "line": l.line})),
                "migration": c.migration,
                "rejected": rejected,
                "changes": changes,
            }))
        })
        .collect();
    json!({
        "direction": match direction {
            Direction::OldOnNew => "old-queries-on-new-schema",
            Direction::NewOnOld => "new-queries-on-old-schema",
        },
        "previous": previous.name(),
        "checked": checked.len(),
        "incompatible": checked.iter().filter(|c| breaking(c)).count(),
        "skipped": skipped,
        "queries": queries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headings_show_the_sql_without_the_marker_on_one_line() {
        let rendered =
            compiled::render_marked("SELECT name\n   FROM {{tables.customers}}", "shop").unwrap();
        assert_eq!(short(&rendered), "SELECT name FROM \"shop\".customers");
        let long = format!("SELECT {}", "x, ".repeat(60));
        let s = short(&long);
        assert_eq!(s.chars().count(), SHOWN);
        assert!(s.ends_with('…'));
    }
}
