//! `adain serve`: flags onto [`adain::server`]: the model loaded once, the
//! gallery prepared, the listening address printed, Ctrl-C/SIGTERM handled.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;

use adain::engine::{Limits, Settings};
use adain::server::{self, gallery::Gallery, pool::Pool, AppState, Config};

use super::common::ModelArgs;

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on: loopback by default; another address exposes the
    /// server to the network (give it a --token-file).
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port (0 picks a free one; the address is printed on start).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Directory of paintings offered as the gallery (ids from file names);
    /// their statistics are computed at start-up.
    #[arg(long)]
    styles: Option<PathBuf>,
    /// Stylization workers (each uses every core's kernels; more than 1 helps
    /// only when a request leaves cores idle).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Requests that may wait for a worker; more get 503 with Retry-After.
    #[arg(long, default_value_t = 16)]
    queue: usize,
    /// Largest request body (e.g. 32MB, 8MiB). The uploads being read at
    /// once may hold this times (--queue + --workers); one more gets 503.
    #[arg(long, default_value = "32MB", value_parser = adain::runtime::parse_size)]
    max_upload: u64,
    /// Refuse pictures whose header declares more pixels than this, before
    /// decoding them (default 8192^2).
    #[arg(long, default_value_t = 8192 * 8192)]
    max_pixels: u64,
    /// Working-memory budget of one stylization: larger ones run in tiles.
    #[arg(long, default_value = "1GiB", value_parser = adain::runtime::parse_size)]
    max_memory: u64,
    /// File holding a bearer token every /v1 call must present.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Allow cross-origin calls from this origin (e.g. https://example.org, or *).
    #[arg(long)]
    cors: Option<String>,
    /// Per-request limit in seconds, queue wait included (504 after it).
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Seconds a client may take to send a request's headers, and again its
    /// body; a connection idle that long between requests, or whose client
    /// reads nothing of its answer that long, is closed. A slow header gets
    /// the connection closed, a slow upload a 408.
    #[arg(long, default_value_t = 30)]
    client_timeout: u64,
    /// Live connections at most (WebSockets included); one more is answered
    /// 503 (if its socket takes it at once) and closed, never queued, and
    /// counted in /metrics as adain_connections_refused_total.
    #[arg(long, default_value_t = 4096)]
    max_connections: usize,
    /// Default shorter side of the styles (gallery styles are prepared at it).
    #[arg(long, default_value_t = 512)]
    style_size: u32,
    #[command(flatten)]
    model: ModelArgs,
}

pub fn run(a: ServeArgs) -> Result<()> {
    if a.timeout == 0 {
        bail!("--timeout 0: must be at least 1 second");
    }
    if a.client_timeout == 0 {
        bail!("--client-timeout 0: must be at least 1 second");
    }
    if a.max_connections == 0 {
        bail!("--max-connections 0: must be at least 1");
    }
    raise_fd_limit(a.max_connections);
    let token = match &a.token_file {
        Some(f) => {
            let t = std::fs::read_to_string(f)
                .with_context(|| format!("--token-file {}: cannot read", f.display()))?;
            let t = t.trim().to_owned();
            if t.is_empty() {
                bail!("--token-file {}: the file is empty", f.display());
            }
            Some(t)
        }
        None => None,
    };
    let cors = match &a.cors {
        Some(o) => Some(
            axum::http::HeaderValue::from_str(o)
                .map_err(|_| anyhow::anyhow!("--cors {o}: not a valid origin"))?,
        ),
        None => None,
    };
    if !a.host.is_loopback() && token.is_none() {
        tracing::warn!(
            "listening on {} without --token-file: anyone on the network can use it",
            a.host
        );
    }
    let defaults = Settings {
        style_size: a.style_size,
        limits: Limits {
            max_pixels: a.max_pixels,
            max_memory: a.max_memory,
            tile: None,
        },
        ..Settings::default()
    };
    let engine = Arc::new(a.model.engine()?);
    let gallery = match &a.styles {
        Some(dir) => Gallery::load(dir, &engine, &defaults).context("--styles")?,
        None => Gallery::default(),
    };
    let config = Config {
        max_upload: usize::try_from(a.max_upload).unwrap_or(usize::MAX),
        timeout: Duration::from_secs(a.timeout),
        client_timeout: Duration::from_secs(a.client_timeout),
        max_connections: a.max_connections,
        upload_budget: usize::try_from(a.max_upload)
            .unwrap_or(usize::MAX)
            .saturating_mul(a.queue + a.workers.max(1)),
        token,
        cors,
        defaults,
    };
    let state = Arc::new(AppState::new(
        engine,
        gallery,
        Pool::new(a.workers, a.queue),
        config,
    ));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("adain-http")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let addr = SocketAddr::new(a.host, a.port);
        let listener = listen(addr).with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        // tests and scripts read this line for the port
        println!("listening on http://{local}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        tracing::info!(
            "{} gallery styles, {} worker(s), queue {}",
            state.gallery.len(),
            state.pool.workers(),
            a.queue
        );
        server::serve(listener, state, shutdown_signal())
            .await
            .context("server")?;
        tracing::info!("stopped");
        Ok(())
    })
}

/// A listener with a backlog of 4096 (the kernel caps it at somaxconn), not
/// tokio's 1024: a burst of connections waits in the kernel's queue instead
/// of having its SYNs dropped and retried a second later.
fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let s = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    s.set_reuseaddr(true)?;
    s.bind(addr)?;
    s.listen(4096)
}

/// Each connection is a file descriptor: lifts the soft limit towards the
/// hard one so that `--max-connections` can be reached (the weights, the
/// gallery and the runtime need some more), and says so when it cannot.
fn raise_fd_limit(max_connections: usize) {
    let want = max_connections as u64 + 256;
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to an rlimit
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) != 0 {
            return;
        }
        if l.rlim_cur < want {
            let raised = libc::rlimit {
                rlim_cur: (want as libc::rlim_t).min(l.rlim_max),
                rlim_max: l.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                l = raised;
            }
        }
    }
    if l.rlim_cur < want {
        tracing::warn!(
            "--max-connections {max_connections}: only {} file descriptors allowed (ulimit -n); \
             connections past that fail to be accepted",
            l.rlim_cur
        );
    }
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
