//! Splitting a SQL script into statements, for `-- pgdbm:no-transaction` files (each statement
//! runs on its own, so `CREATE INDEX CONCURRENTLY` works) and for locating errors.

/// One statement of a script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statement<'a> {
    /// The statement, trimmed, with its `;` if it had one.
    pub text: &'a str,
    /// Byte offset of `text` in the script.
    pub offset: usize,
}

/// Splits `sql` at top-level `;`, understanding `'…'` strings (with `''`), `E'…'` strings (with
/// backslash escapes), `"…"` identifiers, `$$…$$` / `$tag$…$tag$` bodies, `-- …` comments and
/// nested `/* … */` comments. Empty and comment-only pieces are dropped, and so are the comments
/// that lead a statement.
///
/// ```
/// use pgdbm_core::migrations::split_statements;
/// let s = split_statements("CREATE TABLE t (a text DEFAULT ';');\n-- x;\nCREATE FUNCTION f() RETURNS int AS $b$ SELECT 1; $b$ LANGUAGE sql;");
/// assert_eq!(s.len(), 2);
/// assert_eq!(s[1].text, "CREATE FUNCTION f() RETURNS int AS $b$ SELECT 1; $b$ LANGUAGE sql;");
/// ```
pub fn split_statements(sql: &str) -> Vec<Statement<'_>> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\'' => {
                let escapes =
                    i > 0 && matches!(b[i - 1], b'E' | b'e') && (i < 2 || !is_ident_byte(b[i - 2]));
                i = skip_quoted(b, i, b'\'', escapes);
            }
            b'"' => i = skip_quoted(b, i, b'"', false),
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => i = skip_block_comment(b, i),
            b'$' if i == 0 || !is_ident_byte(b[i - 1]) => match dollar_tag(b, i) {
                Some(tag_len) => {
                    let tag = &b[i..i + tag_len];
                    let body = i + tag_len;
                    i = find(b, body, tag).map_or(b.len(), |end| end + tag_len);
                }
                None => i += 1,
            },
            b';' => {
                push(sql, start, i + 1, &mut out);
                i += 1;
                start = i;
            }
            _ => i += 1,
        }
    }
    push(sql, start, b.len(), &mut out);
    out
}

/// Returns the index just past the block comment opening at `i` (PostgreSQL's nest), or the
/// end of the text if it is unclosed.
fn skip_block_comment(b: &[u8], mut i: usize) -> usize {
    let mut depth = 0usize;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            depth += 1;
            i += 2;
        } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    b.len()
}

fn is_ident_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80
}

/// Returns the index just past the closing quote (or the end of the text if unclosed).
fn skip_quoted(b: &[u8], open: usize, quote: u8, backslash_escapes: bool) -> usize {
    let mut i = open + 1;
    while i < b.len() {
        if backslash_escapes && b[i] == b'\\' {
            i += 2;
            continue;
        }
        if b[i] == quote {
            if b.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    b.len()
}

/// The length of a dollar-quote tag (`$$` or `$tag$`) starting at `i`; `None` for `$1`.
fn dollar_tag(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    if b.get(j).is_some_and(|c| c.is_ascii_digit()) {
        return None;
    }
    while j < b.len() && is_ident_byte(b[j]) {
        j += 1;
    }
    (b.get(j) == Some(&b'$')).then_some(j + 1 - i)
}

fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

fn push<'a>(sql: &'a str, start: usize, end: usize, out: &mut Vec<Statement<'a>>) {
    let piece = &sql[start..end];
    if only_comments(piece) {
        return;
    }
    // Leading comments belong to no statement; dropping them makes `text` start at the SQL
    // itself (and error reports show the statement, not the comment above it).
    let lead = leading_comments_len(piece);
    let text = piece[lead..].trim_end();
    out.push(Statement {
        text,
        offset: start + lead,
    });
}

/// Length of the white space and comments at the start of `piece`.
fn leading_comments_len(piece: &str) -> usize {
    let b = piece.as_bytes();
    let mut i = 0;
    loop {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if b[i..].starts_with(b"--") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            i = skip_block_comment(b, i);
        } else {
            return i;
        }
    }
}

