//! Reading and writing pictures: EXIF orientation, any colour type (grey,
//! 16-bit, palette, CMYK JPEG, alpha), tensors [1,3,H,W] in [0,1], resizing,
//! and atomic saving by extension.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{Device, Tensor};
use image::imageops::FilterType;
use image::{DynamicImage, GrayImage, ImageDecoder, ImageFormat, ImageReader, Rgb32FImage};

/// File extensions taken as images when a directory is given (any case).
pub const IMAGE_EXTS: [&str; 7] = ["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff"];

/// The default cap on the pixels an image may declare (16384^2 = 268 MP):
/// a file whose header asks for more is refused before it is decoded.
pub const DEFAULT_MAX_PIXELS: u64 = 16384 * 16384;

/// The smallest side the network can take (relu4_1 is 1/8 of it and needs
/// more than one position for its statistics).
pub const MIN_SIDE: u32 = 16;

/// A decoded picture: RGB as floats in [0,1] and the alpha channel if it had one.
#[derive(Clone)]
pub struct Picture {
    pub rgb: Rgb32FImage,
    pub alpha: Option<GrayImage>,
}

impl Picture {
    pub fn width(&self) -> u32 {
        self.rgb.width()
    }
    pub fn height(&self) -> u32 {
        self.rgb.height()
    }
}

pub fn is_image_path(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .map(|e| IMAGE_EXTS.iter().any(|x| x.eq_ignore_ascii_case(e)))
        .unwrap_or(false)
}

/// A decoded picture kept in its own bit depth (8-bit RGB takes 3 bytes a
/// pixel, a quarter of [`Picture`]'s floats): what tiled stylization reads
/// tile by tile. EXIF orientation applied; the alpha channel split off.
pub struct Source {
    /// RGB or grey, 8/16-bit or float, without alpha.
    pub image: DynamicImage,
    pub alpha: Option<GrayImage>,
}

impl Source {
    pub fn width(&self) -> u32 {
        self.image.width()
    }
    pub fn height(&self) -> u32 {
        self.image.height()
    }
    /// The whole picture as floats (what the whole-image path stylizes).
    pub fn to_picture(&self) -> Picture {
        Picture {
            rgb: self.image.to_rgb32f(),
            alpha: self.alpha.clone(),
        }
    }
    /// Resized in its own bit depth (CatmullRom, as [`resize`]); alpha kept as is.
    pub fn resized(&self, w: u32, h: u32) -> Source {
        let image = if (w, h) == (self.width(), self.height()) {
            self.image.clone()
        } else {
            self.image.resize_exact(w, h, FilterType::CatmullRom)
        };
        Source {
            image,
            alpha: self.alpha.clone(),
        }
    }
    /// Pixels `(x, y, w, h)` as floats, exactly as [`Self::to_picture`] has them.
    pub fn crop_rgb32f(&self, x: u32, y: u32, w: u32, h: u32) -> Rgb32FImage {
        self.image.crop_imm(x, y, w, h).to_rgb32f()
    }
}

/// Opens `path` and reads its header: the decoder, with the declared size
/// checked against `max_pixels` before a pixel is decoded (a 1 MB PNG can
/// declare 20000x20000), and allocations capped accordingly.
fn open_checked(path: &Path, max_pixels: u64) -> Result<Box<dyn ImageDecoder>> {
    let p = path.display();
    let reader = ImageReader::open(path)
        .with_context(|| format!("{p}: cannot open"))?
        .with_guessed_format()
        .with_context(|| format!("{p}: cannot read"))?;
    header_checked(reader, &p.to_string(), max_pixels)
}

