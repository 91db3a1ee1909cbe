//! Named parameters (`WHERE email = :email`) for the `tsql!` macros, rewritten to PostgreSQL's
//! positional `$1`, `$2` at compile time.
//!
//! PostgreSQL itself only knows `$n`, and a query with eight `$n` is easy to bind in the wrong
//! order. The macros let a query say `:email` and take `email = value` arguments instead; this
//! module is the pure part of that: finding the names and rewriting them, with no compiler or
//! database involved, so it can be tested on its own.
//!
//! A colon means many things in SQL, and a rewrite that took the wrong one would silently
//! change a query. So the text is read through [`crate::sql_lex`], and these are *not* names:
//!
//! * anything inside a string, a quoted identifier, a comment or a dollar-quoted body;
//! * the `::` of a cast (`x::int8`, `'a'::text`) and the `:=` of a named function argument;
//! * the colon of an array slice: inside a subscript (`tags[lo:hi]`, `tags[:hi]`, a `[` that
//!   follows a name, a `)` or a `]`), a colon separates bounds. To use a parameter in a
//!   subscript, put it in parentheses: `tags[(:i)]`. The brackets of `ARRAY[:a, :b]` hold
//!   elements, so names work there.
//! * a colon not directly followed by a name (`: x`, `:1`).
//!
//! A name is `[A-Za-z_][A-Za-z0-9_]*`; one used twice gets the same `$n`, numbered in order of
//! first use. A query mixing names with `$n` is refused: the numbering would be guesswork.
//!
//! ```
//! use pgdbm_core::named_params::rewrite;
//! let r = rewrite("SELECT id FROM t WHERE email = :email AND (:id IS NULL OR id = :id) AND x = 'a:b'::text").unwrap();
//! assert_eq!(r.sql, "SELECT id FROM t WHERE email = $1 AND ($2 IS NULL OR id = $2) AND x = 'a:b'::text");
//! assert_eq!(r.names, ["email", "id"]);
//! ```

use std::borrow::Cow;
use std::fmt;

use crate::sql_lex::{Token, TokenKind, tokens};

/// One `:name` in a SQL text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NamedParam<'a> {
    /// The name, without the colon.
    pub name: &'a str,
    /// Byte offset of the colon.
    pub start: usize,
    /// Byte offset just past the name.
    pub end: usize,
}

/// What [`rewrite`] made of a SQL text.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rewritten<'a> {
    /// The SQL with every `:name` replaced by its `$n` (borrowed unchanged when it has none).
    pub sql: Cow<'a, str>,
    /// The distinct names in order of first use: `names[0]` is bound to `$1`.
    pub names: Vec<&'a str>,
    /// Every `:name` replaced, in text order.
    pub params: Vec<NamedParam<'a>>,
    /// `:name`s that were read as an array slice bound (`tags[lo:hi]`) and left alone, so that
    /// a caller can explain why an argument of that name is unused.
    pub slice_bounds: Vec<NamedParam<'a>>,
    /// Byte offset of the first positional parameter (`$1`), if the text has one (then it has
    /// no names).
    pub positional: Option<usize>,
}

/// Why a SQL text could not be rewritten.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub struct NamedParamError {
    /// Byte offset of the offending text.
    pub offset: usize,
    /// What is wrong.
    pub kind: NamedParamErrorKind,
}

/// The kinds of [`NamedParamError`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NamedParamErrorKind {
    /// The text uses both `:name` and `$n`.
    Mixed {
        /// The first named parameter, e.g. `:email`.
        named: String,
        /// The first positional parameter, e.g. `$1`.
        positional: String,
    },
    /// `:` followed by a word that is not a valid name (`:naïve`, `:a$b`).
    InvalidName {
        /// The text after the colon.
        text: String,
    },
}

