//! Lanes: the pool's connections split into small sub-pools, so that a tenant's statements go
//! back to the few connections that already prepared them.
//!
//! Why: a tenant handle's SQL names the tenant's schema, so every tenant is a prepared
//! statement of its own on every connection that runs its queries. When any connection may run
//! any tenant, each connection's statement cache needs a slot per tenant and query, and past its
//! capacity every query pays Parse/Describe/plan again and evicts another statement: measured
//! (`benches/tenant_designs.rs`), the same point query over 1,000 tenants ran at 0.16 of one
//! tenant with sqlx's cache of 256, and at 0.66 once every statement was prepared, but then
//! every connection's server process held every tenant's plans (206 MiB each at 10,000
//! tenants). With lanes, tenant `t` prefers lane `hash(t) % lanes`, so a connection sees about
//! `tenants / lanes` tenants and its cache and server memory are bounded by that share.
//!
//! A lane is a deadpool pool of its own (deadpool hands out any idle object; it cannot prefer
//! one). A checkout tries its lane, waits for it up to [`STEAL_AFTER`] unless the lane is hot
//! (more callers wait for it than it has connections), then takes an idle connection of any
//! other lane before it waits longer; while it waits it looks at the other lanes again every
//! [`RESWEEP`], so a busy lane never keeps a caller waiting while another lane has a free
//! connection. Callers with no tenant (every other handle) start at a rotating lane and take
//! the first free connection.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use deadpool::managed::{self, PoolError, Status, TimeoutType, Timeouts};

use super::manager::{ConnManager, DeadPool, PoolObject};

/// How often a caller waiting on its lane looks for a free connection in the others.
const RESWEEP: Duration = Duration::from_millis(2);

/// How long a tenant's caller waits for its own lane before it takes another lane's connection.
const STEAL_AFTER: Duration = Duration::from_millis(5);

/// The lanes of one pool.
pub(crate) struct Lanes {
    lanes: Vec<DeadPool>,
    /// Where the next caller without a tenant starts.
    next: AtomicUsize,
}

