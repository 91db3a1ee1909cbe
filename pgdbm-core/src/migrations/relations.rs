//! Which relations a migration set creates: tables, views, materialized views, sequences and
//! types, following `ALTER … RENAME TO` and `DROP`. `tsql!` uses it to reject unknown tables at
//! compile time, without a database.

use std::collections::BTreeSet;

use super::{MigrationSet, split_statements};
use crate::sql_lex::{Token, TokenKind, tokens};
use crate::template;

/// Stand-in schema used while reading: placeholders for the module's own schema render to it.
const OWN: &str = "__pgdbm_own_schema__";

/// Relations created by a migration set, in the module's own schema and in other schemas.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Relations {
    own: BTreeSet<String>,
    other: BTreeSet<(String, String)>,
}

impl Relations {
    /// Reads every statement of every file, in order.
    ///
    /// ```
    /// use pgdbm_core::migrations::{MigrationSet, Relations};
    /// let set = MigrationSet::from_embedded(&[
    ///     ("001_a.sql", "CREATE TABLE IF NOT EXISTS {{tables.users}} (id int); CREATE VIEW <<tables.active>> AS SELECT 1;"),
    ///     ("002_b.sql", "ALTER TABLE {{tables.users}} RENAME TO members; DROP VIEW IF EXISTS {{tables.active}};"),
    /// ]).unwrap();
    /// let r = Relations::from_set(&set);
    /// assert_eq!(r.own().collect::<Vec<_>>(), ["members"]);
    /// ```
    pub fn from_set(set: &MigrationSet) -> Relations {
        let mut r = Relations::default();
        for m in set.iter() {
            // Malformed placeholders are the runner's error to report; read what renders.
            let Ok(sql) = template::render(&m.content, Some(OWN)) else {
                continue;
            };
            for stmt in split_statements(&sql) {
                let t: Vec<Token<'_>> = tokens(stmt.text)
                    .filter(|t| !matches!(t.kind, TokenKind::Comment | TokenKind::Literal))
                    .collect();
                r.apply(&t);
            }
        }
        r
    }

    /// Names in the module's own schema, sorted.
    pub fn own(&self) -> impl Iterator<Item = &str> {
        self.own.iter().map(String::as_str)
    }

    /// Whether `name` (as written in a placeholder; unquoted names fold to lower case) is a
    /// relation of the module's own schema.
    pub fn contains(&self, name: &str) -> bool {
        self.own.contains(&name.to_ascii_lowercase())
    }

    /// Whether `schema.name` was created with an explicit schema.
    pub fn contains_in(&self, schema: &str, name: &str) -> bool {
        self.other
            .contains(&(schema.to_string(), name.to_ascii_lowercase()))
    }

    /// The own name closest to `name`, if one is close enough to be a likely typo.
    pub fn suggest(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.own
            .iter()
            .map(|c| (strsim::levenshtein(&name, c), c))
            .filter(|(d, c)| *d <= 2.max(c.len() / 3))
            .min()
            .map(|(_, c)| c.as_str())
    }

