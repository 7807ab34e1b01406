//! The HTTPS accept loop: TLS by tokio-rustls, HTTP/1.1 and HTTP/2 by hyper-util, graceful
//! shutdown.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// How long a client may take to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for in-flight connections before giving up on them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long a client may take to send the request headers (HTTP/1.1); an idle keep-alive
/// connection is closed after as long.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Open connections per listener (TLS handshakes included) beyond which new ones are closed
/// at once: clients cannot exhaust memory or file descriptors with connections.
pub const MAX_CONNECTIONS: usize = 4096;
/// HTTP/2: a ping after this long without a frame from the client...
const H2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(60);
/// ...and the connection closed if the ping is not answered within this.
const H2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Serves `app` over TLS on `listener` until `shutdown` completes, then stops accepting, lets
/// in-flight requests finish (at most [`SHUTDOWN_GRACE`]) and returns. At most
/// `max_connections` connections are open at once (see [`MAX_CONNECTIONS`]).
///
/// Handlers can extract the peer address with `ConnectInfo<SocketAddr>`.
pub async fn serve_https(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    max_connections: usize,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    let permits = Arc::new(tokio::sync::Semaphore::new(max_connections.max(1)));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        // Headers and body in one buffer: one TLS record and one write per response, instead
        // of a record per part (TLS gains nothing from vectored writes).
        .writev(false)
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    // A peer that vanished without closing (no FIN, no RST) is found and its connection freed.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(H2_KEEP_ALIVE_TIMEOUT);
    let graceful = GracefulShutdown::new();
    // Tells connections still in their TLS handshake to give up.
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);

    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) if is_per_connection_error(&e) => continue,
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "connection limit reached; closing the connection");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let builder = builder.clone();
        let app = app.clone();
        let watcher = graceful.watcher();
        let mut stop_rx = stop_rx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
            let stream = tokio::select! {
                result = handshake => match result {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                },
                _ = stop_rx.wait_for(|stop| *stop) => return,
            };
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                app.clone().oneshot(req)
            });
            // Responses finished in the same scheduler round share one TLS record and one send.
            let stream = keyfort_grpc::coalesce::Coalesced::new(stream);
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }

    drop(listener);
    let _ = stop_tx.send(true);
    tracing::info!("shutting down: waiting for in-flight requests");
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "connections still open after {}s; closing them",
            SHUTDOWN_GRACE.as_secs()
        );
    }
    Ok(())
}

/// Errors of `accept` that concern one connection only; the listener itself is fine.
fn is_per_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Binds a TCP listener, naming the address in the error.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr).await.map_err(|source| {
        if source.kind() == io::ErrorKind::AddrInUse {
            BindError::AddrInUse { addr }
        } else {
            BindError::Other { addr, source }
        }
    })
}

