//! `GET /v1/webcam` (a WebSocket): the page sends camera frames (JPEG, PNG or
//! WebP bytes, at preview size) and gets each one back stylized, one at a
//! time per connection, through the same worker pool as `POST /v1/stylize`.
//!
//! Each connection owns a [`Stream`]: its styles, settings and temporal state
//! (the `temporal` query parameter: the modes of `adain video --temporal`,
//! through the same [`FrameStylizer`], so the live view does not flicker).

use std::sync::{Arc, Mutex};

use anyhow::Result;
use axum::extract::ws::{Message, WebSocket};
use image::RgbImage;

use super::error::ApiError;
use super::stylize::{encode, Format};
use super::AppState;
use crate::engine::{self, Engine, Job, Settings, Style};
use crate::image_io;
use crate::video::{FrameStylizer, Temporal};
use crate::ColorMode;

/// Frames larger than this are refused (the page sends preview-size frames).
pub const MAX_FRAME_PIXELS: u64 = 1 << 20;

/// `?temporal=none|stats|flow` (default `flow`, as `adain video`).
pub fn parse_temporal(s: &str) -> Result<Temporal, ApiError> {
    match s {
        "none" => Ok(Temporal::None),
        "stats" => Ok(Temporal::Stats),
        "" | "flow" => Ok(Temporal::Flow),
        other => Err(ApiError::BadRequest(format!(
            "temporal `{other}`: expected none, stats or flow"
        ))),
    }
}

/// One webcam connection: what it stylizes with and its temporal state.
pub struct Stream {
    engine: Arc<Engine>,
    styles: Vec<Arc<Style>>,
    /// Gallery files still to prepare for a colour mode (on the first frame,
    /// on a worker: colour modes need the style image, not its statistics).
    unprepared: Vec<(Arc<Vec<u8>>, String)>,
    job: Job,
    settings: Settings,
    temporal: Temporal,
    /// Made on the first frame (when the styles are ready); holds the
    /// stream's temporal state from then on.
    stylizer: Option<FrameStylizer>,
}

impl Stream {
    /// From the query: `style_id` (repeatable), `style_weights`, `alpha`,
    /// `preserve_color`, `size` (working size of the frames, default 256),
    /// `temporal`. Errors before the upgrade are plain HTTP errors.
    pub fn from_query(st: &AppState, q: &[(String, String)]) -> Result<Stream, ApiError> {
        let mut styles = Vec::new();
        let mut sources = Vec::new();
        let mut alpha = 1.0;
        let mut weights = None;
        let mut color = ColorMode::None;
        let mut size = 256;
        let mut temporal = Temporal::Flow;
        let num = |k: &str, v: &str| -> Result<f64, ApiError> {
            v.trim()
                .parse()
                .map_err(|_| ApiError::BadRequest(format!("{k} `{v}`: not a number")))
        };
        for (k, v) in q {
            match k.as_str() {
                "style_id" => {
                    let e = st.gallery.get(v).ok_or_else(|| {
                        ApiError::NotFound(format!("style_id `{v}`: no such gallery style"))
                    })?;
                    styles.push(e.style.clone());
                    sources.push((e.bytes.clone(), e.name.clone()));
                }
                "alpha" => alpha = num(k, v)?,
                "style_weights" => {
                    weights = Some(
                        v.split(',')
                            .map(|x| num(k, x))
                            .collect::<Result<Vec<_>, _>>()?,
                    )
                }
                "preserve_color" => {
                    color = match v.as_str() {
                        "" | "none" => ColorMode::None,
                        "coral" => ColorMode::Coral,
                        "luminance" => ColorMode::Luminance,
                        o => {
                            return Err(ApiError::BadRequest(format!(
                                "preserve_color `{o}`: expected coral or luminance"
                            )))
                        }
                    }
                }
                "size" => size = num(k, v)? as u32,
                "temporal" => temporal = parse_temporal(v)?,
                "access_token" => {} // checked by the auth layer
                other => return Err(ApiError::BadRequest(format!("unknown parameter `{other}`"))),
            }
        }
        if styles.is_empty() {
            return Err(ApiError::BadRequest(
                "missing parameter `style_id` (a gallery id)".into(),
            ));
        }
        if !(0.0..=1.0).contains(&alpha) {
            return Err(ApiError::BadRequest(format!(
                "alpha {alpha}: must be between 0 and 1"
            )));
        }
        let n = styles.len();
        let weights = weights.or_else(|| (n > 1).then(|| vec![1.0; n]));
        let mut settings = Settings {
            alpha,
            style_weights: weights,
            color,
            content_size: size,
            limits: st.config.defaults.limits,
            ..st.config.defaults.clone()
        };
        settings.limits.max_pixels = settings.limits.max_pixels.min(MAX_FRAME_PIXELS);
        let job = match engine::check_settings(&settings, n).map_err(ApiError::bad_request)? {
            Some(w) => Job::Blend(w),
            None => Job::Single(0),
        };
        let unprepared = if color == ColorMode::None {
            Vec::new()
        } else {
            styles.clear();
            sources
        };
        Ok(Stream {
            engine: st.engine.clone(),
            styles,
            unprepared,
            job,
            settings,
            temporal,
            stylizer: None,
        })
    }

