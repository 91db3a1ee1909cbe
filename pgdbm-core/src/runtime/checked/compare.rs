//! A recorded description against a live one: every difference, spelled out, and whether the
//! code compiled against the recorded one would notice.

use std::fmt;

use super::description::{Description, SqlType};

/// One way a statement's live description differs from the recorded one. Column and parameter
/// numbers in the text count from 1 (`column 2`, `$1`); the `index` fields count from 0.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Change {
    /// Column `index` now has another name.
    ColumnRenamed {
        /// The column's position, from 0.
        index: usize,
        /// Its recorded name.
        recorded: String,
        /// Its name now.
        live: String,
    },
    /// Column `index` now has another type.
    ColumnType {
        /// The column's position, from 0.
        index: usize,
        /// Its recorded name.
        name: String,
        /// The recorded type.
        recorded: SqlType,
        /// The type now.
        live: SqlType,
    },
    /// Column `index` was NOT NULL and may now be NULL, or the other way round (only reported
    /// where both sides know).
    Nullability {
        /// The column's position, from 0.
        index: usize,
        /// Its recorded name.
        name: String,
        /// Whether it was nullable.
        recorded: bool,
        /// Whether it is nullable now.
        live: bool,
    },
    /// The statement returns fewer columns: the last recorded ones are gone.
    ColumnsRemoved {
        /// How many columns were recorded.
        recorded: usize,
        /// How many it returns now.
        live: usize,
        /// The recorded names of the columns no longer returned.
        names: Vec<String>,
    },
    /// The statement returns more columns than were recorded (`SELECT *` after `ADD COLUMN`).
    ColumnsAdded {
        /// How many columns were recorded.
        recorded: usize,
        /// How many it returns now.
        live: usize,
        /// The names of the new columns.
        names: Vec<String>,
    },
    /// The statement takes another number of parameters.
    ParameterCount {
        /// How many were recorded.
        recorded: usize,
        /// How many it takes now.
        live: usize,
    },
    /// Parameter `$index + 1` now has another type.
    ParameterType {
        /// The parameter's position, from 0 (`$1` is 0).
        index: usize,
        /// The recorded type.
        recorded: SqlType,
        /// The type now.
        live: SqlType,
    },
}

impl Change {
    /// Whether code compiled against the recorded description can fail because of this change.
    ///
    /// Two changes cannot break it: columns added after the recorded ones (the generated code
    /// reads columns by position and never looks past the last one it knows), and a nullable
    /// column that became NOT NULL (an `Option` always decodes a value). Every other change
    /// can: a column gone or moved, a type that no longer decodes into the Rust type, a NULL
    /// where the code expects a value, a parameter the code does not bind or binds with the
    /// wrong type.
    pub fn is_breaking(&self) -> bool {
        match self {
            Change::ColumnsAdded { .. } => false,
            Change::Nullability { live, .. } => *live,
            _ => true,
        }
    }
}

fn nullability(nullable: bool) -> &'static str {
    if nullable { "nullable" } else { "NOT NULL" }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::ColumnRenamed {
                index,
                recorded,
                live,
            } => write!(f, "column {}: \"{recorded}\" → \"{live}\"", index + 1),
            Change::ColumnType {
                index,
                name,
                recorded,
                live,
            } => {
                write!(f, "column {} \"{name}\": {recorded} → {live}", index + 1)?;
                if recorded.name() == live.name() {
                    f.write_str(" (its definition changed")?;
                    if let Some(labels) = enum_labels_changed(recorded, live) {
                        write!(f, ": {labels}")?;
                    }
                    f.write_str(")")?;
                }
                Ok(())
            }
            Change::Nullability {
                index,
                name,
                recorded,
                live,
            } => write!(
                f,
                "column {} \"{name}\" nullable: {} → {}",
                index + 1,
                nullability(*recorded),
                nullability(*live)
            ),
            Change::ColumnsRemoved {
                recorded,
                live,
                names,
            } => write!(
                f,
                "columns: {recorded} → {live}; no longer returned: {}",
                numbered(*live, names)
            ),
            Change::ColumnsAdded {
                recorded,
                live,
                names,
            } => write!(
                f,
                "columns: {recorded} → {live}; also returned now: {}",
                numbered(*recorded, names)
            ),
            Change::ParameterCount { recorded, live } => {
                write!(f, "parameters: {recorded} → {live}")
            }
            Change::ParameterType {
                index,
                recorded,
                live,
            } => write!(f, "parameter ${}: {recorded} → {live}", index + 1),
        }
    }
}

