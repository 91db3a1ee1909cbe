//! Table placeholders: `{{tables.users}}`, `<<tables.users>>`, `{{tables.other.users}}`,
//! `{{schema}}`.
//!
//! This module has no database dependency: the runtime renders SQL with it per [`Database`]
//! manager, and `pgdbm-macros` renders the same SQL at compile time, so a query means the same
//! thing in both worlds.
//!
//! # Grammar
//! * `{{tables.NAME}}` and `<<tables.NAME>>` are the same placeholder. With schema `s` they
//!   render as `"s".NAME`; without a schema as the bare `NAME`.
//! * `{{tables.SCHEMA.NAME}}` names a schema explicitly and renders as `"SCHEMA".NAME`.
//! * `{{schema}}` renders as `"s"`; without a schema `{{schema}}.` is dropped (so
//!   `{{schema}}.users` becomes `users`) and a lone `{{schema}}` becomes `public`.
//! * Schema and table names must be identifiers (see [`crate::ident`]).
//! * Anything that looks like a placeholder but is not well formed (`{{tables.}}`, an unclosed
//!   `<<tables.users`, `{{table.users}}`, `{{ tables.users }}`) is an error naming the placeholder
//!   and its byte offset. Text that cannot be a placeholder (`'{{1,2},{3,4}}'` array literals,
//!   `1 << 2`) is left alone.
//! * Like pgdbm, placeholders are replaced wherever they stand, including string literals, comments
//!   and dollar-quoted function bodies (migrations rely on that).
//!
//! [`Database`]: https://docs.rs/pgdbm/latest/pgdbm/struct.Database.html
//!
//! ```
//! use pgdbm_core::template::render;
//! assert_eq!(render("SELECT * FROM {{tables.users}}", Some("myservice")).unwrap(),
//!            "SELECT * FROM \"myservice\".users");
//! assert_eq!(render("SELECT * FROM <<tables.users>>", None).unwrap(), "SELECT * FROM users");
//! assert!(render("SELECT * FROM {{tables.}}", None).is_err());
//! ```

use std::borrow::Cow;
use std::fmt;

use crate::ident::{IdentifierKind, InvalidIdentifier, quote_identifier, validate_identifier};

/// What a placeholder refers to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target<'a> {
    /// `{{tables.NAME}}` or `{{tables.SCHEMA.NAME}}`.
    Table {
        /// The explicit schema, if the placeholder names one.
        schema: Option<&'a str>,
        /// The table (or other relation) name.
        name: &'a str,
    },
    /// `{{schema}}`.
    Schema,
}

/// One placeholder found in a SQL text.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Placeholder<'a> {
    /// Byte offset of the opening `{{` or `<<`.
    pub start: usize,
    /// Byte offset just past the closing `}}` or `>>`.
    pub end: usize,
    /// The placeholder's text, e.g. `<<tables.users>>`.
    pub text: &'a str,
    /// What it refers to.
    pub target: Target<'a>,
}

/// Why a placeholder could not be rendered.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TemplateErrorKind {
    /// The placeholder is not one of the known forms.
    Malformed(String),
    /// A schema or table name in the placeholder is not a valid identifier.
    InvalidIdentifier(InvalidIdentifier),
}

/// A malformed placeholder or an invalid identifier inside one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub struct TemplateError {
    /// The placeholder text as written (up to the point where parsing stopped).
    pub placeholder: String,
    /// Byte offset of the placeholder in the SQL text.
    pub offset: usize,
    /// What is wrong with it.
    pub kind: TemplateErrorKind,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            TemplateErrorKind::Malformed(why) => write!(
                f,
                "malformed placeholder `{}` at offset {}: {}; expected {{{{tables.NAME}}}}, <<tables.NAME>>, {{{{tables.SCHEMA.NAME}}}} or {{{{schema}}}}",
                self.placeholder, self.offset, why
            ),
            TemplateErrorKind::InvalidIdentifier(e) => write!(
                f,
                "{} in placeholder `{}` at offset {}",
                e, self.placeholder, self.offset
            ),
        }
    }
}

