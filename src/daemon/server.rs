//! The daemon's loopback HTTP endpoint: `POST /webhook` (a forge's push hook, HMAC-verified,
//! replays refused) triggers a fetch at once; `GET /healthz` and `GET /metrics` (Prometheus
//! text exposition format) report on the reconciler.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::webhook::{Seen, delivery_id, verify};
use super::{Metrics, Trigger};

#[derive(Clone)]
struct AppState {
    secret: Option<Arc<Vec<u8>>>,
    seen: Arc<Mutex<Seen>>,
    tx: mpsc::UnboundedSender<Trigger>,
    stats: Arc<Mutex<Metrics>>,
}

pub async fn spawn(addr: SocketAddr, secret: Option<Vec<u8>>, tx: mpsc::UnboundedSender<Trigger>, metrics: Arc<Mutex<Metrics>>) -> std::io::Result<()> {
    let state = AppState { secret: secret.map(Arc::new), seen: Arc::default(), tx, stats: metrics };
    let app = Router::new().route("/webhook", post(webhook)).route("/healthz", get(healthz)).route("/metrics", get(metrics_handler)).with_state(state);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            warn!(error = %e, "the HTTP endpoint stopped");
        }
    });
    Ok(())
}

async fn webhook(State(st): State<AppState>, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    let Some(secret) = &st.secret else {
        return (StatusCode::FORBIDDEN, "no webhook secret is configured; webhooks are refused\n".into());
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let id = delivery_id(header).unwrap_or("-");
    if let Err(e) = verify(secret, header, &body) {
        warn!(error = %e, delivery = id, "webhook refused");
        return (StatusCode::UNAUTHORIZED, format!("{e}\n"));
    }
    // After the signature: only what it covers tells a replay, never the (unsigned) delivery id.
    if let Err(e) = st.seen.lock().expect("seen lock").check(&body) {
        warn!(error = %e, delivery = id, "webhook refused");
        return (StatusCode::CONFLICT, format!("{e}\n"));
    }
    info!(delivery = id, "webhook accepted: fetching");
    let _ = st.tx.send(Trigger::Webhook);
    (StatusCode::ACCEPTED, "fetching\n".into())
}

async fn healthz(State(st): State<AppState>) -> (StatusCode, String) {
    let m = st.stats.lock().expect("metrics lock");
    let body = format!("{}\napplied {}\n", if m.healthy { "ok" } else { "degraded" }, m.applied_commit.as_deref().unwrap_or("nothing"));
    (if m.healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, body)
}

async fn metrics_handler(State(st): State<AppState>) -> ([(axum::http::header::HeaderName, &'static str); 1], String) {
    let m = st.stats.lock().expect("metrics lock").clone();
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], render_metrics(&m))
}

/// Prometheus text exposition of the reconciler's metrics.
pub fn render_metrics(m: &Metrics) -> String {
    let mut o = String::new();
    let mut gauge = |name: &str, help: &str, kind: &str, samples: Vec<(String, f64)>| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(o, "{name}{labels} {v}");
        }
    };
    gauge(
        "fleetwright_applied_commit_info",
        "The commit the host is converged to.",
        "gauge",
        m.applied_commit.iter().map(|c| (format!("{{commit=\"{c}\"}}"), 1.0)).collect(),
    );
    gauge(
        "fleetwright_last_good_commit_info",
        "The last commit that passed its health gate.",
        "gauge",
        m.last_good.iter().map(|c| (format!("{{commit=\"{c}\"}}"), 1.0)).collect(),
    );
    gauge(
        "fleetwright_reconciles_total",
        "Reconciles by result.",
        "counter",
        m.reconciles.iter().map(|(r, n)| (format!("{{result=\"{r}\"}}"), *n as f64)).collect(),
    );
    gauge("fleetwright_reconcile_failures_total", "Reconciles that did not converge to the head.", "counter", vec![(String::new(), m.failures as f64)]);
    gauge("fleetwright_rollbacks_total", "Automatic rollbacks.", "counter", vec![(String::new(), m.rollbacks as f64)]);
    gauge("fleetwright_last_reconcile_duration_seconds", "Duration of the last reconcile.", "gauge", vec![(String::new(), m.last_duration)]);
    let h = &m.durations;
    let mut buckets: Vec<(String, f64)> =
        crate::daemon::Histogram::BUCKETS.iter().zip(h.counts).map(|(b, c)| (format!("_bucket{{le=\"{b}\"}}"), c as f64)).collect();
    buckets.push(("_bucket{le=\"+Inf\"}".into(), h.count as f64));
    buckets.push(("_sum".into(), h.sum));
    buckets.push(("_count".into(), h.count as f64));
    gauge("fleetwright_reconcile_duration_seconds", "Duration of reconciles.", "histogram", buckets);
    gauge("fleetwright_last_success_timestamp_seconds", "When the host last converged.", "gauge", vec![(String::new(), m.last_success_unix as f64)]);
    gauge("fleetwright_drift_units", "Units whose drift the last reconcile repaired.", "gauge", vec![(String::new(), m.drift_units as f64)]);
    gauge(
        "fleetwright_commit_to_converged_seconds",
        "From a commit's first sight to converged.",
        "gauge",
        m.commit_to_converged.iter().map(|s| (String::new(), *s)).collect(),
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render_in_the_exposition_format() {
        let mut m = Metrics { applied_commit: Some("abc".into()), failures: 2, healthy: true, ..Default::default() };
        m.reconciles.insert("converged".into(), 3);
        let text = render_metrics(&m);
        assert!(text.contains("fleetwright_applied_commit_info{commit=\"abc\"} 1\n"), "{text}");
        assert!(text.contains("fleetwright_reconciles_total{result=\"converged\"} 3\n"), "{text}");
        assert!(text.contains("# TYPE fleetwright_reconcile_failures_total counter\nfleetwright_reconcile_failures_total 2\n"), "{text}");
        m.durations.observe(0.3);
        m.durations.observe(7.0);
        let text = render_metrics(&m);
        for line in [
            "# TYPE fleetwright_reconcile_duration_seconds histogram",
            "fleetwright_reconcile_duration_seconds_bucket{le=\"0.25\"} 0",
            "fleetwright_reconcile_duration_seconds_bucket{le=\"0.5\"} 1",
            "fleetwright_reconcile_duration_seconds_bucket{le=\"10\"} 2",
            "fleetwright_reconcile_duration_seconds_bucket{le=\"+Inf\"} 2",
            "fleetwright_reconcile_duration_seconds_sum 7.3",
            "fleetwright_reconcile_duration_seconds_count 2",
        ] {
            assert!(text.contains(&format!("{line}\n")), "{line}:\n{text}");
        }
    }
}
