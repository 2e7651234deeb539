//! Training visualisations: loss curves (PNG) and content/style/output sample
//! grids (JPEG). Both are written atomically by adain::atomic (temp file in the same
//! directory, then rename) so a viewer never sees a half-written file.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use image::codecs::jpeg::JpegEncoder;
use image::imageops::FilterType;
use image::RgbImage;
use plotters::prelude::*;

/// Loss-plot size in pixels.
const PLOT_SIZE: (u32, u32) = (900, 500);
/// White gap between grid cells, in pixels.
const GRID_GAP: u32 = 2;

/// Losses logged at one iteration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossPoint {
    pub iter: u64,
    pub content: f64,
    pub style: f64,
    pub total: f64,
}

/// Plot content, style and total loss against iteration on a log-scale y axis
/// and save it as a 900x500 PNG at `path` (atomically).
///
/// Non-finite and non-positive values cannot be shown on a log axis and are
/// left out. An empty `records` slice writes nothing and returns `Ok(())`.
/// Without any system font the plot is drawn without text.
pub fn plot_losses(path: &Path, records: &[LossPoint]) -> Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    adain::atomic::write_via_path(path, ".png", |tmp| {
        render_losses(tmp, records, adain::runtime::font_family())
            .with_context(|| format!("drawing loss plot {}", path.display()))
    })
}