impl fmt::Display for NamedParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            NamedParamErrorKind::Mixed { named, positional } => write!(
                f,
                "the query mixes the named parameter `{named}` with the positional parameter `{positional}`: use one style in a query; with named parameters, write every parameter as :name and pass name = value"
            ),
            NamedParamErrorKind::InvalidName { text } => write!(
                f,
                "`:{text}` is not a valid parameter name: names are ASCII letters, digits and underscores, starting with a letter or underscore"
            ),
        }
    }
}

/// The named and positional parameters of `sql`, found as described in the [module
/// documentation](self).
#[derive(Debug, Default)]
struct Found<'a> {
    named: Vec<NamedParam<'a>>,
    slice_bounds: Vec<NamedParam<'a>>,
    positional: Vec<(usize, &'a str)>,
}

/// What an open bracket started: the colon means a slice only directly inside a subscript.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Group {
    Paren,
    Subscript,
    ArrayElements,
}

fn find(sql: &str) -> Result<Found<'_>, NamedParamError> {
    // Comments are dropped: they hold no parameters, and "directly followed" is decided by
    // offsets, so `:/* c */x` is not a name.
    let toks: Vec<Token<'_>> = tokens(sql)
        .filter(|t| t.kind != TokenKind::Comment)
        .collect();
    let adjacent = |a: &Token<'_>, b: &Token<'_>| a.start + a.text.len() == b.start;
    let mut found = Found::default();
    let mut groups: Vec<Group> = Vec::new();
    let mut prev: Option<Token<'_>> = None;
    let mut i = 0;
    while i < toks.len() {
        let t = toks[i];
        let next = toks.get(i + 1).filter(|n| adjacent(&t, n));
        let mut step = 1;
        match t.kind {
            TokenKind::Punct(b'(') => groups.push(Group::Paren),
            TokenKind::Punct(b'[') => groups.push(if opens_subscript(prev.as_ref()) {
                Group::Subscript
            } else {
                Group::ArrayElements
            }),
            TokenKind::Punct(b')' | b']') => {
                groups.pop();
            }
            TokenKind::Punct(b'$') => {
                if let Some(n) = next.filter(|n| n.kind == TokenKind::Number) {
                    found
                        .positional
                        .push((t.start, &sql[t.start..n.start + n.text.len()]));
                    step = 2;
                }
            }
            TokenKind::Punct(b':') => match next.map(|n| n.kind) {
                // `::type`: both colons are the cast.
                Some(TokenKind::Punct(b':')) => step = 2,
                Some(TokenKind::Word) => {
                    let n = next.expect("matched");
                    let p = NamedParam {
                        name: n.text,
                        start: t.start,
                        end: n.start + n.text.len(),
                    };
                    if groups.last() == Some(&Group::Subscript) {
                        found.slice_bounds.push(p);
                    } else if is_name(n.text) {
                        found.named.push(p);
                    } else {
                        return Err(NamedParamError {
                            offset: t.start,
                            kind: NamedParamErrorKind::InvalidName {
                                text: n.text.to_string(),
                            },
                        });
                    }
                    step = 2;
                }
                // `:=`, `: x`, `:1`, `a[1:2]`: not a name.
                _ => {}
            },
            _ => {}
        }
        prev = Some(toks[i + step - 1]);
        i += step;
    }
    Ok(found)
}

/// Whether a `[` after `prev` starts a subscript (`tags[…]`, `(expr)[…]`, `a[1][…]`) rather
/// than array elements (`ARRAY[…]`, or a nested `[` inside one).
fn opens_subscript(prev: Option<&Token<'_>>) -> bool {
    prev.is_some_and(|p| match p.kind {
        TokenKind::Word => !p.is_word("array"),
        TokenKind::QuotedIdent | TokenKind::Number | TokenKind::Literal => true,
        TokenKind::Punct(c) => c == b')' || c == b']',
        TokenKind::Comment => false,
    })
}

