//! `adain serve`: an HTTP API and a web page on the stylization [`Engine`].
//!
//! [`app`] builds the router from an [`AppState`] (the engine with the model
//! loaded once, the [`gallery`], the worker [`pool`], [`metrics`], the
//! [`Config`]); [`serve`] runs it on a listener until a shutdown signal, then
//! finishes what is in flight. Routes:
//! - `GET /` (the page, [`page`]), `/openapi.json`, `/healthz`, `/metrics`;
//! - `GET /v1/styles`, `GET /v1/styles/{id}/thumbnail`, `POST /v1/stylize`
//!   ([`stylize`]), `GET /v1/webcam` (a WebSocket, [`webcam`]); with a token
//!   configured every `/v1` call needs `Authorization: Bearer <token>`.

pub mod error;
pub mod gallery;
pub mod listen;
pub mod metrics;
pub mod page;
pub mod pool;
pub mod stylize;
pub mod webcam;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

pub use error::ApiError;
use gallery::Gallery;
use metrics::Metrics;
use pool::Pool;

use crate::engine::{Engine, Settings};

/// What the flags decide.
pub struct Config {
    /// Largest request body in bytes (`--max-upload`).
    pub max_upload: usize,
    /// Per-request limit, queue wait included (`--timeout`).
    pub timeout: Duration,
    /// Time a client has to send a request's headers, and then its body
    /// (`--client-timeout`); an idle keep-alive connection is closed after it.
    pub client_timeout: Duration,
    /// Live connections at most (`--max-connections`); more are refused.
    pub max_connections: usize,
    /// Bytes that the uploads being read may hold together (by their declared
    /// length; `--max-upload` for one without): `--max-upload` times
    /// (`--queue` + `--workers`), so that many slow uploads cannot add up to
    /// `--max-connections` times `--max-upload`. One past it gets 503.
    pub upload_budget: usize,
    /// Every `/v1` call must bear this token (`--token-file`).
    pub token: Option<String>,
    /// The one origin allowed cross-origin calls (`--cors`); none by default.
    pub cors: Option<HeaderValue>,
    /// Style size and limits of every request (fields may change the sizes).
    pub defaults: Settings,
}

/// Everything the handlers share (behind an `Arc`).
pub struct AppState {
    pub engine: Arc<Engine>,
    pub gallery: Gallery,
    pub pool: Pool,
    pub metrics: Metrics,
    pub config: Config,
    /// [`Config::upload_budget`] in KiB.
    pub uploads: Arc<tokio::sync::Semaphore>,
    /// The permits `uploads` started with (KiB).
    pub uploads_total: usize,
    /// Becomes `true` when the server starts shutting down (webcam streams end).
    pub shutdown: watch::Receiver<bool>,
    shutdown_tx: watch::Sender<bool>,
}

impl AppState {
    pub fn new(engine: Arc<Engine>, gallery: Gallery, pool: Pool, config: Config) -> AppState {
        let (shutdown_tx, shutdown) = watch::channel(false);
        let kib = config.upload_budget.max(config.max_upload).div_ceil(1024);
        let uploads_total = kib.min(tokio::sync::Semaphore::MAX_PERMITS);
        let uploads = Arc::new(tokio::sync::Semaphore::new(uploads_total));
        AppState {
            uploads,
            uploads_total,
            engine,
            gallery,
            pool,
            metrics: Metrics::default(),
            config,
            shutdown,
            shutdown_tx,
        }
    }
}

/// The router: page, API, metrics, with auth, body limit, CORS as configured.
pub fn app(state: Arc<AppState>) -> Router {
    let v1 = Router::new()
        .route("/v1/styles", get(styles))
        .route("/v1/styles/{id}/thumbnail", get(thumbnail))
        .route(
            "/v1/stylize",
            post(stylize).layer(DefaultBodyLimit::max(state.config.max_upload)),
        )
        .route("/v1/webcam", get(webcam))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    let mut router = Router::new()
        .route("/", get(page::index))
        .route("/app.js", get(page::script))
        .route("/app.css", get(page::style))
        .route("/openapi.json", get(page::openapi))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .merge(v1)
        .fallback(|| async { ApiError::NotFound("no such path".into()) });
    if let Some(origin) = &state.config.cors {
        use tower_http::cors::{AllowOrigin, CorsLayer};
        let allow = if origin == "*" {
            AllowOrigin::any()
        } else {
            AllowOrigin::exact(origin.clone())
        };
        router = router.layer(
            CorsLayer::new()
                .allow_origin(allow)
                .allow_methods([Method::GET, Method::POST])
                .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]),
        );
    }
    router
        .layer(middleware::from_fn_with_state(state.clone(), record))
        .with_state(state)
}

/// Serves `app` on `listener` until `signal` resolves; then refuses new
/// connections, lets requests in flight finish, and stops the workers.
/// Connections are bounded in number and in how slowly a client may send
/// (see [`listen`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    signal: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let st = state.clone();
    listen::run(listener, app(state.clone()), state.clone(), async move {
        signal.await;
        tracing::info!("shutting down: finishing requests in flight");
        let _ = st.shutdown_tx.send(true);
    })
    .await;
    // the workers finish queued jobs (their requesters are gone by now) and stop
    let st = state.clone();
    let _ = tokio::task::spawn_blocking(move || st.pool.close()).await;
    Ok(())
}

