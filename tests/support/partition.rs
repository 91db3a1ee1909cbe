//! Silent failures for tests: a network partition of a private server's loopback ports
//! (iptables DROP rules), and a frozen server (SIGSTOP of its postmaster and backends).
//!
//! Both undo themselves when dropped, also when the test panics. The rules carry a comment
//! naming this process, so rules left by a test process that was killed outright are removed
//! by the next partition of any test.

use std::process::Command;

use super::packages;

/// Every TCP packet to or from some loopback ports is dropped while this lives.
pub struct Partition {
    rules: Vec<Vec<String>>,
}

fn tag() -> String {
    format!("pgdbm-test-{}", std::process::id())
}

fn iptables(args: &[String]) -> Result<String, String> {
    let out = Command::new("iptables")
        .args(["-w", "5"])
        .args(args)
        .output()
        .map_err(|e| format!("cannot run iptables: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "iptables {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Removes the rules of test processes that no longer run.
fn remove_stale_rules() {
    let Ok(listing) = iptables(&["-S".into(), "INPUT".into()]) else {
        return;
    };
    for rule in listing.lines() {
        let Some(pid) = rule
            .split("pgdbm-test-")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let Some(spec) = rule.strip_prefix("-A ") else {
            continue;
        };
        let mut args = vec!["-D".to_string()];
        // The comment is quoted in the listing only when it holds spaces; ours has none.
        args.extend(spec.split_whitespace().map(str::to_string));
        let _ = iptables(&args);
    }
}

impl Partition {
    /// Drops every packet to and from `ports` on the loopback interface: connections to them
    /// neither answer nor fail, as across a real partition.
    pub fn ports(ports: &[u16]) -> Partition {
        packages::ensure("iptables", "iptables");
        remove_stale_rules();
        let mut partition = Partition { rules: Vec::new() };
        for port in ports {
            for direction in ["--dport", "--sport"] {
                let rule: Vec<String> = [
                    "INPUT",
                    "-i",
                    "lo",
                    "-p",
                    "tcp",
                    direction,
                    &port.to_string(),
                    "-m",
                    "comment",
                    "--comment",
                    &tag(),
                    "-j",
                    "DROP",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect();
                let mut insert = vec!["-I".to_string()];
                insert.extend(rule.iter().cloned());
                if let Err(e) = iptables(&insert) {
                    drop(partition);
                    panic!("partition of ports {ports:?}: {e} (the partition tests run as root)");
                }
                partition.rules.push(rule);
            }
        }
        partition
    }

    /// Ends the partition (as dropping it does).
    pub fn heal(self) {}
}

impl Drop for Partition {
    fn drop(&mut self) {
        for rule in self.rules.drain(..) {
            let mut delete = vec!["-D".to_string()];
            delete.extend(rule);
            if let Err(e) = iptables(&delete) {
                eprintln!("partition: could not remove a rule: {e}");
            }
        }
    }
}

/// Processes stopped with SIGSTOP until this is dropped (then SIGCONT).
pub struct Frozen {
    pids: Vec<i32>,
}

impl Frozen {
    /// Stops `postmaster` and every process it started (the backends, the background workers).
    pub fn server(postmaster: i32) -> Frozen {
        let mut pids = vec![postmaster];
        pids.extend(children_of(postmaster));
        let frozen = Frozen { pids };
        for &pid in &frozen.pids {
            signal("-STOP", pid);
        }
        frozen
    }

    /// How many processes were stopped.
    pub fn count(&self) -> usize {
        self.pids.len()
    }

    /// Lets them run again (as dropping does).
    pub fn thaw(self) {}
}

impl Drop for Frozen {
    fn drop(&mut self) {
        for &pid in &self.pids {
            signal("-CONT", pid);
        }
    }
}

fn signal(which: &str, pid: i32) {
    let _ = Command::new("kill")
        .args([which, &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status();
}

/// The processes whose parent is `parent`, from `/proc`.
pub fn children_of(parent: i32) -> Vec<i32> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`; comm may hold spaces and parentheses, so read after the
        // last `)`.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<i32>().ok());
        if ppid == Some(parent) {
            children.push(pid);
        }
    }
    children
}
