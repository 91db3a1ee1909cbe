//! Tools some tests compare with or drive, provisioned by the tests themselves under
//! `target/test-tools/` (no root needed), so `cargo test --workspace` passes on a machine that
//! has only PostgreSQL (and Python 3, which Debian's PostgreSQL packages pull in):
//!
//! - pgdbm (Python) 0.5.0, in a virtualenv of its own, for the tests that check both runners
//!   agree (history, locks, `pgdbm.toml`);
//! - sqlx-cli 0.9.0 (`cargo sqlx`), installed with `cargo install --root`, for `pgdbm prepare`.
//!
//! A tool already installed at the right version is used as it is. Each is installed once, into
//! a temporary directory renamed into place, so a run interrupted half-way leaves nothing that
//! looks installed.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

const PGDBM_PYTHON: &str = "0.5.0";
const SQLX_CLI: &str = "0.9.0";

/// `target/test-tools`, beside the running test binary's profile directory.
fn tools_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/<binary>
    let target = exe
        .ancestors()
        .nth(3)
        .expect("a test binary under target/<profile>/deps");
    let dir = target.join("test-tools");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

fn succeeds(cmd: &mut Command) -> bool {
    cmd.output().is_ok_and(|o| o.status.success())
}

/// Runs `cmd`, panicking with its output and what to do when it fails.
fn run(cmd: &mut Command, what: &str, instead: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}; {instead}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}\n{instead}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A Python interpreter that imports pgdbm (Python) 0.5.0: `python3` when it already does,
/// else the interpreter of a virtualenv under `target/test-tools/` (made on first use).
pub fn pgdbm_python() -> PathBuf {
    static FOUND: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut found = FOUND.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = &*found {
        return p.clone();
    }
    let check =
        // The tests drive its CLI too, whose imports (click) are the `cli` extra.
        format!("import importlib.metadata as m, pgdbm.cli; assert m.version('pgdbm') == '{PGDBM_PYTHON}'");
    let system = PathBuf::from("python3");
    let python = if succeeds(Command::new(&system).args(["-c", &check])) {
        system
    } else {
        let venv = tools_dir().join(format!("pgdbm-python-{PGDBM_PYTHON}"));
        let python = venv.join("bin").join("python");
        if !succeeds(Command::new(&python).args(["-c", &check])) {
            install_pgdbm_python(&venv, &check);
        }
        python
    };
    *found = Some(python.clone());
    python
}

/// pgdbm (Python)'s command line (`pgdbm …`), run by [`pgdbm_python`]'s interpreter: the
/// `pgdbm` script a virtualenv installs names the interpreter by the path it was installed at,
/// which the rename into place changes, so the entry point is called through the interpreter.
pub fn pgdbm_python_cli() -> Command {
    let mut cmd = Command::new(pgdbm_python());
    cmd.args([
        "-c",
        "import sys; from pgdbm.cli.main import main; sys.argv[0] = 'pgdbm'; sys.exit(main())",
    ]);
    cmd
}

fn install_pgdbm_python(venv: &Path, check: &str) {
    let instead = format!(
        "these tests compare with pgdbm (Python) {PGDBM_PYTHON}: install python3 with its venv module (Debian: apt-get install python3-venv), or pip install 'pgdbm[cli]=={PGDBM_PYTHON}'"
    );
    eprintln!(
        "installing pgdbm (Python) {PGDBM_PYTHON} into {}",
        venv.display()
    );
    // A sibling the rename moves into place (`with_extension` would eat the version's ".0").
    let mut name = venv.file_name().expect("a venv name").to_os_string();
    name.push(format!(".partial-{}", std::process::id()));
    let building = venv.with_file_name(name);
    let _ = std::fs::remove_dir_all(&building);
    run(
        Command::new("python3").args(["-m", "venv"]).arg(&building),
        "python3 -m venv",
        &instead,
    );
    run(
        Command::new(building.join("bin").join("python"))
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .arg(format!("pgdbm[cli]=={PGDBM_PYTHON}")),
        "pip install pgdbm",
        &instead,
    );
    let _ = std::fs::remove_dir_all(venv);
    if std::fs::rename(&building, venv).is_err() {
        // Another test process finished first: use its copy.
        let _ = std::fs::remove_dir_all(&building);
    }
    // The interpreter finds its packages relative to where it is, so the rename keeps it whole.
    assert!(
        succeeds(Command::new(venv.join("bin").join("python")).args(["-c", check])),
        "pgdbm (Python) is not importable from {} after installing it; {instead}",
        venv.display()
    );
}

/// A `PATH` on which `cargo sqlx` is sqlx-cli 0.9.0: the process's own when it already is,
/// else with `target/test-tools/sqlx-cli/bin` in front (installed on first use, which builds
/// sqlx-cli: a few minutes, once).
pub fn path_with_sqlx_cli() -> std::ffi::OsString {
    static FOUND: Mutex<Option<std::ffi::OsString>> = Mutex::new(None);
    let mut found = FOUND.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = &*found {
        return p.clone();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let right_version = |path: &std::ffi::OsStr| {
        Command::new(cargo())
            .args(["sqlx", "--version"])
            .env("PATH", path)
            .output()
            .is_ok_and(|o| {
                o.status.success() && String::from_utf8_lossy(&o.stdout).contains(SQLX_CLI)
            })
    };
    let chosen = if right_version(&path) {
        path
    } else {
        let root = tools_dir().join("sqlx-cli");
        let mut dirs = vec![root.join("bin")];
        dirs.extend(std::env::split_paths(&path));
        let with_ours = std::env::join_paths(dirs).expect("a valid PATH");
        if !right_version(&with_ours) {
            eprintln!("installing sqlx-cli {SQLX_CLI} into {}", root.display());
            run(
                Command::new(cargo())
                    .args(["install", "sqlx-cli", "--version", SQLX_CLI, "--locked"])
                    .args(["--no-default-features", "--features", "postgres,rustls"])
                    .arg("--root")
                    .arg(&root)
                    // Its own target directory: not this build's, which cargo test holds.
                    .env("CARGO_TARGET_DIR", tools_dir().join("sqlx-cli-build")),
                "cargo install sqlx-cli",
                "install it by hand: cargo install sqlx-cli --version 0.9.0 --no-default-features --features postgres,rustls --locked",
            );
            let _ = std::fs::remove_dir_all(tools_dir().join("sqlx-cli-build"));
        }
        with_ours
    };
    *found = Some(chosen.clone());
    chosen
}

/// The cargo running this test (a toolchain's cargo, not a rustup proxy).
fn cargo() -> PathBuf {
    std::env::var_os("CARGO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("cargo"))
}
