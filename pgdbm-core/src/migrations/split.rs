//! Splitting a SQL script into statements, for `-- pgdbm:no-transaction` files (each statement
//! runs on its own, so `CREATE INDEX CONCURRENTLY` works) and for locating errors.

use crate::sql_lex::{TokenKind, tokens};

/// One statement of a script.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Statement<'a> {
    /// The statement, trimmed, with its `;` if it had one.
    pub text: &'a str,
    /// Byte offset of `text` in the script.
    pub offset: usize,
}

/// Splits `sql` at top-level `;`, understanding `'…'` strings (with `''`), `E'…'` strings (with
/// backslash escapes), `"…"` identifiers, `$$…$$` / `$tag$…$tag$` bodies (`$1` is a parameter,
/// not a quote), `-- …` comments and nested `/* … */` comments.
///
/// Like psql, a `;` inside parentheses (a multi-action `CREATE RULE … DO (…; …)`) or inside the
/// `BEGIN ATOMIC … END` body of `CREATE [OR REPLACE] FUNCTION|PROCEDURE` does not end the
/// statement. Each statement is trimmed and keeps its `;`; empty and comment-only pieces are
/// dropped (pgdbm keeps a trailing comment-only piece), and so are the comments that lead a
/// statement. An unclosed quote or comment takes the rest of the text.
///
/// ```
/// use pgdbm_core::migrations::split_statements;
/// let s = split_statements("CREATE TABLE t (a text DEFAULT ';');\n-- x;\nCREATE FUNCTION f() RETURNS int AS $b$ SELECT 1; $b$ LANGUAGE sql;");
/// assert_eq!(s.len(), 2);
/// assert_eq!(s[1].text, "CREATE FUNCTION f() RETURNS int AS $b$ SELECT 1; $b$ LANGUAGE sql;");
/// assert_eq!(s[1].offset, 43);
/// ```
pub fn split_statements(sql: &str) -> Vec<Statement<'_>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut state = StatementState::default();
    for t in tokens(sql) {
        match t.kind {
            TokenKind::Punct(b'(') => state.parens += 1,
            TokenKind::Punct(b')') => state.parens = state.parens.saturating_sub(1),
            TokenKind::Punct(b';') if state.parens == 0 && state.begin_depth == 0 => {
                push(sql, start, t.start + 1, &mut out);
                start = t.start + 1;
                state = StatementState::default();
            }
            TokenKind::Word => state.word(t.text.as_bytes()),
            _ => {}
        }
    }
    push(sql, start, sql.len(), &mut out);
    out
}

/// What the splitter tracks about the statement it is in.
#[derive(Default)]
struct StatementState {
    /// Open parentheses.
    parens: usize,
    /// The first words of the statement (up to four), lowercased, to recognise
    /// `CREATE [OR REPLACE] FUNCTION|PROCEDURE`.
    head: [Option<Head>; 4],
    words: usize,
    /// Open `BEGIN [ATOMIC]` / `CASE` blocks of a routine body, closed by `END`.
    begin_depth: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Head {
    Create,
    Or,
    Replace,
    Routine,
}

impl StatementState {
    fn word(&mut self, word: &[u8]) {
        let is = |kw: &str| word.eq_ignore_ascii_case(kw.as_bytes());
        if self.words < self.head.len() {
            self.head[self.words] = if is("create") {
                Some(Head::Create)
            } else if is("or") {
                Some(Head::Or)
            } else if is("replace") {
                Some(Head::Replace)
            } else if is("function") || is("procedure") {
                Some(Head::Routine)
            } else {
                None
            };
        }
        self.words += 1;
        if !self.in_routine() || self.parens > 0 {
            return;
        }
        // A SQL-standard body (`BEGIN ATOMIC … END`) holds `;`-terminated statements; CASE …
        // END can nest in it, and only matters once inside a body.
        if is("begin") || (is("case") && self.begin_depth > 0) {
            self.begin_depth += 1;
        } else if is("end") {
            self.begin_depth = self.begin_depth.saturating_sub(1);
        }
    }

