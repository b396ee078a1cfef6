//! `GET /metrics` over HTTP (axum), in OpenMetrics or the classic text
//! format, by content negotiation on `Accept`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::{encode_openmetrics, to_classic_text, Snapshot};

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Takes a snapshot. It reads BPF maps: the future is the daemon's to run
/// off the async workers (a request to the core thread).
pub type SnapshotFn = Arc<dyn Fn() -> SnapshotFuture + Send + Sync>;
pub type SnapshotFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Snapshot> + Send>>;

/// Binds `addr` (errors here are the daemon's to report) and returns the
/// server future.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// Serves until the task is aborted.
pub async fn serve(listener: tokio::net::TcpListener, snapshot: SnapshotFn) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/", get(index))
        .with_state(snapshot);
    axum::serve(listener, app).await
}

async fn index() -> &'static str {
    "SIP Shield: metrics at /metrics\n"
}

async fn metrics(State(snapshot): State<SnapshotFn>, headers: HeaderMap) -> Response {
    let om = wants_openmetrics(
        headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(""),
    );
    // Its own task: a snapshot that panics answers 500, not a dropped
    // connection.
    let snap = match tokio::spawn(snapshot()).await {
        Ok(s) => s,
        Err(_) => return (StatusCode::INTERNAL_SERVER_ERROR, "snapshot failed\n").into_response(),
    };
    let body = encode_openmetrics(snap);
    if om {
        ([(header::CONTENT_TYPE, OPENMETRICS)], body).into_response()
    } else {
        ([(header::CONTENT_TYPE, CLASSIC)], to_classic_text(&body)).into_response()
    }
}

/// OpenMetrics when the client accepts it at least as much as plain text
/// (RFC 9110 q-values; Prometheus sends
/// `application/openmetrics-text;version=1.0.0,...,text/plain;version=0.0.4;q=0.5,...`).
pub fn wants_openmetrics(accept: &str) -> bool {
    let (mut om, mut text) = (0.0f32, 0.0f32);
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")))
            .find_map(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0);
        match media.as_str() {
            "application/openmetrics-text" => om = om.max(q),
            "text/plain" => text = text.max(q),
            _ => {}
        }
    }
    om > 0.0 && om >= text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation() {
        assert!(wants_openmetrics(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        ));
        assert!(wants_openmetrics("application/openmetrics-text"));
        assert!(!wants_openmetrics(""));
        assert!(!wants_openmetrics("*/*"));
        assert!(!wants_openmetrics("text/plain"));
        assert!(!wants_openmetrics(
            "text/plain;q=1, application/openmetrics-text;q=0.5"
        ));
        assert!(!wants_openmetrics("application/openmetrics-text;q=0"));
    }
}
