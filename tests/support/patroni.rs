//! A Patroni cluster of our own: one etcd and two or three Patroni-managed PostgreSQL nodes, on
//! spare loopback ports with their data in `/dev/shm`, from Debian's packages (`patroni`,
//! `etcd-server`, installed when missing). Everything is stopped and deleted on drop, also when
//! the test fails.
//!
//! Each node talks to etcd on a client port of its own (etcd listens on one per node, and
//! Patroni is told not to discover the others), so a partition of a node's ports cuts it off
//! from etcd too, as across a real network partition; a node reaches its own PostgreSQL over a
//! Unix socket, as on a real host.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::packages;
use super::partition::{Partition, children_of};
use super::pg_server::psql_at;

const BIN: &str = "/usr/lib/postgresql/15/bin";
/// Patroni's leader key lives this long without renewal: the engine's own detection time.
pub const TTL: Duration = Duration::from_secs(10);

/// One Patroni node.
pub struct Node {
    pub name: String,
    pub pg_port: u16,
    pub rest_port: u16,
    /// The etcd client port only this node uses.
    pub etcd_port: u16,
    dir: PathBuf,
    patroni: Option<Child>,
}

impl Node {
    fn config(&self) -> PathBuf {
        self.dir.join("patroni.yml")
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The postmaster's pid, if it runs.
    pub fn postmaster_pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.data().join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }
}

/// A running cluster; stopped and deleted on drop.
pub struct PatroniCluster {
    root: PathBuf,
    etcd: Option<Child>,
    pub nodes: Vec<Node>,
}

/// `count` spare ports, held together while they are chosen so that they differ.
fn spare_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

fn postgres_ids() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("a `postgres` user (Debian's postgresql package makes it)")
    };
    (id("-u"), id("-g"))
}

impl PatroniCluster {
    /// Starts etcd and `nodes` Patroni nodes (`ttl` 10 s, `loop_wait` 2 s, `retry_timeout` 5 s,
    /// `synchronous_mode: true`) and waits until there is a leader and a synchronous standby.
    pub fn start(nodes: usize) -> PatroniCluster {
        packages::ensure("patroni", "patroni");
        packages::ensure("etcd", "etcd-server");
        static N: AtomicUsize = AtomicUsize::new(0);
        let root = PathBuf::from(format!(
            "/dev/shm/pgdbm-patroni-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let (uid, gid) = postgres_ids();
        let ports = spare_ports(1 + nodes * 3);
        let peer_port = ports[0];
        let mut cluster = PatroniCluster {
            root: root.clone(),
            etcd: None,
            nodes: Vec::new(),
        };
        for i in 0..nodes {
            let dir = root.join(format!("node{}", i + 1));
            std::fs::create_dir_all(&dir).unwrap();
            cluster.nodes.push(Node {
                name: format!("node{}", i + 1),
                pg_port: ports[1 + i * 3],
                rest_port: ports[2 + i * 3],
                etcd_port: ports[3 + i * 3],
                dir,
                patroni: None,
            });
        }
        chown(&root, uid, gid);
        let client_urls: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("http://127.0.0.1:{}", n.etcd_port))
            .collect();
        let etcd_log = std::fs::File::create(root.join("etcd.log")).unwrap();
        let etcd = Command::new("etcd")
            .args(["--name", "e", "--enable-v2=true"])
            .arg("--data-dir")
            .arg(root.join("etcd"))
            .args(["--listen-client-urls", &client_urls.join(",")])
            .args(["--advertise-client-urls", &client_urls[0]])
            .args([
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{peer_port}"),
            ])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{peer_port}"),
            ])
            .args([
                "--initial-cluster",
                &format!("e=http://127.0.0.1:{peer_port}"),
            ])
            .stdout(etcd_log.try_clone().unwrap())
            .stderr(etcd_log)
            .uid(uid)
            .gid(gid)
            .spawn()
            .expect("start etcd");
        cluster.etcd = Some(etcd);
        let scope = root.file_name().unwrap().to_string_lossy().into_owned();
        for node in &mut cluster.nodes {
            std::fs::write(node.config(), node_config(&scope, node)).unwrap();
            chown(&node.dir, uid, gid);
            node.patroni = Some(spawn_patroni(node, uid, gid));
        }
        cluster.wait_ready(Duration::from_secs(90));
        cluster
    }

    /// Waits until one node leads and another is its synchronous standby; panics with the logs
    /// after `within`.
    pub fn wait_ready(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if let Some(members) = self.members()
                && members
                    .iter()
                    .any(|(_, role, state)| role == "leader" && state == "running")
                && members.iter().any(|(_, role, _)| role == "sync_standby")
            {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "no leader with a synchronous standby after {within:?}: {:?}\n{}",
                    self.members(),
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// `(name, role, state)` of each member, from the REST API of the first node that answers.
    pub fn members(&self) -> Option<Vec<(String, String, String)>> {
        for node in &self.nodes {
            let Some(body) = http_get(node.rest_port, "/cluster") else {
                continue;
            };
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            let members = v["members"].as_array()?;
            return Some(
                members
                    .iter()
                    .map(|m| {
                        let s = |k: &str| m[k].as_str().unwrap_or_default().to_string();
                        (s("name"), s("role"), s("state"))
                    })
                    .collect(),
            );
        }
        None
    }

    /// The index of the node that leads now, by the REST API.
    pub fn leader(&self) -> Option<usize> {
        let members = self.members()?;
        let (name, ..) = members.iter().find(|(_, role, _)| role == "leader")?;
        self.nodes.iter().position(|n| &n.name == name)
    }

    /// `postgresql://postgres@127.0.0.1:P1,127.0.0.1:P2,…/database?target_session_attrs=read-write`.
    pub fn host_list_url(&self, database: &str) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.pg_port))
            .collect();
        format!(
            "postgresql://postgres@{}/{database}?target_session_attrs=read-write",
            hosts.join(",")
        )
    }

    /// Runs `sql` with psql on node `i` (connecting gives up after 2 s).
    pub fn psql(&self, i: usize, database: &str, sql: &str) -> Result<String, String> {
        psql_at(self.nodes[i].pg_port, database, sql, 2)
    }

    /// Whether node `i` accepts writes now (answers, and is not in recovery).
    pub fn writable(&self, i: usize) -> bool {
        self.psql(i, "postgres", "SELECT pg_is_in_recovery()")
            .is_ok_and(|r| r == "f")
    }

    /// Node loss: `kill -9` of node `i`'s patroni and postmaster (its backends then end too).
    pub fn kill(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Some(mut p) = node.patroni.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
        if let Some(pid) = node.postmaster_pid() {
            signal("-KILL", pid);
        }
    }

    /// A partition of node `i`: every packet to and from its PostgreSQL, REST API and etcd
    /// client ports is dropped while the returned value lives.
    pub fn partition(&self, i: usize) -> Partition {
        let n = &self.nodes[i];
        Partition::ports(&[n.pg_port, n.rest_port, n.etcd_port])
    }

    /// `patronictl switchover` from the leader `from` to `to`, forced (no prompt).
    pub fn switchover(&self, from: usize, to: usize) -> Result<String, String> {
        let out = Command::new("patronictl")
            .arg("-c")
            .arg(self.nodes[to].config())
            .args([
                "switchover",
                "--leader",
                &self.nodes[from].name,
                "--candidate",
                &self.nodes[to].name,
                "--force",
            ])
            .output()
            .map_err(|e| e.to_string())?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            Ok(text)
        } else {
            Err(text)
        }
    }

    /// The tails of the etcd and Patroni logs, for a failure message.
    pub fn logs(&self) -> String {
        let mut all = tail(&self.root.join("etcd.log"), 10);
        for n in &self.nodes {
            all.push_str(&tail(&n.dir.join("patroni.log"), 20));
        }
        all
    }
}

