//! Kernel options on a connection's own socket (Linux): TCP keepalives and `TCP_USER_TIMEOUT`,
//! so that even a read pgdbm does not watch ends when the server goes silent.
//!
//! sqlx opens the socket itself and offers no way to set them (`sqlx-core`'s `connect_tcp` sets
//! only `TCP_NODELAY`). What it cannot hide is the socket's local port, which the server reports
//! as `inet_client_port()`: pgdbm asks for it when a connection opens, finds the descriptor of
//! this process bound to that port and connected to the server's, and sets the options on it.
//! The descriptor stays owned by sqlx's stream; pgdbm only borrows it for `setsockopt` and, when
//! the liveness check cuts the connection, for `shutdown`, which ends any read or write on it at
//! once without closing the descriptor. The handle forgets it before sqlx closes it.
//!
//! Where the port cannot identify the socket (a Unix socket, a pooler or NAT in between, another
//! platform) nothing is set, and the liveness check alone ends statements on a silent server.

use crate::runtime::config::Liveness;

/// The descriptor of a connection's socket, where pgdbm could find it.
pub(crate) struct SocketHandle {
    #[cfg(target_os = "linux")]
    fd: std::sync::Mutex<Option<std::os::fd::RawFd>>,
}

impl SocketHandle {
    /// A handle to no socket.
    pub(crate) fn none() -> SocketHandle {
        SocketHandle {
            #[cfg(target_os = "linux")]
            fd: std::sync::Mutex::new(None),
        }
    }

    /// Finds this process's TCP socket from local port `local_port` to remote port
    /// `server_port`, and sets `liveness`'s keepalives and user timeout on it. A handle to no
    /// socket when there is none, or on other platforms.
    pub(crate) fn find(local_port: u16, server_port: u16, liveness: &Liveness) -> SocketHandle {
        #[cfg(target_os = "linux")]
        {
            let fd = linux::find(local_port, server_port);
            if let Some(fd) = fd
                && let Err(e) = linux::apply(fd, liveness)
            {
                tracing::debug!(error = %e, "pgdbm: could not set keepalives / TCP_USER_TIMEOUT on a connection's socket");
            }
            SocketHandle {
                fd: std::sync::Mutex::new(fd),
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = (local_port, server_port, liveness);
            SocketHandle::none()
        }
    }

    /// Shuts the socket down in both directions: a read waiting on it returns at once.
    pub(crate) fn shut_down(&self) {
        #[cfg(target_os = "linux")]
        if let Some(fd) = *self.fd.lock().unwrap_or_else(|e| e.into_inner()) {
            linux::shut_down(fd);
        }
    }

    /// Forgets the descriptor; called before the connection (and with it the descriptor) is
    /// closed, so a later `shut_down` cannot reach whatever reuses the number.
    pub(crate) fn forget(&self) {
        #[cfg(target_os = "linux")]
        {
            *self.fd.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::os::fd::{BorrowedFd, RawFd};

    use socket2::{SockRef, TcpKeepalive};

    use crate::runtime::config::Liveness;

    /// The descriptor of this process's TCP socket with local port `local` and remote port
    /// `remote`, from `/proc/self/fd`.
    pub(super) fn find(local: u16, remote: u16) -> Option<RawFd> {
        let entries = std::fs::read_dir("/proc/self/fd").ok()?;
        for entry in entries.flatten() {
            let Some(fd) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<RawFd>().ok())
            else {
                continue;
            };
            let is_socket = std::fs::read_link(entry.path())
                .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
            if !is_socket {
                continue;
            }
            // SAFETY: the descriptor is only borrowed for getsockname/getpeername, which fail
            // harmlessly (EBADF, ENOTSOCK) if another thread closed or reused the number since
            // it was listed; a match is this connection's own socket, which its owner keeps
            // open while it waits for this function.
            let fd_ref = unsafe { BorrowedFd::borrow_raw(fd) };
            let sock = SockRef::from(&fd_ref);
            let port = |a: std::io::Result<socket2::SockAddr>| {
                a.ok().and_then(|a| a.as_socket()).map(|a| a.port())
            };
            if port(sock.local_addr()) == Some(local) && port(sock.peer_addr()) == Some(remote) {
                return Some(fd);
            }
        }
        None
    }

    pub(super) fn apply(fd: RawFd, liveness: &Liveness) -> std::io::Result<()> {
        // SAFETY: `fd` is the open socket of a connection whose owner is connecting it now (see
        // `find`); setsockopt does not take ownership.
        let fd_ref = unsafe { BorrowedFd::borrow_raw(fd) };
        let sock = SockRef::from(&fd_ref);
        match liveness.keepalive {
            Some(k) => sock.set_tcp_keepalive(
                &TcpKeepalive::new()
                    .with_time(k.idle)
                    .with_interval(k.interval)
                    .with_retries(k.count),
            )?,
            None => sock.set_keepalive(false)?,
        }
        if let Some(t) = liveness.tcp_user_timeout {
            sock.set_tcp_user_timeout(Some(t))?;
        }
        Ok(())
    }

    pub(super) fn shut_down(fd: RawFd) {
        // SAFETY: the caller holds the handle's lock, and the handle forgets the descriptor
        // (under the same lock) before the connection closes it.
        let fd_ref = unsafe { BorrowedFd::borrow_raw(fd) };
        let sock = SockRef::from(&fd_ref);
        let _ = sock.shutdown(std::net::Shutdown::Both);
    }
}
