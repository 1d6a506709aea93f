//! The limits against real sockets: half-sent heads, idle keep-alive connections and
//! trickled bodies are closed by the server while other clients are served, and the
//! connection cap makes further clients wait instead of exhausting descriptors.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::routing::{get, post};
use poc_http::{HttpLimits, ServerStats};
use tokio::sync::oneshot;

struct Server {
    addr: SocketAddr,
    stats: Arc<ServerStats>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(limits: HttpLimits) -> Server {
    start_filtered(limits, None).await
}

async fn start_filtered(limits: HttpLimits, filter: Option<poc_http::AcceptFilter>) -> Server {
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/echo", post(|b: Bytes| async move { b }))
        .route("/big", get(|| async { vec![7u8; 64 << 20] }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(500)).await;
                "done"
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stats = Arc::new(ServerStats::default());
    let (stop, rx) = oneshot::channel();
    let task = poc_http::spawn(
        listener,
        app,
        limits,
        Arc::clone(&stats),
        filter,
        async move {
            let _ = rx.await;
        },
    );
    Server {
        addr,
        stats,
        stop: Some(stop),
        task,
    }
}

/// Reads until the server closes the socket; returns what it sent, or `None` if it was
/// still open after `limit`.
fn read_until_closed(s: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Some(out),
            Err(_) => return None,
        }
    }
}

fn limits(header: f64, body: f64, max: usize) -> HttpLimits {
    HttpLimits {
        header_timeout_s: header,
        body_timeout_s: body,
        max_connections: max,
        ..HttpLimits::default()
    }
}

async fn wait_until(what: &str, f: impl Fn() -> bool) {
    let t = std::time::Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(20), "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_heads_are_closed_while_others_are_served() {
    let srv = start(limits(2.0, 60.0, 1024)).await;
    let addr = srv.addr;
    let held: Vec<TcpStream> = tokio::task::spawn_blocking(move || {
        (0..200)
            .map(|i| {
                let mut s = TcpStream::connect(addr).unwrap();
                s.write_all(format!("GET /health HTTP/1.1\r\nHost: x\r\nX-{i}: ").as_bytes())
                    .unwrap();
                s
            })
            .collect()
    })
    .await
    .unwrap();
    // Others are served while the half-sent requests are held open.
    let http = reqwest::Client::new();
    for _ in 0..5 {
        let r = http
            .get(format!("http://{addr}/health"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.text().await.unwrap(), "ok");
    }
    assert!(
        srv.stats.open_connections() >= 200,
        "the held connections are still open while /health answers"
    );
    // Then the server closes every one of them, without a response.
    let closed = tokio::task::spawn_blocking(move || {
        held.into_iter()
            .map(|mut s| read_until_closed(&mut s, Duration::from_secs(20)))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    assert!(
        closed
            .iter()
            .all(|c| c.as_ref().is_some_and(|b| b.is_empty()))
    );
    let t = std::time::Instant::now();
    while srv.stats.open_connections() > 0 {
        assert!(t.elapsed() < Duration::from_secs(10), "connections leak");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_and_trickled_bodies_are_closed() {
    let srv = start(limits(1.0, 1.0, 16)).await;
    let addr = srv.addr;
    let (idle, trickle) = tokio::task::spawn_blocking(move || {
        // A complete request, answered, then nothing: closed after the idle timeout.
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let idle = read_until_closed(&mut s, Duration::from_secs(20));
        // A body announced as 100 bytes of which 3 arrive: the read fails, 400, closed.
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
            .unwrap();
        let trickle = read_until_closed(&mut s, Duration::from_secs(20));
        (idle, trickle)
    })
    .await
    .unwrap();
    let idle = String::from_utf8(idle.expect("idle connection closed")).unwrap();
    assert!(
        idle.starts_with("HTTP/1.1 200") && idle.ends_with("ok"),
        "{idle}"
    );
    let trickle = String::from_utf8(trickle.expect("trickled body closed")).unwrap();
    assert!(
        trickle.is_empty() || trickle.starts_with("HTTP/1.1 400"),
        "{trickle}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_makes_new_clients_wait_not_fail() {
    let srv = start(limits(1.5, 60.0, 4)).await;
    let addr = srv.addr;
    let held: Vec<TcpStream> = tokio::task::spawn_blocking(move || {
        (0..4)
            .map(|_| {
                let mut s = TcpStream::connect(addr).unwrap();
                s.write_all(b"GET /health HTTP/1.1\r\n").unwrap();
                s
            })
            .collect()
    })
    .await
    .unwrap();
    let t = std::time::Instant::now();
    while srv.stats.open_connections() < 4 {
        assert!(t.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A fifth client is queued until a held connection times out, then served.
    let r = reqwest::Client::new()
        .get(format!("http://{addr}/health"))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "ok");
    assert!(srv.stats.cap_reached() > 0);
    assert!(srv.stats.accepted_connections() >= 5);
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_requests_in_flight_finish() {
    let mut srv = start(HttpLimits::default()).await;
    let url = format!("http://{}/slow", srv.addr);
    let pending = tokio::spawn(async move { reqwest::get(url).await?.text().await });
    while srv.stats.open_connections() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    srv.stop.take().unwrap().send(()).unwrap();
    assert_eq!(pending.await.unwrap().unwrap(), "done");
    srv.task.await.unwrap();
    assert!(tokio::net::TcpStream::connect(srv.addr).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_disconnected() {
    let srv = start(HttpLimits {
        write_timeout_s: 1.0,
        ..HttpLimits::default()
    })
    .await;
    let addr = srv.addr;
    // Asks for 64 MiB and reads none of it: the server's writes stall, then it gives up.
    let s = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        s
    })
    .await
    .unwrap();
    wait_until("connection accepted", || srv.stats.open_connections() == 1).await;
    wait_until("stalled connection closed", || {
        srv.stats.open_connections() == 0
    })
    .await;
    drop(s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_address_caps_and_filters_close_connections_at_once() {
    let srv = start(HttpLimits {
        max_connections_per_ip: 3,
        ..HttpLimits::default()
    })
    .await;
    let addr = srv.addr;
    let (held, extra) = tokio::task::spawn_blocking(move || {
        let held: Vec<TcpStream> = (0..3)
            .map(|_| {
                let mut s = TcpStream::connect(addr).unwrap();
                s.write_all(b"GET /health HTTP/1.1\r\n").unwrap();
                s
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        // A fourth from the same address is closed without an answer.
        let mut s = TcpStream::connect(addr).unwrap();
        let _ = s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
        (held, read_until_closed(&mut s, Duration::from_secs(10)))
    })
    .await
    .unwrap();
    assert_eq!(extra, Some(vec![]), "closed at once, nothing answered");
    assert_eq!(srv.stats.refused_connections(), 1);
    assert_eq!(srv.stats.open_connections(), 3);
    drop(held);

    let no_loopback: poc_http::AcceptFilter = Arc::new(|ip| !ip.is_loopback());
    let srv = start_filtered(HttpLimits::default(), Some(no_loopback)).await;
    let err = reqwest::get(format!("http://{}/health", srv.addr)).await;
    assert!(err.is_err(), "a refused address gets no answer");
    wait_until("refused", || srv.stats.refused_connections() >= 1).await;
    assert_eq!(srv.stats.accepted_connections(), 0);
}
