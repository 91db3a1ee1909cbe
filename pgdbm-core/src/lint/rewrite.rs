//! The safe rewrite of each finding, in pgdbm's terms.
//!
//! squawk's help is written for any runner. pgdbm changes the advice in two ways: a statement
//! that cannot run in a transaction (`CONCURRENTLY`) goes in a file marked
//! `-- pgdbm:no-transaction`, and a step that must not share a transaction with the one before
//! it (`VALIDATE CONSTRAINT` after `NOT VALID`) goes in a later file, since each file is one
//! transaction. Rules without a text here get squawk's help.

/// For a file squawk could not parse.
pub(super) const PARSE_ERROR: &str = "fix the SQL at this position; if PostgreSQL accepts it and only the linter cannot read it, put `-- pgdbm:lint-allow parse-error reason` above it (the file is then not linted)";

const NO_TX: &str = "in a file of its own whose first line is `-- pgdbm:no-transaction` (CONCURRENTLY cannot run inside a transaction)";

/// The rewrite for a finding of `rule` in a file (`no_transaction`: it is marked
/// `-- pgdbm:no-transaction`), falling back to squawk's `help`.
pub(super) fn for_rule(rule: &str, no_transaction: bool, help: Option<&str>) -> String {
    let place = if no_transaction {
        "in this file"
    } else {
        NO_TX
    };
    match rule {
        "require-concurrent-index-creation" => format!(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS … {place}; a failed concurrent build leaves an INVALID index, so drop it (DROP INDEX CONCURRENTLY IF EXISTS) before running again"
        ),
        "require-concurrent-index-deletion" => {
            format!("DROP INDEX CONCURRENTLY IF EXISTS … {place}")
        }
        "require-concurrent-reindex" => format!("REINDEX … CONCURRENTLY {place}"),
        "require-concurrent-partition-detach" => {
            format!("ALTER TABLE … DETACH PARTITION … CONCURRENTLY {place}")
        }
        "ban-concurrent-index-creation-in-transaction" => format!(
            "move the CONCURRENTLY statement {NO_TX}; pgdbm runs every other file in a transaction"
        ),
        "adding-required-field" | "adding-not-nullable-field" => {
            "add the column nullable (or with a constant DEFAULT, which PostgreSQL 11+ adds without a rewrite); backfill existing rows in batches; add CHECK (col IS NOT NULL) NOT VALID, VALIDATE CONSTRAINT it in a later file, then SET NOT NULL (PostgreSQL 12+ uses the validated check instead of scanning the table)".into()
        }
        "adding-field-with-default" => {
            "add the column without a default (or with a constant one), SET DEFAULT in a second statement so new rows get it, and backfill existing rows in batches".into()
        }
        "changing-column-type" => {
            "add a new column of the new type, write both columns (application or trigger), backfill in batches, switch reads to the new column, and drop the old one in a later release".into()
        }
        "constraint-missing-not-valid" => {
            "ADD CONSTRAINT … NOT VALID in this file (checks new rows only, brief lock), then ALTER TABLE … VALIDATE CONSTRAINT … in a later file (a SHARE UPDATE EXCLUSIVE lock that lets reads and writes run); both in one file would run in one transaction".into()
        }
        "adding-foreign-key-constraint" => {
            "ADD CONSTRAINT … FOREIGN KEY … NOT VALID in this file, then ALTER TABLE … VALIDATE CONSTRAINT … in a later file (each pgdbm file is one transaction, and validating in the same one keeps the exclusive lock)".into()
        }
        "disallowed-unique-constraint" => format!(
            "CREATE UNIQUE INDEX CONCURRENTLY name ON table (cols) {NO_TX}, then ALTER TABLE table ADD CONSTRAINT name UNIQUE USING INDEX name in a later file"
        ),
        "adding-serial-primary-key-field" => format!(
            "CREATE UNIQUE INDEX CONCURRENTLY name ON table (cols) {NO_TX}, then ALTER TABLE table ADD CONSTRAINT name PRIMARY KEY USING INDEX name in a later file"
        ),
        "ban-drop-column" => {
            "stop reading and writing the column in the code first and deploy that (replicas still running the old code would fail on it); then drop it in a later migration, allowed with `-- pgdbm:lint-allow ban-drop-column <why no code uses it>`".into()
        }
        "ban-drop-table" | "ban-drop-view" | "ban-drop-function" | "ban-drop-type"
        | "ban-drop-schema" | "ban-drop-sequence" | "ban-drop-domain" => {
            "make sure no deployed code uses it (deploy the code that stops using it first), then drop it in a later migration with `-- pgdbm:lint-allow RULE <why nothing uses it>`".into()
        }
        "renaming-column" | "renaming-table" => {
            "add the new one, write both, backfill, switch reads, and drop the old one in a later release (old replicas still use the old name during a rolling deploy)".into()
        }
        "transaction-nesting" | "ban-uncommitted-transaction" => {
            "remove BEGIN/COMMIT: pgdbm runs each file in a transaction of its own with its history row; mark a file `-- pgdbm:no-transaction` for statements that cannot run in one".into()
        }
        "prefer-robust-stmts" => {
            "write it re-runnable (IF NOT EXISTS / IF EXISTS): in a `-- pgdbm:no-transaction` file a failure leaves the earlier statements applied and the file runs again from the top".into()
        }
        _ => help.map_or_else(
            || format!("see https://squawkhq.com/docs/{rule}"),
            |h| format!("{h} (https://squawkhq.com/docs/{rule})"),
        ),
    }
}