/// A listener that could not be bound.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    #[error("cannot listen on {addr}: address in use")]
    AddrInUse { addr: SocketAddr },
    #[error("cannot listen on {addr}")]
    Other {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use axum::routing::get;
    use tokio::sync::oneshot;

    use super::*;
    use crate::tls;

    struct Server {
        _dir: tempfile::TempDir,
        ca: reqwest::Certificate,
        addr: SocketAddr,
        stop: Option<oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<io::Result<()>>,
    }

    async fn start(app: Router) -> Server {
        start_with(app, MAX_CONNECTIONS).await
    }

    async fn start_with(app: Router, max_connections: usize) -> Server {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let ca = tls::generate_dev_ca().unwrap_or_else(|e| panic!("{e}"));
        let leaf = tls::issue_dev_server_cert(&ca.key_pem).unwrap_or_else(|e| panic!("{e}"));
        let write = |name: &str, data: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, data).unwrap_or_else(|e| panic!("{e}"));
            path
        };
        let cert = write("server.pem", leaf.cert_pem.as_bytes());
        let key = write("server-key.pem", leaf.key_pem.as_bytes());
        let config = tls::server_config(&cert, &key).unwrap_or_else(|e| panic!("{e}"));
        let listener = bind("127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_https(
            listener,
            config,
            app,
            max_connections,
            async move {
                let _ = stopped.await;
            },
        ));
        Server {
            ca: reqwest::Certificate::from_pem(ca.cert_pem.as_bytes())
                .unwrap_or_else(|e| panic!("{e}")),
            addr,
            stop: Some(stop),
            task,
            _dir: dir,
        }
    }

    /// A client trusting only `ca`; `http1` forbids HTTP/2 (otherwise ALPN picks h2).
    fn client(ca: &reqwest::Certificate, http1: bool) -> reqwest::Client {
        let mut b = reqwest::Client::builder().tls_certs_only([ca.clone()]);
        if http1 {
            b = b.http1_only();
        }
        b.build().unwrap_or_else(|e| panic!("{e}"))
    }

    fn app() -> Router {
        Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route(
                "/peer",
                get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.ip().to_string() }),
            )
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    "done"
                }),
            )
    }

    #[tokio::test]
    async fn serves_https_http1_and_http2_with_peer_address() {
        let server = start(app()).await;
        let url = format!("https://localhost:{}/healthz", server.addr.port());
        for (http1, version) in [
            (true, reqwest::Version::HTTP_11),
            (false, reqwest::Version::HTTP_2),
        ] {
            let resp = client(&server.ca, http1)
                .get(&url)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(resp.status(), 200);
            assert_eq!(resp.version(), version);
            assert_eq!(resp.text().await.unwrap_or_default(), "ok");
        }
        let peer = client(&server.ca, false)
            .get(format!("https://127.0.0.1:{}/peer", server.addr.port()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .text()
            .await
            .unwrap_or_default();
        assert_eq!(peer, "127.0.0.1");
    }

    #[tokio::test]
    async fn graceful_shutdown_finishes_in_flight_requests_then_refuses() {
        let mut server = start(app()).await;
        let url = format!("https://localhost:{}/slow", server.addr.port());
        let c = client(&server.ca, false);
        let in_flight = tokio::spawn(async move { c.get(&url).send().await?.text().await });
        tokio::time::sleep(Duration::from_millis(150)).await;
        if let Some(stop) = server.stop.take() {
            let _ = stop.send(());
        }
        let started = Instant::now();
        let body = in_flight
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(body, "done");
        let result = tokio::time::timeout(Duration::from_secs(5), &mut server.task).await;
        assert!(matches!(result, Ok(Ok(Ok(())))), "{result:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(
            tokio::net::TcpStream::connect(server.addr).await.is_err(),
            "listener closed after shutdown"
        );
    }

    #[tokio::test]
    async fn silent_client_does_not_block_shutdown() {
        let mut server = start(app()).await;
        // Connects and never sends a ClientHello.
        let _silent = tokio::net::TcpStream::connect(server.addr)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(stop) = server.stop.take() {
            let _ = stop.send(());
        }
        let result = tokio::time::timeout(Duration::from_secs(3), &mut server.task).await;
        assert!(matches!(result, Ok(Ok(Ok(())))), "{result:?}");
    }

    #[tokio::test]
    async fn connections_beyond_the_limit_are_closed_at_once() {
        let server = start_with(app(), 2).await;
        let url = format!("https://localhost:{}/healthz", server.addr.port());
        // Two clients keep their connections open (HTTP/2), and a third silent one is closed.
        let (a, b) = (client(&server.ca, false), client(&server.ca, false));
        for c in [&a, &b] {
            let resp = c.get(&url).send().await.unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(resp.status(), 200);
        }
        let mut third = tokio::net::TcpStream::connect(server.addr)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(
            Duration::from_secs(3),
            tokio::io::AsyncReadExt::read(&mut third, &mut buf),
        )
        .await;
        assert!(
            matches!(read, Ok(Ok(0) | Err(_))),
            "the connection over the limit was not closed: {read:?}"
        );
        // The open ones are still served; once one closes, a new client is served.
        let resp = a.get(&url).send().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status(), 200);
        drop(b);
        let mut served = false;
        for _ in 0..50 {
            if let Ok(resp) = client(&server.ca, false).get(&url).send().await {
                served = resp.status() == 200;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(served, "a slot freed by a closed connection was not reused");
    }

    #[tokio::test]
    async fn port_in_use_names_the_address() {
        let first = bind("127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = first.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let err = bind(addr)
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(err, format!("cannot listen on {addr}: address in use"));
    }
}