/// Counts every answer by route and status, and the stylize latency.
async fn record(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route: &'static str = match req.extensions().get::<MatchedPath>().map(|m| m.as_str()) {
        Some("/v1/stylize") => "/v1/stylize",
        Some("/v1/styles") => "/v1/styles",
        Some("/v1/styles/{id}/thumbnail") => "/v1/styles/{id}/thumbnail",
        Some("/v1/webcam") => "/v1/webcam",
        Some("/healthz") => "/healthz",
        Some("/metrics") => "/metrics",
        Some(_) => "page",
        None => "other",
    };
    let t = Instant::now();
    let r = next.run(req).await;
    st.metrics.request(route, r.status().as_u16(), t.elapsed());
    r
}

/// With `--token-file`, a `/v1` call needs `Authorization: Bearer <token>`
/// (the webcam's WebSocket, which a browser cannot give headers, may pass
/// `?access_token=`). Compared in constant time.
async fn auth(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Some(token) = &st.config.token else {
        return next.run(req).await;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned)
        .or_else(|| {
            (req.uri().path() == "/v1/webcam")
                .then(|| req.uri().query())
                .flatten()
                .and_then(|q| {
                    q.split('&')
                        .find_map(|kv| kv.strip_prefix("access_token="))
                        .map(percent_decode)
                })
        });
    match given {
        Some(g) if same_secret(g.trim(), token) => next.run(req).await,
        _ => ApiError::Unauthorized.into_response(),
    }
}

/// Equal strings, in time that does not depend on where they differ: both
/// are hashed first (so their lengths do not show), then the digests are
/// compared without an early exit.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (x, y) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    x.iter()
        .zip(y.iter())
        .fold(0u8, |acc, (p, q)| acc | (p ^ q))
        == 0
}

/// `%XX` escapes and `+` of a query value.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(v)) => {
                out.push(v);
                i += 2;
            }
            (c, _) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn healthz(State(st): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "status": "ok",
        "styles": st.gallery.len(),
        "workers": st.pool.workers(),
        "auth": st.config.token.is_some(),
    }))
}

async fn metrics_text(State(st): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics.render(
            &st.pool.load,
            st.pool.workers(),
            (st.uploads_total - st.uploads.available_permits()) as u64 * 1024,
        ),
    )
}

async fn styles(State(st): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "styles": st.gallery.listing() }))
}

async fn thumbnail(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let e = st
        .gallery
        .get(&id)
        .ok_or_else(|| ApiError::NotFound(format!("style_id `{id}`: no such gallery style")))?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/jpeg"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        e.thumbnail.clone(),
    )
        .into_response())
}

async fn stylize(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    mp: Result<axum::extract::Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<Response, ApiError> {
    // A declared length over the cap is refused before a byte is read.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared {
        if n > st.config.max_upload as u64 {
            return Err(ApiError::TooLarge(format!(
                "upload of {n} bytes is over the limit of {} bytes",
                st.config.max_upload
            )));
        }
    }
    let mp = mp.map_err(|e| {
        ApiError::BadRequest(format!("expected a multipart form: {}", e.body_text()))
    })?;
    // its share of the budget of uploads being read (held while reading)
    let max = st.config.max_upload as u64;
    let kib = declared.unwrap_or(max).min(max).div_ceil(1024).max(1);
    let _reading = st
        .uploads
        .clone()
        .try_acquire_many_owned(u32::try_from(kib).unwrap_or(u32::MAX))
        .map_err(|_| ApiError::Uploads)?;
    // the whole form within --client-timeout: a client sending a byte a
    // second does not hold the connection (and its buffers) for long
    let limit = st.config.client_timeout;
    let form = tokio::time::timeout(limit, stylize::Form::read(mp, &st))
        .await
        .map_err(|_| ApiError::ClientTimeout(limit.as_secs()))??;
    let format = form.format;
    let engine = st.engine.clone();
    let rx = st.pool.submit(move || form.run(&engine))?;
    let bytes = match tokio::time::timeout(st.config.timeout, rx).await {
        Err(_) => return Err(ApiError::Timeout(st.config.timeout.as_secs())),
        Ok(Err(_)) => return Err(ApiError::Internal("worker stopped".into())),
        Ok(Ok(r)) => r?,
    };
    st.metrics
        .images
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok((
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(format.content_type()),
            ),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&format!("inline; filename=\"stylized.{}\"", format.ext()))
                    .expect("ascii"),
            ),
        ],
        bytes,
    )
        .into_response())
}

async fn webcam(
    State(st): State<Arc<AppState>>,
    Query(q): Query<Vec<(String, String)>>,
    conn: Option<axum::Extension<listen::LiveConnection>>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let stream = webcam::Stream::from_query(&st, &q)?;
    let limit = st.config.max_upload.min(16 << 20);
    Ok(ws
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| async move {
            // the stream counts as a live connection until it ends
            let _conn = conn;
            webcam::run(socket, st, stream).await
        }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn secrets_compare_equal_only_when_equal() {
        assert!(super::same_secret("abc", "abc"));
        assert!(!super::same_secret("abc", "abd"));
        assert!(!super::same_secret("abc", "abcd"));
        assert!(!super::same_secret("", "abc"));
    }

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(super::percent_decode("a%2Bb+c%3d"), "a+b c=");
        assert_eq!(super::percent_decode("100%"), "100%");
    }
}