fn header_checked<'r, R: std::io::BufRead + std::io::Seek + 'r>(
    mut reader: ImageReader<R>,
    p: &str,
    max_pixels: u64,
) -> Result<Box<dyn ImageDecoder + 'r>> {
    if reader.format() == Some(ImageFormat::Png) {
        let mut inner = reader.into_inner();
        if let Some(len) = bad_png_palette(&mut inner) {
            bail!("{p}: not a valid PNG (a palette of {len} bytes: 1 to 256 entries of 3 bytes expected)");
        }
        reader = ImageReader::with_format(inner, ImageFormat::Png);
    }
    let mut limits = image::Limits::default();
    // 16-bit RGBA is the widest layout a decoder allocates, plus headroom for its buffers.
    limits.max_alloc = Some(max_pixels.saturating_mul(8).saturating_add(64 << 20));
    reader.limits(limits);
    let decoder = reader
        .into_decoder()
        .map_err(|e| anyhow!("{p}: cannot decode image ({e})"))?;
    let (w, h) = decoder.dimensions();
    let n = w as u64 * h as u64;
    if n > max_pixels {
        bail!(
            "{p}: image declares {w}x{h} ({:.0} MP), more than the limit of {:.0} MP \
             (--max-pixels raises it)",
            n as f64 / 1e6,
            max_pixels as f64 / 1e6
        );
    }
    Ok(Box::new(decoder))
}

/// The length of a PNG's palette chunk (PLTE) when it is not 1 to 256
/// entries of 3 bytes: png 0.18.1 indexes past such a palette when it
/// expands it (a panic, found by the image fuzzer), so it is refused first.
/// Reads only chunk headers up to the image data; leaves `r` where it was.
fn bad_png_palette<R: std::io::Read + std::io::Seek>(r: &mut R) -> Option<u32> {
    use std::io::SeekFrom;
    let start = r.stream_position().ok()?;
    let mut found = None;
    let mut pos = start + 8; // the signature
    let mut head = [0u8; 8];
    while r.seek(SeekFrom::Start(pos)).is_ok() && r.read_exact(&mut head).is_ok() {
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        match &head[4..] {
            b"PLTE" if len == 0 || len % 3 != 0 || len > 768 => {
                found = Some(len);
                break;
            }
            b"IDAT" | b"IEND" => break,
            _ => pos += 12 + len as u64,
        }
    }
    r.seek(SeekFrom::Start(start)).ok()?;
    found
}

/// [`open`] for bytes in memory (an upload); `name` stands for the file in errors.
pub fn open_bytes(bytes: &[u8], name: &str, max_pixels: u64) -> Result<Source> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .with_context(|| format!("{name}: cannot read"))?;
    decode_source(header_checked(reader, name, max_pixels)?, name)
}

/// A mask from bytes in memory, as [`load_mask_limited`].
pub fn mask_from_bytes(bytes: &[u8], name: &str, max_pixels: u64) -> Result<GrayImage> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .with_context(|| format!("{name}: cannot read"))?;
    let img = DynamicImage::from_decoder(header_checked(reader, name, max_pixels)?)
        .map_err(|e| anyhow!("{name}: cannot decode image ({e})"))?;
    Ok(img.to_luma8())
}

/// Decodes any supported image in its own bit depth, applying its EXIF
/// orientation; refuses one that declares more than `max_pixels`.
pub fn open(path: &Path, max_pixels: u64) -> Result<Source> {
    decode_source(open_checked(path, max_pixels)?, &path.display().to_string())
}

fn decode_source(mut decoder: Box<dyn ImageDecoder + '_>, p: &str) -> Result<Source> {
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder)
        .map_err(|e| anyhow!("{p}: cannot decode image ({e})"))?;
    img.apply_orientation(orientation);
    let alpha = img.color().has_alpha().then(|| {
        let la = img.to_luma_alpha8();
        GrayImage::from_fn(la.width(), la.height(), |x, y| {
            image::Luma([la.get_pixel(x, y)[1]])
        })
    });
    use image::ColorType as C;
    let image = match img.color() {
        C::Rgba8 => DynamicImage::ImageRgb8(img.to_rgb8()),
        C::La8 => DynamicImage::ImageLuma8(img.to_luma8()),
        C::Rgba16 => DynamicImage::ImageRgb16(img.to_rgb16()),
        C::La16 => DynamicImage::ImageLuma16(img.to_luma16()),
        C::Rgba32F => DynamicImage::ImageRgb32F(img.to_rgb32f()),
        _ => img,
    };
    Ok(Source { image, alpha })
}

