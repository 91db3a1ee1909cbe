//! Where a recorded query is written. `.sqlx/` records no source location, only the SQL and its
//! hash, so the Rust files are scanned for the query macros' string literals (`tsql!`,
//! `tsql_as!`, `tsql_scalar!`, sqlx's `query!` family), each is rendered as the macro renders
//! it (for `tsql!`: placeholders and marker for a module's schema) and hashed as sqlx hashes
//! it; a literal whose hash is a query's is that query's call site.
//!
//! The scan is a small lexer, not a Rust parser: it reads a macro's first string literal(s) (after
//! `module = "…",` and a `query_as!` record type) and nothing else. A query written any other way
//! (SQL built by another macro, named parameters rewritten at compile time) is simply not found,
//! and its location is left out.

use std::collections::{HashMap, HashSet};

use pgdbm_core::checked::sql_hash;
use pgdbm_core::{compiled, template};

/// A query's call site.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Location {
    /// The file, as the caller named it.
    pub file: String,
    /// The line of the macro's name, from 1.
    pub line: usize,
}

/// pgdbm's macros: their SQL is rendered for a schema before sqlx hashes it.
const TSQL: &[&str] = &["tsql", "tsql_as", "tsql_scalar"];
/// sqlx's: their SQL is hashed as written.
const SQLX: &[&str] = &[
    "query",
    "query_as",
    "query_scalar",
    "query_unchecked",
    "query_as_unchecked",
    "query_scalar_unchecked",
];

/// The call sites of the queries whose hashes are `wanted`, found in `files` ((name, text)
/// pairs); a `tsql!` literal is rendered for each of `schemas` (and for none). The first call
/// site found is kept.
pub(crate) fn locate(
    files: &[(String, String)],
    schemas: &[String],
    wanted: &HashSet<&str>,
) -> HashMap<String, Location> {
    let mut found = HashMap::new();
    for (file, text) in files {
        if found.len() == wanted.len() {
            break;
        }
        let text = text.replace("\r\n", "\n");
        for (at, sql, tsql) in macro_literals(&text) {
            let mut candidates = Vec::new();
            if tsql {
                candidates.extend(
                    schemas
                        .iter()
                        .filter_map(|s| compiled::render_marked(&sql, s).ok()),
                );
                candidates.extend(template::render(&sql, None).ok().map(|r| r.into_owned()));
            } else {
                candidates.push(sql);
            }
            for c in candidates {
                let hash = sql_hash(&c);
                if wanted.contains(hash.as_str()) && !found.contains_key(&hash) {
                    let line = text[..at].matches('\n').count() + 1;
                    found.insert(
                        hash,
                        Location {
                            file: file.clone(),
                            line,
                        },
                    );
                }
            }
        }
    }
    found
}

/// Every query macro call in `text` whose SQL is string literals: (byte offset of the macro's
/// name, the SQL, whether it is one of pgdbm's).
fn macro_literals(text: &str) -> Vec<(usize, String, bool)> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    for (bang, _) in text.match_indices('!') {
        let start = text[..bang]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(0, |i| i + 1);
        let name = &text[start..bang];
        let tsql = TSQL.contains(&name);
        if !tsql && !SQLX.contains(&name) {
            continue;
        }
        let mut c = Cursor { text, at: bang + 1 };
        c.skip_blank();
        if !matches!(bytes.get(c.at), Some(b'(' | b'[' | b'{')) {
            continue;
        }
        c.at += 1;
        if let Some(sql) = c.sql_argument(tsql, name.ends_with("_as")) {
            out.push((start, sql, tsql));
        }
    }
    out
}

/// A position in Rust source text.
struct Cursor<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Cursor<'a> {
    fn rest(&self) -> &'a str {
        &self.text[self.at..]
    }

    /// Skips whitespace and comments.
    fn skip_blank(&mut self) {
        loop {
            let rest = self.rest();
            let trimmed = rest.trim_start();
            self.at += rest.len() - trimmed.len();
            if trimmed.starts_with("//") {
                self.at += trimmed.find('\n').unwrap_or(trimmed.len());
            } else if trimmed.starts_with("/*") {
                self.at += block_comment_len(trimmed);
            } else {
                return;
            }
        }
    }

    /// Consumes `token` (after blanks) if it comes next.
    fn eat(&mut self, token: &str) -> bool {
        self.skip_blank();
        if self.rest().starts_with(token) {
            self.at += token.len();
            true
        } else {
            false
        }
    }

    /// The SQL of a macro's arguments: after `module = "…",` (pgdbm's) and a record type
    /// (`_as`), string literals joined with `+`.
    fn sql_argument(&mut self, tsql: bool, record: bool) -> Option<String> {
        if tsql {
            let save = self.at;
            if self.eat("module") && self.eat("=") {
                self.string()?;
                if !self.eat(",") {
                    return None;
                }
            } else {
                self.at = save;
            }
        }
        if record {
            self.skip_type()?;
        }
        let mut sql = self.string()?;
        while self.eat("+") {
            sql.push_str(&self.string()?);
        }
        Some(sql)
    }

    /// Skips a record type up to and including the comma that ends it.
    fn skip_type(&mut self) -> Option<()> {
        let mut depth = 0usize;
        for (i, ch) in self.rest().char_indices() {
            match ch {
                '<' | '(' | '[' => depth += 1,
                '>' | ')' | ']' => depth = depth.checked_sub(1)?,
                ',' if depth == 0 => {
                    self.at += i + 1;
                    return Some(());
                }
                '"' | ';' | '{' | '}' => return None,
                _ => {}
            }
        }
        None
    }

    /// A string literal's value (`"…"` with escapes, or raw `r#"…"#`), if one comes next.
    fn string(&mut self) -> Option<String> {
        self.skip_blank();
        let rest = self.rest();
        if let Some(raw) = rest.strip_prefix('r') {
            let hashes = raw.len() - raw.trim_start_matches('#').len();
            let body = raw[hashes..].strip_prefix('"')?;
            let close = format!("\"{}", "#".repeat(hashes));
            let end = body.find(&close)?;
            self.at += 1 + hashes + 1 + end + close.len();
            return Some(body[..end].to_string());
        }
        let body = rest.strip_prefix('"')?;
        let (value, len) = unescape(body)?;
        self.at += 1 + len;
        Some(value)
    }
}

