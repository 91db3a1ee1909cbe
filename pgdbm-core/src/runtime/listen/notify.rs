//! Sending: `Database::notify` and `Transaction::notify`.
//!
//! Both run `SELECT pg_notify(channel, payload)`: in a transaction the server delivers the
//! notification only when it commits (and never when it rolls back), which is what makes "write
//! the row and wake the workers" one atomic step. The payload is checked here before anything
//! is sent, so an over-long one is a clear error rather than the server's, and nothing is half
//! done.

use super::channel::render_channel;
use crate::runtime::database::Database;
use crate::runtime::error::{Error, Result};
use crate::runtime::transaction::Transaction;

/// The longest payload PostgreSQL accepts, in bytes: it refuses 8000 and more
/// (`NOTIFY_PAYLOAD_MAX_LENGTH`, with the default 8 kB block size).
pub const MAX_PAYLOAD_BYTES: usize = 7999;

const NOTIFY_SQL: &str = "SELECT pg_notify($1, $2)::text";

/// The rendered channel, once the payload has been found acceptable.
fn checked(channel: &str, payload: &str, schema: Option<&str>) -> Result<String> {
    let channel = render_channel(channel, schema)?;
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(Error::InvalidInput {
            operation: "notify",
            message: format!(
                "the payload for channel `{channel}` is {} bytes; PostgreSQL accepts at most {MAX_PAYLOAD_BYTES}. Nothing was sent: send a key (an id) and let the listener read the rest from a table",
                payload.len()
            ),
        });
    }
    if payload.contains('\0') {
        return Err(Error::InvalidInput {
            operation: "notify",
            message: format!(
                "the payload for channel `{channel}` contains a NUL byte, which PostgreSQL text cannot hold. Nothing was sent"
            ),
        });
    }
    Ok(channel)
}

impl Database {
    /// Sends a notification on `channel` (rendered for this handle: `jobs_{{schema}}`), with
    /// `payload` (may be empty), at once. To send it only if a transaction commits, use
    /// [`Transaction::notify`].
    ///
    /// Delivery follows PostgreSQL: to every session listening on the channel at the time,
    /// in commit order, once; a listener that is reconnecting misses it and gets
    /// [`Event::Reconnected`](crate::Event::Reconnected) instead (see [`Listener`](crate::Listener)).
    ///
    /// ```no_run
    /// # async fn demo(db: pgdbm_core::Database) -> pgdbm_core::Result<()> {
    /// db.notify("jobs_{{schema}}", "42").await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// Before anything is sent: [`Error::Identifier`] for a channel name that is not an
    /// identifier, [`Error::Template`] / [`Error::InvalidInput`] for a bad placeholder in it, and
    /// [`Error::InvalidInput`] (operation `notify`) for a payload over [`MAX_PAYLOAD_BYTES`] or
    /// with a NUL byte. Then the errors of [`execute`](Self::execute).
    pub async fn notify(&self, channel: &str, payload: &str) -> Result<()> {
        let channel = checked(channel, payload, self.schema())?;
        self.execute(NOTIFY_SQL, (channel.as_str(), payload))
            .await
            .map(drop)
    }
}

impl Transaction<'_> {
    /// Queues a notification on `channel` (rendered for the transaction's handle) with
    /// `payload`: PostgreSQL sends it when the transaction commits, and never if it rolls back.
    /// Notifications of one transaction arrive in the order they were queued; identical ones
    /// (same channel and payload) are sent once.
    ///
    /// # Errors
    ///
    /// As [`Database::notify`]: the channel and payload are checked before anything is sent,
    /// then the errors of [`execute`](Self::execute).
    pub async fn notify(&mut self, channel: &str, payload: &str) -> Result<()> {
        let channel = checked(channel, payload, self.schema())?;
        self.execute(NOTIFY_SQL, (channel.as_str(), payload))
            .await
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_checked_before_sending() {
        assert!(checked("jobs", &"x".repeat(MAX_PAYLOAD_BYTES), None).is_ok());
        let e = checked("jobs", &"x".repeat(MAX_PAYLOAD_BYTES + 1), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("8000 bytes") && e.contains("at most 7999"),
            "{e}"
        );
        let e = checked("jobs", "a\0b", None).unwrap_err().to_string();
        assert!(e.contains("NUL"), "{e}");
        assert_eq!(
            checked("jobs_{{schema}}", "", Some("t1")).unwrap(),
            "jobs_t1"
        );
    }
}