    fn apply(&mut self, t: &[Token<'_>]) {
        let kw = |i: usize, w: &str| keyword(t, i, w);
        let verb = ["CREATE", "ALTER", "DROP"].into_iter().find(|v| kw(0, v));
        let mut i = 1;
        if verb == Some("CREATE") {
            if kw(i, "OR") && kw(i + 1, "REPLACE") {
                i += 2;
            }
            let modifiers = [
                "TEMP",
                "TEMPORARY",
                "UNLOGGED",
                "GLOBAL",
                "LOCAL",
                "RECURSIVE",
            ];
            while modifiers.iter().any(|w| kw(i, w)) {
                i += 1;
            }
        }
        // `[MATERIALIZED] TABLE|VIEW|SEQUENCE|TYPE [IF [NOT] EXISTS]`
        if kw(i, "MATERIALIZED") {
            i += 1;
        }
        if verb.is_none()
            || !["TABLE", "VIEW", "SEQUENCE", "TYPE"]
                .iter()
                .any(|w| kw(i, w))
        {
            return;
        }
        i += 1;
        if kw(i, "IF") && kw(i + 1, "NOT") && kw(i + 2, "EXISTS") {
            i += 3;
        } else if kw(i, "IF") && kw(i + 1, "EXISTS") {
            i += 2;
        }
        match verb {
            Some("CREATE") => {
                if let Some((name, _)) = qualified(t, i) {
                    self.insert(name);
                }
            }
            Some("ALTER") => {
                if kw(i, "ONLY") {
                    i += 1;
                }
                let Some((old, next)) = qualified(t, i) else {
                    return;
                };
                let renamed = match name_at(t, next + 2) {
                    Some(new) if kw(next, "RENAME") && kw(next + 1, "TO") => {
                        Some((old.0.clone(), new))
                    }
                    Some(schema) if kw(next, "SET") && kw(next + 1, "SCHEMA") => {
                        Some((Some(schema), old.1.clone()))
                    }
                    _ => None,
                };
                if let Some(moved) = renamed {
                    self.remove(&old);
                    self.insert(moved);
                }
            }
            _ => {
                // DROP a, b, c [CASCADE]
                while let Some((name, next)) = qualified(t, i) {
                    self.remove(&name);
                    if matches!(t.get(next), Some(x) if x.kind == TokenKind::Punct(b',')) {
                        i = next + 1;
                    } else {
                        break;
                    }
                }
            }
        }
    }

    fn insert(&mut self, (schema, name): (Option<String>, String)) {
        match schema {
            None => {
                self.own.insert(name);
            }
            Some(s) if s == OWN => {
                self.own.insert(name);
            }
            Some(s) => {
                self.other.insert((s, name));
            }
        }
    }

    fn remove(&mut self, (schema, name): &(Option<String>, String)) {
        match schema.as_deref() {
            None | Some(OWN) => {
                self.own.remove(name);
            }
            Some(s) => {
                self.other.remove(&(s.to_string(), name.clone()));
            }
        }
    }
}

fn keyword(t: &[Token<'_>], i: usize, w: &str) -> bool {
    t.get(i).is_some_and(|x| x.is_word(w))
}

/// `[schema .] name` at `i`: returns ((schema, name), index after it).
#[allow(clippy::type_complexity)]
fn qualified(t: &[Token<'_>], i: usize) -> Option<((Option<String>, String), usize)> {
    let first = name_at(t, i)?;
    if t.get(i + 1)
        .is_some_and(|x| x.kind == TokenKind::Punct(b'.'))
        && let Some(second) = name_at(t, i + 2)
    {
        return Some(((Some(first), second), i + 3));
    }
    Some(((None, first), i + 1))
}

/// A name at `t[i]`, unless it is one of the keywords of the statements read here.
fn name_at(t: &[Token<'_>], i: usize) -> Option<String> {
    let tok = t.get(i)?;
    if tok.kind == TokenKind::Word && is_reserved(tok.text) {
        return None;
    }
    tok.name()
}

/// Words that are never relation names in the statements read here, so they stay keywords.
fn is_reserved(w: &str) -> bool {
    const KW: &[&str] = &[
        "CREATE",
        "OR",
        "REPLACE",
        "TEMP",
        "TEMPORARY",
        "UNLOGGED",
        "GLOBAL",
        "LOCAL",
        "RECURSIVE",
        "MATERIALIZED",
        "TABLE",
        "VIEW",
        "SEQUENCE",
        "TYPE",
        "IF",
        "NOT",
        "EXISTS",
        "ALTER",
        "ONLY",
        "RENAME",
        "TO",
        "SET",
        "SCHEMA",
        "DROP",
        "AS",
        "CASCADE",
        "RESTRICT",
    ];
    KW.iter().any(|k| k.eq_ignore_ascii_case(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(files: &[(&str, &str)]) -> Relations {
        Relations::from_set(&MigrationSet::from_embedded(files).unwrap())
    }

    #[test]
    fn finds_every_kind_with_and_without_placeholders() {
        let r = rel(&[(
            "001_a.sql",
            "CREATE TABLE {{tables.users}} (id int);
             CREATE TABLE IF NOT EXISTS <<tables.posts>> (id int);
             create unlogged table cache_entries (k text);
             CREATE OR REPLACE VIEW {{tables.active_users}} AS SELECT * FROM {{tables.users}};
             CREATE MATERIALIZED VIEW IF NOT EXISTS {{schema}}.stats AS SELECT 1;
             CREATE SEQUENCE {{tables.order_seq}};
             CREATE TYPE {{tables.mood}} AS ENUM ('ok', 'sad');
             CREATE TABLE \"Quoted\" (id int);
             CREATE TABLE {{tables.billing.invoices}} (id int);
             CREATE INDEX users_idx ON {{tables.users}} (id);
             INSERT INTO {{tables.users}} VALUES (1);
             -- CREATE TABLE commented_out (id int);
             SELECT 'CREATE TABLE in_a_string (id int)';",
        )]);
        let own: Vec<&str> = r.own().collect();
        assert_eq!(
            own,
            [
                "Quoted",
                "active_users",
                "cache_entries",
                "mood",
                "order_seq",
                "posts",
                "stats",
                "users"
            ]
        );
        assert!(r.contains_in("billing", "invoices"));
        assert!(r.contains("USERS"), "unquoted names fold");
        assert!(
            !r.contains("commented_out") && !r.contains("in_a_string") && !r.contains("users_idx")
        );
    }

    #[test]
    fn follows_renames_and_drops() {
        let r = rel(&[
            (
                "001_a.sql",
                "CREATE TABLE {{tables.users}} (id int); CREATE TABLE {{tables.tmp}} (id int); CREATE TABLE {{tables.old1}} (id int); CREATE TABLE {{tables.old2}} (id int); CREATE VIEW {{tables.v}} AS SELECT 1;",
            ),
            (
                "002_b.sql",
                "ALTER TABLE IF EXISTS {{tables.users}} RENAME TO members;
                           DROP TABLE IF EXISTS {{tables.tmp}};
                           DROP TABLE {{tables.old1}}, {{tables.old2}} CASCADE;
                           ALTER VIEW {{tables.v}} RENAME TO v2;
                           ALTER TABLE {{tables.members}} RENAME COLUMN id TO member_id;",
            ),
        ]);
        assert_eq!(r.own().collect::<Vec<_>>(), ["members", "v2"]);
    }

    #[test]
    fn suggests_near_misses_only() {
        let r = rel(&[(
            "001_a.sql",
            "CREATE TABLE {{tables.users}} (id int); CREATE TABLE {{tables.posts}} (id int);",
        )]);
        assert_eq!(r.suggest("userz"), Some("users"));
        assert_eq!(r.suggest("post"), Some("posts"));
        assert_eq!(r.suggest("invoices"), None);
    }

    #[test]
    fn the_project_migrations() {
        let set =
            MigrationSet::from_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations")).unwrap();
        let r = Relations::from_set(&set);
        assert_eq!(r.own().collect::<Vec<_>>(), ["posts", "users"]);
    }
}
