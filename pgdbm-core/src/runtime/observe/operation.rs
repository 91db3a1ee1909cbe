//! What kind of statement a SQL text is, for span names and metric labels: a closed set, so a
//! metric labelled with it has a bounded number of series whatever SQL the service runs.

use crate::sql_lex::{TokenKind, tokens};

/// The operation of a statement, as OpenTelemetry's `db.operation.name` and the `operation`
/// label of pgdbm's query metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// `SELECT`, `VALUES`, `TABLE`, `SHOW`, and a `WITH` whose main statement is a `SELECT`.
    Select,
    /// `INSERT` (also after `WITH`).
    Insert,
    /// `UPDATE` (also after `WITH`).
    Update,
    /// `DELETE` (also after `WITH`).
    Delete,
    /// `MERGE`.
    Merge,
    /// `COPY`.
    Copy,
    /// `CALL` of a procedure.
    Call,
    /// Schema changes: `CREATE`, `ALTER`, `DROP`, `TRUNCATE`, `COMMENT`, `GRANT`, `REVOKE`.
    Ddl,
    /// Anything else (`SET`, `LOCK`, `EXPLAIN`, `DO`, `VACUUM`, …).
    Other,
}

impl Operation {
    /// Every operation, in a fixed order (metric handles are made for each up front).
    pub const ALL: [Operation; 9] = [
        Operation::Select,
        Operation::Insert,
        Operation::Update,
        Operation::Delete,
        Operation::Merge,
        Operation::Copy,
        Operation::Call,
        Operation::Ddl,
        Operation::Other,
    ];

    /// The label value: `SELECT`, `INSERT`, …, `DDL`, `OTHER`.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Select => "SELECT",
            Operation::Insert => "INSERT",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Merge => "MERGE",
            Operation::Copy => "COPY",
            Operation::Call => "CALL",
            Operation::Ddl => "DDL",
            Operation::Other => "OTHER",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// The operation of `sql`'s first statement, read through the project's lexer (comments,
    /// such as the marker `tsql!` puts first, are skipped). For `WITH …` it is the main
    /// statement's, found after the common table expressions.
    pub fn of(sql: &str) -> Operation {
        let mut depth = 0usize;
        let mut in_with = false;
        for t in tokens(sql) {
            match t.kind {
                TokenKind::Comment => continue,
                TokenKind::Punct(b'(') => depth += 1,
                TokenKind::Punct(b')') => depth = depth.saturating_sub(1),
                TokenKind::Punct(b';') => break,
                TokenKind::Word if !in_with => {
                    if t.is_word("with") {
                        in_with = true;
                        continue;
                    }
                    return keyword(t.text).unwrap_or(Operation::Other);
                }
                TokenKind::Word if depth == 0 => {
                    if let Some(
                        op @ (Operation::Select
                        | Operation::Insert
                        | Operation::Update
                        | Operation::Delete
                        | Operation::Merge),
                    ) = keyword(t.text)
                    {
                        return op;
                    }
                }
                _ if !in_with => return Operation::Other,
                _ => {}
            }
        }
        Operation::Other
    }
}

/// Whether `sql` only reads: one statement that [`Operation::of`] calls a `SELECT`, with no
/// word anywhere that writes (`INSERT`, `UPDATE`, `DELETE`, `MERGE` in a common table
/// expression, `SELECT … INTO`, a sequence's `nextval`/`setval`). Such a statement may be run
/// again when its connection died with it in flight: doing so twice changes nothing. The check
/// is by words, so it errs on the side of "writes" (`FOR UPDATE` counts as one); a `SELECT` of a
/// function that writes cannot be told apart, as the README says.
pub(crate) fn reads_only(sql: &str) -> bool {
    if Operation::of(sql) != Operation::Select {
        return false;
    }
    let mut ended = false;
    for t in tokens(sql) {
        match t.kind {
            TokenKind::Comment => {}
            _ if ended => return false,
            TokenKind::Punct(b';') => ended = true,
            TokenKind::Word
                if [
                    "insert", "update", "delete", "merge", "into", "copy", "call", "nextval",
                    "setval",
                ]
                .iter()
                .any(|w| t.is_word(w)) =>
            {
                return false;
            }
            _ => {}
        }
    }
    true
}

