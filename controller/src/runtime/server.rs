//! The listeners' accept loop, bounded against hostile clients (any pod can reach the Service):
//!
//! - at most [`Limits::connections`] connections at once; more are closed at once;
//! - request headers must arrive within [`Limits::header_timeout`] (slow-loris);
//! - a connection lives at most [`Limits::connection_deadline`], idle keep-alive included, so a
//!   trickled body cannot hold a slot for ever;
//! - request bodies are capped by the router ([`BODY_LIMIT`]);
//! - each request carries its peer address ([`Peer`]) for per-client rate limits
//!   ([`ClientLimiter`]), so one client cannot use up the budget of the others.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use governor::{Quota, RateLimiter};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tower::ServiceExt;

/// The largest request body any endpoint accepts (a SealedSecret, a webhook payload).
pub const BODY_LIMIT: usize = 1024 * 1024;

/// Bounds of one listener.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections served at once.
    pub connections: usize,
    /// Time allowed for the request headers.
    pub header_timeout: Duration,
    /// Time a connection may stay open in all.
    pub connection_deadline: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connections: 256,
            header_timeout: Duration::from_secs(10),
            connection_deadline: Duration::from_secs(60),
        }
    }
}

/// The peer of the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// Serves `app` on `listener` within `limits` until the listener fails.
pub async fn serve(listener: TcpListener, app: Router, limits: Limits) {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.connections));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            // Full: close at once rather than queue (a queue is what a flood wants).
            drop(stream);
            continue;
        };
        let app = app.clone();
        let limits = limits.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(Peer(peer));
                    app.clone().oneshot(req)
                },
            );
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(TokioIo::new(stream), service);
            // A deadline for the whole connection; dropping it closes the socket.
            let _ = tokio::time::timeout(limits.connection_deadline, conn).await;
            drop(permit);
        });
    }
}

type Keyed = RateLimiter<
    IpAddr,
    governor::state::keyed::DefaultKeyedStateStore<IpAddr>,
    governor::clock::DefaultClock,
>;

/// A token bucket per client IP address (through the API server's service proxy every request
/// comes from the API server: its clients share one bucket, as with upstream's global limit).
pub struct ClientLimiter {
    limiter: Keyed,
}

impl ClientLimiter {
    /// `per_second` requests per second per client, `burst` at once.
    pub fn new(per_second: u32, burst: u32) -> Self {
        let quota =
            Quota::per_second(NonZeroU32::new(per_second.max(1)).unwrap_or(NonZeroU32::MIN))
                .allow_burst(NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN));
        ClientLimiter {
            limiter: RateLimiter::keyed(quota),
        }
    }

    /// A limiter with an explicit quota (tests use a very slow refill).
    pub fn with_quota(quota: Quota) -> Self {
        ClientLimiter {
            limiter: RateLimiter::keyed(quota),
        }
    }

    /// Takes a token for `client` if it has one.
    pub fn try_take(&self, client: IpAddr) -> bool {
        // Bound the table: forget clients whose bucket is full again.
        if self.limiter.len() > 10_000 {
            self.limiter.retain_recent();
        }
        self.limiter.check_key(&client).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    async fn listen(limits: Limits) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = Router::new().route("/", axum::routing::get(|| async { "ok" }));
        tokio::spawn(serve(listener, app, limits));
        addr
    }

    fn get(addr: SocketAddr) -> Option<String> {
        let mut s = std::net::TcpStream::connect(addr).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slow_and_excess_connections_cannot_hold_the_server() {
        let addr = listen(Limits {
            connections: 4,
            header_timeout: Duration::from_millis(300),
            connection_deadline: Duration::from_secs(2),
        })
        .await;
        // Four idle connections that never send a header take every slot…
        let idle: Vec<std::net::TcpStream> = (0..4)
            .map(|_| std::net::TcpStream::connect(addr).expect("connect"))
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        // …a fifth is closed at once while they hold them…
        let refused = tokio::task::spawn_blocking(move || get(addr))
            .await
            .expect("join");
        assert!(refused.as_ref().is_none_or(|r| r.is_empty()), "{refused:?}");
        // …and the header timeout frees them: the server answers again.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let ok = tokio::task::spawn_blocking(move || get(addr))
            .await
            .expect("join");
        assert!(ok.is_some_and(|r| r.starts_with("HTTP/1.1 200")));
        drop(idle);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_trickled_request_is_cut_at_the_deadline() {
        let addr = listen(Limits {
            connections: 4,
            header_timeout: Duration::from_secs(30),
            connection_deadline: Duration::from_millis(500),
        })
        .await;
        let start = std::time::Instant::now();
        let closed = tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(addr).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            // One header byte at a time, slower than the deadline allows.
            for b in b"GET / HTTP/1.1\r\nHost: x\r\n" {
                if s.write_all(&[*b]).is_err() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let mut buf = [0u8; 64];
            matches!(s.read(&mut buf), Ok(0) | Err(_))
        })
        .await
        .expect("join");
        assert!(closed, "the server closed the connection");
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn each_client_has_its_own_bucket() {
        let l = ClientLimiter::with_quota(
            Quota::per_hour(NonZeroU32::MIN).allow_burst(NonZeroU32::new(2).expect("2")),
        );
        let (a, b): (IpAddr, IpAddr) = (
            "10.0.0.1".parse().expect("ip"),
            "10.0.0.2".parse().expect("ip"),
        );
        assert!(l.try_take(a) && l.try_take(a));
        assert!(!l.try_take(a), "a used up its burst");
        assert!(l.try_take(b), "b is not starved by a");
    }
}
