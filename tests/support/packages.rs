//! System tools some tests need beyond PostgreSQL (iptables, Patroni, etcd), installed from
//! Debian's packages when missing, so the test command passes on a machine that has only
//! PostgreSQL (as root, which those tests need anyway).

use std::process::Command;
use std::sync::Mutex;

/// Makes sure `binary` is on the `PATH` (or in `/usr/sbin`), installing Debian `package` with
/// apt-get when it is not; panics, saying what to install, when that is not possible.
pub fn ensure(binary: &str, package: &str) {
    // One apt-get at a time in this process (tests run in parallel; apt takes a lock).
    static APT: Mutex<()> = Mutex::new(());
    let _apt = APT.lock().unwrap_or_else(|e| e.into_inner());
    if found(binary) {
        return;
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    assert!(
        root,
        "`{binary}` is missing: install Debian's package `{package}` (apt-get install {package}); the tests install it themselves only as root"
    );
    eprintln!("installing {package} (for `{binary}`) with apt-get");
    let update = Command::new("apt-get").args(["update", "-qq"]).status();
    let install = Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends", package])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status();
    assert!(
        update.is_ok_and(|s| s.success()) && install.is_ok_and(|s| s.success()) && found(binary),
        "could not install Debian's package `{package}` for `{binary}`; install it by hand"
    );
}

fn found(binary: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .any(|dir| dir.join(binary).is_file())
}
