//! `Database::explain`: the plan PostgreSQL picks for one statement, as its JSON, optionally
//! measured by running the statement in a transaction that is always rolled back.

use super::plan::Explain;
use crate::migrations::split_statements;
use crate::runtime::database::Database;
use crate::runtime::error::{Error, Result};
use crate::runtime::observe::prefix;
use crate::runtime::params::Params;
use crate::sql_lex::{TokenKind, tokens};

/// What [`Database::explain`] asks PostgreSQL for. The default is a plain
/// `EXPLAIN (FORMAT JSON)`: the plan and its estimates, without running the statement.
///
/// ```
/// use pgdbm_core::ExplainOptions;
/// let options = ExplainOptions::default().analyze(true).buffers(true);
/// assert!(options.is_analyze() && options.is_buffers() && !options.is_verbose());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExplainOptions {
    analyze: bool,
    buffers: bool,
    verbose: bool,
}

impl ExplainOptions {
    /// `ANALYZE`: run the statement and report actual times and row counts. It runs in a
    /// transaction that is always rolled back (see [`Database::explain`]).
    #[must_use = "the options do nothing until passed to `Database::explain`"]
    pub fn analyze(mut self, on: bool) -> Self {
        self.analyze = on;
        self
    }

    /// `BUFFERS`: shared, local and temporary block counts. Meaningful with
    /// [`analyze`](Self::analyze); without it PostgreSQL 13 and later report only the planner's
    /// own buffer use (and older servers refuse the option).
    #[must_use = "the options do nothing until passed to `Database::explain`"]
    pub fn buffers(mut self, on: bool) -> Self {
        self.buffers = on;
        self
    }

    /// `VERBOSE`: output columns and schema-qualified names in every plan node.
    #[must_use = "the options do nothing until passed to `Database::explain`"]
    pub fn verbose(mut self, on: bool) -> Self {
        self.verbose = on;
        self
    }

    /// Whether `ANALYZE` is on.
    pub fn is_analyze(&self) -> bool {
        self.analyze
    }

    /// Whether `BUFFERS` is on.
    pub fn is_buffers(&self) -> bool {
        self.buffers
    }

    /// Whether `VERBOSE` is on.
    pub fn is_verbose(&self) -> bool {
        self.verbose
    }

    /// The option list of the `EXPLAIN (…)` statement.
    fn clause(&self) -> String {
        let mut clause = String::from("FORMAT JSON");
        for (on, name) in [
            (self.analyze, "ANALYZE"),
            (self.buffers, "BUFFERS"),
            (self.verbose, "VERBOSE"),
        ] {
            if on {
                clause.push_str(", ");
                clause.push_str(name);
            }
        }
        clause
    }
}

/// The first keywords of the statements `EXPLAIN` is asked about (and `(` for a parenthesised
/// query).
const EXPLAINABLE: [&str; 8] = [
    "SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "VALUES", "WITH", "TABLE",
];

/// The one statement `sql` holds, without its `;`, when `EXPLAIN` can take it; otherwise what is
/// wrong with it, as a message for the user.
///
/// The statements are found by the migrations' splitter (the project's one reading of strings,
/// quoted identifiers, dollar quotes and comments), so a `;` or a keyword inside them does not
/// count.
pub(crate) fn explainable(sql: &str) -> std::result::Result<&str, String> {
    let statements = split_statements(sql);
    let Some(first) = statements.first() else {
        return Err(
            "explain needs a statement, and the SQL is empty (or only comments and `;`)".into(),
        );
    };
    let lead = tokens(first.text).next();
    let allowed = lead.is_some_and(|t| {
        t.kind == TokenKind::Punct(b'(')
            || (t.kind == TokenKind::Word
                && EXPLAINABLE.iter().any(|k| t.text.eq_ignore_ascii_case(k)))
    });
    if !allowed {
        let found = match lead {
            Some(t) if t.kind == TokenKind::Word => t.text.to_ascii_uppercase(),
            Some(t) => format!("`{}`", shorten(t.text, 30)),
            None => String::new(),
        };
        let hint = if found == "EXPLAIN" {
            "; pass the statement without EXPLAIN (ExplainOptions turns on ANALYZE and BUFFERS)"
        } else {
            "; other statements have no plan to show"
        };
        return Err(format!(
            "explain takes one SELECT, INSERT, UPDATE, DELETE, MERGE, VALUES, WITH or TABLE statement; this one starts with {found}{hint}"
        ));
    }
    if let Some(second) = statements.get(1) {
        let next = tokens(second.text).next().map_or("", |t| t.text);
        let at = first.offset + first.text.len() - 1;
        return Err(format!(
            "explain takes one statement, and this SQL holds more: `{}` follows the `;` at byte {at}; explain each statement on its own",
            shorten(next, 30)
        ));
    }
    // The splitter drops the comments that lead a statement; `EXPLAIN` keeps them (a `tsql!`
    // marker, a planner hint), so the statement starts after the last `;` before it.
    let begin = tokens(&sql[..first.offset])
        .filter(|t| t.kind == TokenKind::Punct(b';'))
        .last()
        .map_or(0, |t| t.start + 1);
    let statement = sql[begin..first.offset + first.text.len()].trim();
    Ok(statement.strip_suffix(';').unwrap_or(statement).trim_end())
}

