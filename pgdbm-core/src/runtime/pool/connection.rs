//! A connection handed to the caller, and what an error says about a connection.

use deadpool::managed;
use sqlx::postgres::PgConnection;

use super::PoolObject;

/// A connection checked out of the pool, returned to it when dropped.
///
/// `&mut conn` is a sqlx executor that checks `tsql!` queries like its [`Database`] handle does
/// (re-targeted on a tenant handle, refused on a handle of another schema); other SQL runs as
/// written, without templating (use [`Database::render`] first). [`raw`](Self::raw) is the bare
/// sqlx connection, for APIs that need one; nothing is checked there.
///
/// [`Database`]: crate::Database
/// [`Database::render`]: crate::Database::render
pub struct PoolConnection {
    pub(crate) obj: PoolObject,
    pub(crate) db: crate::Database,
}

impl std::fmt::Debug for PoolConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolConnection")
            .field("schema", &self.db.schema())
            .finish_non_exhaustive()
    }
}

impl PoolConnection {
    /// The bare sqlx connection. SQL run on it is neither templated nor checked: a `tsql!`
    /// query runs in the schema it was compiled for, whatever this handle's schema.
    pub fn raw(&mut self) -> &mut PgConnection {
        &mut self.obj.conn
    }

    /// Drops this connection instead of returning it to the pool (after an error you cannot
    /// recover from, or after changing session state others must not inherit).
    pub fn discard(mut self) {
        self.obj.broken = true;
        // Taken out of the pool, it closes now rather than at the next checkout's recycle.
        drop(managed::Object::take(self.obj));
    }
}
