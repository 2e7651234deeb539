//! `POST /v1/stylize`: the multipart form read into a [`Form`] (cheap checks on
//! the async side: fields, values, style ids), then the [`Form::run`] job on a
//! worker (decoding, stylizing, encoding): the same engine, settings and
//! output as `adain stylize`.

use std::sync::Arc;

use anyhow::anyhow;
use axum::body::Bytes;
use axum::extract::multipart::{Multipart, MultipartError};
use image::{GrayImage, ImageFormat, RgbImage};

use super::error::ApiError;
use super::AppState;
use crate::engine::{self, Engine, Job, Request, Settings, Style};
use crate::image_io;
use crate::ColorMode;

/// A style the request names: an upload, or a gallery entry by id.
pub enum StyleRef {
    Upload(Bytes),
    Gallery {
        bytes: Arc<Vec<u8>>,
        name: String,
        /// Prepared at start-up with the server's default settings.
        style: Arc<Style>,
    },
}

/// The output formats the API offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jpeg,
    Png,
    Webp,
}

impl Format {
    pub fn parse(s: &str) -> Result<Format, ApiError> {
        match s.to_ascii_lowercase().as_str() {
            "jpeg" | "jpg" => Ok(Format::Jpeg),
            "png" => Ok(Format::Png),
            "webp" => Ok(Format::Webp),
            other => Err(ApiError::BadRequest(format!(
                "format `{other}`: expected jpeg, png or webp"
            ))),
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Jpeg => "image/jpeg",
            Format::Png => "image/png",
            Format::Webp => "image/webp",
        }
    }

    pub fn ext(self) -> &'static str {
        match self {
            Format::Jpeg => "jpg",
            Format::Png => "png",
            Format::Webp => "webp",
        }
    }
}

/// A checked request, ready for a worker.
pub struct Form {
    pub content: Bytes,
    pub styles: Vec<StyleRef>,
    pub masks: Vec<Bytes>,
    pub job: Job,
    pub settings: Settings,
    /// The server's default style size (gallery styles prepared at it are reused).
    pub default_style_size: u32,
    pub format: Format,
}

fn field_error(e: MultipartError) -> ApiError {
    let status = e.status();
    if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::TooLarge(format!("upload too large: {}", e.body_text()))
    } else {
        ApiError::BadRequest(format!("bad multipart form: {}", e.body_text()))
    }
}

fn number<T: std::str::FromStr>(field: &str, v: &str) -> Result<T, ApiError> {
    v.trim()
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("{field} `{v}`: not a number")))
}

impl Form {
    /// Reads every field (the body is already capped by `--max-upload`) and
    /// checks what can be checked without decoding a picture.
    pub async fn read(mut mp: Multipart, st: &AppState) -> Result<Form, ApiError> {
        let mut content = None;
        let mut styles = Vec::new();
        let mut masks = Vec::new();
        let mut alpha = None;
        let mut weights = None;
        let mut color = ColorMode::None;
        let mut content_size = 512;
        let mut style_size = st.config.defaults.style_size;
        let mut format = Format::Jpeg;
        while let Some(field) = mp.next_field().await.map_err(field_error)? {
            let name = field.name().unwrap_or("").to_owned();
            match name.as_str() {
                "content" | "style" | "mask" => {
                    let bytes = field.bytes().await.map_err(field_error)?;
                    if bytes.is_empty() {
                        return Err(ApiError::BadRequest(format!("field `{name}` is empty")));
                    }
                    match name.as_str() {
                        "content" if content.is_some() => {
                            return Err(ApiError::BadRequest(
                                "field `content` given twice: one content image per request".into(),
                            ))
                        }
                        "content" => content = Some(bytes),
                        "style" => styles.push(StyleRef::Upload(bytes)),
                        _ => masks.push(bytes),
                    }
                }
                _ => {
                    let v = field.text().await.map_err(field_error)?;
                    let v = v.trim();
                    match name.as_str() {
                        "style_id" => {
                            let e = st.gallery.get(v).ok_or_else(|| {
                                ApiError::NotFound(format!("style_id `{v}`: no such gallery style (GET /v1/styles lists them)"))
                            })?;
                            styles.push(StyleRef::Gallery {
                                bytes: e.bytes.clone(),
                                name: e.name.clone(),
                                style: e.style.clone(),
                            });
                        }
                        "alpha" => {
                            let a: f64 = number("alpha", v)?;
                            if !(0.0..=1.0).contains(&a) {
                                return Err(ApiError::BadRequest(format!(
                                    "alpha {v}: must be between 0 and 1"
                                )));
                            }
                            alpha = Some(a);
                        }
                        "style_weights" => {
                            let w = v
                                .split(',')
                                .map(|x| number::<f64>("style_weights", x))
                                .collect::<Result<Vec<_>, _>>()?;
                            weights = Some(w);
                        }
                        "preserve_color" => {
                            color = match v {
                                "" | "none" => ColorMode::None,
                                "coral" => ColorMode::Coral,
                                "luminance" => ColorMode::Luminance,
                                other => {
                                    return Err(ApiError::BadRequest(format!(
                                        "preserve_color `{other}`: expected coral or luminance"
                                    )))
                                }
                            }
                        }
                        "content_size" => content_size = number("content_size", v)?,
                        "style_size" => style_size = number("style_size", v)?,
                        "format" => format = Format::parse(v)?,
                        other => {
                            return Err(ApiError::BadRequest(format!("unknown field `{other}`")))
                        }
                    }
                }
            }
        }
        let content = content
            .ok_or_else(|| ApiError::BadRequest("missing field `content` (a file)".into()))?;
        Form::new(
            content,
            styles,
            masks,
            alpha,
            weights,
            color,
            content_size,
            style_size,
            format,
            st,
        )
    }