/// `[A-Za-z_][A-Za-z0-9_]*`.
fn is_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && bytes.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// Replaces each `:name` of `sql` with its `$n`, as described in the [module
/// documentation](self).
///
/// ```
/// use pgdbm_core::named_params::rewrite;
/// // Casts, slices, strings and comments keep their colons.
/// let r = rewrite("SELECT tags[1:2], tags[lo:hi], now()::date, ':x' FROM t /* :y */ WHERE id = :id").unwrap();
/// assert_eq!(r.sql, "SELECT tags[1:2], tags[lo:hi], now()::date, ':x' FROM t /* :y */ WHERE id = $1");
/// // A text without names is returned as it is.
/// assert_eq!(rewrite("SELECT $1").unwrap().positional, Some(7));
/// assert!(rewrite("SELECT :a, $1").is_err());
/// ```
///
/// # Errors
///
/// [`NamedParamError`] when the text mixes `:name` with `$n`
/// ([`Mixed`](NamedParamErrorKind::Mixed), at the offset of whichever came second), or a
/// colon is followed by a word that is not a valid name
/// ([`InvalidName`](NamedParamErrorKind::InvalidName)).
pub fn rewrite(sql: &str) -> Result<Rewritten<'_>, NamedParamError> {
    let found = find(sql)?;
    if let (Some(named), Some(&(pos_at, pos_text))) =
        (found.named.first(), found.positional.first())
    {
        return Err(NamedParamError {
            offset: named.start.max(pos_at),
            kind: NamedParamErrorKind::Mixed {
                named: format!(":{}", named.name),
                positional: pos_text.to_string(),
            },
        });
    }
    let mut names: Vec<&str> = Vec::new();
    for p in &found.named {
        if !names.contains(&p.name) {
            names.push(p.name);
        }
    }
    let sql = if found.named.is_empty() {
        Cow::Borrowed(sql)
    } else {
        Cow::Owned(substitute(sql, &found.named, &names))
    };
    Ok(Rewritten {
        sql,
        names,
        params: found.named,
        slice_bounds: found.slice_bounds,
        positional: found.positional.first().map(|&(at, _)| at),
    })
}