impl Drop for PatroniCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut p) = node.patroni.take() {
                let _ = p.kill();
                let _ = p.wait();
            }
        }
        for node in &self.nodes {
            if let Some(pid) = node.postmaster_pid() {
                let children = children_of(pid);
                signal("-KILL", pid);
                for c in children {
                    signal("-KILL", c);
                }
            }
        }
        if let Some(mut e) = self.etcd.take() {
            let _ = e.kill();
            let _ = e.wait();
        }
        // Backends of a killed postmaster exit by themselves; give them a moment.
        std::thread::sleep(Duration::from_millis(200));
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn node_config(scope: &str, node: &Node) -> String {
    let dir = node.dir.display();
    format!(
        "scope: {scope}
name: {name}
log: {{level: INFO, dir: {dir}, file_num: 1}}
restapi: {{listen: 127.0.0.1:{rest}, connect_address: 127.0.0.1:{rest}}}
etcd: {{host: 127.0.0.1:{etcd}, use_proxies: true}}
bootstrap:
  dcs:
    ttl: {ttl}
    loop_wait: 2
    retry_timeout: 5
    synchronous_mode: true
    postgresql:
      use_pg_rewind: false
      parameters: {{fsync: 'off', max_connections: 100, wal_keep_size: 256MB, hot_standby_feedback: 'on', dynamic_shared_memory_type: mmap}}
  initdb: [{{encoding: UTF8}}, {{auth: trust}}]
  pg_hba:
    - host replication replicator 127.0.0.1/32 trust
    - host all all 127.0.0.1/32 trust
    - local all all trust
postgresql:
  listen: 127.0.0.1:{pg}
  connect_address: 127.0.0.1:{pg}
  use_unix_socket: true
  data_dir: {dir}/data
  bin_dir: {BIN}
  pgpass: {dir}/pgpass
  authentication:
    replication: {{username: replicator, password: rep}}
    superuser: {{username: postgres, password: pg}}
  parameters: {{unix_socket_directories: '{dir}'}}
",
        name = node.name,
        rest = node.rest_port,
        etcd = node.etcd_port,
        pg = node.pg_port,
        ttl = TTL.as_secs(),
    )
}

fn spawn_patroni(node: &Node, uid: u32, gid: u32) -> Child {
    Command::new("patroni")
        .arg(node.config())
        .current_dir(&node.dir)
        .env("HOME", &node.dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .uid(uid)
        .gid(gid)
        .spawn()
        .expect("start patroni")
}

fn chown(path: &Path, uid: u32, gid: u32) {
    let _ = Command::new("chown")
        .arg("-R")
        .arg(format!("{uid}:{gid}"))
        .arg(path)
        .status();
}

fn signal(which: &str, pid: i32) {
    let _ = Command::new("kill")
        .args([which, &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status();
}

/// A GET to the REST API on `port`: the body of a 2xx answer within 2 s.
fn http_get(port: u16, path: &str) -> Option<String> {
    let addr = ([127, 0, 0, 1], port).into();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let ok = head.split_whitespace().nth(1)?.starts_with('2');
    ok.then(|| body.to_string())
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    format!(
        "--- {} ---\n{}\n",
        path.display(),
        all[all.len().saturating_sub(lines)..].join("\n")
    )
}
