//! Template databases: migrated once per distinct migration set, cloned per test.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use sqlx::{AssertSqlSafe, Connection, PgConnection};

use crate::ident::quote_identifier;
use crate::migrations::MigrationSet;
use crate::runtime::config::DatabaseConfig;
use crate::runtime::database::Database;
use crate::runtime::error::{Error, Result};
use crate::runtime::migrator::Migrator;

/// Every database pgdbm's test support creates starts with this; nothing else is ever dropped.
pub(crate) const TEST_PREFIX: &str = "pgdbm_test_";
/// Template databases start with this.
pub(crate) const TEMPLATE_PREFIX: &str = "pgdbm_tpl_";

/// What a template is built from.
pub(crate) struct TemplateSpec<'a> {
    /// The modules migrated into it, in order.
    pub(crate) modules: Vec<ModuleSpec>,
    /// The schema of the test's `Database` (fixtures render into it).
    pub(crate) schema: Option<&'a str>,
    pub(crate) fixtures: Vec<(String, String)>,
}

/// One module of a template: its migrations, recorded under `module`, rendered into `schema`.
pub(crate) struct ModuleSpec {
    pub(crate) dir: std::path::PathBuf,
    pub(crate) set: MigrationSet,
    pub(crate) module: String,
    pub(crate) schema: Option<String>,
}

impl TemplateSpec<'_> {
    /// A name that changes whenever anything that goes into the template changes.
    pub(crate) fn name(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"pgdbm-template-v2\0");
        for m in &self.modules {
            h.update(m.set.set_checksum().as_bytes());
            h.update(b"\0");
            h.update(m.module.as_bytes());
            h.update(b"\0");
            h.update(m.schema.as_deref().unwrap_or("").as_bytes());
            h.update(b"\0");
        }
        h.update(b"\0");
        h.update(self.schema.unwrap_or("").as_bytes());
        for (name, content) in &self.fixtures {
            h.update(b"\0");
            h.update(name.as_bytes());
            h.update(b"\0");
            h.update(crate::migrations::checksum(content).as_bytes());
        }
        let digest = h.finalize();
        let hex: String = digest[..10].iter().map(|b| format!("{b:02x}")).collect();
        format!("{TEMPLATE_PREFIX}{hex}")
    }
}

pub(crate) fn url_for(admin_url: &str, db: &str) -> String {
    match url::Url::parse(admin_url) {
        Ok(mut u) => {
            u.set_path(&format!("/{db}"));
            u.to_string()
        }
        Err(_) => admin_url.to_string(),
    }
}

pub(crate) async fn admin(admin_url: &str) -> Result<PgConnection> {
    use sqlx::ConnectOptions;
    let cfg = DatabaseConfig::new(admin_url)
        .statement_timeout(None)
        .lock_timeout(None)
        .idle_in_transaction_session_timeout(None);
    cfg.connect_options()?
        .connect()
        .await
        .map_err(|e| super::super::pool::connect_error(&cfg, 1, e))
}

async fn exec(conn: &mut PgConnection, sql: String) -> Result<()> {
    sqlx::raw_sql(AssertSqlSafe(sql.clone()))
        .execute(&mut *conn)
        .await
        .map(|_| ())
        .map_err(|e| Error::query(sql, e))
}

