//! One file: rendered, parsed, linted by squawk, findings about new tables dropped, positions
//! mapped back to the file as written, pragmas applied.

use std::collections::BTreeSet;
use std::panic::{AssertUnwindSafe, catch_unwind};

use squawk_linter::{Linter, Violation};
use squawk_syntax::SourceFile;
use squawk_syntax::ast::{self, AstNode};

use super::located::{Located, finding};
use super::{Finding, LintOptions, PARSE_ERROR, TEMPLATE_ERROR, pragma, rewrite};
use crate::migrations::Migration;
use crate::template::{self, OffsetMap};

/// Lints `m`. `created` holds the (lower-cased, unqualified) names of the tables created before
/// this file in the same run; this file's `CREATE TABLE`s are added to it.
pub(super) fn lint_file(
    m: &Migration,
    schema: Option<&str>,
    options: &LintOptions,
    created: &mut BTreeSet<String>,
) -> Vec<Finding> {
    let content = m.content.as_str();
    let mut found = Vec::new();
    match template::render_with_map(content, schema) {
        Err(e) => found.push(Located {
            offset: e.offset,
            finding: finding(
                m,
                content,
                e.offset,
                TEMPLATE_ERROR,
                format!("{e}"),
                None,
                "Fix the placeholder: {{tables.NAME}} or {{schema}}".into(),
            ),
        }),
        Ok((rendered, map)) => lint_rendered(m, &rendered, &map, options, created, &mut found),
    }
    pragma::apply(m, found)
}

fn lint_rendered(
    m: &Migration,
    rendered: &str,
    map: &OffsetMap,
    options: &LintOptions,
    created: &mut BTreeSet<String>,
    found: &mut Vec<Located>,
) {
    let content = m.content.as_str();
    let at = |offset: u32| map.to_template(offset as usize);
    // squawk's parser and rules are written not to panic; a panic would still be a bug of
    // theirs that must not take the migrator down with it, so it becomes a finding.
    let linted = catch_unwind(AssertUnwindSafe(|| {
        let parse = SourceFile::parse(rendered);
        let errors = parse.errors();
        if !errors.is_empty() {
            return Err(errors);
        }
        let (include, exclude) = options.squawk_rules();
        let mut linter = Linter::with_rules(&include, &exclude);
        linter.settings.assume_in_transaction = !m.no_transaction;
        // squawk treats a one-statement file as running outside a transaction (some runners
        // do not wrap those); pgdbm wraps every unmarked file, so a no-op statement after it
        // keeps squawk from assuming otherwise (`CREATE INDEX CONCURRENTLY` alone in an
        // unmarked file fails at run time). Offsets of the file's own text are unchanged.
        let stmts = statements(&parse.tree(), created);
        if !m.no_transaction && stmts.len() == 1 {
            let padded = format!("{rendered}\n;\nSELECT 1;\n");
            let parse = SourceFile::parse(&padded);
            if parse.errors().is_empty() {
                return Ok((linter.lint(&parse, &padded), stmts));
            }
        }
        Ok((linter.lint(&parse, rendered), stmts))
    }));
    let (violations, stmts) = match linted {
        Ok(Ok(v)) => v,
        Ok(Err(errors)) => {
            let first = &errors[0];
            let offset = at(first.range().start().into());
            let more = match errors.len() {
                1 => String::new(),
                n => format!(" (and {} more parse error(s) after it)", n - 1),
            };
            found.push(Located {
                offset,
                finding: finding(
                    m,
                    content,
                    offset,
                    PARSE_ERROR,
                    format!("the SQL cannot be parsed: {}{more}", first.message()),
                    None,
                    rewrite::PARSE_ERROR.into(),
                ),
            });
            return;
        }
        Err(_) => {
            found.push(Located {
                offset: 0,
                finding: finding(
                    m,
                    content,
                    0,
                    PARSE_ERROR,
                    "squawk failed on this file (a bug of the linter: please report it)".into(),
                    None,
                    rewrite::PARSE_ERROR.into(),
                ),
            });
            return;
        }
    };
    let statement_of = |v: &Violation| {
        let start: u32 = v.text_range.start().into();
        stmts.iter().position(|s| s.0 <= start && start < s.1)
    };
    // squawk reports `constraint-missing-not-valid` beside the finding of a more specific rule
    // on the same statement. For UNIQUE and PRIMARY KEY its advice (NOT VALID) cannot even be
    // followed, and for a foreign key it repeats the other finding: the specific one stays, so
    // one problem is one finding and one pragma allows it.
    let specific: Vec<Option<usize>> = violations
        .iter()
        .filter(|v| SUPERSEDE_NOT_VALID.contains(&v.code.to_string().as_str()))
        .map(statement_of)
        .collect();
    for v in violations {
        let stmt = statement_of(&v);
        if v.code.to_string() == "constraint-missing-not-valid" && specific.contains(&stmt) {
            continue;
        }
        let start: u32 = v.text_range.start().into();
        let on_new_table = stmt.is_some_and(|i| stmts[i].2);
        if on_new_table {
            continue;
        }
        let offset = at(start);
        found.push(Located {
            offset,
            finding: from_violation(m, content, offset, v),
        });
    }
}

/// Rules whose finding makes squawk's `constraint-missing-not-valid` on the same statement
/// redundant (or wrong: UNIQUE and PRIMARY KEY constraints cannot be NOT VALID).
const SUPERSEDE_NOT_VALID: [&str; 3] = [
    "disallowed-unique-constraint",
    "adding-serial-primary-key-field",
    "adding-foreign-key-constraint",
];

/// Each statement's range and whether it works on a table created earlier in the run (which
/// is new and empty, so locks and rewrites on it harm nobody); adds this file's tables to
/// `created`.
fn statements(file: &ast::SourceFile, created: &mut BTreeSet<String>) -> Vec<(u32, u32, bool)> {
    let mut out = Vec::new();
    for stmt in file.stmts() {
        let range = stmt.syntax().text_range();
        let name = |t: Option<ast::TableNameRef>| {
            t.and_then(|t| t.path_ref())
                .and_then(|p| p.segment())
                .map(|s| s.text())
        };
        let targets: Vec<Option<String>> = match &stmt {
            ast::Stmt::AlterTable(a) => {
                vec![name(
                    a.table_relation_name().and_then(|r| r.table_name_ref()),
                )]
            }
            ast::Stmt::CreateIndex(c) => {
                vec![name(
                    c.table_relation_name().and_then(|r| r.table_name_ref()),
                )]
            }
            ast::Stmt::DropTable(d) => d.table_name_refs().map(|t| name(Some(t))).collect(),
            _ => Vec::new(),
        };
        let new = !targets.is_empty()
            && targets
                .iter()
                .all(|t| t.as_ref().is_some_and(|t| created.contains(t)));
        out.push((range.start().into(), range.end().into(), new));
        if let ast::Stmt::CreateTable(c) = &stmt
            && let Some(name) = c
                .table_name()
                .and_then(|t| t.path())
                .and_then(|p| p.segment())
        {
            created.insert(name.text());
        }
    }
    out
}

fn from_violation(m: &Migration, content: &str, offset: usize, v: Violation) -> Finding {
    let rule = v.code.to_string();
    let rewrite = rewrite::for_rule(&rule, m.no_transaction, v.help.as_deref());
    finding(m, content, offset, &rule, v.message, v.help, rewrite)
}