    /// The next frame of this stream, stylized.
    pub fn frame(&mut self, rgb: &RgbImage) -> Result<RgbImage> {
        if !self.unprepared.is_empty() {
            self.styles = self
                .unprepared
                .iter()
                .map(|(bytes, name)| self.engine.style_bytes(bytes, name, &self.settings))
                .collect::<Result<_>>()?;
            self.unprepared.clear();
        }
        if self.stylizer.is_none() {
            self.stylizer = Some(FrameStylizer::new(
                self.engine.clone(),
                self.styles.clone(),
                self.job.clone(),
                Vec::new(),
                self.settings.clone(),
                self.temporal,
                crate::video::temporal::FLOW_STRENGTH,
                crate::video::blend::Blend::KeepContrast,
            )?);
        }
        self.stylizer.as_mut().expect("just made").frame(rgb)
    }

    /// Decodes a frame's bytes, stylizes it, encodes the result as JPEG.
    fn frame_bytes(&mut self, bytes: &[u8]) -> Result<Vec<u8>, ApiError> {
        let src = image_io::open_bytes(bytes, "frame", self.settings.limits.max_pixels)
            .map_err(ApiError::bad_image)?;
        image_io::check_min_side("frame".as_ref(), src.width(), src.height())
            .map_err(ApiError::bad_image)?;
        let out = self
            .frame(&src.image.to_rgb8())
            .map_err(ApiError::internal)?;
        encode(&out, None, Format::Jpeg).map_err(ApiError::internal)
    }
}

/// Serves one connection until the page closes it or the server shuts down.
/// Each binary message is a frame; the answer is the stylized frame (binary),
/// or a text message `{"error": "...", "status": N}` (a busy server: drop the
/// frame and send the next one).
pub async fn run(mut socket: WebSocket, st: Arc<AppState>, stream: Stream) {
    let stream = Arc::new(Mutex::new(stream));
    let mut shutdown = st.shutdown.clone();
    loop {
        let msg = tokio::select! {
            m = socket.recv() => m,
            _ = shutdown.changed() => break,
        };
        let bytes = match msg {
            Some(Ok(Message::Binary(b))) => b,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Text(_))) => {
                let e = ApiError::BadRequest("send frames as binary messages".into());
                if reply_error(&mut socket, &e).await.is_err() {
                    break;
                }
                continue;
            }
            _ => break, // closed or broken
        };
        let s = stream.clone();
        let result = match st
            .pool
            .submit(move || s.lock().expect("stream lock").frame_bytes(&bytes))
        {
            Err(e) => Err(e),
            Ok(rx) => match tokio::time::timeout(st.config.timeout, rx).await {
                Err(_) => Err(ApiError::Timeout(st.config.timeout.as_secs())),
                Ok(Err(_)) => Err(ApiError::Internal("worker stopped".into())),
                Ok(Ok(r)) => r,
            },
        };
        let sent = match result {
            Ok(jpeg) => {
                st.metrics
                    .frames
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                st.metrics
                    .images
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                socket.send(Message::Binary(jpeg.into())).await
            }
            Err(e) => reply_error(&mut socket, &e).await,
        };
        if sent.is_err() {
            break;
        }
    }
    let _ = socket.send(Message::Close(None)).await;
}

async fn reply_error(socket: &mut WebSocket, e: &ApiError) -> Result<(), axum::Error> {
    let text = serde_json::json!({ "error": e.to_string(), "status": e.status().as_u16() });
    socket.send(Message::Text(text.to_string().into())).await
}

#[cfg(test)]
mod tests {
    use super::{parse_temporal, Temporal};

    #[test]
    fn temporal_modes_are_those_of_adain_video() {
        assert!(matches!(parse_temporal("none"), Ok(Temporal::None)));
        assert!(matches!(parse_temporal("stats"), Ok(Temporal::Stats)));
        assert!(matches!(parse_temporal(""), Ok(Temporal::Flow)));
        let e = parse_temporal("wobble").err().unwrap().to_string();
        assert!(e.contains("wobble"), "{e}");
    }
}