/// Makes sure the template for `spec` exists, building it under a lock if needed.
pub(crate) async fn ensure_template(admin_url: &str, spec: &TemplateSpec<'_>) -> Result<String> {
    let name = spec.name();
    let mut conn = admin(admin_url).await?;
    if template_ready(&mut conn, &name).await? {
        return Ok(name);
    }
    // One builder per template across every test binary; the others wait, then reuse it.
    let lock_sql = "SELECT pg_try_advisory_lock(hashtext('pgdbm_template'), hashtext($1))";
    let started = std::time::Instant::now();
    loop {
        let got: bool = sqlx::query_scalar(lock_sql)
            .bind(&name)
            .fetch_one(&mut conn)
            .await
            .map_err(|e| Error::query(lock_sql, e))?;
        if got {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            return Err(Error::config(
                "test_template",
                format!("timed out waiting for another process to build template `{name}`"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = async {
        if template_ready(&mut conn, &name).await? {
            return Ok(());
        }
        build(admin_url, &mut conn, &name, spec).await
    }
    .await;
    let _ = conn.close().await; // releases the advisory lock
    r.map(|()| name)
}

async fn template_ready(conn: &mut PgConnection, name: &str) -> Result<bool> {
    let sql = "SELECT datistemplate FROM pg_database WHERE datname = $1";
    let flag: Option<bool> = sqlx::query_scalar(sql)
        .bind(name)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| Error::query(sql, e))?;
    Ok(flag == Some(true))
}

async fn build(
    admin_url: &str,
    conn: &mut PgConnection,
    name: &str,
    spec: &TemplateSpec<'_>,
) -> Result<()> {
    // Built under another name and renamed when complete, so a half-built template (a killed
    // run) is never cloned: it is rebuilt.
    let building = format!("{name}_build");
    for stale in [&building, &name.to_string()] {
        exec(
            conn,
            format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote_identifier(stale)
            ),
        )
        .await?;
    }
    exec(
        conn,
        format!("CREATE DATABASE {}", quote_identifier(&building)),
    )
    .await?;
    let result = async {
        let mut config = DatabaseConfig::new(url_for(admin_url, &building))
            .min_connections(1)
            .max_connections(2)
            .retry_attempts(1);
        if let Some(s) = spec.schema {
            config = config.schema(s);
        }
        let db = Database::connect(config).await?;
        let r = async {
            for m in &spec.modules {
                let handle = db.with_schema(m.schema.as_deref())?;
                Migrator::new(&handle, &m.dir, &m.module)
                    .apply_pending()
                    .await?;
            }
            for (file, content) in &spec.fixtures {
                db.execute(content, ()).await.map_err(|e| {
                    Error::config("fixtures", format!("fixture `{file}` failed: {e}"))
                })?;
            }
            Ok::<_, Error>(())
        }
        .await;
        db.close().await;
        r
    }
    .await;
    if let Err(e) = result {
        let _ = exec(
            conn,
            format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote_identifier(&building)
            ),
        )
        .await;
        return Err(e);
    }
    // Sessions of the build pool may still be closing; FORCE is not available for RENAME.
    let q = quote_identifier;
    exec(
        conn,
        format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{building}'"
        ),
    )
    .await?;
    for attempt in 0.. {
        match exec(
            conn,
            format!("ALTER DATABASE {} RENAME TO {}", q(&building), q(name)),
        )
        .await
        {
            Ok(()) => break,
            Err(e) if attempt < 50 && e.code() == Some("55006") => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => return Err(e),
        }
    }
    exec(
        conn,
        format!("ALTER DATABASE {} WITH IS_TEMPLATE true", q(name)),
    )
    .await
}

/// A fresh name for a test database: prefix, creation time and process id (so a later run can
/// tell a leftover from a database in use).
pub(crate) fn test_db_name() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!(
        "{TEST_PREFIX}{secs}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// How a template is cloned: `FILE_COPY` copies its files (a checkpoint, then one copy per
/// directory), `WAL_LOG` copies it block by block through the WAL (PostgreSQL 15's default).
/// Measured on the in-memory throwaway server with a 200-table template (`cargo bench --bench
/// testdb`, see the README): FILE_COPY is the faster. `PGDBM_TEST_CLONE_STRATEGY=wal_log` (or
/// `file_copy`, or `default` for the server's own choice) overrides it.
fn clone_strategy() -> Option<&'static str> {
    match std::env::var("PGDBM_TEST_CLONE_STRATEGY")
        .unwrap_or_default()
        .to_ascii_lowercase()
        .as_str()
    {
        "wal_log" => Some("WAL_LOG"),
        "default" => None,
        _ => Some("FILE_COPY"),
    }
}

/// Clones `template` (or creates an empty database) under a fresh test name.
pub(crate) async fn create_test_db(admin_url: &str, template: Option<&str>) -> Result<String> {
    let name = test_db_name();
    let mut conn = admin(admin_url).await?;
    let r = match template {
        Some(t) => {
            let sql = format!(
                "CREATE DATABASE {} TEMPLATE {}",
                quote_identifier(&name),
                quote_identifier(t)
            );
            match clone_strategy() {
                Some(strategy) => {
                    let with = exec(&mut conn, format!("{sql} STRATEGY {strategy}")).await;
                    match with {
                        // PostgreSQL before 15 has no STRATEGY.
                        Err(Error::Query(q)) if q.code() == Some("42601") => {
                            exec(&mut conn, sql).await
                        }
                        other => other,
                    }
                }
                None => exec(&mut conn, sql).await,
            }
        }
        None => {
            exec(
                &mut conn,
                format!("CREATE DATABASE {}", quote_identifier(&name)),
            )
            .await
        }
    };
    let _ = conn.close().await;
    r.map(|()| name)
}

/// Drops a test database (only names with the test prefix).
pub(crate) async fn drop_test_db(admin_url: &str, name: &str) -> Result<()> {
    if !name.starts_with(TEST_PREFIX) {
        return Err(Error::config(
            "test_database",
            format!("refusing to drop `{name}`: pgdbm only drops databases it created"),
        ));
    }
    let mut conn = admin(admin_url).await?;
    let r = exec(
        &mut conn,
        format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_identifier(name)
        ),
    )
    .await;
    let _ = conn.close().await;
    r
}

