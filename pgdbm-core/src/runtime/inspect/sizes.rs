//! [`Database::table_sizes`]: the tables of the handle's schema with their on-disk sizes, row
//! counts and maintenance times.

use crate::runtime::database::Database;
use crate::runtime::error::Result;

/// One table (or partitioned table, or materialized view) of the handle's schema.
///
/// The sizes add up: `total_bytes = table_bytes + index_bytes + toast_bytes`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct TableSize {
    /// The schema.
    pub schema: String,
    /// The table's name.
    pub table: String,
    /// `table`, `partitioned table` (its rows, and sizes, are in its partitions, listed as
    /// tables of their own) or `materialized view`.
    pub kind: String,
    /// Everything: `pg_total_relation_size`.
    pub total_bytes: u64,
    /// The heap: the main fork with its free-space and visibility maps (`pg_table_size` less
    /// the TOAST table).
    pub table_bytes: u64,
    /// All its indexes: `pg_indexes_size`.
    pub index_bytes: u64,
    /// Its TOAST table (out-of-line large values) with the TOAST index.
    pub toast_bytes: u64,
    /// The planner's row estimate (`pg_class.reltuples`, exact right after `ANALYZE` or
    /// `VACUUM`); `None` when the table was never analysed or vacuumed.
    pub row_estimate: Option<i64>,
    /// Live rows by the statistics collector (`pg_stat_user_tables.n_live_tup`).
    pub live_rows: Option<i64>,
    /// Dead rows not yet vacuumed (`n_dead_tup`).
    pub dead_rows: Option<i64>,
    /// Last manual `VACUUM`, as PostgreSQL writes a `timestamptz`.
    pub last_vacuum: Option<String>,
    /// Last autovacuum.
    pub last_autovacuum: Option<String>,
    /// Last manual `ANALYZE`.
    pub last_analyze: Option<String>,
    /// Last autoanalyze.
    pub last_autoanalyze: Option<String>,
}

const SIZES: &str = "SELECT n.nspname::text,
       c.relname::text,
       CASE c.relkind WHEN 'p' THEN 'partitioned table' WHEN 'm' THEN 'materialized view' ELSE 'table' END,
       z.total,
       z.heap - z.toast,
       z.indexes,
       z.toast,
       c.reltuples::float8,
       s.n_live_tup,
       s.n_dead_tup,
       s.last_vacuum::text,
       s.last_autovacuum::text,
       s.last_analyze::text,
       s.last_autoanalyze::text
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
-- The size functions give NULL for a relation dropped while this runs.
CROSS JOIN LATERAL (
    SELECT coalesce(pg_total_relation_size(c.oid), 0) AS total,
           coalesce(pg_table_size(c.oid), 0) AS heap,
           coalesce(pg_indexes_size(c.oid), 0) AS indexes,
           CASE WHEN c.reltoastrelid = 0 THEN 0
                ELSE coalesce(pg_total_relation_size(c.reltoastrelid), 0) END AS toast
) AS z
LEFT JOIN pg_stat_user_tables AS s ON s.relid = c.oid
WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'm')
ORDER BY 4 DESC, 2";

type SizeRow = (
    String,
    String,
    String,
    i64,
    i64,
    i64,
    i64,
    f64,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

impl Database {
    /// The tables of this handle's schema (`public` for a handle without one), largest first:
    /// sizes of heap, indexes and TOAST, row estimate and counts, and when they were last
    /// vacuumed and analysed. One query over `pg_class`, with the schema bound as a parameter.
    ///
    /// ```no_run
    /// # async fn demo(db: pgdbm_core::Database) -> pgdbm_core::Result<()> {
    /// for t in db.table_sizes().await? {
    ///     println!("{}.{}: {} bytes, ~{:?} rows", t.schema, t.table, t.total_bytes, t.row_estimate);
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// The errors of [`fetch_all`](Database::fetch_all): the pool's checkout errors
    /// ([`Error::PoolTimeout`](crate::Error::PoolTimeout), …) and
    /// [`Error::Query`](crate::Error::Query) when the server rejects the query.
    pub async fn table_sizes(&self) -> Result<Vec<TableSize>> {
        let schema = self.schema().unwrap_or("public");
        let rows: Vec<SizeRow> = self.fetch_all(SIZES, (schema,)).await?;
        let bytes = |n: i64| u64::try_from(n).unwrap_or(0);
        Ok(rows
            .into_iter()
            .map(|r| TableSize {
                schema: r.0,
                table: r.1,
                kind: r.2,
                total_bytes: bytes(r.3),
                table_bytes: bytes(r.4),
                index_bytes: bytes(r.5),
                toast_bytes: bytes(r.6),
                // -1: never analysed or vacuumed (PostgreSQL 14 and later).
                row_estimate: (r.7 >= 0.0).then(|| r.7.round() as i64),
                live_rows: r.8,
                dead_rows: r.9,
                last_vacuum: r.10,
                last_autovacuum: r.11,
                last_analyze: r.12,
                last_autoanalyze: r.13,
            })
            .collect())
    }
}