fn substitute(sql: &str, params: &[NamedParam<'_>], names: &[&str]) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut copied = 0;
    for p in params {
        out.push_str(&sql[copied..p.start]);
        // `a:x` must not become the identifier `a$1`.
        if out
            .as_bytes()
            .last()
            .is_some_and(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80)
        {
            out.push(' ');
        }
        let n = names.iter().position(|&n| n == p.name).expect("collected") + 1;
        out.push('$');
        out.push_str(&n.to_string());
        copied = p.end;
    }
    out.push_str(&sql[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sql(text: &str) -> String {
        rewrite(text).unwrap().sql.into_owned()
    }

    #[test]
    fn names_become_positions_in_order_of_first_use() {
        let r = rewrite("UPDATE t SET a = :b, c = :a WHERE id = :id AND b = :b").unwrap();
        assert_eq!(
            r.sql,
            "UPDATE t SET a = $1, c = $2 WHERE id = $3 AND b = $1"
        );
        assert_eq!(r.names, ["b", "a", "id"]);
        assert_eq!(r.params.len(), 4);
        assert_eq!(
            r.params[0],
            NamedParam {
                name: "b",
                start: 17,
                end: 19
            }
        );
        assert_eq!(r.positional, None);
        assert_eq!(sql("SELECT :_x1, :X1"), "SELECT $1, $2");
        assert_eq!(sql("VALUES (:a,:b)"), "VALUES ($1,$2)");
        // Case matters, as it does for Rust names.
        assert_eq!(rewrite("SELECT :a, :A").unwrap().names, ["a", "A"]);
    }

    #[test]
    fn casts_and_assignments_keep_their_colons() {
        assert_eq!(
            sql("SELECT x::int8, 'a'::text, :v::int8, (:w)::text[], f(a := :z), x :: int"),
            "SELECT x::int8, 'a'::text, $1::int8, ($2)::text[], f(a := $3), x :: int"
        );
        assert_eq!(sql("SELECT :a::b::c"), "SELECT $1::b::c");
    }

    #[test]
    fn strings_identifiers_comments_and_dollar_bodies_are_left_alone() {
        let text = r#"SELECT ':a', E'\':b', "c:d", $$ :e $$, $f$ :g $f$ -- :h
            /* :i /* :j */ */ FROM t WHERE k = :k"#;
        let r = rewrite(text).unwrap();
        assert_eq!(r.names, ["k"]);
        assert!(r.sql.ends_with("WHERE k = $1"), "{}", r.sql);
        assert!(
            r.sql
                .starts_with(r#"SELECT ':a', E'\':b', "c:d", $$ :e $$, $f$ :g $f$ -- :h"#)
        );
        // A comment between the colon and the word: not a name.
        assert_eq!(
            rewrite("SELECT :/* c */x").unwrap().names,
            Vec::<&str>::new()
        );
    }

    #[test]
    fn slices_are_not_names_but_array_elements_are() {
        let r =
            rewrite("SELECT a[1:2], a[lo:hi], a[:n], a[n:], (f())[x:y], a[1][i:j] FROM t").unwrap();
        assert_eq!(r.names, Vec::<&str>::new());
        let bounds: Vec<&str> = r.slice_bounds.iter().map(|p| p.name).collect();
        assert_eq!(bounds, ["hi", "n", "y", "j"]);
        assert_eq!(
            sql("SELECT a[(:i)], a[(:lo):(:hi)], ARRAY[:x, :y], ARRAY[[:p], [:q]], \"t\".c[(:k)]"),
            "SELECT a[($1)], a[($2):($3)], ARRAY[$4, $5], ARRAY[[$6], [$7]], \"t\".c[($8)]"
        );
        assert_eq!(sql("SELECT array[:a]"), "SELECT array[$1]");
    }

    #[test]
    fn a_name_glued_to_a_word_stays_a_separate_token() {
        assert_eq!(sql("SELECT 1 WHERE a=:x"), "SELECT 1 WHERE a=$1");
        assert_eq!(sql("SELECT a:x"), "SELECT a $1");
    }

    #[test]
    fn other_colons_are_not_names() {
        let r = rewrite("SELECT : x, :1, ':' FROM t").unwrap();
        assert_eq!(r.sql, "SELECT : x, :1, ':' FROM t");
        assert!(r.names.is_empty());
        assert!(matches!(r.sql, Cow::Borrowed(_)));
        assert_eq!(
            sql("SELECT {{tables.users}}.id WHERE x = :x"),
            "SELECT {{tables.users}}.id WHERE x = $1"
        );
    }

    #[test]
    fn positional_parameters_are_found_and_may_not_be_mixed() {
        let r = rewrite("SELECT a$1, $2 FROM t WHERE x::int = $10").unwrap();
        assert_eq!(r.positional, Some(12));
        assert!(r.names.is_empty());
        let e = rewrite("SELECT * FROM t WHERE a = :a AND b = $1").unwrap_err();
        assert_eq!(e.offset, 37);
        assert_eq!(
            e.kind,
            NamedParamErrorKind::Mixed {
                named: ":a".into(),
                positional: "$1".into()
            }
        );
        assert!(
            e.to_string()
                .contains("mixes the named parameter `:a` with the positional parameter `$1`")
        );
        // `$1` inside a string is not a parameter.
        assert_eq!(sql("SELECT '$1', :a"), "SELECT '$1', $1");
    }

    #[test]
    fn invalid_names_are_errors() {
        let e = rewrite("SELECT :naïve").unwrap_err();
        assert_eq!(e.offset, 7);
        assert_eq!(
            e.kind,
            NamedParamErrorKind::InvalidName {
                text: "naïve".into()
            }
        );
        assert!(
            e.to_string()
                .starts_with("`:naïve` is not a valid parameter name")
        );
        assert!(rewrite("SELECT :a$b").is_err());
        // A slice bound may be any column name.
        assert!(rewrite("SELECT a[1:naïve]").is_ok());
    }
}
