//! The comparison of two snapshots, and how a difference reads. Pure: no database.

use std::collections::BTreeSet;
use std::fmt;

use super::{Difference, Drift, ObjectKind, SchemaSnapshot};

/// What differs between `expected` (a schema migrated from the files, e.g. a shadow database)
/// and `actual` (the live schema), in a stable order: by kind (types and tables before what
/// hangs on them), then table, then name.
///
/// A table that is missing or unexpected is one difference: its columns, indexes,
/// constraints, triggers and owned sequences are not listed again.
///
/// ```
/// # use pgdbm_core::{SchemaSnapshot, compare_schemas};
/// let a = SchemaSnapshot::default();
/// assert!(compare_schemas(&a, &a.clone()).is_empty());
/// ```
pub fn compare_schemas(expected: &SchemaSnapshot, actual: &SchemaSnapshot) -> Vec<Difference> {
    let mut out = Vec::new();
    // Tables present on one side only: what hangs on them is said by the table's line.
    let mut whole: BTreeSet<&str> = BTreeSet::new();
    for e in expected.objects() {
        match actual.find(e) {
            None => {
                if e.kind == ObjectKind::Table {
                    whole.insert(&e.name);
                }
                out.push(difference(
                    e.kind,
                    &e.name,
                    e.table.as_deref(),
                    Drift::Missing,
                ));
            }
            Some(a) if a.definition != e.definition => out.push(difference(
                e.kind,
                &e.name,
                e.table.as_deref(),
                Drift::Changed {
                    expected: e.definition.clone(),
                    actual: a.definition.clone(),
                },
            )),
            Some(_) => {}
        }
    }
    for a in actual.objects() {
        if expected.find(a).is_none() {
            if a.kind == ObjectKind::Table {
                whole.insert(&a.name);
            }
            out.push(difference(
                a.kind,
                &a.name,
                a.table.as_deref(),
                Drift::Unexpected,
            ));
        }
    }
    out.retain(|d| {
        d.kind == ObjectKind::Table || d.table.as_deref().is_none_or(|t| !whole.contains(t))
    });
    // A table's columns (constraints, triggers, indexes) together, in the table's order.
    out.sort_by(|x, y| {
        let key = |d: &Difference| (d.kind, d.table.clone().unwrap_or_default(), d.name.clone());
        key(x).cmp(&key(y))
    });
    out
}

fn difference(kind: ObjectKind, name: &str, table: Option<&str>, drift: Drift) -> Difference {
    Difference {
        kind,
        name: name.to_string(),
        table: table.map(str::to_string),
        drift,
    }
}

impl Difference {
    /// The name as the messages show it: `users.nickname` for a column, the index's,
    /// constraint's or trigger's own name with its table (`users_email_key on users`).
    pub fn display_name(&self) -> String {
        match (&self.kind, &self.table) {
            (ObjectKind::Column, Some(t)) => format!("{t}.{}", self.name),
            (ObjectKind::Constraint | ObjectKind::Trigger, Some(t)) => {
                format!("{} on {t}", self.name)
            }
            _ => self.name.clone(),
        }
    }
}

impl fmt::Display for Difference {
    /// One line: `column users.nickname: not in the migrations (added by hand?)`,
    /// `index users_email_idx: missing (dropped by hand?)`, or for a change the first line that
    /// differs on each side.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: ", self.kind, self.display_name())?;
        match &self.drift {
            Drift::Missing => f.write_str("missing (dropped by hand?)"),
            Drift::Unexpected => f.write_str("not in the migrations (added by hand?)"),
            Drift::Changed { expected, actual } => {
                let (e, a) = first_difference(expected, actual);
                write!(
                    f,
                    "differs from the migrations (changed by hand?): the migrations make `{e}`, the database has `{a}`"
                )
            }
        }
    }
}

/// The first line where `expected` and `actual` differ, trimmed and cut at 160 characters:
/// a function's or view's whole text would drown the line that changed.
fn first_difference<'a>(expected: &'a str, actual: &'a str) -> (String, String) {
    let (mut e, mut a) = (expected.lines(), actual.lines());
    loop {
        match (e.next(), a.next()) {
            (Some(x), Some(y)) if x == y => continue,
            (x, y) => {
                let show = |l: Option<&str>| cut(l.unwrap_or("").trim(), 160);
                return (show(x), show(y));
            }
        }
    }
}

fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Drift::Missing => "missing",
            Drift::Unexpected => "unexpected",
            Drift::Changed { .. } => "changed",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::drift::SchemaObject;

    fn obj(kind: ObjectKind, name: &str, table: Option<&str>, def: &str) -> SchemaObject {
        SchemaObject {
            kind,
            name: name.into(),
            table: table.map(Into::into),
            definition: def.into(),
        }
    }

    fn snapshot(objects: Vec<SchemaObject>) -> SchemaSnapshot {
        let mut s = SchemaSnapshot::empty("s");
        for o in objects {
            s.insert(o);
        }
        s
    }

    #[test]
    fn missing_unexpected_and_changed_read_well() {
        let expected = snapshot(vec![
            obj(ObjectKind::Table, "users", None, "table"),
            obj(ObjectKind::Column, "email", Some("users"), "text NOT NULL"),
            obj(
                ObjectKind::Index,
                "users_email_idx",
                Some("users"),
                "CREATE INDEX …",
            ),
        ]);
        let actual = snapshot(vec![
            obj(ObjectKind::Table, "users", None, "table"),
            obj(
                ObjectKind::Column,
                "email",
                Some("users"),
                "varchar(10) NOT NULL",
            ),
            obj(ObjectKind::Column, "nickname", Some("users"), "text"),
        ]);
        let lines: Vec<String> = compare_schemas(&expected, &actual)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            lines,
            [
                "column users.email: differs from the migrations (changed by hand?): the migrations make `text NOT NULL`, the database has `varchar(10) NOT NULL`",
                "column users.nickname: not in the migrations (added by hand?)",
                "index users_email_idx: missing (dropped by hand?)",
            ]
        );
    }

    #[test]
    fn a_missing_table_is_one_difference() {
        let expected = snapshot(vec![
            obj(ObjectKind::Table, "posts", None, "table"),
            obj(ObjectKind::Column, "id", Some("posts"), "integer"),
            obj(
                ObjectKind::Index,
                "posts_idx",
                Some("posts"),
                "CREATE INDEX",
            ),
        ]);
        let diffs = compare_schemas(&expected, &SchemaSnapshot::empty("s"));
        assert_eq!(diffs.len(), 1);
        assert_eq!(
            diffs[0].to_string(),
            "table posts: missing (dropped by hand?)"
        );
    }

    #[test]
    fn a_changed_function_shows_the_line_that_changed() {
        let e = "CREATE FUNCTION f()\n RETURNS int\nAS $$ SELECT 1 $$";
        let a = "CREATE FUNCTION f()\n RETURNS int\nAS $$ SELECT 2 $$";
        assert_eq!(
            first_difference(e, a),
            ("AS $$ SELECT 1 $$".into(), "AS $$ SELECT 2 $$".into())
        );
    }
}
