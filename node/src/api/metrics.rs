//! Prometheus metrics: one process-wide recorder, rendered by `GET /metrics`.
//!
//! - `trellis_http_requests_total{method, route, status}`: every API request, by its
//!   route template (`/v1/collections/{c}/docs/{id}`, not the concrete path).
//! - `trellis_query_duration_seconds{kind}`: time the engine took per `/v1/execute`
//!   (histogram).
//! - `trellis_documents_written_total`: documents written through the API.
//! - `trellis_live_subscriptions`: live queries open on WebSockets (gauge).

use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub(crate) use ::metrics::gauge;

/// Request counter.
pub const HTTP_REQUESTS: &str = "trellis_http_requests_total";
/// Query latency histogram.
pub const QUERY_DURATION: &str = "trellis_query_duration_seconds";
/// Documents written counter.
pub const DOCUMENTS_WRITTEN: &str = "trellis_documents_written_total";
/// Open live subscriptions gauge.
pub const LIVE_SUBSCRIPTIONS: &str = "trellis_live_subscriptions";

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The process-wide Prometheus handle, installing the recorder on first use. When
/// another recorder is already installed (an embedding application's), the handle
/// renders an empty page rather than failing.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets(LATENCY_BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed; /metrics stays empty");
        }
        handle
    })
}

/// The metrics page.
pub fn render() -> String {
    let handle = handle();
    handle.run_upkeep();
    handle.render()
}

/// Middleware: counts each request by method, route template and status.
pub async fn track(request: Request, next: Next) -> Response {
    // Make sure the recorder exists before the first metric is emitted.
    let _ = handle();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    metrics::counter!(
        HTTP_REQUESTS,
        "method" => method,
        "route" => route,
        "status" => response.status().as_u16().to_string()
    )
    .increment(1);
    response
}

/// Records the time of one query.
pub fn query_took(kind: &'static str, took: Duration) {
    metrics::histogram!(QUERY_DURATION, "kind" => kind).record(took.as_secs_f64());
}

/// Counts documents written.
pub fn documents_written(n: usize) {
    if n > 0 {
        metrics::counter!(DOCUMENTS_WRITTEN).increment(n as u64);
    }
}