/// Finds every placeholder in `sql`, in order, or the first malformed one.
///
/// ```
/// use pgdbm_core::template::{placeholders, Target};
/// let found = placeholders("SELECT * FROM <<tables.users>> u JOIN {{tables.billing.plans}} p ON true").unwrap();
/// assert_eq!(found[0].target, Target::Table { schema: None, name: "users" });
/// assert_eq!(found[1].target, Target::Table { schema: Some("billing"), name: "plans" });
/// ```
///
/// # Errors
///
/// [`TemplateError`] for the first text that starts like a placeholder but is not well formed (kind
/// [`Malformed`](TemplateErrorKind::Malformed)), or whose schema or table name is not a valid
/// identifier (kind [`InvalidIdentifier`](TemplateErrorKind::InvalidIdentifier)).
pub fn placeholders(sql: &str) -> Result<Vec<Placeholder<'_>>, TemplateError> {
    let mut found = Vec::new();
    let mut scanner = Scanner { sql, pos: 0 };
    while let Some(p) = scanner.next_placeholder()? {
        found.push(p);
    }
    Ok(found)
}

/// Renders every placeholder in `sql` for `schema` (`None`: unqualified names).
///
/// Returns the input unchanged (borrowed) when it holds no placeholder.
///
/// # Errors
///
/// [`TemplateError`] when `schema` is not a valid identifier (kind
/// [`InvalidIdentifier`](TemplateErrorKind::InvalidIdentifier), offset 0), or for the first bad
/// placeholder, as [`placeholders`] reports it.
pub fn render<'a>(sql: &'a str, schema: Option<&str>) -> Result<Cow<'a, str>, TemplateError> {
    validate_schema(schema)?;
    if !might_contain_placeholder(sql) {
        return Ok(Cow::Borrowed(sql));
    }
    let found = placeholders(sql)?;
    if found.is_empty() {
        return Ok(Cow::Borrowed(sql));
    }
    Ok(Cow::Owned(render_found(sql, schema, &found, None)))
}

/// Renders like [`render`] and also returns an [`OffsetMap`] that turns byte offsets in the
/// rendered text back into offsets in `sql` (to report a server error position as a line and
/// column of the file the user wrote).
///
/// # Errors
///
/// As [`render`]: [`TemplateError`] for an invalid `schema` or the first bad placeholder.
pub fn render_with_map(
    sql: &str,
    schema: Option<&str>,
) -> Result<(String, OffsetMap), TemplateError> {
    validate_schema(schema)?;
    let found = placeholders(sql)?;
    let mut spans = Vec::with_capacity(found.len());
    let out = render_found(sql, schema, &found, Some(&mut spans));
    Ok((out, OffsetMap { spans }))
}

/// Renders for `schema` like [`render`], and also returns the byte offsets in the output where
/// the quoted `schema` was written for a placeholder that names no schema of its own
/// (`{{tables.x}}`, `{{schema}}`): the places another schema would go (see [`crate::compiled`]).
///
/// # Errors
///
/// As [`render`]: [`TemplateError`] for an invalid `schema` or the first bad placeholder.
pub fn render_with_schema_slots(
    sql: &str,
    schema: &str,
) -> Result<(String, Vec<usize>), TemplateError> {
    validate_schema(Some(schema))?;
    let found = placeholders(sql)?;
    let mut spans = Vec::with_capacity(found.len());
    let out = render_found(sql, Some(schema), &found, Some(&mut spans));
    let slots = found
        .iter()
        .zip(&spans)
        .filter(|(p, _)| {
            matches!(
                p.target,
                Target::Schema | Target::Table { schema: None, .. }
            )
        })
        .map(|(_, span)| span.2)
        .collect();
    Ok((out, slots))
}

/// Maps byte offsets of a rendered text to byte offsets of its template.
#[derive(Clone, Debug, Default)]
pub struct OffsetMap {
    /// (template start, template end, rendered start, rendered end) of each replaced piece.
    spans: Vec<(usize, usize, usize, usize)>,
}

