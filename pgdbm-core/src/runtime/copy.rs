//! COPY … FROM STDIN in binary format: the bulk-load path.

use sqlx::postgres::PgConnection;

use super::database::Database;
use super::error::{Error, Result};
use super::params::CopyRow;
use crate::ident::{IdentifierKind, quote_identifier, validate_identifier};

/// Send COPY data in chunks of about this size.
const CHUNK: usize = 256 * 1024;

/// The COPY statement for `table` (of `db`'s schema) and `columns`, after validating both.
pub(crate) fn statement(db: &Database, table: &str, columns: &[&str]) -> Result<String> {
    validate_identifier(table, IdentifierKind::Table)?;
    if columns.is_empty() {
        return Err(Error::config(
            "columns",
            "copy_in needs at least one column name",
        ));
    }
    let mut cols = Vec::with_capacity(columns.len());
    for c in columns {
        validate_identifier(c, IdentifierKind::Column)?;
        cols.push(quote_identifier(c));
    }
    let target = db.render(&format!("{{{{tables.{table}}}}}"))?;
    Ok(format!(
        "COPY {target} ({}) FROM STDIN (FORMAT binary)",
        cols.join(", ")
    ))
}

pub(crate) async fn copy_in<R, I>(
    conn: &mut PgConnection,
    stmt: &str,
    width: usize,
    rows: I,
) -> Result<u64>
where
    R: CopyRow,
    I: IntoIterator<Item = R>,
{
    let mut copy = conn
        .copy_in_raw(stmt)
        .await
        .map_err(|e| Error::query(stmt, e))?;
    let mut buf = Vec::with_capacity(CHUNK + 1024);
    buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    buf.extend_from_slice(&0_i32.to_be_bytes()); // flags
    buf.extend_from_slice(&0_i32.to_be_bytes()); // header extension length
    for (i, row) in rows.into_iter().enumerate() {
        let problem = if row.width() != width {
            Some(format!(
                "row {i} has {} values but {width} columns were named",
                row.width()
            ))
        } else {
            row.write_binary(&mut buf)
                .err()
                .map(|e| format!("row {i} could not be encoded: {e}"))
        };
        if let Some(msg) = problem {
            // Aborting makes the server discard everything sent so far.
            let _ = copy.abort(msg.clone()).await;
            return Err(Error::query(stmt, sqlx::Error::Encode(msg.into())));
        }
        if buf.len() >= CHUNK {
            copy.send(std::mem::take(&mut buf))
                .await
                .map_err(|e| Error::query(stmt, e))?;
            buf.reserve(CHUNK + 1024);
        }
    }
    buf.extend_from_slice(&(-1_i16).to_be_bytes());
    copy.send(buf).await.map_err(|e| Error::query(stmt, e))?;
    copy.finish().await.map_err(|e| Error::query(stmt, e))
}