/// Decodes any supported image, applying its EXIF orientation.
pub fn load(path: &Path) -> Result<Picture> {
    Ok(open(path, DEFAULT_MAX_PIXELS)?.to_picture())
}

/// Checks that a picture of `w` x `h` is large enough for the network.
pub fn check_min_side(path: &Path, w: u32, h: u32) -> Result<()> {
    if w < MIN_SIDE || h < MIN_SIDE {
        bail!(
            "{}: image is {w}x{h}, at least {MIN_SIDE} px per side is needed",
            path.display()
        );
    }
    Ok(())
}

/// Loads and checks that the picture is large enough for the network.
pub fn load_checked(path: &Path) -> Result<Picture> {
    let pic = load(path)?;
    check_min_side(path, pic.width(), pic.height())?;
    Ok(pic)
}

/// Loads a mask (or label) image as 8-bit grey; callers binarise at 128.
pub fn load_mask(path: &Path) -> Result<GrayImage> {
    load_mask_limited(path, DEFAULT_MAX_PIXELS)
}

/// [`load_mask`] with a pixel cap checked before decoding.
pub fn load_mask_limited(path: &Path, max_pixels: u64) -> Result<GrayImage> {
    let p = path.display();
    let decoder = open_checked(path, max_pixels)?;
    let img = DynamicImage::from_decoder(decoder)
        .map_err(|e| anyhow!("{p}: cannot decode image ({e})"))?;
    Ok(img.to_luma8())
}

/// All image files under `p` (itself if a file), sorted; `what` names them
/// in errors ("content", "style").
pub fn collect_images(p: &Path, what: &str) -> Result<Vec<PathBuf>> {
    if p.is_file() {
        return Ok(vec![p.to_owned()]);
    }
    if !p.is_dir() {
        bail!("{}: no such {what} file or directory", p.display());
    }
    let mut out = Vec::new();
    let mut stack = vec![p.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("{}: cannot list", dir.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if is_image_path(&path) {
                out.push(path);
            }
        }
    }
    out.sort();
    if out.is_empty() {
        bail!(
            "{}: no {what} images ({}) in this directory",
            p.display(),
            IMAGE_EXTS.join(", ")
        );
    }
    Ok(out)
}

/// A file's name without its extension ("image" if it has none).
pub fn stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into())
}

/// The picture at the working size: shorter side `size` (0 keeps it), then
/// centre-cropped to a square when `crop`.
pub fn prepare(pic: &Picture, size: u32, crop: bool) -> Rgb32FImage {
    let (w, h) = shorter_side_size(pic.width(), pic.height(), size);
    let img = resize(&pic.rgb, w, h);
    if crop {
        center_crop(&img)
    } else {
        img
    }
}

/// Size (w, h) whose shorter side is `size` (0 keeps the size).
pub fn shorter_side_size(w: u32, h: u32, size: u32) -> (u32, u32) {
    if size == 0 || w.min(h) == size {
        return (w, h);
    }
    let s = size as f64 / w.min(h) as f64;
    if w <= h {
        (size, ((h as f64 * s).round() as u32).max(1))
    } else {
        (((w as f64 * s).round() as u32).max(1), size)
    }
}

pub fn resize(img: &Rgb32FImage, w: u32, h: u32) -> Rgb32FImage {
    if img.width() == w && img.height() == h {
        return img.clone();
    }
    image::imageops::resize(img, w, h, FilterType::CatmullRom)
}

/// Centre crop to a square of side min(w, h).
pub fn center_crop(img: &Rgb32FImage) -> Rgb32FImage {
    let s = img.width().min(img.height());
    let (x, y) = ((img.width() - s) / 2, (img.height() - s) / 2);
    image::imageops::crop_imm(img, x, y, s, s).to_image()
}

/// [1,3,H,W] f32 tensor from an RGB float image.
pub fn to_tensor(img: &Rgb32FImage, device: &Device) -> Result<Tensor> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let t = Tensor::from_vec(img.as_raw().clone(), (h, w, 3), &Device::Cpu)?
        .permute((2, 0, 1))?
        .unsqueeze(0)?
        .contiguous()?;
    Ok(t.to_device(device)?)
}

