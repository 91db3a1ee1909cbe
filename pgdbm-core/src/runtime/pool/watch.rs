//! What pgdbm knows of each pooled connection while statements run on it, so that a statement
//! waiting on a server that went silent can be noticed and ended.
//!
//! Every statement pgdbm runs goes through [`ConnWatch::run`]: two counters say whether one is
//! in flight (the liveness check in `liveness.rs` reads them every tick, so the hot path pays
//! two plain stores and no timer), and the statement's future ends at once when the check cuts
//! the connection or the call's [`Deadline`] passes. A statement whose future is dropped before
//! it finished (a deadline, a caller that gave up) leaves the connection mid-protocol: it is
//! marked interrupted and the pool drops it rather than hand it out again.

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_core::Stream;
use futures_core::stream::BoxStream;
use futures_util::StreamExt;
use futures_util::task::AtomicWaker;

use super::socket::SocketHandle;
use crate::runtime::error::{Cut, CutReason};

/// One pooled connection as the liveness check sees it.
pub(crate) struct ConnWatch {
    /// Statements begun and finished on this connection: one is in flight while they differ.
    started: AtomicU64,
    finished: AtomicU64,
    /// Set once, with the reason, when the connection must not be used any more: the server
    /// is unreachable, or no longer runs this connection's statement.
    cut: OnceLock<String>,
    /// A statement's future was dropped before it finished: the connection is mid-protocol.
    interrupted: AtomicBool,
    /// The task waiting on this connection's statement, woken when the connection is cut.
    waker: AtomicWaker,
    /// The server process of this connection (0 when unknown: behind a pooler).
    pub(crate) pid: i32,
    /// Which host of the config's host list it is connected to.
    pub(crate) target: usize,
    /// The connection's socket, where the platform lets pgdbm reach it.
    socket: SocketHandle,
    /// The liveness check's bookkeeping: the statement it last saw in flight and since when,
    /// and when it last asked the server about this connection.
    seen: Mutex<Seen>,
}

#[derive(Clone, Copy)]
struct Seen {
    statement: u64,
    since: Instant,
    checked: Option<Instant>,
}

impl ConnWatch {
    pub(crate) fn new(pid: i32, target: usize, socket: SocketHandle) -> ConnWatch {
        ConnWatch {
            started: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            cut: OnceLock::new(),
            interrupted: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            pid,
            target,
            socket,
            seen: Mutex::new(Seen {
                statement: 0,
                since: Instant::now(),
                checked: None,
            }),
        }
    }

    /// Whether the pool must drop this connection instead of handing it out.
    pub(crate) fn unusable(&self) -> bool {
        self.cut.get().is_some() || self.interrupted.load(Ordering::Relaxed)
    }

    /// Ends the connection: a statement in flight fails at once with `reason`, the next one
    /// fails before anything is sent, and the pool drops the connection. Where pgdbm holds
    /// the socket, it is also shut down, which ends reads that pgdbm does not watch (SQL run
    /// on `PoolConnection::raw`).
    pub(crate) fn cut(&self, reason: &str) {
        if self.cut.set(reason.to_string()).is_ok() {
            self.socket.shut_down();
            self.waker.wake();
        }
    }

    /// Forgets the socket, before the connection closes it.
    pub(crate) fn forget_socket(&self) {
        self.socket.forget();
    }

    /// How long the statement in flight has been running, as the liveness check measures it
    /// (by its ticks, so within one tick); `None` when the connection is idle.
    pub(crate) fn busy_for(&self, now: Instant) -> Option<Duration> {
        let started = self.started.load(Ordering::Acquire);
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if started == self.finished.load(Ordering::Acquire) {
            return None;
        }
        if seen.statement != started {
            *seen = Seen {
                statement: started,
                since: now,
                checked: None,
            };
        }
        Some(now.saturating_duration_since(seen.since))
    }

    /// The statement in flight now, if any (to tell, after asking the server, whether it is
    /// still the same one).
    pub(crate) fn statement_in_flight(&self) -> Option<u64> {
        let started = self.started.load(Ordering::Acquire);
        (started != self.finished.load(Ordering::Acquire)).then_some(started)
    }

