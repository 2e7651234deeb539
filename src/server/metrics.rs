//! Counters for `GET /metrics`, in Prometheus' text format: requests by
//! status, stylization latency (a histogram), queue depth and running jobs,
//! images stylized.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::pool::Load;

/// Upper bounds of the latency histogram's buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0,
];

#[derive(Default)]
pub struct Metrics {
    /// (route, status) -> count.
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// Cumulative counts per bucket of `POST /v1/stylize` latency, then +Inf.
    latency: Mutex<([u64; BUCKETS.len() + 1], f64)>,
    /// Stylized images sent (requests and webcam frames).
    pub images: AtomicU64,
    /// Webcam frames stylized.
    pub frames: AtomicU64,
    /// Connections open now (WebSockets included).
    pub connections_open: AtomicU64,
    /// Connections closed at once because `--max-connections` were open.
    pub connections_refused: AtomicU64,
    /// Connections closed because their headers did not arrive, or their
    /// answer was not read, within `--client-timeout` (slow bodies are 408
    /// answers, counted by status).
    pub client_timeouts: AtomicU64,
}

impl Metrics {
    /// Records one finished request.
    pub fn request(&self, route: &'static str, status: u16, took: Duration) {
        *self
            .requests
            .lock()
            .expect("metrics lock")
            .entry((route, status))
            .or_default() += 1;
        if route == "/v1/stylize" {
            let s = took.as_secs_f64();
            let mut l = self.latency.lock().expect("metrics lock");
            let i = BUCKETS
                .iter()
                .position(|b| s <= *b)
                .unwrap_or(BUCKETS.len());
            l.0[i] += 1;
            l.1 += s;
        }
    }

    /// The text `/metrics` serves; `uploads_held` is the part of the upload
    /// budget the uploads being read hold now (bytes).
    pub fn render(&self, load: &Load, workers: usize, uploads_held: u64) -> String {
        let mut o = String::new();
        o.push_str(
            "# HELP adain_http_requests_total HTTP requests answered, by route and status.\n",
        );
        o.push_str("# TYPE adain_http_requests_total counter\n");
        for ((route, status), n) in self.requests.lock().expect("metrics lock").iter() {
            let _ = writeln!(
                o,
                "adain_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        o.push_str(
            "# HELP adain_stylize_seconds Latency of POST /v1/stylize (queue wait included).\n",
        );
        o.push_str("# TYPE adain_stylize_seconds histogram\n");
        let (counts, sum) = *self.latency.lock().expect("metrics lock");
        let mut cum = 0;
        for (b, n) in BUCKETS.iter().zip(counts.iter()) {
            cum += n;
            let _ = writeln!(o, "adain_stylize_seconds_bucket{{le=\"{b}\"}} {cum}");
        }
        cum += counts[BUCKETS.len()];
        let _ = writeln!(o, "adain_stylize_seconds_bucket{{le=\"+Inf\"}} {cum}");
        let _ = writeln!(o, "adain_stylize_seconds_sum {sum:.6}");
        let _ = writeln!(o, "adain_stylize_seconds_count {cum}");
        let gauge = |o: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        let counter = |o: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        gauge(
            &mut o,
            "adain_queue_depth",
            "Jobs waiting for a worker.",
            load.queued.load(Ordering::SeqCst) as u64,
        );
        gauge(
            &mut o,
            "adain_jobs_running",
            "Jobs a worker is running.",
            load.running.load(Ordering::SeqCst) as u64,
        );
        gauge(&mut o, "adain_workers", "Worker threads.", workers as u64);
        counter(
            &mut o,
            "adain_images_stylized_total",
            "Stylized images sent (requests and webcam frames).",
            self.images.load(Ordering::Relaxed),
        );
        counter(
            &mut o,
            "adain_webcam_frames_total",
            "Webcam frames stylized.",
            self.frames.load(Ordering::Relaxed),
        );
        counter(
            &mut o,
            "adain_jobs_skipped_total",
            "Queued jobs dropped because the client had gone.",
            load.skipped.load(Ordering::Relaxed),
        );
        gauge(
            &mut o,
            "adain_upload_budget_held_bytes",
            "Upload budget held by the uploads being read (by declared length).",
            uploads_held,
        );
        gauge(
            &mut o,
            "adain_connections_open",
            "Connections open (WebSockets included).",
            self.connections_open.load(Ordering::Relaxed),
        );
        counter(
            &mut o,
            "adain_connections_refused_total",
            "Connections closed at once because --max-connections were open.",
            self.connections_refused.load(Ordering::Relaxed),
        );
        counter(
            &mut o,
            "adain_client_timeouts_total",
            "Connections closed because headers did not arrive, or the answer was not read, within --client-timeout.",
            self.client_timeouts.load(Ordering::Relaxed),
        );
        o
    }
}