    fn in_routine(&self) -> bool {
        use Head::*;
        matches!(
            self.head,
            [Some(Create), Some(Routine), ..]
                | [Some(Create), Some(Or), Some(Replace), Some(Routine)]
        )
    }
}

fn push<'a>(sql: &'a str, start: usize, end: usize, out: &mut Vec<Statement<'a>>) {
    let piece = &sql[start..end];
    // Leading comments belong to no statement; dropping them makes `text` start at the SQL
    // itself (and error reports show the statement, not the comment above it).
    let lead = leading_comments_len(piece);
    let text = piece[lead..].trim_end();
    if text.is_empty() || text == ";" {
        return;
    }
    out.push(Statement {
        text,
        offset: start + lead,
    });
}

/// Length of the white space and comments at the start of `piece`.
fn leading_comments_len(piece: &str) -> usize {
    tokens(piece)
        .find(|t| t.kind != TokenKind::Comment)
        .map_or(piece.len(), |t| t.start)
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
        assert_eq!(texts(""), Vec::<&str>::new());
        assert_eq!(texts(" \u{a0}\n"), Vec::<&str>::new());
        assert_eq!(texts("\u{3000}SELECT 1;\u{3000}"), ["SELECT 1;"]);
        let s = split_statements("  SELECT 1 ;\n\tSELECT 2;");
        assert_eq!(
            s[0],
            Statement {
                text: "SELECT 1 ;",
                offset: 2
            }
        );
        assert_eq!(
            s[1],
            Statement {
                text: "SELECT 2;",
                offset: 14
            }
        );
    }

    #[test]
    fn keeps_quotes_comments_and_dollar_bodies_intact() {
        let sql = "INSERT INTO t VALUES ('a;b', 'it''s; fine');\n\
                   SELECT \"weird;name\", \"a\"\"b;\" FROM t;\n\
                   SELECT E'back\\'slash;', e'\\\\', 'x';\n\
                   /* outer /* nested; */ still comment; */ SELECT 4;\n\
                   CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql;\n\
                   CREATE FUNCTION g() RETURNS int AS $body$ BEGIN RETURN $$;$$; END; $body$ LANGUAGE plpgsql;\n\
                   SELECT $1::int; -- trailing; comment\n\
                   SELECT a$b$c FROM t;\n\
                   SELECT $_$;$_$, $é$;$é$;";
        let t = texts(sql);
        assert_eq!(
            t,
            [
                "INSERT INTO t VALUES ('a;b', 'it''s; fine');",
                "SELECT \"weird;name\", \"a\"\"b;\" FROM t;",
                "SELECT E'back\\'slash;', e'\\\\', 'x';",
                "SELECT 4;",
                "CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql;",
                "CREATE FUNCTION g() RETURNS int AS $body$ BEGIN RETURN $$;$$; END; $body$ LANGUAGE plpgsql;",
                "SELECT $1::int;",
                "SELECT a$b$c FROM t;",
                "SELECT $_$;$_$, $é$;$é$;",
            ]
        );
    }

    #[test]
    fn e_prefix_only_as_a_whole_word() {
        // `CASE'…'`/`type'…'` are not E-strings: a backslash there is an ordinary character.
        assert_eq!(
            texts("SELECT date'2020-01-01', some'\\'; SELECT 2;"),
            ["SELECT date'2020-01-01', some'\\';", "SELECT 2;"]
        );
        assert_eq!(
            texts("SELECT E'\\\\'; SELECT 2;"),
            ["SELECT E'\\\\';", "SELECT 2;"]
        );
        // 1e5 is a number, not an E-string prefix.
        assert_eq!(
            texts("SELECT 1e5;SELECT 'a'"),
            ["SELECT 1e5;", "SELECT 'a'"]
        );
    }

    #[test]
    fn comments_are_dropped_around_statements_only() {
        let sql = "-- header; with a semicolon\n/* block; */\nSELECT 1 /* inline; */ -- x;\n;\n-- trailing only;\n/* and /* nested */ */";
        let s = split_statements(sql);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].text, "SELECT 1 /* inline; */ -- x;\n;");
        assert_eq!(&sql[s[0].offset..s[0].offset + 8], "SELECT 1");
        assert_eq!(texts("-- only\n/* comments */"), Vec::<&str>::new());
    }

    #[test]
    fn semicolons_in_parentheses_and_atomic_bodies() {
        let rule = "CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO a VALUES (1); INSERT INTO b VALUES (2));";
        assert_eq!(texts(&format!("{rule}\nSELECT 1;")), [rule, "SELECT 1;"]);
        let atomic = "CREATE OR REPLACE FUNCTION f(x int) RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n  SELECT CASE WHEN x > 0 THEN 1 ELSE 0 END;\n  SELECT x;\nEND;";
        assert_eq!(
            texts(&format!("{atomic}\nSELECT 2;")),
            [atomic, "SELECT 2;"]
        );
        let procedure =
            "create procedure p() language sql begin atomic insert into t values (1); end;";
        assert_eq!(
            texts(&format!("{procedure} select 3;")),
            [procedure, "select 3;"]
        );
        // BEGIN/END outside a routine definition are ordinary statements.
        assert_eq!(
            texts("BEGIN; SELECT 1; END; CREATE TABLE begin_end (a int);"),
            [
                "BEGIN;",
                "SELECT 1;",
                "END;",
                "CREATE TABLE begin_end (a int);"
            ]
        );
        // A stray `)` does not make the rest one statement.
        assert_eq!(texts("SELECT 1); SELECT 2;"), ["SELECT 1);", "SELECT 2;"]);
    }

    #[test]
    fn no_transaction_file_with_three_statements() {
        let sql = "-- pgdbm:no-transaction\nCREATE TABLE IF NOT EXISTS {{tables.t}} (id int);\nCREATE INDEX CONCURRENTLY IF NOT EXISTS t_id ON {{tables.t}} (id);\nCREATE FUNCTION f() RETURNS int AS $body$ SELECT 1; $body$ LANGUAGE sql;\n";
        let s = split_statements(sql);
        assert_eq!(
            s,
            [
                Statement {
                    text: "CREATE TABLE IF NOT EXISTS {{tables.t}} (id int);",
                    offset: 24
                },
                Statement {
                    text: "CREATE INDEX CONCURRENTLY IF NOT EXISTS t_id ON {{tables.t}} (id);",
                    offset: 74
                },
                Statement {
                    text: "CREATE FUNCTION f() RETURNS int AS $body$ SELECT 1; $body$ LANGUAGE sql;",
                    offset: 141
                },
            ]
        );
        for st in &s {
            assert_eq!(&sql[st.offset..st.offset + st.text.len()], st.text);
        }
        let crlf = sql.replace('\n', "\r\n");
        assert_eq!(texts(&crlf), s.iter().map(|s| s.text).collect::<Vec<_>>());
    }

    #[test]
    fn unclosed_quotes_take_the_rest() {
        assert_eq!(texts("SELECT 'a; b"), ["SELECT 'a; b"]);
        assert_eq!(texts("SELECT \"a; b"), ["SELECT \"a; b"]);
        assert_eq!(texts("SELECT E'a\\"), ["SELECT E'a\\"]);
        assert_eq!(texts("SELECT $x$ a; b"), ["SELECT $x$ a; b"]);
        assert_eq!(
            texts("SELECT 1 /* a; /* b */ c; "),
            ["SELECT 1 /* a; /* b */ c;"]
        );
        assert_eq!(texts("SELECT 1; /* a; b"), ["SELECT 1;"]);
    }

    #[test]
    fn positions() {
        let text = "ab\ncdé\nf";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 3), (2, 1));
        assert_eq!(line_col(text, 7), (2, 4)); // after the two-byte é
        assert_eq!(line_col(text, 6), (2, 3)); // inside é: its start
        assert_eq!(line_col(text, 8), (3, 1));
        assert_eq!(line_col(text, 99), (3, 2));
        assert_eq!(line_col("a\r\nb", 3), (2, 1));
        assert_eq!(char_position_to_byte_offset(text, 0), 0);
        assert_eq!(char_position_to_byte_offset(text, 1), 0);
        assert_eq!(char_position_to_byte_offset(text, 6), 5); // é
        assert_eq!(char_position_to_byte_offset(text, 7), 7);
        assert_eq!(char_position_to_byte_offset(text, 99), text.len());
        // A server position (1-based characters) of a statement, turned into a file line:col.
        let file = "-- é\nSELECT 'ü', nope;";
        let stmt = &split_statements(file)[0];
        let pos = stmt.text.chars().position(|c| c == 'n').unwrap() + 1;
        let at = stmt.offset + char_position_to_byte_offset(stmt.text, pos);
        assert_eq!(line_col(file, at), (2, 13));
    }
}
