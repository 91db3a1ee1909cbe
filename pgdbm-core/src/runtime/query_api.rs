//! The query methods `Database` and `Transaction` share, written once.
//!
//! They differ only in how one statement runs: on a pooled connection under the retry rule
//! (`with_retry!` in `database.rs`) or on the transaction's connection (`in_tx!` in
//! `transaction.rs`); each type's `schema_handle()` gives the `Database` whose schema renders the SQL.
//! A macro rather than a trait: the methods stay inherent (no trait to import, `&self` on a
//! `Database`, `&mut self` on a `Transaction`), and the statement's future borrows the
//! connection without being boxed on the hot path.

/// Expands to the shared query methods inside an `impl` block; `$run` is the statement macro,
/// and `mut` makes the receiver `&mut self`.
macro_rules! query_methods {
    ($run:ident $(, $mutable:ident)?) => {
        /// Runs a statement and returns the number of rows it affected.
        ///
        /// With `()` as parameters the statement goes over the simple protocol, so a script of
        /// several statements works (as in pgdbm).
        ///
        /// # Errors
        ///
        /// [`Error::Template`](crate::Error::Template) for a malformed placeholder (nothing is
        /// sent), [`Error::Query`](crate::Error::Query) with the server's diagnostics, and the
        /// connection errors of [`Error`](crate::Error).
        pub async fn execute<P: Params>(&$($mutable)? self, sql: &str, params: P) -> Result<u64> {
            let db = self.schema_handle();
            let sql = db.render(sql)?;
            let simple = params.is_empty();
            let mut ctx = db.ctx();
            let args = query::encode(&sql, params, &mut ctx)?;
            $run!(self, &sql, &ctx, args, |conn, a| query::execute(
                conn,
                &ctx,
                &sql,
                (!simple).then_some(a)
            ))
        }

        /// Fetches exactly one row; no row is an error
        /// ([`Error::is_row_not_found`](crate::Error::is_row_not_found)).
        ///
        /// # Errors
        ///
        /// As [`execute`](Self::execute), and a query error when there is no row.
        pub async fn fetch_one<T, P>(&$($mutable)? self, sql: &str, params: P) -> Result<T>
        where
            T: for<'r> FromRow<'r, PgRow> + Send + Unpin,
            P: Params,
        {
            let sql = self.schema_handle().render(sql)?;
            self.fetch_optional_rendered(&sql, params)
                .await?
                .ok_or_else(|| Error::query(sql.to_string(), sqlx::Error::RowNotFound))
        }

        /// Fetches the first row, if any.
        ///
        /// # Errors
        ///
        /// As [`execute`](Self::execute), and a query error when the row does not decode.
        pub async fn fetch_optional<T, P>(
            &$($mutable)? self,
            sql: &str,
            params: P,
        ) -> Result<Option<T>>
        where
            T: for<'r> FromRow<'r, PgRow> + Send + Unpin,
            P: Params,
        {
            let sql = self.schema_handle().render(sql)?;
            self.fetch_optional_rendered(&sql, params).await
        }

        async fn fetch_optional_rendered<T, P>(
            &$($mutable)? self,
            sql: &Arc<str>,
            params: P,
        ) -> Result<Option<T>>
        where
            T: for<'r> FromRow<'r, PgRow> + Send + Unpin,
            P: Params,
        {
            let db = self.schema_handle();
            let mut ctx = db.ctx();
            let args = query::encode(sql, params, &mut ctx)?;
            $run!(self, sql, &ctx, args, |conn, a| query::fetch_optional::<T>(
                conn, &ctx, sql, a
            ))
        }

        /// Fetches every row.
        ///
        /// # Errors
        ///
        /// As [`fetch_optional`](Self::fetch_optional).
        pub async fn fetch_all<T, P>(&$($mutable)? self, sql: &str, params: P) -> Result<Vec<T>>
        where
            T: for<'r> FromRow<'r, PgRow> + Send + Unpin,
            P: Params,
        {
            let db = self.schema_handle();
            let sql = db.render(sql)?;
            let mut ctx = db.ctx();
            let args = query::encode(&sql, params, &mut ctx)?;
            $run!(self, &sql, &ctx, args, |conn, a| query::fetch_all::<T>(
                conn, &ctx, &sql, a
            ))
        }

        /// The first column of the first row; `None` when there is no row. Use `Option<T>` as
        /// `T` when the value may be NULL.
        ///
        /// # Errors
        ///
        /// As [`fetch_optional`](Self::fetch_optional).
        pub async fn fetch_value<T, P>(
            &$($mutable)? self,
            sql: &str,
            params: P,
        ) -> Result<Option<T>>
        where
            T: for<'r> sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres> + Send + Unpin,
            P: Params,
        {
            let sql = self.schema_handle().render(sql)?;
            self.fetch_value_rendered(&sql, params).await
        }

        async fn fetch_value_rendered<T, P>(
            &$($mutable)? self,
            sql: &Arc<str>,
            params: P,
        ) -> Result<Option<T>>
        where
            T: for<'r> sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres> + Send + Unpin,
            P: Params,
        {
            let db = self.schema_handle();
            let mut ctx = db.ctx();
            let args = query::encode(sql, params, &mut ctx)?;
            $run!(self, sql, &ctx, args, |conn, a| query::fetch_value::<T>(
                conn, &ctx, sql, a
            ))
        }

        /// Runs an `INSERT` and returns the new row's `id`, appending `RETURNING id` unless the
        /// statement has a `RETURNING` clause of its own (then its first column is returned).
        ///
        /// # Errors
        ///
        /// As [`execute`](Self::execute), and a query error when no row comes back.
        pub async fn execute_and_return_id<T, P>(
            &$($mutable)? self,
            sql: &str,
            params: P,
        ) -> Result<T>
        where
            T: for<'r> sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres> + Send + Unpin,
            P: Params,
        {
            let with_id = query::with_returning_id(&self.schema_handle().render(sql)?);
            let sql: Arc<str> = with_id.into();
            self.fetch_value_rendered(&sql, params)
                .await?
                .ok_or_else(|| Error::query(sql.to_string(), sqlx::Error::RowNotFound))
        }
    };
}