/// `3 "email", 4 "name"`: columns numbered from `first + 1`.
fn numbered(first: usize, names: &[String]) -> String {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| format!("{} \"{n}\"", first + i + 1))
        .collect::<Vec<_>>()
        .join(", ")
}

/// For two versions of one enum: `labels added: x; removed: y`.
fn enum_labels_changed(recorded: &SqlType, live: &SqlType) -> Option<String> {
    let labels = |t: &SqlType| -> Option<Vec<String>> {
        t.as_json()
            .pointer("/Custom/kind/Enum")?
            .as_array()?
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect()
    };
    let (old, new) = (labels(recorded)?, labels(live)?);
    let added: Vec<&str> = new
        .iter()
        .filter(|l| !old.contains(l))
        .map(String::as_str)
        .collect();
    let removed: Vec<&str> = old
        .iter()
        .filter(|l| !new.contains(l))
        .map(String::as_str)
        .collect();
    let mut parts = Vec::new();
    if !added.is_empty() {
        parts.push(format!("labels added: {}", added.join(", ")));
    }
    if !removed.is_empty() {
        parts.push(format!("labels removed: {}", removed.join(", ")));
    }
    if parts.is_empty() {
        parts.push("labels reordered".to_string());
    }
    Some(parts.join("; "))
}