/// `text` cut to at most `max` bytes (on a character boundary), with `…` when cut.
fn shorten(text: &str, max: usize) -> String {
    let cut = prefix(text, max);
    if cut.len() == text.len() {
        cut.to_string()
    } else {
        format!("{cut}…")
    }
}

impl Database {
    /// The plan PostgreSQL picks for `sql`: `EXPLAIN (FORMAT JSON[, ANALYZE][, BUFFERS][, VERBOSE])`
    /// of the statement, with `{{tables.x}}` placeholders rendered for this handle and `params`
    /// bound to `$1, $2, …` as in [`fetch_all`](Self::fetch_all).
    ///
    /// With [`ExplainOptions::analyze`] the statement really runs, inside a transaction that is
    /// **always rolled back**, whether it succeeds or fails: an `UPDATE`, `DELETE`, `INSERT` or
    /// `MERGE` leaves no change behind. What no rollback undoes still happens: sequences advanced
    /// by `nextval()` (a `serial` column's default), time spent and locks waited for, and effects
    /// outside the database (a function calling out through `dblink`, say). Without `analyze`
    /// nothing is executed.
    ///
    /// Refused before anything is sent to the server (an [`Error::Template`] for a malformed
    /// placeholder, otherwise [`Error::InvalidInput`] with a message saying what was found): an empty statement, more than one statement (`SELECT 1; SELECT 2`), or a
    /// statement `EXPLAIN` does not take — only `SELECT`, `INSERT`, `UPDATE`, `DELETE`, `MERGE`,
    /// `VALUES`, `WITH`, `TABLE` and a parenthesised query are accepted, so `CREATE`, `DROP`,
    /// `VACUUM`, `BEGIN` or `EXPLAIN …` itself are errors.
    ///
    /// ```no_run
    /// # async fn demo(db: pgdbm_core::Database) -> pgdbm_core::Result<()> {
    /// use pgdbm_core::ExplainOptions;
    /// let plan = db
    ///     .explain("UPDATE {{tables.users}} SET name = $2 WHERE id = $1", (7_i64, "Bob"),
    ///              ExplainOptions::default().analyze(true))
    ///     .await?; // rolled back: user 7 keeps its name
    /// println!("{plan}"); // the plan as an indented tree
    /// println!("{:?} {:?}", plan.node_type(), plan.execution_time());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Template`] or [`Error::InvalidInput`] for a statement refused as above (nothing is
    /// sent); otherwise the errors of [`fetch_value`](Self::fetch_value) (with `analyze`, of
    /// [`transaction`](Self::transaction) too), [`Error::Query`] when the server rejects the
    /// statement or its parameters.
    pub async fn explain<P: Params>(
        &self,
        sql: &str,
        params: P,
        options: ExplainOptions,
    ) -> Result<Explain> {
        let rendered = self.render(sql)?;
        let statement = explainable(&rendered).map_err(|message| Error::InvalidInput {
            operation: "explain",
            message,
        })?;
        // The text is rendered already; rendering it again (as the query methods do) leaves it
        // unchanged, and a `tsql!` marker no longer leads it.
        let query = format!("EXPLAIN ({}) {statement}", options.clause());
        let plan: Option<serde_json::Value> = if options.analyze {
            let mut tx = self.transaction().await?;
            // On an error the transaction is dropped, which rolls it back.
            let plan = tx.fetch_value(&query, params).await?;
            tx.rollback().await?;
            plan
        } else {
            self.fetch_value(&query, params).await?
        };
        let plan = plan.ok_or_else(|| Error::query(query.clone(), sqlx::Error::RowNotFound))?;
        Ok(Explain {
            sql: statement.to_string(),
            analyzed: options.analyze,
            plan,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_one_explainable_statement() {
        for (sql, statement) in [
            ("SELECT 1", "SELECT 1"),
            (
                "  select * from t where a = $1 ;  ",
                "select * from t where a = $1",
            ),
            ("SELECT 1; -- done\n", "SELECT 1"),
            ("; ;SELECT 1", "SELECT 1"),
            ("insert into t values (1)", "insert into t values (1)"),
            ("UPDATE t SET a = 1", "UPDATE t SET a = 1"),
            ("DELETE FROM t", "DELETE FROM t"),
            (
                "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE",
                "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE",
            ),
            ("VALUES (1), (2)", "VALUES (1), (2)"),
            (
                "WITH x AS (SELECT 1) SELECT * FROM x",
                "WITH x AS (SELECT 1) SELECT * FROM x",
            ),
            ("TABLE t", "TABLE t"),
            ("(SELECT 1) UNION (SELECT 2)", "(SELECT 1) UNION (SELECT 2)"),
            // `;` and keywords inside strings, quoted names, dollar quotes and comments.
            (
                "SELECT 'a; DROP TABLE t', \"x;y\", $$;$$ /* ; */ FROM t",
                "SELECT 'a; DROP TABLE t', \"x;y\", $$;$$ /* ; */ FROM t",
            ),
            // A leading comment is kept (the `tsql!` marker; planner hints).
            (
                "/* pgdbm: schema=app at=14 */ SELECT * FROM \"app\".users",
                "/* pgdbm: schema=app at=14 */ SELECT * FROM \"app\".users",
            ),
            ("-- why\nSELECT 1", "-- why\nSELECT 1"),
        ] {
            assert_eq!(explainable(sql), Ok(statement), "{sql}");
        }
    }

    fn refused(sql: &str) -> String {
        explainable(sql).expect_err(sql)
    }

    #[test]
    fn refuses_other_statements_naming_the_first_keyword() {
        for (sql, word) in [
            ("CREATE TABLE x (id int)", "CREATE"),
            ("drop table t", "DROP"),
            ("BEGIN", "BEGIN"),
            ("VACUUM t", "VACUUM"),
            (
                "/* pgdbm: schema=app at= */ ALTER TABLE t ADD c int",
                "ALTER",
            ),
            ("COPY t TO STDOUT", "COPY"),
        ] {
            let m = refused(sql);
            assert_eq!(
                m,
                format!(
                    "explain takes one SELECT, INSERT, UPDATE, DELETE, MERGE, VALUES, WITH or TABLE statement; this one starts with {word}; other statements have no plan to show"
                )
            );
        }
        let m = refused("EXPLAIN SELECT 1");
        assert!(
            m.contains("starts with EXPLAIN; pass the statement without EXPLAIN"),
            "{m}"
        );
        let m = refused("'SELECT 1'");
        assert!(m.contains("this one starts with `'SELECT 1'`"), "{m}");
    }

    #[test]
    fn refuses_more_than_one_statement() {
        assert_eq!(
            refused("SELECT 1; SELECT 2"),
            "explain takes one statement, and this SQL holds more: `SELECT` follows the `;` at byte 8; explain each statement on its own"
        );
        let m = refused("INSERT INTO t VALUES (1); DROP TABLE t");
        assert!(m.contains("`DROP` follows the `;` at byte 24"), "{m}");
        // The first statement's keyword is reported first.
        assert!(refused("CREATE TABLE x (); SELECT 1").contains("starts with CREATE"));
    }

    #[test]
    fn refuses_empty_input() {
        for sql in ["", "   ", ";", " ; ; ", "-- nothing\n", "/* nothing */"] {
            assert_eq!(
                refused(sql),
                "explain needs a statement, and the SQL is empty (or only comments and `;`)",
                "{sql:?}"
            );
        }
    }

    #[test]
    fn options_make_the_clause() {
        assert_eq!(ExplainOptions::default().clause(), "FORMAT JSON");
        assert_eq!(
            ExplainOptions::default()
                .analyze(true)
                .buffers(true)
                .verbose(true)
                .clause(),
            "FORMAT JSON, ANALYZE, BUFFERS, VERBOSE"
        );
        assert_eq!(
            ExplainOptions::default().buffers(true).clause(),
            "FORMAT JSON, BUFFERS"
        );
    }
}
