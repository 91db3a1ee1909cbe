//! The example binaries as child processes.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The example binary, brought up to date once per test binary (`cargo test --test x` does not
/// rebuild examples, and a stale one would test old code).
pub fn example(name: &str) -> PathBuf {
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().join("examples");
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !built.iter().any(|b| b == name) {
        let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cargo
            .args(["build", "--quiet", "--example", name])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        // cargo test gives this process the variables of the crate under test; passed on, they
        // make build scripts that watch them (ring's) run again, and everything above them
        // rebuild: about a minute per test binary.
        for (var, _) in std::env::vars_os() {
            let var = var.to_string_lossy();
            if matches!(
                var.as_ref(),
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_MANIFEST_LINKS"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_RUSTC_CURRENT_DIR"
                    | "OUT_DIR"
            ) || var.starts_with("CARGO_PKG_")
                || var.starts_with("CARGO_BIN_EXE_")
            {
                cargo.env_remove(var.as_ref());
            }
        }
        let status = cargo.status().unwrap();
        assert!(status.success(), "cargo build --example {name}");
        built.push(name.to_string());
    }
    dir.join(name)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An example service on a free port, killed when dropped.
pub struct Service {
    pub child: Child,
    pub base: String,
    /// Where its log goes, for [`Service::start_logged`].
    log: Option<PathBuf>,
}

impl Service {
    /// Starts `standalone_service` on `database_url` with extra environment, and waits until it
    /// answers.
    pub async fn start(database_url: &str, env: &[(&str, &str)]) -> Service {
        Service::start_example("standalone_service", database_url, env).await
    }

    /// Starts example `name` (an HTTP service taking `DATABASE_URL` and `PORT`, answering
    /// `/ping`) and waits until it answers.
    pub async fn start_example(name: &str, database_url: &str, env: &[(&str, &str)]) -> Service {
        Service::launch(name, database_url, env, None).await
    }

    /// As [`Service::start`], with the service's log (pgdbm's INFO and up, everything else's
    /// WARN and up) kept for [`Service::log`].
    pub async fn start_logged(database_url: &str, env: &[(&str, &str)]) -> Service {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log =
            std::env::temp_dir().join(format!("pgdbm-service-{}-{n}.log", std::process::id()));
        Service::launch("standalone_service", database_url, env, Some(log)).await
    }

    /// What the service logged so far (empty unless started with [`Service::start_logged`]).
    pub fn log(&self) -> String {
        self.log
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    async fn launch(
        name: &str,
        database_url: &str,
        env: &[(&str, &str)],
        log: Option<PathBuf>,
    ) -> Service {
        let port = free_port();
        let mut cmd = Command::new(example(name));
        let stdout = match &log {
            Some(path) => Stdio::from(std::fs::File::create(path).unwrap()),
            // The service logs to stdout; `PGDBM_TEST_SERVICE_LOG=1` shows it.
            None if std::env::var_os("PGDBM_TEST_SERVICE_LOG").is_some() => Stdio::inherit(),
            None => Stdio::null(),
        };
        cmd.env("DATABASE_URL", database_url)
            .env("PORT", port.to_string())
            .env("PGDBM_EXAMPLE_DEBUG_ROUTES", "1")
            .env(
                "RUST_LOG",
                if log.is_some() {
                    "warn,pgdbm=info"
                } else {
                    "warn"
                },
            )
            .env("NO_COLOR", "1")
            .stdout(stdout)
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let started = Instant::now();
        loop {
            if client.get(format!("{base}/ping")).send().await.is_ok() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "service did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Service { child, base, log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(log) = &self.log {
            let _ = std::fs::remove_file(log);
        }
    }
}
