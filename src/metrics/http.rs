//! The small HTTP/1.1 server behind `--metrics` and the exporter: hyper on its own task, a
//! bounded number of connections, a deadline on request headers and on a connection's life,
//! so neither a flood of scrapes nor a client that sends nothing can grow without bound or
//! reach the node's routes.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, ACCEPT, ALLOW, CONTENT_TYPE};
use hyper::http::request::Parts;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::Exposition;

/// An answer: status, content type and body.
pub type Reply = Response<Full<Bytes>>;

/// What answers a request, from its head (these servers never read a body).
pub type Handler = Arc<dyn Fn(Parts) -> Pin<Box<dyn Future<Output = Reply> + Send>> + Send + Sync>;

/// Connections served at once; more wait in the kernel's backlog until one ends.
const MAX_CONNECTIONS: usize = 64;

/// A client must send its request headers within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest a connection lives, kept alive or not: longer than any probe the exporter runs
/// (`exporter::MAX_PROBE`), short enough that idle connections cannot hold every slot for long.
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(300);

/// Binds `addr` for a metrics server; a clear error names the address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot listen for HTTP on {addr}: {e}"))
    })
}

/// Serves `handler` on `listener` until `shutdown`, on a task of its own.
pub fn spawn(
    listener: TcpListener,
    handler: Handler,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            // Wait for a free slot before accepting: excess clients queue in the backlog.
            let permit = tokio::select! {
                _ = shutdown.cancelled() => return,
                p = slots.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            let (stream, peer) = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = listener.accept() => match r {
                    Ok(s) => s,
                    Err(e) => {
                        // Out of descriptors and the like: back off instead of spinning.
                        debug!("metrics accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let handler = handler.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let service = hyper::service::service_fn(move |req: Request<_>| {
                    let (parts, _body) = req.into_parts();
                    let reply = handler(parts);
                    async move { Ok::<_, std::convert::Infallible>(reply.await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service);
                tokio::select! {
                    r = tokio::time::timeout(MAX_CONNECTION_AGE, conn) => {
                        if let Ok(Err(e)) = r {
                            debug!("metrics connection from {peer}: {e}");
                        }
                    }
                    _ = shutdown.cancelled() => {}
                }
            });
        }
    })
}

/// A reply with `status`, a content type and `body`.
pub fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// Plain-text reply.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Reply {
    reply(status, "text/plain; charset=utf-8", body)
}

/// `/metrics` for `GET` and `HEAD` (as negotiated by `Accept`), 405 for other methods on it.
pub fn metrics(exposition: &Exposition, parts: &Parts) -> Reply {
    if parts.method != Method::GET && parts.method != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "use GET or HEAD\n");
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let accept = parts
        .headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let (body, kind) = exposition.encode(accept);
    // hyper sends no body for HEAD, but the length of the GET's.
    reply(StatusCode::OK, kind, body)
}

/// The handler of a node's metrics server: `/metrics`, and 404 for anything else.
pub fn node_handler(exposition: Exposition) -> Handler {
    Arc::new(move |parts: Parts| {
        let r = if parts.uri.path() == "/metrics" {
            metrics(&exposition, &parts)
        } else {
            text(
                StatusCode::NOT_FOUND,
                "not found: this node serves /metrics\n",
            )
        };
        Box::pin(std::future::ready(r))
    })
}