impl OffsetMap {
    /// The template offset for `rendered` (an offset inside a replaced placeholder maps to the
    /// placeholder's start).
    pub fn to_template(&self, rendered: usize) -> usize {
        match self.spans.iter().rev().find(|s| s.2 <= rendered) {
            None => rendered,
            Some(&(t_start, t_end, _, r_end)) => {
                if rendered < r_end {
                    t_start
                } else {
                    rendered - r_end + t_end
                }
            }
        }
    }
}

fn validate_schema(schema: Option<&str>) -> Result<(), TemplateError> {
    if let Some(s) = schema {
        validate_identifier(s, IdentifierKind::Schema).map_err(|e| TemplateError {
            placeholder: String::new(),
            offset: 0,
            kind: TemplateErrorKind::InvalidIdentifier(e),
        })?;
    }
    Ok(())
}

fn render_found(
    sql: &str,
    schema: Option<&str>,
    found: &[Placeholder<'_>],
    mut spans: Option<&mut Vec<(usize, usize, usize, usize)>>,
) -> String {
    let mut out = String::with_capacity(sql.len() + 16 * found.len());
    let mut copied = 0;
    for p in found {
        out.push_str(&sql[copied..p.start]);
        let out_start = out.len();
        copied = p.end;
        match (&p.target, schema) {
            (Target::Schema, Some(s)) => out.push_str(&quote_identifier(s)),
            (Target::Schema, None) => {
                if sql[p.end..].starts_with('.') {
                    copied += 1; // `{{schema}}.users` -> `users`
                } else {
                    out.push_str("public");
                }
            }
            (
                Target::Table {
                    schema: Some(explicit),
                    name,
                },
                _,
            ) => {
                out.push_str(&quote_identifier(explicit));
                out.push('.');
                out.push_str(name);
            }
            (Target::Table { schema: None, name }, Some(s)) => {
                out.push_str(&quote_identifier(s));
                out.push('.');
                out.push_str(name);
            }
            (Target::Table { schema: None, name }, None) => out.push_str(name),
        }
        if let Some(spans) = spans.as_deref_mut() {
            spans.push((p.start, copied, out_start, out.len()));
        }
    }
    out.push_str(&sql[copied..]);
    out
}

/// A cheap pre-check: `false` means `sql` certainly holds no placeholder.
#[inline]
pub fn might_contain_placeholder(sql: &str) -> bool {
    sql.contains("{{") || sql.contains("<<")
}

struct Scanner<'a> {
    sql: &'a str,
    pos: usize,
}