/// Draw the loss plot to `path`; `font` is the family for all text, `None`
/// for a text-free plot.
fn render_losses(path: &Path, records: &[LossPoint], font: Option<&str>) -> Result<()> {
    type Getter = fn(&LossPoint) -> f64;
    let series: [(&str, RGBColor, Getter); 3] = [
        ("content", BLUE, |r| r.content),
        ("style", RED, |r| r.style),
        ("total", BLACK, |r| r.total),
    ];
    let points = |get: Getter| -> Vec<(u64, f64)> {
        records
            .iter()
            .map(|r| (r.iter, get(r)))
            .filter(|(_, v)| v.is_finite() && *v > 0.0)
            .collect()
    };

    let x0 = records.iter().map(|r| r.iter).min().unwrap_or(0);
    let x1 = records
        .iter()
        .map(|r| r.iter)
        .max()
        .unwrap_or(0)
        .max(x0 + 1);
    let ys: Vec<f64> = series
        .iter()
        .flat_map(|s| points(s.2))
        .map(|p| p.1)
        .collect();
    let (mut y0, mut y1) = ys
        .iter()
        .fold((f64::INFINITY, 0f64), |(lo, hi), &y| (lo.min(y), hi.max(y)));
    if ys.is_empty() {
        (y0, y1) = (0.1, 10.0);
    }
    let (y0, y1) = (y0 / 1.5, y1 * 1.5);

    let err = |e: &dyn std::fmt::Display| anyhow!("{e}");
    let root = BitMapBackend::new(path, PLOT_SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(15);
    if let Some(f) = font {
        builder
            .caption("AdaIN training losses", (f, 22))
            .x_label_area_size(40)
            .y_label_area_size(80);
    }
    let mut chart = builder
        .build_cartesian_2d(x0..x1, (y0..y1).log_scale())
        .map_err(|e| err(&e))?;
    let fmt_y = |v: &f64| format!("{v:.1e}");
    let mut mesh = chart.configure_mesh();
    // Without a font no label areas exist, so the mesh draws no text.
    if let Some(f) = font {
        mesh.x_desc("iteration")
            .y_desc("loss (log scale)")
            .y_label_formatter(&fmt_y)
            .label_style((f, 14))
            .axis_desc_style((f, 16));
    }
    mesh.draw().map_err(|e| err(&e))?;

    // Markers keep short (even single-point) curves visible.
    let marker = if records.len() <= 100 { 2 } else { 0 };
    for (name, color, get) in series {
        let style = color.stroke_width(2);
        let drawn = chart
            .draw_series(LineSeries::new(points(get), style).point_size(marker))
            .map_err(|e| err(&e))?;
        if font.is_some() {
            drawn
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        }
    }
    if let Some(f) = font {
        chart
            .configure_series_labels()
            .label_font((f, 14))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// Convert a `[3,H,W]`/`[1,3,H,W]` (or single-channel) tensor in ~[0,1] to
/// an RGB image, clamping values.
fn tensor_to_rgb(t: &Tensor) -> Result<RgbImage> {
    let mut t = t.clone();
    while t.rank() > 3 && t.dim(0)? == 1 {
        t = t.squeeze(0)?;
    }
    let (c, h, w) = t
        .dims3()
        .with_context(|| format!("expected a [3,H,W] image tensor, got {:?}", t.dims()))?;
    if c != 1 && c != 3 {
        bail!("expected 1 or 3 channels, got shape {:?}", t.dims());
    }
    let data = t
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .clamp(0f32, 1f32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let plane = h * w;
    let to_u8 = |v: f32| (v * 255.0).round() as u8;
    Ok(RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let i = y as usize * w + x as usize;
        let ch = |k: usize| to_u8(data[if c == 3 { k * plane + i } else { i }]);
        image::Rgb([ch(0), ch(1), ch(2)])
    }))
}

/// Save a grid of (content, style, output) rows as a JPEG (quality 90).
///
/// Every image is resized to `cell`x`cell`; columns and rows are separated
/// by a 2-px white gap, giving `3*cell + 4` by `N*cell + 2*(N-1)` pixels.
/// Written atomically. Errors on an empty `rows` or a zero `cell`.
pub fn save_grid(path: &Path, rows: &[[&Tensor; 3]], cell: u32) -> Result<()> {
    if rows.is_empty() || cell == 0 {
        bail!("sample grid {}: no rows or zero cell size", path.display());
    }
    let n = rows.len() as u32;
    let width = 3 * cell + 2 * GRID_GAP;
    let height = n * cell + (n - 1) * GRID_GAP;
    let mut canvas = RgbImage::from_pixel(width, height, image::Rgb([255, 255, 255]));
    for (r, row) in rows.iter().enumerate() {
        for (c, t) in row.iter().enumerate() {
            let img = tensor_to_rgb(t)
                .with_context(|| format!("sample grid {}: row {r} column {c}", path.display()))?;
            let img = image::imageops::resize(&img, cell, cell, FilterType::Triangle);
            let x = c as u32 * (cell + GRID_GAP);
            let y = r as u32 * (cell + GRID_GAP);
            image::imageops::replace(&mut canvas, &img, x as i64, y as i64);
        }
    }
    adain::atomic::write_with(path, true, |w| {
        canvas
            .write_with_encoder(JpegEncoder::new_with_quality(w, 90))
            .with_context(|| format!("encoding sample grid {}", path.display()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(n: u64) -> Vec<LossPoint> {
        (0..n)
            .map(|i| LossPoint {
                iter: i * 10,
                content: 5.0 / (1.0 + i as f64),
                style: 50.0 / (1.0 + i as f64).sqrt(),
                total: 5.0 / (1.0 + i as f64) + 50.0 / (1.0 + i as f64).sqrt(),
            })
            .collect()
    }

    fn no_temp_left(dir: &Path) {
        let names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.contains(".tmp")), "{names:?}");
    }

    #[test]
    fn plot_losses_writes_png() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("loss.png");
        plot_losses(&p, &records(50)).unwrap();
        assert_eq!(image::image_dimensions(&p).unwrap(), PLOT_SIZE);
        assert_eq!(
            image::ImageFormat::from_path(&p).unwrap(),
            image::ImageFormat::Png
        );
        // Overwriting works; a single point and odd values do not panic.
        let mut odd = records(1);
        odd[0].style = 0.0;
        odd[0].content = f64::NAN;
        plot_losses(&p, &odd).unwrap();
        assert_eq!(image::image_dimensions(&p).unwrap(), PLOT_SIZE);
        no_temp_left(dir.path());
    }

    #[test]
    fn plot_losses_empty_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("loss.png");
        plot_losses(&p, &[]).unwrap();
        assert!(!p.exists());
    }

    #[test]
    fn plot_without_font_draws_no_text() {
        // "sans-serif" is never registered, so any text drawn would fail.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("plain.png");
        render_losses(&p, &records(20), None).unwrap();
        assert_eq!(image::image_dimensions(&p).unwrap(), PLOT_SIZE);
    }

    #[test]
    fn save_grid_layout() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("grid.jpg");
        let red = Tensor::ones((3, 20, 30), DType::F32, &Device::Cpu).unwrap();
        let red = red
            .broadcast_mul(&Tensor::new(&[[[1f32]], [[0.]], [[0.]]], &Device::Cpu).unwrap())
            .unwrap();
        // Out-of-range values are clamped; batched [1,3,H,W] is accepted.
        let over = (Tensor::ones((1, 3, 16, 16), DType::F32, &Device::Cpu).unwrap() * 3.0).unwrap();
        let under = (Tensor::ones((3, 8, 8), DType::F32, &Device::Cpu).unwrap() * -2.0).unwrap();
        let rows = [[&red, &over, &under], [&over, &under, &red]];
        save_grid(&p, &rows, 32).unwrap();
        let img = image::open(&p).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (3 * 32 + 4, 2 * 32 + 2));
        let near = |a: [u8; 3], b: [u8; 3]| a.iter().zip(b).all(|(x, y)| x.abs_diff(y) < 40);
        assert!(near(img.get_pixel(16, 16).0, [255, 0, 0]), "red cell");
        assert!(
            near(img.get_pixel(34 + 16, 16).0, [255, 255, 255]),
            "clamped to white"
        );
        assert!(
            near(img.get_pixel(68 + 16, 16).0, [0, 0, 0]),
            "clamped to black"
        );
        no_temp_left(dir.path());

        assert!(save_grid(&p, &[], 32).is_err());
        let bad = Tensor::zeros((2, 4, 4), DType::F32, &Device::Cpu).unwrap();
        assert!(save_grid(&p, &[[&bad, &red, &red]], 32).is_err());
    }
}
