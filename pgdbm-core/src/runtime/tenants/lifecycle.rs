//! Creating and dropping one tenant: the writes to the registry, each under the tenant's lock
//! and bounded by the `writers` semaphore.

use super::{Tenants, no_registry, tenant_error};
use crate::ident::quote_identifier;
use crate::runtime::database::Database;
use crate::runtime::error::{Error, Result, TenantErrorKind};
#[cfg(doc)]
use crate::runtime::migrator::Migrator;

impl Tenants {
    /// Creates tenant `name`: its schema, the module's migrations applied in it (history in
    /// that schema), and its registry row, in that order. `Exists` if it is registered.
    ///
    /// Call it from as many tasks at once as you like: at most half the pool's connections
    /// (`max_connections / 2`, at least one) create or drop at a time and the rest wait their
    /// turn, since each holds its transaction's connection while its migrations use another.
    /// Creating many tenants is therefore a stream of creates; more of them in flight than
    /// that bound only queue:
    ///
    /// ```no_run
    /// # async fn demo(tenants: pgdbm_core::Tenants) -> pgdbm_core::Result<()> {
    /// use futures_util::StreamExt;
    /// let tenants = &tenants;
    /// let names: Vec<String> = (0..10_000).map(|i| format!("t{i:05}")).collect();
    /// let results: Vec<_> = futures_util::stream::iter(&names)
    ///     .map(|name| async move { (name, tenants.create(name).await) })
    ///     .buffer_unordered(8)
    ///     .collect()
    ///     .await;
    /// for (name, r) in &results {
    ///     if let Err(e) = r { eprintln!("{name}: {e}"); }
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Tenant`] for an invalid name or one registered already
    /// ([`Exists`](TenantErrorKind::Exists)); [`Error::Config`] for a pool of fewer than 2
    /// connections or when another create or drop holds the tenant for 5 minutes; the errors of
    /// [`Migrator::apply_pending`], and the pool's and queries' errors.
    pub async fn create(&self, name: &str) -> Result<Database> {
        let schema = self.schema_for(name)?;
        if self.pool.config().max_connections < 2 {
            return Err(Error::config(
                "max_connections",
                "creating a tenant needs a pool of at least 2 connections (a transaction holds one while its migrations use another)",
            ));
        }
        let _turn = self
            .writers
            .acquire()
            .await
            .map_err(|_| Error::PoolClosed)?;
        self.ensure_registry().await?;
        let mut tx = self.pool.transaction().await?;
        self.lock(&mut tx, name).await?;
        let exists: Option<bool> = tx
            .fetch_value(
                &format!(
                    "SELECT true FROM {} WHERE module = $1 AND name = $2",
                    self.table()
                ),
                (&self.module, name),
            )
            .await?;
        if exists.is_some() {
            return Err(tenant_error(
                name,
                TenantErrorKind::Exists,
                "a tenant of this name exists already",
            ));
        }
        let handle = self.pool.tenant_handle(&schema, &self.compiled_schema)?;
        handle.create_schema().await?;
        self.migrator(&handle).apply_pending().await?;
        tx.execute(
            &format!(
                "INSERT INTO {} (module, name, schema_name) VALUES ($1, $2, $3)",
                self.table()
            ),
            (&self.module, name, &schema),
        )
        .await?;
        tx.commit().await?;
        tracing::info!(tenant = name, schema = %schema, module = %self.module, "pgdbm: created tenant");
        Ok(self.remember(name, handle))
    }

    /// Drops tenant `name`: its schema with everything in it, and its registry row, in one
    /// transaction. `confirm` must repeat the name.
    ///
    /// # Errors
    ///
    /// [`Error::Tenant`] for an invalid name, a `confirm` that differs
    /// ([`NotConfirmed`](TenantErrorKind::NotConfirmed)) or an unregistered tenant
    /// ([`Unknown`](TenantErrorKind::Unknown)), nothing changed; [`Error::Config`] when another
    /// create or drop holds the tenant for 5 minutes; the pool's and queries' errors.
    pub async fn drop(&self, name: &str, confirm: &str) -> Result<()> {
        let schema = self.schema_for(name)?;
        let _turn = self
            .writers
            .acquire()
            .await
            .map_err(|_| Error::PoolClosed)?;
        if confirm != name {
            return Err(tenant_error(
                name,
                TenantErrorKind::NotConfirmed,
                "dropping a tenant deletes all its data: pass its name again as confirmation",
            ));
        }
        let mut tx = self.pool.transaction().await?;
        self.lock(&mut tx, name).await?;
        let gone = match tx
            .execute(
                &format!(
                    "DELETE FROM {} WHERE module = $1 AND name = $2",
                    self.table()
                ),
                (&self.module, name),
            )
            .await
        {
            Ok(n) => n,
            Err(e) if no_registry(&e) => 0,
            Err(e) => return Err(e),
        };
        if gone == 0 {
            return Err(tenant_error(
                name,
                TenantErrorKind::Unknown,
                "no such tenant",
            ));
        }
        tx.execute(
            &format!(
                "DROP SCHEMA IF EXISTS {} CASCADE",
                quote_identifier(&schema)
            ),
            (),
        )
        .await?;
        tx.commit().await?;
        self.handles
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        tracing::info!(tenant = name, schema = %schema, "pgdbm: dropped tenant");
        Ok(())
    }
}
