//! The exporter's HTTP endpoint (hyper 1, HTTP/1.1): `GET /metrics` in the format the scraper's `Accept`
//! prefers, gzip when it accepts it; `/-/healthy` and `/-/ready` for probes; a short index on `/`.
//!
//! Bounded: at most [`MAX_CONNECTIONS`] connections at once (more are closed at once), request headers must
//! arrive within [`HEADER_TIMEOUT`], and a connection lives at most [`CONNECTION_LIFETIME`]. Rendering runs on
//! the blocking pool so a large fleet never stalls the broker subscription. It must not change the fleet state.

use std::convert::Infallible;
use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, ACCEPT, ACCEPT_ENCODING, ALLOW, CONTENT_ENCODING, CONTENT_TYPE, VARY};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use super::exposition::Format;
use super::Shared;

/// Connections served at once: Prometheus keeps one per scraping server; a few more for people and probes.
pub(crate) const MAX_CONNECTIONS: usize = 64;
/// Time a client has to send its request headers.
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a connection is kept, so an idle or slow client cannot hold a slot forever.
pub(crate) const CONNECTION_LIFETIME: Duration = Duration::from_secs(600);

type Body = Full<Bytes>;

/// Serves until `shutdown`, then gives open connections up to 5 s.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: CancellationToken) {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let tracker = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            debug!(%peer, "connection refused: {MAX_CONNECTIONS} connections open");
            continue;
        };
        let shared = shared.clone();
        let stop = shutdown.clone();
        tracker.spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(respond(shared, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = tokio::time::timeout(CONNECTION_LIFETIME, conn.as_mut()) => {}
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                }
            }
        });
    }
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

/// Whether `Accept-Encoding` allows gzip (`gzip;q=0` refuses it).
fn accepts_gzip(header: Option<&str>) -> bool {
    header.is_some_and(|h| {
        h.split(',').any(|part| {
            let mut p = part.split(';').map(str::trim);
            let coding = p.next().unwrap_or("");
            let q = p.find_map(|x| x.strip_prefix("q=")).and_then(|q| q.parse::<f64>().ok()).unwrap_or(1.0);
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && q > 0.0
        })
    })
}

async fn respond(shared: Arc<Shared>, req: Request<hyper::body::Incoming>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        r.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match req.uri().path() {
        "/metrics" => {}
        "/" => return text(StatusCode::OK, "jetship exporter: /metrics, /-/healthy, /-/ready\n"),
        "/-/healthy" => return text(StatusCode::OK, "ok\n"),
        "/-/ready" if shared.link().connected => return text(StatusCode::OK, "ok\n"),
        "/-/ready" => return text(StatusCode::SERVICE_UNAVAILABLE, "not subscribed to the broker yet\n"),
        _ => return text(StatusCode::NOT_FOUND, "not found: try /metrics\n"),
    }
    let header = |name| req.headers().get(name).and_then(|v: &HeaderValue| v.to_str().ok()).map(str::to_owned);
    let format = Format::negotiate(header(ACCEPT).as_deref());
    let gzip = accepts_gzip(header(ACCEPT_ENCODING).as_deref());
    let rendered = tokio::task::spawn_blocking(move || {
        let body = shared.render(format);
        if !gzip {
            return Ok(body.into_bytes());
        }
        // Fast level: a 5,000-device exposition shrinks about tenfold at a few ms per MB.
        let mut enc = flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 8), flate2::Compression::fast());
        enc.write_all(body.as_bytes())?;
        enc.finish()
    })
    .await;
    let body = match rendered {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            warn!(error = %e, "cannot compress the exposition");
            return text(StatusCode::INTERNAL_SERVER_ERROR, "cannot compress the exposition\n");
        }
        Err(e) => {
            warn!(error = %e, "rendering the exposition failed");
            return text(StatusCode::INTERNAL_SERVER_ERROR, "rendering failed: see the exporter log\n");
        }
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
    h.insert(VARY, HeaderValue::from_static("Accept, Accept-Encoding"));
    if gzip {
        h.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_is_used_only_when_accepted() {
        assert!(accepts_gzip(Some("gzip")));
        assert!(accepts_gzip(Some("deflate, gzip;q=0.5")));
        assert!(accepts_gzip(Some("*")));
        assert!(!accepts_gzip(Some("gzip;q=0")));
        assert!(!accepts_gzip(Some("identity")));
        assert!(!accepts_gzip(None));
    }
}
