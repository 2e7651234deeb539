//! Reading and writing pictures: EXIF orientation, any colour type (grey,
//! 16-bit, palette, CMYK JPEG, alpha), tensors [1,3,H,W] in [0,1], resizing,
//! and atomic saving by extension.

use std::io::Cursor;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{Device, Tensor};
use image::imageops::FilterType;
use image::{DynamicImage, GrayImage, ImageDecoder, ImageFormat, ImageReader, Rgb32FImage};

/// File extensions taken as images when a directory is given (any case).
pub const IMAGE_EXTS: [&str; 5] = ["jpg", "jpeg", "png", "webp", "bmp"];

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

/// Decodes any supported image, applying its EXIF orientation.
pub fn load(path: &Path) -> Result<Picture> {
    let p = path.display();
    let reader = ImageReader::open(path)
        .with_context(|| format!("{p}: cannot open"))?
        .with_guessed_format()
        .with_context(|| format!("{p}: cannot read"))?;
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| anyhow!("{p}: cannot decode image ({e})"))?;
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
    Ok(Picture {
        rgb: img.to_rgb32f(),
        alpha,
    })
}

/// Loads and checks that the picture is large enough for the network.
pub fn load_checked(path: &Path) -> Result<Picture> {
    let pic = load(path)?;
    if pic.width() < MIN_SIDE || pic.height() < MIN_SIDE {
        bail!(
            "{}: image is {}x{}, at least {MIN_SIDE} px per side is needed",
            path.display(),
            pic.width(),
            pic.height()
        );
    }
    Ok(pic)
}

/// Loads a mask (or label) image as 8-bit grey; callers binarise at 128.
pub fn load_mask(path: &Path) -> Result<GrayImage> {
    let p = path.display();
    let img = ImageReader::open(path)
        .with_context(|| format!("{p}: cannot open"))?
        .with_guessed_format()
        .with_context(|| format!("{p}: cannot read"))?
        .decode()
        .map_err(|e| anyhow!("{p}: cannot decode image ({e})"))?;
    Ok(img.to_luma8())
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
        other => bail!("unsupported output extension `{other}` (use jpg, png or webp)"),
    }
}

/// Writes RGB (clamped to [0,1]) plus an optional alpha channel; alpha is kept
/// for PNG and WebP, dropped for JPEG. Atomic; an existing file is an error
/// unless `overwrite`.
pub fn save(
    path: &Path,
    rgb: &Rgb32FImage,
    alpha: Option<&GrayImage>,
    overwrite: bool,
) -> Result<()> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let format = format_for_ext(ext).with_context(|| format!("{}", path.display()))?;
    let rgb8 = image::RgbImage::from_fn(rgb.width(), rgb.height(), |x, y| {
        let p = rgb.get_pixel(x, y).0;
        image::Rgb(p.map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8))
    });
    let img = match alpha {
        Some(a) if format != ImageFormat::Jpeg && a.dimensions() == rgb8.dimensions() => {
            DynamicImage::ImageRgba8(image::RgbaImage::from_fn(
                rgb8.width(),
                rgb8.height(),
                |x, y| {
                    let [r, g, b] = rgb8.get_pixel(x, y).0;
                    image::Rgba([r, g, b, a.get_pixel(x, y)[0]])
                },
            ))
        }
        _ => DynamicImage::ImageRgb8(rgb8),
    };
    let mut buf = Cursor::new(Vec::new());
    match format {
        ImageFormat::Jpeg => {
            let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, 95);
            img.write_with_encoder(enc)
        }
        f => img.write_to(&mut buf, f),
    }
    .map_err(|e| anyhow!("{}: cannot encode ({e})", path.display()))?;
    crate::atomic::write_with(path, overwrite, |w| {
        Ok(std::io::Write::write_all(w, buf.get_ref())?)
    })
}