impl<'a> Scanner<'a> {
    fn next_placeholder(&mut self) -> Result<Option<Placeholder<'a>>, TemplateError> {
        let bytes = self.sql.as_bytes();
        while self.pos + 1 < bytes.len() {
            let i = self.pos;
            let (open, close) = match (bytes[i], bytes[i + 1]) {
                (b'{', b'{') => ("{{", b'}'),
                (b'<', b'<') => ("<<", b'>'),
                _ => {
                    self.pos += 1;
                    continue;
                }
            };
            if let Some(p) = self.parse_at(i, open, close)? {
                self.pos = p.end;
                return Ok(Some(p));
            }
            self.pos += 1;
        }
        self.pos = bytes.len();
        Ok(None)
    }

    /// Parses a placeholder starting at `start`, or returns `None` when the text there cannot be
    /// one (an array literal, a shift operator).
    fn parse_at(
        &self,
        start: usize,
        open: &'static str,
        close: u8,
    ) -> Result<Option<Placeholder<'a>>, TemplateError> {
        let bytes = self.sql.as_bytes();
        let mut k = start + 2;
        // `{{ tables.x }}` is a mistake worth reporting; `1 << tables` style text is not ours.
        let ws_start = k;
        if open == "{{" {
            while k < bytes.len() && bytes[k].is_ascii_whitespace() {
                k += 1;
            }
        }
        let had_space = k > ws_start;
        let word_start = k;
        while k < bytes.len() && (bytes[k].is_ascii_alphanumeric() || bytes[k] == b'_') {
            k += 1;
        }
        let word = &self.sql[word_start..k];
        let next = bytes.get(k).copied();
        let known = word == "tables" || word == "schema";
        if !known {
            let starts_like_name = word
                .as_bytes()
                .first()
                .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_');
            if starts_like_name && !had_space && (next == Some(b'.') || next == Some(close)) {
                let end = self.scan_to_close(k, close);
                return Err(self.malformed(
                    start,
                    end,
                    format!("unknown placeholder kind `{word}`"),
                ));
            }
            return Ok(None);
        }
        if had_space {
            let end = self.scan_to_close(k, close);
            return Err(self.malformed(
                start,
                end,
                "whitespace is not allowed inside a placeholder".into(),
            ));
        }
        if word == "schema" {
            return match self.expect_close(k, close) {
                Some(end) => Ok(Some(Placeholder {
                    start,
                    end,
                    text: &self.sql[start..end],
                    target: Target::Schema,
                })),
                None => Err(self.unclosed_or_unexpected(start, k, close, "`schema` takes no name")),
            };
        }
        // `tables`
        if next != Some(b'.') {
            return Err(self.unclosed_or_unexpected(
                start,
                k,
                close,
                "`tables` must be followed by `.` and a table name",
            ));
        }
        let mut parts: Vec<(usize, &'a str)> = Vec::with_capacity(2);
        loop {
            k += 1; // the dot
            let part_start = k;
            while k < bytes.len()
                && !matches!(bytes[k], b'.' | b'}' | b'>' | b'{' | b'<')
                && !bytes[k].is_ascii_whitespace()
            {
                k += 1;
            }
            parts.push((part_start, &self.sql[part_start..k]));
            if bytes.get(k) != Some(&b'.') {
                break;
            }
        }
        let end = match self.expect_close(k, close) {
            Some(end) => end,
            None => {
                return Err(self.unclosed_or_unexpected(start, k, close, "unexpected character"));
            }
        };
        let text = &self.sql[start..end];
        let (schema, name) = match parts.as_slice() {
            [(_, name)] => (None, *name),
            [(_, schema), (_, name)] => (Some(*schema), *name),
            _ => {
                return Err(self.malformed(
                    start,
                    end,
                    "too many parts: use tables.NAME or tables.SCHEMA.NAME".into(),
                ));
            }
        };
        if name.is_empty() {
            return Err(self.malformed(start, end, "the table name is empty".into()));
        }
        if let Some(s) = schema {
            if s.is_empty() {
                return Err(self.malformed(start, end, "the schema name is empty".into()));
            }
            validate_identifier(s, IdentifierKind::Schema)
                .map_err(|e| self.invalid_identifier(start, end, e))?;
        }
        validate_identifier(name, IdentifierKind::Table)
            .map_err(|e| self.invalid_identifier(start, end, e))?;
        Ok(Some(Placeholder {
            start,
            end,
            text,
            target: Target::Table { schema, name },
        }))
    }

    /// `Some(end)` when the two closing characters stand at `k`.
    fn expect_close(&self, k: usize, close: u8) -> Option<usize> {
        let bytes = self.sql.as_bytes();
        (bytes.get(k) == Some(&close) && bytes.get(k + 1) == Some(&close)).then_some(k + 2)
    }

    /// How far to show a broken placeholder: through its closing pair, or to the end of the word.
    fn scan_to_close(&self, from: usize, close: u8) -> usize {
        let bytes = self.sql.as_bytes();
        let mut k = from;
        while k < bytes.len() && bytes[k] != b'\n' && k < from + 80 {
            if bytes[k] == close && bytes.get(k + 1) == Some(&close) {
                return k + 2;
            }
            k += 1;
        }
        let mut k = from;
        while k < bytes.len() && !bytes[k].is_ascii_whitespace() {
            k += 1;
        }
        k
    }

    fn unclosed_or_unexpected(
        &self,
        start: usize,
        k: usize,
        close: u8,
        why: &str,
    ) -> TemplateError {
        let bytes = self.sql.as_bytes();
        let closing = if close == b'}' { "}}" } else { ">>" };
        let rest_has_close = self.sql[k.min(bytes.len())..]
            .split(|c: char| c.is_ascii_whitespace())
            .next()
            .is_some_and(|w| w.contains(closing));
        if k >= bytes.len() || bytes[k].is_ascii_whitespace() || !rest_has_close {
            let end = k.min(bytes.len());
            self.malformed(
                start,
                end,
                format!("unclosed placeholder: expected `{closing}`"),
            )
        } else {
            let end = self.scan_to_close(k, close);
            self.malformed(start, end, why.to_string())
        }
    }

    fn malformed(&self, start: usize, end: usize, why: String) -> TemplateError {
        TemplateError {
            placeholder: self.sql[start..end.max(start)].to_string(),
            offset: start,
            kind: TemplateErrorKind::Malformed(why),
        }
    }

    fn invalid_identifier(&self, start: usize, end: usize, e: InvalidIdentifier) -> TemplateError {
        TemplateError {
            placeholder: self.sql[start..end].to_string(),
            offset: start,
            kind: TemplateErrorKind::InvalidIdentifier(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(sql: &str, schema: Option<&str>) -> String {
        render(sql, schema).unwrap().into_owned()
    }

    #[test]
    fn renders_with_schema() {
        let s = Some("myservice");
        assert_eq!(
            r("SELECT * FROM {{tables.users}}", s),
            "SELECT * FROM \"myservice\".users"
        );
        assert_eq!(
            r("SELECT * FROM <<tables.users>>", s),
            "SELECT * FROM \"myservice\".users"
        );
        assert_eq!(r("{{tables.billing.plans}}", s), "\"billing\".plans");
        assert_eq!(r("<<tables.billing.plans>>", s), "\"billing\".plans");
        assert_eq!(
            r("SET search_path TO {{schema}}", s),
            "SET search_path TO \"myservice\""
        );
        assert_eq!(r("{{schema}}.users", s), "\"myservice\".users");
        assert_eq!(
            r("{{tables.Users}}", Some("CamelCase")),
            "\"CamelCase\".Users"
        );
    }

    #[test]
    fn renders_without_schema() {
        assert_eq!(
            r("SELECT * FROM {{tables.users}}", None),
            "SELECT * FROM users"
        );
        assert_eq!(
            r("SELECT * FROM <<tables.users>>", None),
            "SELECT * FROM users"
        );
        assert_eq!(r("{{tables.billing.plans}}", None), "\"billing\".plans");
        assert_eq!(r("{{schema}}.users", None), "users");
        assert_eq!(r("<<schema>>.users", None), "users");
        assert_eq!(
            r("SET search_path TO {{schema}}", None),
            "SET search_path TO public"
        );
    }

    #[test]
    fn replaces_inside_literals_comments_and_dollar_quotes() {
        let sql = "CREATE FUNCTION f() RETURNS int AS $$ SELECT count(*)::int FROM {{tables.users}} $$ LANGUAGE sql; -- {{tables.users}}\nSELECT '{{tables.users}}'";
        assert_eq!(
            r(sql, Some("s")),
            "CREATE FUNCTION f() RETURNS int AS $$ SELECT count(*)::int FROM \"s\".users $$ LANGUAGE sql; -- \"s\".users\nSELECT '\"s\".users'"
        );
    }

    #[test]
    fn leaves_non_placeholders_alone() {
        for sql in [
            "SELECT '{{1,2},{3,4}}'::int[]",
            "SELECT 1 << 2",
            "SELECT flags<<shift FROM t",
            "SELECT '{{}}'",
            "SELECT '{\"a\": {\"b\": 1}}'::jsonb",
            "SELECT 1",
        ] {
            assert_eq!(render(sql, Some("s")).unwrap(), sql);
            assert!(matches!(render(sql, Some("s")).unwrap(), Cow::Borrowed(_)));
        }
    }

    #[test]
    fn rendering_is_idempotent() {
        let once = r(
            "SELECT * FROM {{tables.users}} JOIN {{tables.x.y}}",
            Some("s"),
        );
        assert_eq!(r(&once, Some("s")), once);
    }

    fn err(sql: &str) -> TemplateError {
        render(sql, Some("s")).unwrap_err()
    }

    #[test]
    fn malformed_placeholders_are_errors_with_offsets() {
        let e = err("SELECT * FROM {{tables.}}");
        assert_eq!(e.offset, 14);
        assert_eq!(e.placeholder, "{{tables.}}");
        assert!(e.to_string().contains("the table name is empty"), "{e}");

        let e = err("SELECT * FROM <<tables.users WHERE id = 1");
        assert_eq!(e.offset, 14);
        assert_eq!(e.placeholder, "<<tables.users");
        assert!(
            e.to_string()
                .contains("unclosed placeholder: expected `>>`"),
            "{e}"
        );

        let e = err("SELECT * FROM <<tables.users");
        assert!(e.to_string().contains("unclosed"), "{e}");

        let e = err("SELECT * FROM {{table.users}}");
        assert_eq!(e.placeholder, "{{table.users}}");
        assert!(
            e.to_string().contains("unknown placeholder kind `table`"),
            "{e}"
        );

        let e = err("SELECT * FROM {{TABLES.users}}");
        assert!(
            e.to_string().contains("unknown placeholder kind `TABLES`"),
            "{e}"
        );

        let e = err("SELECT * FROM {{ tables.users }}");
        assert!(e.to_string().contains("whitespace"), "{e}");

        let e = err("x {{tables.a.b.c}}");
        assert!(e.to_string().contains("too many parts"), "{e}");

        let e = err("x {{tables}}");
        assert!(e.to_string().contains("must be followed by `.`"), "{e}");

        let e = err("x {{tables.users>>");
        assert!(e.to_string().contains("unclosed"), "{e}");

        let e = err("x {{schema.users}}");
        assert!(e.to_string().contains("`schema` takes no name"), "{e}");
    }

    #[test]
    fn invalid_identifiers_are_errors() {
        for (sql, needle) in [
            ("{{tables.9users}}", "invalid table name `9users`"),
            (
                "{{tables.bad-schema.users}}",
                "invalid schema name `bad-schema`",
            ),
            ("{{tables.bad;.users}}", "invalid schema name `bad;`"),
            ("{{tables.bad\".users}}", "invalid schema name `bad\"`"),
        ] {
            let e = err(sql);
            assert!(
                matches!(e.kind, TemplateErrorKind::InvalidIdentifier(_)),
                "{sql}"
            );
            assert!(e.to_string().contains(needle), "{sql}: {e}");
        }
        let long = format!("{{{{tables.{}}}}}", "a".repeat(64));
        assert!(err(&long).to_string().contains("longer than 63"));
        // An injection attempt never reaches the server.
        let e = err("SELECT * FROM {{tables.users; DROP TABLE x}}");
        assert!(e.to_string().contains("users;"), "{e}");
    }

    #[test]
    fn invalid_schema_argument_is_an_error() {
        let e = render("SELECT 1", Some("bad schema")).unwrap_err();
        assert!(
            e.to_string().contains("invalid schema name `bad schema`"),
            "{e}"
        );
    }

    #[test]
    fn maps_rendered_offsets_back() {
        let sql = "SELECT x FROM {{tables.users}} WHERE y = 1";
        let (out, map) = render_with_map(sql, Some("svc")).unwrap();
        assert_eq!(out, "SELECT x FROM \"svc\".users WHERE y = 1");
        let y_rendered = out.find("y =").unwrap();
        assert_eq!(map.to_template(y_rendered), sql.find("y =").unwrap());
        assert_eq!(map.to_template(3), 3);
        assert_eq!(
            map.to_template(out.find("users").unwrap()),
            sql.find("{{").unwrap()
        );
        let (out, map) = render_with_map("a {{schema}}.t b", None).unwrap();
        assert_eq!(out, "a t b");
        assert_eq!(map.to_template(out.find('b').unwrap()), 15);
    }

    #[test]
    fn lists_placeholders() {
        let found = placeholders("a {{tables.x}} b <<schema>> c <<tables.s.y>>").unwrap();
        assert_eq!(found.len(), 3);
        assert_eq!(found[0].text, "{{tables.x}}");
        assert_eq!(found[0].start, 2);
        assert_eq!(found[1].target, Target::Schema);
        assert_eq!(
            found[2].target,
            Target::Table {
                schema: Some("s"),
                name: "y"
            }
        );
    }
}