    /// Whether the server was asked about this statement less than `every` ago; records that it
    /// is being asked now otherwise.
    pub(crate) fn checked_within(&self, every: Duration, now: Instant) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen
            .checked
            .is_some_and(|t| now.saturating_duration_since(t) < every)
        {
            return true;
        }
        seen.checked = Some(now);
        false
    }

    /// Runs one statement's future on this connection: counted for the liveness check, and
    /// ended with an error as soon as the connection is cut or `deadline` passes.
    pub(crate) async fn run<T, F>(
        &self,
        deadline: Option<&Deadline>,
        statement: F,
    ) -> Result<T, sqlx::Error>
    where
        F: Future<Output = Result<T, sqlx::Error>>,
    {
        self.run_with(deadline, statement, Err).await
    }

    /// [`run`](Self::run) for a future of any output: `failed` turns the cut's error into one.
    pub(crate) async fn run_with<R, F>(
        &self,
        deadline: Option<&Deadline>,
        statement: F,
        failed: impl FnOnce(sqlx::Error) -> R,
    ) -> R
    where
        F: Future<Output = R>,
    {
        let began = Instant::now();
        if let Some(reason) = self.cut.get() {
            return failed(cut(CutReason::Unreachable(reason.clone()), began, false));
        }
        let n = self.started.load(Ordering::Relaxed) + 1;
        self.started.store(n, Ordering::Release);
        let mut flight = InFlight {
            watch: self,
            done: false,
        };
        let mut statement = pin!(statement);
        let sleep = deadline.map(|d| tokio::time::sleep_until(d.at.into()));
        let mut sleep = pin!(sleep);
        let mut failed = Some(failed);
        std::future::poll_fn(|cx| {
            // Read first: a cut also shuts the socket down, and the driver would report that as
            // an end of file rather than as what it is.
            if let Some(reason) = self.cut.get()
                && let Some(f) = failed.take()
            {
                let why = CutReason::Unreachable(reason.clone());
                return Poll::Ready(f(cut(why, began, true)));
            }
            if let Poll::Ready(r) = statement.as_mut().poll(cx) {
                flight.done = true;
                return Poll::Ready(r);
            }
            // Registered before the flag is read, so a cut between the two still wakes us.
            self.waker.register(cx.waker());
            let why = if let Some(reason) = self.cut.get() {
                Some((CutReason::Unreachable(reason.clone()), began))
            } else if let (Some(s), Some(d)) = (sleep.as_mut().as_pin_mut(), deadline)
                && s.poll(cx).is_ready()
            {
                Some((CutReason::Deadline(d.limit), d.began))
            } else {
                None
            };
            match (why, failed.take()) {
                (Some((why, since)), Some(f)) => Poll::Ready(f(cut(why, since, true))),
                (None, f) => {
                    failed = f;
                    Poll::Pending
                }
                (Some(_), None) => unreachable!("a cut ends the statement once"),
            }
        })
        .await
    }
}

/// `rows` (a statement's stream on this connection) under `watch`, as [`ConnWatch::run`] does
/// for a future: in flight until the stream ends or is dropped, ended with an error at once
/// when the connection is cut or the deadline passes.
pub(crate) fn watched_stream<'e, T: Send + 'e>(
    watch: Arc<ConnWatch>,
    deadline: Option<Deadline>,
    rows: BoxStream<'e, Result<T, sqlx::Error>>,
) -> BoxStream<'e, Result<T, sqlx::Error>> {
    struct Watched<'e, T> {
        watch: Arc<ConnWatch>,
        rows: BoxStream<'e, Result<T, sqlx::Error>>,
        sleep: Option<Pin<Box<tokio::time::Sleep>>>,
        deadline: Option<Deadline>,
        began: Instant,
        /// The stream ended (or was ended by a cut); `None` from then on.
        over: bool,
        /// The driver's stream ran to its end.
        finished: bool,
    }
    impl<T> Watched<'_, T> {
        fn end(&mut self) {
            if !std::mem::replace(&mut self.over, true) {
                if !self.finished {
                    self.watch.interrupted.store(true, Ordering::Relaxed);
                }
                let started = self.watch.started.load(Ordering::Relaxed);
                self.watch.finished.store(started, Ordering::Release);
            }
        }
    }
    impl<T> Drop for Watched<'_, T> {
        fn drop(&mut self) {
            self.end();
        }
    }
    impl<T> Stream for Watched<'_, T> {
        type Item = Result<T, sqlx::Error>;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            let this = &mut *self;
            if this.over {
                return Poll::Ready(None);
            }
            // As in `run_with`: the cut before the driver's view of the shut-down socket.
            if let Some(reason) = this.watch.cut.get() {
                let why = CutReason::Unreachable(reason.clone());
                this.end();
                return Poll::Ready(Some(Err(cut(why, this.began, true))));
            }
            match this.rows.as_mut().poll_next(cx) {
                Poll::Ready(None) => {
                    this.finished = true;
                    this.end();
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(item)) => return Poll::Ready(Some(item)),
                Poll::Pending => {}
            }
            this.watch.waker.register(cx.waker());
            let why = if let Some(reason) = this.watch.cut.get() {
                Some((CutReason::Unreachable(reason.clone()), this.began))
            } else if let (Some(s), Some(d)) = (this.sleep.as_mut(), this.deadline)
                && s.as_mut().poll(cx).is_ready()
            {
                Some((CutReason::Deadline(d.limit), d.began))
            } else {
                None
            };
            let Some((why, since)) = why else {
                return Poll::Pending;
            };
            this.end();
            Poll::Ready(Some(Err(cut(why, since, true))))
        }
    }
    let began = Instant::now();
    let already = watch.cut.get().cloned();
    let n = watch.started.load(Ordering::Relaxed) + 1;
    watch.started.store(n, Ordering::Release);
    let mut watched = Watched {
        sleep: deadline.map(|d| Box::pin(tokio::time::sleep_until(d.at.into()))),
        watch,
        rows,
        deadline,
        began,
        over: false,
        finished: false,
    };
    if let Some(reason) = already {
        watched.finished = true;
        watched.end();
        let e = cut(CutReason::Unreachable(reason), began, false);
        return futures_util::stream::once(async { Err(e) }).boxed();
    }
    watched.boxed()
}