fn keyword(word: &str) -> Option<Operation> {
    const TABLE: &[(&str, Operation)] = &[
        ("select", Operation::Select),
        ("values", Operation::Select),
        ("table", Operation::Select),
        ("show", Operation::Select),
        ("insert", Operation::Insert),
        ("update", Operation::Update),
        ("delete", Operation::Delete),
        ("merge", Operation::Merge),
        ("copy", Operation::Copy),
        ("call", Operation::Call),
        ("create", Operation::Ddl),
        ("alter", Operation::Ddl),
        ("drop", Operation::Ddl),
        ("truncate", Operation::Ddl),
        ("comment", Operation::Ddl),
        ("grant", Operation::Ddl),
        ("revoke", Operation::Ddl),
    ];
    TABLE
        .iter()
        .find(|(k, _)| word.eq_ignore_ascii_case(k))
        .map(|(_, op)| *op)
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Operation::{self, *};
    use super::reads_only;

    #[test]
    fn reads_only_is_one_select_that_writes_nothing() {
        for sql in [
            "SELECT id, email FROM \"myservice\".users WHERE id = $1",
            "/* pgdbm: schema=myservice */ SELECT 1",
            "WITH x AS (SELECT 1) SELECT * FROM x;",
            "SELECT 'insert into t' AS text -- update",
            "VALUES (1), (2)",
            "SHOW search_path",
        ] {
            assert!(reads_only(sql), "{sql}");
        }
        for sql in [
            "INSERT INTO t VALUES (1)",
            "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
            "SELECT * INTO copy_of_t FROM t",
            "SELECT nextval('s')",
            "SELECT * FROM t FOR UPDATE",
            "SELECT 1; DELETE FROM t",
            "UPDATE t SET a = 1",
            "CALL p()",
        ] {
            assert!(!reads_only(sql), "{sql}");
        }
    }

    #[test]
    fn first_keyword_decides() {
        let cases: &[(&str, Operation)] = &[
            ("SELECT 1", Select),
            ("  select * from t", Select),
            (
                "/* pgdbm: schema=app */ SELECT * FROM \"app\".users",
                Select,
            ),
            ("-- note\nINSERT INTO t VALUES (1)", Insert),
            ("update t set a = 1", Update),
            ("DELETE FROM t", Delete),
            (
                "MERGE INTO t USING s ON true WHEN MATCHED THEN DO NOTHING",
                Merge,
            ),
            ("VALUES (1), (2)", Select),
            ("COPY t FROM STDIN", Copy),
            ("CALL p()", Call),
            ("CREATE TABLE t (id int)", Ddl),
            ("drop table t", Ddl),
            ("SET search_path = x", Other),
            ("BEGIN", Other),
            ("", Other),
            ("(SELECT 1) UNION (SELECT 2)", Select),
            ("'SELECT'", Other),
        ];
        for (sql, want) in cases {
            assert_eq!(Operation::of(sql), *want, "{sql}");
        }
    }

    #[test]
    fn with_takes_the_main_statement() {
        assert_eq!(
            Operation::of("WITH a AS (SELECT 1) INSERT INTO t SELECT * FROM a"),
            Insert
        );
        assert_eq!(
            Operation::of("WITH a AS (DELETE FROM t RETURNING *) SELECT count(*) FROM a"),
            Select
        );
        assert_eq!(
            Operation::of(
                "with recursive r(n) as (select 1 union all select n+1 from r) update t set n = (select max(n) from r)"
            ),
            Update
        );
        assert_eq!(Operation::of("WITH a AS (SELECT 1)"), Other);
    }

    #[test]
    fn labels_are_a_closed_set() {
        for (i, op) in Operation::ALL.iter().enumerate() {
            assert_eq!(op.index(), i);
            assert_eq!(op.as_str(), op.as_str().to_ascii_uppercase());
        }
    }
}