/// Which lane a tenant's queries prefer: a stable hash of its schema, so every handle of the
/// tenant, in any process, agrees.
pub(crate) fn lane_key(schema: &str) -> u64 {
    // FNV-1a: stable across processes and releases (std's hasher is randomly seeded).
    schema.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Lanes {
    /// `count` lanes sharing `max_size` connections (the first lanes get one more when it does
    /// not divide), each with its own copy of `manager`.
    pub(crate) fn build(
        manager: &ConnManager,
        max_size: usize,
        count: usize,
    ) -> Result<Lanes, String> {
        let count = count.clamp(1, max_size.max(1));
        let lanes = (0..count)
            .map(|i| {
                let size = max_size / count + usize::from(i < max_size % count);
                managed::Pool::builder(manager.clone())
                    .max_size(size)
                    .queue_mode(managed::QueueMode::Lifo)
                    .runtime(deadpool::Runtime::Tokio1)
                    .build()
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Lanes {
            lanes,
            next: AtomicUsize::new(0),
        })
    }

    /// How many lanes.
    pub(crate) fn count(&self) -> usize {
        self.lanes.len()
    }

    /// The manager (every lane's is a copy of the same).
    pub(crate) fn manager(&self) -> &ConnManager {
        self.lanes[0].manager()
    }

    /// A connection, preferring lane `key % lanes` (a tenant's), else the first free one.
    /// `timeouts.wait` bounds the whole wait (`None`: no bound).
    pub(crate) async fn get(
        &self,
        key: Option<u64>,
        timeouts: &Timeouts,
    ) -> Result<PoolObject, PoolError<sqlx::Error>> {
        let n = self.lanes.len();
        if n == 1 {
            return self.lanes[0].timeout_get(timeouts).await;
        }
        let home = match key {
            Some(k) => (k % n as u64) as usize,
            None => self.next.fetch_add(1, Ordering::Relaxed) % n,
        };
        let now = Timeouts {
            wait: Some(Duration::ZERO),
            ..*timeouts
        };
        let started = tokio::time::Instant::now();
        // A tenant's own lane first, even if that opens a connection there: that is where its
        // statements are. When the lane is busy, waiting for one of its connections costs less
        // than running the tenant's statement on another lane's connection, which prepares and
        // plans it there (measured over 1,000 tenants, `cargo bench --bench tenants`: 0.63 of
        // one tenant with this rule, 0.44-0.47 when such callers took another lane's connection
        // at once or after 1 ms, every connection then holding most tenants' statements).
        // So callers wait for their lane, as many at a time as it has connections, up to
        // `STEAL_AFTER`; past that many waiters the lane is hot (one busy tenant, say) and
        // callers take other lanes' idle connections at once. A caller without a tenant opens
        // a connection only where nothing is idle.
        if key.is_some() {
            let lane = &self.lanes[home];
            if let Some(obj) = try_now(lane, &now).await? {
                return Ok(obj);
            }
            let status = lane.status();
            if status.waiting < status.max_size {
                let wait = timeouts.wait.map_or(STEAL_AFTER, |w| w.min(STEAL_AFTER));
                let brief = Timeouts {
                    wait: Some(wait),
                    ..*timeouts
                };
                match lane.timeout_get(&brief).await {
                    Err(PoolError::Timeout(TimeoutType::Wait)) => {}
                    r => return r,
                }
            }
        }
        self.wait_sweeping(home, timeouts, &now, started).await
    }

    /// Takes the first free connection of any lane, waiting on lane `home` meanwhile and looking
    /// at the others every [`RESWEEP`], until `timeouts.wait` has passed since `started`.
    async fn wait_sweeping(
        &self,
        home: usize,
        timeouts: &Timeouts,
        now: &Timeouts,
        started: tokio::time::Instant,
    ) -> Result<PoolObject, PoolError<sqlx::Error>> {
        loop {
            if let Some(obj) = self.sweep(home, now).await? {
                return Ok(obj);
            }
            let left = match timeouts.wait {
                Some(w) => match w.checked_sub(started.elapsed()) {
                    Some(left) if !left.is_zero() => left,
                    _ => return Err(PoolError::Timeout(TimeoutType::Wait)),
                },
                None => RESWEEP,
            };
            let slice = Timeouts {
                wait: Some(left.min(RESWEEP)),
                ..*timeouts
            };
            match self.lanes[home].timeout_get(&slice).await {
                Err(PoolError::Timeout(TimeoutType::Wait)) => {}
                r => return r,
            }
        }
    }

    /// An idle connection of any lane (from `home` on), else a new one in the first lane with
    /// room; `None` when every lane is full and busy.
    async fn sweep(
        &self,
        home: usize,
        now: &Timeouts,
    ) -> Result<Option<PoolObject>, PoolError<sqlx::Error>> {
        let n = self.lanes.len();
        let order = (0..n).map(|i| &self.lanes[(home + i) % n]);
        for lane in order.clone() {
            if lane.status().available > 0
                && let Some(obj) = try_now(lane, now).await?
            {
                return Ok(Some(obj));
            }
        }
        for lane in order {
            if let Some(obj) = try_now(lane, now).await? {
                return Ok(Some(obj));
            }
        }
        Ok(None)
    }

    /// The pool's status: the lanes' added up.
    pub(crate) fn status(&self) -> Status {
        self.lanes.iter().map(DeadPool::status).fold(
            Status {
                max_size: 0,
                size: 0,
                available: 0,
                waiting: 0,
            },
            |a, s| Status {
                max_size: a.max_size + s.max_size,
                size: a.size + s.size,
                available: a.available + s.available,
                waiting: a.waiting + s.waiting,
            },
        )
    }

    /// Keeps the idle connections `f` says to keep, in every lane.
    pub(crate) fn retain(&self, mut f: impl FnMut(&managed::Metrics) -> bool) {
        for lane in &self.lanes {
            lane.retain(|_, m| f(&m));
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lanes[0].is_closed()
    }

    pub(crate) fn close(&self) {
        for lane in &self.lanes {
            lane.close();
        }
    }
}

/// A connection of `lane` if one is free or can be opened now; `None` if the lane is full.
async fn try_now(
    lane: &DeadPool,
    now: &Timeouts,
) -> Result<Option<PoolObject>, PoolError<sqlx::Error>> {
    match lane.timeout_get(now).await {
        Ok(obj) => Ok(Some(obj)),
        Err(PoolError::Timeout(TimeoutType::Wait)) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::lane_key;
    use crate::runtime::config::DatabaseConfig;

    #[test]
    fn lanes_default_to_pairs_of_connections_and_are_set_by_code_env_and_file() {
        let c = DatabaseConfig::new("postgresql://u@h/db");
        assert_eq!(c.max_connections(10).lanes(), 5);
        let c = DatabaseConfig::new("postgresql://u@h/db");
        assert_eq!(c.max_connections(1).lanes(), 1);
        let c = DatabaseConfig::new("postgresql://u@h/db")
            .min_connections(1)
            .max_connections(4);
        assert_eq!(
            c.clone().tenant_lanes(9).lanes(),
            4,
            "never more lanes than connections"
        );
        assert_eq!(c.clone().tenant_lanes(1).lanes(), 1);
        let e = c.tenant_lanes(0).validate().unwrap_err().to_string();
        assert!(
            e.contains("tenant_lanes") && e.contains("at least 1"),
            "{e}"
        );

        let env = DatabaseConfig::from_lookup(|k| match k {
            "DATABASE_URL" => Some("postgresql://u@h/db".into()),
            "DB_TENANT_LANES" => Some("3".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(env.lanes(), 3);
        let bad = DatabaseConfig::from_lookup(|k| match k {
            "DATABASE_URL" => Some("postgresql://u@h/db".into()),
            "DB_TENANT_LANES" => Some("many".into()),
            _ => None,
        });
        assert!(bad.unwrap_err().to_string().contains("DB_TENANT_LANES"));
        let file: DatabaseConfig = serde_json::from_str(
            r#"{"url": "postgresql://u@h/db", "max_connections": 16, "tenant_lanes": 8}"#,
        )
        .unwrap();
        assert_eq!(file.lanes(), 8);
    }

    #[test]
    fn a_tenants_lane_is_stable_and_tenants_spread_over_the_lanes() {
        // Fixed: the same schema must map to the same lane in every process and release.
        assert_eq!(lane_key("tenant_acme"), lane_key("tenant_acme"));
        assert_eq!(lane_key(""), 0xcbf2_9ce4_8422_2325);
        let mut per_lane = [0usize; 8];
        for t in 0..8000 {
            per_lane[(lane_key(&format!("tenant_{t}")) % 8) as usize] += 1;
        }
        for n in per_lane {
            assert!((800..=1200).contains(&n), "uneven lanes: {per_lane:?}");
        }
    }
}