fn cut(why: CutReason, since: Instant, sent: bool) -> sqlx::Error {
    Cut {
        why,
        waited: since.elapsed(),
        sent,
    }
    .into_sqlx()
}

/// A statement in flight; when it ends without its future having finished, the connection is
/// left mid-protocol.
struct InFlight<'a> {
    watch: &'a ConnWatch,
    done: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.watch.interrupted.store(true, Ordering::Relaxed);
        }
        let started = self.watch.started.load(Ordering::Relaxed);
        self.watch.finished.store(started, Ordering::Release);
    }
}

/// A call's statement deadline: when it began, how long it may take, and when that is.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadline {
    pub(crate) began: Instant,
    pub(crate) limit: Duration,
    pub(crate) at: Instant,
}

impl Deadline {
    /// A deadline of `limit` from now, if there is one.
    pub(crate) fn starting_now(limit: Option<Duration>) -> Option<Deadline> {
        let limit = limit?;
        let began = Instant::now();
        Some(Deadline {
            began,
            limit,
            at: began + limit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::error::{Cut, CutReason};

    fn watch() -> ConnWatch {
        ConnWatch::new(0, 0, SocketHandle::none())
    }

    #[tokio::test]
    async fn counts_statements_and_finishes_them() {
        let w = watch();
        assert_eq!(w.statement_in_flight(), None);
        let r = w
            .run(None, async { Ok::<_, sqlx::Error>(7) })
            .await
            .unwrap();
        assert_eq!(r, 7);
        assert_eq!(w.statement_in_flight(), None);
        assert!(!w.unusable());
    }

    #[tokio::test]
    async fn a_cut_ends_the_statement_in_flight_and_refuses_the_next_unsent() {
        let w = std::sync::Arc::new(watch());
        let w2 = w.clone();
        let waiting = tokio::spawn(async move {
            w2.run(None, std::future::pending::<Result<(), sqlx::Error>>())
                .await
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(w.statement_in_flight().is_some());
        assert!(w.busy_for(Instant::now()).is_some());
        w.cut("server unreachable");
        let e = waiting.await.unwrap().unwrap_err();
        let c = Cut::of(&e).expect("a cut");
        assert!(c.sent);
        assert!(matches!(&c.why, CutReason::Unreachable(r) if r == "server unreachable"));
        assert!(w.unusable());
        let e = w
            .run(None, async { Ok::<_, sqlx::Error>(()) })
            .await
            .unwrap_err();
        assert!(!Cut::of(&e).unwrap().sent, "refused before sending");
    }

    #[tokio::test]
    async fn a_deadline_ends_the_statement_and_leaves_the_connection_interrupted() {
        let w = watch();
        let d = Deadline::starting_now(Some(Duration::from_millis(30)));
        let e = w
            .run(
                d.as_ref(),
                std::future::pending::<Result<(), sqlx::Error>>(),
            )
            .await
            .unwrap_err();
        let c = Cut::of(&e).unwrap();
        assert!(matches!(c.why, CutReason::Deadline(d) if d == Duration::from_millis(30)));
        assert!(c.waited >= Duration::from_millis(30));
        assert!(w.unusable(), "mid-protocol: must not be reused");
        assert_eq!(w.statement_in_flight(), None);
    }

    #[tokio::test]
    async fn a_statement_dropped_by_its_caller_leaves_the_connection_interrupted() {
        let w = watch();
        let r = tokio::time::timeout(
            Duration::from_millis(10),
            w.run(None, std::future::pending::<Result<(), sqlx::Error>>()),
        )
        .await;
        assert!(r.is_err());
        assert!(w.unusable());
    }
}