    /// Decides the job and checks the settings.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        content: Bytes,
        styles: Vec<StyleRef>,
        masks: Vec<Bytes>,
        alpha: Option<f64>,
        weights: Option<Vec<f64>>,
        color: ColorMode,
        content_size: u32,
        style_size: u32,
        format: Format,
        st: &AppState,
    ) -> Result<Form, ApiError> {
        let n = styles.len();
        if n == 0 {
            return Err(ApiError::BadRequest(
                "missing field `style` (a file) or `style_id` (a gallery id)".into(),
            ));
        }
        if let Some(w) = &weights {
            if w.len() != n {
                return Err(ApiError::BadRequest(format!(
                    "style_weights has {} values for {n} styles",
                    w.len()
                )));
            }
            if !masks.is_empty() {
                return Err(ApiError::BadRequest(
                    "mask and style_weights cannot be combined: a mask assigns one style per region"
                        .into(),
                ));
            }
        }
        // Several styles without weights or masks: an even blend (the command
        // line would write one output per style; a request returns one image).
        let weights = match weights {
            None if n > 1 && masks.is_empty() => Some(vec![1.0; n]),
            w => w,
        };
        let job = if !masks.is_empty() {
            Job::Masked
        } else if weights.is_some() {
            Job::Blend(vec![]) // normalised weights filled in below
        } else {
            Job::Single(0)
        };
        let defaults = &st.config.defaults;
        let settings = Settings {
            alpha: alpha.unwrap_or(1.0),
            style_weights: weights,
            color,
            masks: Vec::new(),
            content_size,
            style_size,
            crop: false,
            limits: defaults.limits,
        };
        let normalised = engine::check_settings(&settings, n).map_err(ApiError::bad_request)?;
        let job = match (job, normalised) {
            (Job::Blend(_), Some(w)) => Job::Blend(w),
            (j, _) => j,
        };
        Ok(Form {
            content,
            styles,
            masks,
            job,
            settings,
            default_style_size: defaults.style_size,
            format,
        })
    }

    /// Decodes, stylizes and encodes (a worker's job): the image bytes.
    pub fn run(self, engine: &Engine) -> Result<Vec<u8>, ApiError> {
        let s = &self.settings;
        let max = s.limits.max_pixels;
        let content =
            image_io::open_bytes(&self.content, "content", max).map_err(ApiError::bad_image)?;
        image_io::check_min_side("content".as_ref(), content.width(), content.height())
            .map_err(ApiError::bad_image)?;
        let styles = self
            .styles
            .iter()
            .enumerate()
            .map(|(i, r)| match r {
                StyleRef::Gallery { style, .. }
                    if s.color == ColorMode::None && s.style_size == self.default_style_size =>
                {
                    Ok(style.clone())
                }
                StyleRef::Gallery { bytes, name, .. } => {
                    engine.style_bytes(bytes, name, s).map_err(ApiError::engine)
                }
                StyleRef::Upload(bytes) => engine
                    .style_bytes(bytes, &format!("style {}", i + 1), s)
                    .map_err(ApiError::bad_image),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let masks = if self.masks.is_empty() {
            Vec::new()
        } else {
            let decoded = self
                .masks
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    let name = format!("mask {}", i + 1);
                    let m =
                        image_io::mask_from_bytes(b, &name, max).map_err(ApiError::bad_image)?;
                    Ok((name, m))
                })
                .collect::<Result<Vec<(String, GrayImage)>, ApiError>>()?;
            engine::split_masks(
                decoded,
                styles.len(),
                "the content",
                (content.width(), content.height()),
            )
            .map_err(ApiError::bad_request)?
        };
        let request = Request {
            content: &content,
            content_name: "content",
            styles: &styles,
            job: &self.job,
            masks: &masks,
            settings: s,
        };
        let out = engine
            .stylize(&request, &mut |_| {})
            .map_err(ApiError::engine)?;
        encode(&out, content.alpha.as_ref(), self.format).map_err(ApiError::internal)
    }
}

/// The image as `format` bytes, the way `adain stylize` saves it: JPEG at
/// quality 95 without alpha; PNG and WebP (lossless) keep an alpha channel.
pub fn encode(
    rgb: &RgbImage,
    alpha: Option<&GrayImage>,
    format: Format,
) -> anyhow::Result<Vec<u8>> {
    let mut out = std::io::Cursor::new(Vec::new());
    let err = |e: image::ImageError| anyhow!("cannot encode the result ({e})");
    let f = match format {
        Format::Jpeg => {
            let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95);
            rgb.write_with_encoder(enc).map_err(err)?;
            return Ok(out.into_inner());
        }
        Format::Png => ImageFormat::Png,
        Format::Webp => ImageFormat::WebP,
    };
    match alpha {
        Some(a) if a.dimensions() == rgb.dimensions() => {
            image::RgbaImage::from_fn(rgb.width(), rgb.height(), |x, y| {
                let [r, g, b] = rgb.get_pixel(x, y).0;
                image::Rgba([r, g, b, a.get_pixel(x, y)[0]])
            })
            .write_to(&mut out, f)
            .map_err(err)?
        }
        _ => rgb.write_to(&mut out, f).map_err(err)?,
    }
    Ok(out.into_inner())
}
