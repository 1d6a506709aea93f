//! # poc-http: HTTP/1.1 serving with limits
//!
//! Every HTTP server of the system (the API node's public and ML-callback ports, the ML
//! node, the chain node's REST) is reachable by peers it does not trust. A plain
//! `axum::serve` holds a connection for as long as the peer likes: a client that sends
//! half a request head, or a body one byte at a time, or opens thousands of idle
//! connections, ties up file descriptors until the process can accept nothing at all.
//! [`serve`] runs an axum [`Router`] with three limits ([`HttpLimits`]):
//!
//! - **header timeout**: the whole request head must arrive within this long after the
//!   connection opens, and after every response (so it is also the keep-alive idle
//!   timeout); otherwise the server closes the connection;
//! - **body timeout**: the whole request body must arrive within this long after its head;
//!   otherwise reading it fails (the handler answers 400) and the connection closes;
//! - **write timeout**: a response write that makes no progress for this long (a client
//!   that stops reading) closes the connection;
//! - **connection caps**: at most this many connections are open, and at most this many
//!   from one IP address; further clients wait in the kernel's accept queue (they cost no
//!   descriptor) until a slot frees, and connections over the per-address cap are closed
//!   at once. An optional filter closes connections from addresses it refuses before
//!   anything is read.
//!
//! Shutdown stops accepting, lets requests in flight finish (bounded by
//! [`SHUTDOWN_GRACE`]), then closes what is left. See `docs/http.md`.

pub mod metrics;

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;

/// How long shutdown waits for requests in flight before closing their connections.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// The accept queue asked of the kernel (Linux caps it at `net.core.somaxconn`).
pub const ACCEPT_BACKLOG: i32 = 4096;

/// Decides, from the peer's address, whether a connection is served at all.
pub type AcceptFilter = Arc<dyn Fn(IpAddr) -> bool + Send + Sync>;

/// The limits of one server.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpLimits {
    /// Seconds within which a request head must arrive after the connection opens or its
    /// previous response was sent (header and keep-alive idle timeout).
    pub header_timeout_s: f64,
    /// Seconds within which a request body must arrive after its head.
    pub body_timeout_s: f64,
    /// Seconds a response write may make no progress (the client stopped reading).
    pub write_timeout_s: f64,
    /// Connections open at once; more wait in the accept queue.
    pub max_connections: usize,
    /// Connections open at once from one IP address; more are closed at once.
    pub max_connections_per_ip: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_timeout_s: 10.0,
            body_timeout_s: 60.0,
            write_timeout_s: 60.0,
            max_connections: 1024,
            max_connections_per_ip: 256,
        }
    }
}

/// A limit that cannot work.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LimitsError {
    /// A timeout that is not a positive number of seconds.
    #[error("{name} must be a positive number of seconds, got {value}")]
    Timeout {
        /// Which one.
        name: &'static str,
        /// What was given.
        value: f64,
    },
    /// A connection cap of zero.
    #[error("max_connections and max_connections_per_ip must be at least 1")]
    NoConnections,
}

fn duration(name: &'static str, value: f64) -> Result<Duration, LimitsError> {
    if value.is_finite() && value > 0.0 && value < 1e9 {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(LimitsError::Timeout { name, value })
    }
}

impl HttpLimits {
    /// Checks the values (what `serve` would otherwise refuse).
    pub fn validate(&self) -> Result<(), LimitsError> {
        self.header_timeout()?;
        self.body_timeout()?;
        self.write_timeout()?;
        if self.max_connections == 0 || self.max_connections_per_ip == 0 {
            return Err(LimitsError::NoConnections);
        }
        Ok(())
    }

    /// The header timeout as a duration.
    pub fn header_timeout(&self) -> Result<Duration, LimitsError> {
        duration("header_timeout_s", self.header_timeout_s)
    }

    /// The body timeout as a duration.
    pub fn body_timeout(&self) -> Result<Duration, LimitsError> {
        duration("body_timeout_s", self.body_timeout_s)
    }