/// The length of the (nested) block comment `s` starts with.
fn block_comment_len(s: &str) -> usize {
    let mut depth = 0;
    let mut i = 0;
    while i < s.len() {
        if s[i..].starts_with("/*") {
            depth += 1;
            i += 2;
        } else if s[i..].starts_with("*/") {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += s[i..].chars().next().map_or(1, char::len_utf8);
        }
    }
    s.len()
}

/// The value of a string literal whose opening quote came just before `body`, and how many
/// bytes it took up to and including its closing quote.
fn unescape(body: &str) -> Option<(String, usize)> {
    let mut value = String::new();
    let mut chars = body.char_indices().peekable();
    while let Some((i, ch)) = chars.next() {
        match ch {
            '"' => return Some((value, i + 1)),
            '\\' => match chars.next()?.1 {
                'n' => value.push('\n'),
                'r' => value.push('\r'),
                't' => value.push('\t'),
                '0' => value.push('\0'),
                '\\' => value.push('\\'),
                '\'' => value.push('\''),
                '"' => value.push('"'),
                'x' => {
                    let hex: String = (0..2).filter_map(|_| chars.next().map(|c| c.1)).collect();
                    value.push(char::from(u8::from_str_radix(&hex, 16).ok()?));
                }
                'u' => {
                    chars.next().filter(|c| c.1 == '{')?;
                    let mut hex = String::new();
                    for (_, c) in chars.by_ref() {
                        if c == '}' {
                            break;
                        }
                        if c != '_' {
                            hex.push(c);
                        }
                    }
                    value.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                // A line continuation: the newline and the next line's leading blanks go.
                '\n' => while chars.next_if(|c| c.1.is_whitespace()).is_some() {},
                _ => return None,
            },
            c => value.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn literals(text: &str) -> Vec<(String, bool)> {
        macro_literals(text)
            .into_iter()
            .map(|(_, sql, tsql)| (sql, tsql))
            .collect()
    }

    #[test]
    fn reads_the_sql_of_each_macro_form() {
        let text = r####"
            let a = sqlx::query!("SELECT 1 WHERE x = $1", x);
            let b = pgdbm::tsql_as!(User, "SELECT id FROM " + "{{tables.users}}");
            let c = tsql!(module = "billing", r#"SELECT "q" FROM t"#);
            let d = sqlx::query_as!(Pair<i64, i64>, "SELECT 1, \
                     2 /* \"x\" */\n");
            let e = tsql_scalar! ( // a comment
                "SELECT\t\u{41}" );
            let f = query_str!("not a query macro");
            let g = sqlx::query!(sql_variable);
        "####;
        assert_eq!(
            literals(text),
            vec![
                ("SELECT 1 WHERE x = $1".to_string(), false),
                ("SELECT id FROM {{tables.users}}".to_string(), true),
                ("SELECT \"q\" FROM t".to_string(), true),
                ("SELECT 1, 2 /* \"x\" */\n".to_string(), false),
                ("SELECT\tA".to_string(), true),
            ]
        );
    }

    #[test]
    fn finds_the_line_of_the_query_with_that_hash() {
        let rendered = compiled::render_marked("SELECT id FROM {{tables.users}}", "shop").unwrap();
        let plain = "SELECT email FROM demo.users WHERE id = $1";
        let wanted_hashes = [sql_hash(&rendered), sql_hash(plain), sql_hash("SELECT 2")];
        let wanted: HashSet<&str> = wanted_hashes.iter().map(String::as_str).collect();
        let files = vec![(
            "src/main.rs".to_string(),
            "fn a() {}\nfn b() {\n    let _ = tsql!(\"SELECT id FROM {{tables.users}}\");\n    let _ = sqlx::query!(\"SELECT email FROM demo.users WHERE id = $1\", 1i64);\n}\n".to_string(),
        )];
        let found = locate(&files, &["other".into(), "shop".into()], &wanted);
        let line = |h: &str| found.get(h).map(|l| (l.file.as_str(), l.line));
        assert_eq!(line(&wanted_hashes[0]), Some(("src/main.rs", 3)));
        assert_eq!(line(&wanted_hashes[1]), Some(("src/main.rs", 4)));
        assert_eq!(line(&wanted_hashes[2]), None);
    }
}
