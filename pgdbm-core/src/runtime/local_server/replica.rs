//! Streaming replicas of a running [`LocalCluster`], and their promotion, for tests of
//! read replicas and failover.

use std::path::Path;
use std::process::Command;

use super::{LocalCluster, fail, run, server_user};
use crate::runtime::error::Result;

impl LocalCluster {
    /// A streaming replica of this running server in `root/data` (which must not hold a
    /// cluster yet), made with `pg_basebackup -R -X stream -c fast`: `standby.signal` and
    /// `primary_conninfo` are written, so once [`start`](Self::start)ed (on a spare port, like
    /// any cluster) it follows this one. It gets the same [`settings`](Self::settings).
    ///
    /// The primary needs `full_page_writes` = `on` (see [`setting`](Self::setting)); the
    /// defaults of `wal_level` and `max_wal_senders` suffice.
    ///
    /// # Errors
    ///
    /// [`Error::Config`](crate::Error::Config) (field `local_server`) when this server is not
    /// started, `root` cannot be created, or `pg_basebackup` fails (with this server's log).
    pub fn base_backup(&self, root: &Path) -> Result<LocalCluster> {
        if self.port == 0 {
            return Err(fail(format!(
                "cannot back up {}: not started",
                self.data().display()
            )));
        }
        std::fs::create_dir_all(root)
            .map_err(|e| fail(format!("cannot create {}: {e}", root.display())))?;
        // pg_basebackup runs as the server user (as in `init`), who must own the new data.
        if let Some(u) = server_user() {
            run(Command::new("chown").arg("-R").arg(u).arg(root)).map_err(fail)?;
        }
        let replica = LocalCluster {
            bin: self.bin.clone(),
            root: root.to_path_buf(),
            port: 0,
        };
        run(replica
            .command("pg_basebackup")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .arg("-D")
            .arg(replica.data())
            // --no-sync: a test replica is as disposable as its primary (fsync=off).
            .args(["-R", "-X", "stream", "-c", "fast", "--no-sync"]))
        .map_err(|e| fail(format!("{e}\n{}", self.log_tail())))?;
        replica.write_settings(&self.settings())?;
        Ok(replica)
    }

    /// `pg_ctl promote -w`: ends recovery of this (standby) server and waits until it accepts
    /// writes.
    ///
    /// # Errors
    ///
    /// [`Error::Config`](crate::Error::Config) (field `local_server`) when `pg_ctl promote` fails
    /// (the server is not a standby, say), with the server log's last lines.
    pub fn promote(&self) -> Result<()> {
        self.pg_ctl("promote", &[])
    }
}