    /// The write timeout as a duration.
    pub fn write_timeout(&self) -> Result<Duration, LimitsError> {
        duration("write_timeout_s", self.write_timeout_s)
    }
}

/// Counters of one server, shared with its owner (for `/metrics` and tests).
#[derive(Debug, Default)]
pub struct ServerStats {
    open: AtomicUsize,
    accepted: AtomicUsize,
    at_cap: AtomicUsize,
    refused: AtomicUsize,
}

impl ServerStats {
    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Connections accepted since start.
    pub fn accepted_connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Times the accept loop waited because the cap was reached.
    pub fn cap_reached(&self) -> usize {
        self.at_cap.load(Ordering::SeqCst)
    }

    /// Connections closed at once (the filter refused the address, or the address was
    /// at its cap).
    pub fn refused_connections(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }
}

/// A connection whose writes fail once one has made no progress for `limit`.
struct WriteDeadline {
    inner: TcpStream,
    limit: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl WriteDeadline {
    /// After a write returned `Pending`: starts the clock, or fails once it ran out.
    fn stall(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Error> {
        let limit = self.limit;
        let s = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match s.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the client read nothing for {limit:?}"),
            )),
            Poll::Pending => Poll::Pending,
        }
    }

    fn progress<T>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        match r {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => self.stall(cx).map(Err),
        }
    }
}