/// Whether a leftover test database may be dropped: its process is gone (same machine) and it
/// is older than two minutes, or it is older than a day whatever its process.
pub(crate) fn is_stale(name: &str, now_secs: u64) -> bool {
    let Some(rest) = name.strip_prefix(TEST_PREFIX) else {
        return false;
    };
    let mut parts = rest.split('_');
    let (Some(secs), Some(pid)) = (
        parts.next().and_then(|s| s.parse::<u64>().ok()),
        parts.next().and_then(|s| s.parse::<u32>().ok()),
    ) else {
        return false;
    };
    let age = now_secs.saturating_sub(secs);
    if pid == std::process::id() {
        return false;
    }
    let alive = std::path::Path::new(&format!("/proc/{pid}")).exists();
    (age > 120 && !alive) || age > 24 * 3600
}

/// Drops leftover test databases of killed runs. Returns the names dropped.
pub(crate) async fn drop_stale(admin_url: &str) -> Result<Vec<String>> {
    let mut conn = admin(admin_url).await?;
    let sql = "SELECT datname::text FROM pg_database WHERE datname LIKE 'pgdbm\\_test\\_%'";
    let names: Vec<String> = sqlx::query_scalar(sql)
        .fetch_all(&mut conn)
        .await
        .map_err(|e| Error::query(sql, e))?;
    let _ = conn.close().await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut dropped = Vec::new();
    for name in names.into_iter().filter(|n| is_stale(n, now)) {
        if drop_test_db(admin_url, &name).await.is_ok() {
            dropped.push(name);
        }
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staleness() {
        let now = 1_000_000;
        // A dead pid (pid numbers above the kernel maximum cannot exist).
        assert!(is_stale("pgdbm_test_999000_4294967_0", now));
        assert!(!is_stale("pgdbm_test_999990_4294967_0", now)); // too young
        let me = std::process::id();
        assert!(!is_stale(&format!("pgdbm_test_1_{me}_0"), now)); // ours
        assert!(is_stale("pgdbm_test_1_1_0", now)); // older than a day
        assert!(!is_stale("myapp_production", now));
        assert!(!is_stale("pgdbm_test_garbage", now));
        assert!(!is_stale("pgdbm_tpl_abc", now));
    }

    #[test]
    fn names_carry_prefix_time_and_pid() {
        let n = test_db_name();
        assert!(n.starts_with(TEST_PREFIX));
        assert!(n.contains(&format!("_{}_", std::process::id())));
        assert!(n.len() <= 63);
        assert_ne!(test_db_name(), n);
    }
}