/// [1,3,H,W] or [3,H,W] tensor to an RGB float image (values not clamped).
pub fn from_tensor(t: &Tensor) -> Result<Rgb32FImage> {
    let t = if t.rank() == 4 {
        t.squeeze(0)?
    } else {
        t.clone()
    };
    let (_, h, w) = t.dims3()?;
    let data = t
        .to_device(&Device::Cpu)?
        .permute((1, 2, 0))?
        .flatten_all()?
        .to_vec1::<f32>()?;
    Rgb32FImage::from_raw(w as u32, h as u32, data)
        .ok_or_else(|| anyhow!("tensor to image: bad size"))
}

/// Output formats `--ext` accepts.
pub fn format_for_ext(ext: &str) -> Result<ImageFormat> {
    match ext.to_ascii_lowercase().as_str() {
        "jpg" | "jpeg" => Ok(ImageFormat::Jpeg),
        "png" => Ok(ImageFormat::Png),
        "webp" => Ok(ImageFormat::WebP),
        "tif" | "tiff" => Ok(ImageFormat::Tiff),
        other => bail!("unsupported output extension `{other}` (use jpg, png, webp or tiff)"),
    }
}

/// The largest side each output format can store.
fn max_side(format: ImageFormat) -> u32 {
    match format {
        ImageFormat::Jpeg => 65_535,
        ImageFormat::WebP => 16_383,
        _ => u32::MAX,
    }
}

/// An RGB float image (clamped to [0,1]) as 8-bit, the way outputs are saved.
pub fn to_rgb8(rgb: &Rgb32FImage) -> image::RgbImage {
    image::RgbImage::from_fn(rgb.width(), rgb.height(), |x, y| {
        let p = rgb.get_pixel(x, y).0;
        image::Rgb(p.map(quantize))
    })
}

/// One float in [0,1] (clamped) as the 8-bit value outputs store.
#[inline]
pub fn quantize(v: f32) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0).round() as u8
}

/// Writes RGB (clamped to [0,1]) plus an optional alpha channel; alpha is kept
/// for PNG, WebP and TIFF, dropped for JPEG. Atomic; an existing file is an
/// error unless `overwrite`.
pub fn save(
    path: &Path,
    rgb: &Rgb32FImage,
    alpha: Option<&GrayImage>,
    overwrite: bool,
) -> Result<()> {
    save8(path, &to_rgb8(rgb), alpha, overwrite)
}

/// [`save`] for an 8-bit image. The encoder writes straight into the
/// temporary file (no second copy of a large output in memory).
pub fn save8(
    path: &Path,
    rgb8: &image::RgbImage,
    alpha: Option<&GrayImage>,
    overwrite: bool,
) -> Result<()> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let format = format_for_ext(ext).with_context(|| format!("{}", path.display()))?;
    let side = rgb8.width().max(rgb8.height());
    if side > max_side(format) {
        bail!(
            "{}: {}x{} is too large for {format:?} (at most {} px a side): use png or tiff",
            path.display(),
            rgb8.width(),
            rgb8.height(),
            max_side(format)
        );
    }
    let rgba = match alpha {
        Some(a) if format != ImageFormat::Jpeg && a.dimensions() == rgb8.dimensions() => Some(
            image::RgbaImage::from_fn(rgb8.width(), rgb8.height(), |x, y| {
                let [r, g, b] = rgb8.get_pixel(x, y).0;
                image::Rgba([r, g, b, a.get_pixel(x, y)[0]])
            }),
        ),
        _ => None,
    };
    let encode_error = |e: image::ImageError| anyhow!("{}: cannot encode ({e})", path.display());
    crate::atomic::write_with(path, overwrite, |w| {
        let r = match (format, &rgba) {
            (ImageFormat::Jpeg, _) => {
                let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut *w, 95);
                rgb8.write_with_encoder(enc)
            }
            (f, Some(rgba)) => rgba.write_to(&mut *w, f),
            (f, None) => rgb8.write_to(&mut *w, f),
        };
        r.map_err(encode_error)
    })
}