impl AsyncRead for WriteDeadline {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteDeadline {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.progress(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.progress(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        this.progress(cx, r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Open connections per peer address.
#[derive(Default)]
struct PerIp(std::sync::Mutex<HashMap<IpAddr, usize>>);

impl PerIp {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a connection from `ip` unless it already has `max`.
    fn enter(&self, ip: IpAddr, max: usize) -> bool {
        let mut m = self.lock();
        let n = m.entry(ip).or_default();
        if *n >= max {
            return false;
        }
        *n += 1;
        true
    }

    fn leave(&self, ip: IpAddr) {
        let mut m = self.lock();
        if let Some(n) = m.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&ip);
            }
        }
    }
}

/// Why the body of a request failed.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTimeout(pub Duration);

/// A request body that fails once a deadline, set when its head arrived, has passed.
struct DeadlineBody {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
    limit: Duration,
}

impl Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(BodyTimeout(this.limit).into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Serves `router` on `listener` under `limits` until `shutdown` completes; handlers see
/// the peer address as `ConnectInfo<SocketAddr>`. With a `filter`, connections from
/// addresses it refuses are closed before anything is read. Returns after the
/// connections have finished, or after [`SHUTDOWN_GRACE`] with the rest closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    stats: Arc<ServerStats>,
    filter: Option<AcceptFilter>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), LimitsError> {
    limits.validate()?;
    let header_timeout = limits.header_timeout()?;
    let body_timeout = limits.body_timeout()?;
    let write_timeout = limits.write_timeout()?;
    // A deeper accept queue than the runtime's default (128): clients beyond the cap wait
    // there instead of having their connection attempts dropped.
    if let Err(e) = socket2::SockRef::from(&listener).listen(ACCEPT_BACKLOG) {
        tracing::debug!("cannot deepen the accept queue: {e}");
    }
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let per_ip = Arc::new(PerIp::default());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let (close, closed) = watch::channel(false);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    let local = listener.local_addr().ok();
    tokio::pin!(shutdown);
    loop {
        let permit = match Arc::clone(&slots).try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if stats
                    .at_cap
                    .fetch_add(1, Ordering::SeqCst)
                    .is_multiple_of(100)
                {
                    tracing::warn!(
                        addr = ?local,
                        max = limits.max_connections,
                        "HTTP connection cap reached; new connections wait"
                    );
                }
                tokio::select! {
                    _ = &mut shutdown => break,
                    p = Arc::clone(&slots).acquire_owned() => p.expect("semaphore is never closed"),
                }
            }
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors (EMFILE/ENFILE) or an aborted handshake: wait a
                    // little instead of spinning.
                    tracing::debug!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let ip = peer.ip().to_canonical();
        if filter.as_ref().is_some_and(|f| !f(ip)) {
            stats.refused.fetch_add(1, Ordering::SeqCst);
            tracing::debug!(%peer, "connection from a refused address closed");
            continue;
        }
        if !per_ip.enter(ip, limits.max_connections_per_ip) {
            stats.refused.fetch_add(1, Ordering::SeqCst);
            tracing::debug!(%peer, max = limits.max_connections_per_ip, "address at its connection cap; closed");
            continue;
        }
        let _ = stream.set_nodelay(true);
        stats.accepted.fetch_add(1, Ordering::SeqCst);
        stats.open.fetch_add(1, Ordering::SeqCst);
        let io = WriteDeadline {
            inner: stream,
            limit: write_timeout,
            stalled: None,
        };
        let svc = connection_service(router.clone(), peer, body_timeout);
        let conn = http.serve_connection(TokioIo::new(io), TowerToHyperService::new(svc));
        let watched = graceful.watch(conn);
        let (stats, per_ip, mut closed) = (Arc::clone(&stats), Arc::clone(&per_ip), closed.clone());
        tokio::spawn(async move {
            tokio::select! {
                r = watched => {
                    if let Err(e) = r {
                        tracing::trace!(%peer, "connection ended: {e}");
                    }
                }
                // Shutdown's grace is over: drop the connection.
                _ = closed.wait_for(|c| *c) => {}
            }
            per_ip.leave(ip);
            stats.open.fetch_sub(1, Ordering::SeqCst);
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(addr = ?local, "connections still open after {SHUTDOWN_GRACE:?}; closing them");
        let _ = close.send(true);
    }
    Ok(())
}

/// The router as one connection's service: the peer address in every request's
/// extensions and the body under its deadline.
fn connection_service(
    router: Router,
    peer: SocketAddr,
    body_timeout: Duration,
) -> impl tower::Service<
    hyper::Request<Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone
+ Send
+ 'static {
    router.map_request(move |req: hyper::Request<Incoming>| {
        let (mut parts, body) = req.into_parts();
        parts.extensions.insert(ConnectInfo(peer));
        let body = DeadlineBody {
            inner: body,
            deadline: Box::pin(tokio::time::sleep(body_timeout)),
            limit: body_timeout,
        };
        hyper::Request::from_parts(parts, axum::body::Body::new(body))
    })
}

/// [`serve`] on a task; the task logs a refused configuration.
pub fn spawn(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    stats: Arc<ServerStats>,
    filter: Option<AcceptFilter>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = serve(listener, router, limits, stats, filter, shutdown).await {
            tracing::error!("HTTP server not started: {e}");
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_checked() {
        assert!(HttpLimits::default().validate().is_ok());
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let l = HttpLimits {
                header_timeout_s: bad,
                ..HttpLimits::default()
            };
            assert!(
                matches!(l.validate(), Err(LimitsError::Timeout { name, .. }) if name == "header_timeout_s")
            );
            let l = HttpLimits {
                body_timeout_s: bad,
                ..HttpLimits::default()
            };
            assert!(
                matches!(l.validate(), Err(LimitsError::Timeout { name, .. }) if name == "body_timeout_s")
            );
        }
        let l = HttpLimits {
            max_connections: 0,
            ..HttpLimits::default()
        };
        assert_eq!(l.validate(), Err(LimitsError::NoConnections));
        let l = HttpLimits {
            max_connections_per_ip: 0,
            ..HttpLimits::default()
        };
        assert_eq!(l.validate(), Err(LimitsError::NoConnections));
        let l = HttpLimits {
            write_timeout_s: -2.0,
            ..HttpLimits::default()
        };
        assert!(l.validate().is_err());
    }

    #[test]
    fn limits_parse_with_defaults_and_refuse_unknown_keys() {
        let l: HttpLimits = serde_json::from_str(r#"{"max_connections": 7}"#).unwrap();
        assert_eq!(l.max_connections, 7);
        assert_eq!(l.header_timeout_s, 10.0);
        assert!(serde_json::from_str::<HttpLimits>(r#"{"idle": 1}"#).is_err());
    }
}