fn only_comments(text: &str) -> bool {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_whitespace() || b[i] == b';' {
            i += 1;
        } else if b[i] == b'-' && b.get(i + 1) == Some(&b'-') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            i = skip_block_comment(b, i);
        } else {
            return false;
        }
    }
    true
}

/// Line and column (both 1-based; the column counts characters) of a byte offset.
pub fn line_col(text: &str, byte_offset: usize) -> (usize, usize) {
    let mut end = byte_offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |p| p + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

/// The byte offset of PostgreSQL's 1-based *character* error position in `text`.
pub fn char_position_to_byte_offset(text: &str, position: usize) -> usize {
    text.char_indices()
        .nth(position.saturating_sub(1))
        .map_or(text.len(), |(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(sql: &str) -> Vec<&str> {
        split_statements(sql).into_iter().map(|s| s.text).collect()
    }

    #[test]
    fn splits_plain_statements() {
        assert_eq!(
            texts("SELECT 1; SELECT 2;\n\nSELECT 3"),
            ["SELECT 1;", "SELECT 2;", "SELECT 3"]
        );
        assert_eq!(texts(";;  ;"), Vec::<&str>::new());
    }

    #[test]
    fn keeps_quotes_comments_and_dollar_bodies_intact() {
        let sql = "INSERT INTO t VALUES ('a;b', 'it''s; fine');\n\
                   SELECT \"weird;name\" FROM t;\n\
                   SELECT E'back\\'slash;';\n\
                   /* outer /* nested; */ still comment; */ SELECT 4;\n\
                   CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql;\n\
                   CREATE FUNCTION g() RETURNS int AS $body$ BEGIN RETURN 1; END; $body$ LANGUAGE plpgsql;\n\
                   SELECT $1::int; -- trailing; comment\n";
        let t = texts(sql);
        assert_eq!(t.len(), 7, "{t:#?}");
        assert_eq!(t[0], "INSERT INTO t VALUES ('a;b', 'it''s; fine');");
        assert_eq!(t[1], "SELECT \"weird;name\" FROM t;");
        assert_eq!(t[2], "SELECT E'back\\'slash;';");
        assert_eq!(t[3], "SELECT 4;");
        assert!(t[4].contains("$$ SELECT 1; $$"));
        assert!(t[5].contains("BEGIN RETURN 1; END;"));
        assert_eq!(t[6], "SELECT $1::int;");
    }

    #[test]
    fn no_transaction_file_with_three_statements() {
        let sql = "-- pgdbm:no-transaction\nCREATE TABLE IF NOT EXISTS {{tables.t}} (id int);\nCREATE INDEX CONCURRENTLY IF NOT EXISTS t_id ON {{tables.t}} (id);\nCREATE FUNCTION f() RETURNS int AS $body$ SELECT 1; $body$ LANGUAGE sql;\n";
        let s = split_statements(sql);
        assert_eq!(s.len(), 3);
        assert!(s[0].text.starts_with("CREATE TABLE"));
        assert_eq!(&sql[s[0].offset..s[0].offset + 12], "CREATE TABLE");
        assert_eq!(&sql[s[1].offset..s[1].offset + 12], "CREATE INDEX");
    }

    #[test]
    fn unclosed_quotes_take_the_rest() {
        assert_eq!(texts("SELECT 'a; b"), ["SELECT 'a; b"]);
        assert_eq!(texts("SELECT $x$ a; b"), ["SELECT $x$ a; b"]);
    }

    #[test]
    fn positions() {
        let text = "ab\ncdé\nf";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 3), (2, 1));
        assert_eq!(line_col(text, 7), (2, 4)); // after the two-byte é
        assert_eq!(line_col(text, 8), (3, 1));
        assert_eq!(char_position_to_byte_offset(text, 1), 0);
        assert_eq!(char_position_to_byte_offset(text, 7), 7);
        assert_eq!(char_position_to_byte_offset(text, 99), text.len());
    }
}