/// Every difference between what was `recorded` for a statement and what the server says about
/// it now (`live`), columns first, then parameters. Empty when the code compiled against the
/// recorded description sees the same statement.
///
/// Nullability is compared only where both sides know it; parameters only when both sides know
/// their types.
pub fn compare(recorded: &Description, live: &Description) -> Vec<Change> {
    let mut changes = Vec::new();
    for (index, (r, l)) in recorded.columns.iter().zip(&live.columns).enumerate() {
        if r.name != l.name {
            changes.push(Change::ColumnRenamed {
                index,
                recorded: r.name.clone(),
                live: l.name.clone(),
            });
        }
        if r.type_info != l.type_info {
            changes.push(Change::ColumnType {
                index,
                name: r.name.clone(),
                recorded: r.type_info.clone(),
                live: l.type_info.clone(),
            });
        }
        if let (Some(was), Some(now)) = (recorded.is_nullable(index), live.is_nullable(index))
            && was != now
        {
            changes.push(Change::Nullability {
                index,
                name: r.name.clone(),
                recorded: was,
                live: now,
            });
        }
    }
    let (nr, nl) = (recorded.columns.len(), live.columns.len());
    if nr > nl {
        changes.push(Change::ColumnsRemoved {
            recorded: nr,
            live: nl,
            names: recorded.columns[nl..]
                .iter()
                .map(|c| c.name.clone())
                .collect(),
        });
    } else if nl > nr {
        changes.push(Change::ColumnsAdded {
            recorded: nr,
            live: nl,
            names: live.columns[nr..].iter().map(|c| c.name.clone()).collect(),
        });
    }
    if let (Some(rp), Some(lp)) = (&recorded.parameters, &live.parameters) {
        if rp.len() != lp.len() {
            changes.push(Change::ParameterCount {
                recorded: rp.len(),
                live: lp.len(),
            });
        }
        for (index, (r, l)) in rp.iter().zip(lp).enumerate() {
            if r != l {
                changes.push(Change::ParameterType {
                    index,
                    recorded: r.clone(),
                    live: l.clone(),
                });
            }
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::runtime::checked::description::Column;

    fn ty(v: serde_json::Value) -> SqlType {
        SqlType::from_json(v)
    }

    fn desc(columns: &[(&str, &str, Option<bool>)], params: &[&str]) -> Description {
        Description::new(
            columns
                .iter()
                .map(|(n, t, _)| Column::new(*n, ty(json!(t))))
                .collect(),
            Some(params.iter().map(|t| ty(json!(t))).collect()),
            columns.iter().map(|(_, _, n)| *n).collect(),
        )
    }

    fn texts(changes: &[Change]) -> Vec<String> {
        changes.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn the_same_description_has_no_changes() {
        let d = desc(
            &[("id", "Int8", Some(false)), ("email", "Text", Some(false))],
            &["Int8"],
        );
        assert_eq!(compare(&d, &d.clone()), vec![]);
    }

    #[test]
    fn types_names_and_nullability_are_spelled_out() {
        let recorded = desc(
            &[
                ("id", "Int8", Some(false)),
                ("email", "Text", Some(false)),
                ("name", "Text", Some(true)),
            ],
            &["Int4"],
        );
        let live = desc(
            &[
                ("id", "Int8", Some(false)),
                ("email", "Varchar", Some(true)),
                ("full_name", "Text", Some(false)),
            ],
            &["Int8"],
        );
        let changes = compare(&recorded, &live);
        assert_eq!(
            texts(&changes),
            vec![
                "column 2 \"email\": text → varchar",
                "column 2 \"email\" nullable: NOT NULL → nullable",
                "column 3: \"name\" → \"full_name\"",
                "column 3 \"name\" nullable: nullable → NOT NULL",
                "parameter $1: int4 → int8",
            ]
        );
        let breaking: Vec<bool> = changes.iter().map(Change::is_breaking).collect();
        assert_eq!(breaking, vec![true, true, true, false, true]);
    }

    #[test]
    fn unknown_nullability_is_not_a_change() {
        let recorded = desc(&[("n", "Int8", None)], &[]);
        let live = desc(&[("n", "Int8", Some(true))], &[]);
        assert_eq!(compare(&recorded, &live), vec![]);
        assert_eq!(compare(&live, &recorded), vec![]);
    }

    #[test]
    fn columns_gone_break_and_columns_added_do_not() {
        let three = desc(
            &[
                ("id", "Int8", Some(false)),
                ("email", "Text", Some(false)),
                ("name", "Text", Some(true)),
            ],
            &[],
        );
        let one = desc(&[("id", "Int8", Some(false))], &[]);
        let removed = compare(&three, &one);
        assert_eq!(
            texts(&removed),
            vec!["columns: 3 → 1; no longer returned: 2 \"email\", 3 \"name\""]
        );
        assert!(removed[0].is_breaking());
        let added = compare(&one, &three);
        assert_eq!(
            texts(&added),
            vec!["columns: 1 → 3; also returned now: 2 \"email\", 3 \"name\""]
        );
        assert!(!added[0].is_breaking());
    }

    #[test]
    fn parameter_counts_and_unknown_parameters() {
        let one = desc(&[], &["Int8"]);
        let two = desc(&[], &["Int8", "Text"]);
        assert_eq!(texts(&compare(&one, &two)), vec!["parameters: 1 → 2"]);
        let unknown = Description::new(vec![], None, vec![]);
        assert_eq!(compare(&unknown, &two), vec![]);
    }

    #[test]
    fn user_defined_types_compare_by_name_and_definition() {
        let mood =
            |labels: &[&str]| ty(json!({"Custom": {"name": "mood", "kind": {"Enum": labels}}}));
        assert_eq!(mood(&["ok", "sad"]).name(), "mood");
        assert_eq!(mood(&["ok", "sad"]), mood(&["ok", "sad"]));
        let recorded = Description::new(
            vec![Column::new("m", mood(&["ok", "sad"]))],
            Some(vec![]),
            vec![Some(false)],
        );
        let live = Description::new(
            vec![Column::new("m", mood(&["ok", "happy"]))],
            Some(vec![]),
            vec![Some(false)],
        );
        assert_eq!(
            texts(&compare(&recorded, &live)),
            vec![
                "column 1 \"m\": mood → mood (its definition changed: labels added: happy; labels removed: sad)"
            ]
        );
        // Built-in names are PostgreSQL's, in lower case; arrays too.
        assert_eq!(ty(json!("TextArray")).name(), "text[]");
        assert_eq!(ty(json!("Timestamptz")).name(), "timestamptz");
        // A value sqlx does not know still gets a name.
        assert_eq!(ty(json!("SomethingNew")).name(), "somethingnew");
    }
}
