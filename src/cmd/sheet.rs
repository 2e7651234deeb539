//! Labelled contact sheets: a grid of images with a title, column labels on
//! top and row labels on the left (plotters with the ab_glyph font backend
//! draws the text). Used by `adain reconstruct --sweep` and `adain grid`.

use std::io::Cursor;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use image::{DynamicImage, ImageFormat, RgbImage};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

const GAP: u32 = 4;
const MARGIN: u32 = 8;
const TITLE_PX: u32 = 16;
const LABEL_PX: u32 = 13;
const LINE: u32 = LABEL_PX + 4;

/// A grid of images (`None`: an empty cell) with labels.
pub struct Sheet {
    pub title: String,
    /// One per column (may be empty: no label row).
    pub col_labels: Vec<String>,
    /// One per row (may be empty: no label column).
    pub row_labels: Vec<String>,
    pub cells: Vec<Vec<Option<RgbImage>>>,
}

/// Approximate width in pixels of `text` at `px` (ab_glyph measures when a
/// font is there).
fn text_width(font: &str, px: u32, text: &str) -> u32 {
    let style = TextStyle::from((font, px as f64).into_font());
    match style.font.box_size(text) {
        Ok((w, _)) => w,
        Err(_) => text.len() as u32 * px * 6 / 10,
    }
}

/// Greedy wrap at spaces and after commas so each line fits `width`.
fn wrap(font: &str, px: u32, text: &str, width: u32) -> Vec<String> {
    // pieces, each with the separator that goes before it when joined
    let mut pieces: Vec<(&str, &str)> = Vec::new();
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        for (i, p) in word.split_inclusive(',').enumerate() {
            pieces.push((if i == 0 { " " } else { "" }, p));
        }
    }
    let mut lines: Vec<String> = Vec::new();
    for (sep, p) in pieces {
        match lines.last_mut() {
            Some(l) if text_width(font, px, &format!("{l}{sep}{p}")) <= width => {
                l.push_str(sep);
                l.push_str(p);
            }
            _ => lines.push(p.to_string()),
        }
    }
    lines
}

/// Renders the sheet to an RGB image.
pub fn render(sheet: &Sheet) -> Result<RgbImage> {
    let rows = sheet.cells.len();
    let cols = sheet.cells.iter().map(|r| r.len()).max().unwrap_or(0);
    if rows == 0 || cols == 0 {
        bail!("empty sheet");
    }
    let all = || sheet.cells.iter().flatten().flatten();
    let cw = all().map(|c| c.width()).max().unwrap_or(64);
    let ch = all().map(|c| c.height()).max().unwrap_or(64);
    let font = adain::runtime::font_family();

    let col_lines: Vec<Vec<String>> = match font {
        Some(f) => sheet
            .col_labels
            .iter()
            .map(|l| wrap(f, LABEL_PX, l, cw))
            .collect(),
        None => vec![],
    };
    let row_lines: Vec<Vec<String>> = match font {
        Some(f) => sheet
            .row_labels
            .iter()
            .map(|l| wrap(f, LABEL_PX, l, 160))
            .collect(),
        None => vec![],
    };
    let left_w = match font {
        Some(f) => row_lines
            .iter()
            .flatten()
            .map(|l| text_width(f, LABEL_PX, l))
            .max()
            .map(|w| w + 10)
            .unwrap_or(0),
        None => 0,
    };
    let left = MARGIN + left_w;
    let grid_w = left + cols as u32 * (cw + GAP) - GAP + MARGIN;
    let title_lines = match font {
        Some(f) if !sheet.title.is_empty() => {
            wrap(f, TITLE_PX, &sheet.title, grid_w.max(360) - 2 * MARGIN)
        }
        _ => vec![],
    };
    let top_title =
        title_lines.len() as u32 * (TITLE_PX + 6) + if title_lines.is_empty() { 0 } else { 6 };
    let n_col_lines = col_lines.iter().map(|l| l.len()).max().unwrap_or(0) as u32;
    let top = MARGIN + top_title + n_col_lines * LINE + if n_col_lines > 0 { 4 } else { 0 };
    let width = grid_w.max(match font {
        Some(f) => title_lines
            .iter()
            .map(|l| text_width(f, TITLE_PX, l) + 2 * MARGIN)
            .max()
            .unwrap_or(0),
        None => 0,
    });
    let height = top + rows as u32 * (ch + GAP) - GAP + MARGIN;

    let mut canvas = RgbImage::from_pixel(width, height, image::Rgb([255, 255, 255]));
    let cell_xy = |r: usize, c: usize| (left + c as u32 * (cw + GAP), top + r as u32 * (ch + GAP));
    for (r, row) in sheet.cells.iter().enumerate() {
        for (c, cell) in row.iter().enumerate() {
            let (x, y) = cell_xy(r, c);
            match cell {
                Some(img) => image::imageops::replace(
                    &mut canvas,
                    img,
                    (x + (cw - img.width()) / 2) as i64,
                    (y + (ch - img.height()) / 2) as i64,
                ),
                None => {
                    let grey = RgbImage::from_pixel(cw, ch, image::Rgb([235, 235, 235]));
                    image::imageops::replace(&mut canvas, &grey, x as i64, y as i64)
                }
            }
        }
    }
    let Some(f) = font else {
        return Ok(canvas);
    };
    let mut buf = canvas.into_raw();
    {
        let root = BitMapBackend::with_buffer(&mut buf, (width, height)).into_drawing_area();
        let err = |e: &dyn std::fmt::Display| anyhow!("drawing labels: {e}");
        let label = TextStyle::from((f, LABEL_PX as f64).into_font()).color(&BLACK);
        let t = TextStyle::from((f, TITLE_PX as f64).into_font()).color(&BLACK);
        for (i, l) in title_lines.iter().enumerate() {
            let y = MARGIN + i as u32 * (TITLE_PX + 6);
            root.draw(&Text::new(l.clone(), (MARGIN as i32, y as i32), t.clone()))
                .map_err(|e| err(&e))?;
        }
        let centred = label.pos(Pos::new(HPos::Center, VPos::Top));
        for (c, lines) in col_lines.iter().enumerate() {
            let (x, _) = cell_xy(0, c);
            let y0 = top - 4 - lines.len() as u32 * LINE;
            for (i, l) in lines.iter().enumerate() {
                let pos = ((x + cw / 2) as i32, (y0 + i as u32 * LINE) as i32);
                root.draw(&Text::new(l.clone(), pos, centred.clone()))
                    .map_err(|e| err(&e))?;
            }
        }
        for (r, lines) in row_lines.iter().enumerate() {
            let (_, y) = cell_xy(r, 0);
            let y0 = y + ch / 2 - lines.len() as u32 * LINE / 2;
            for (i, l) in lines.iter().enumerate() {
                let pos = (MARGIN as i32, (y0 + i as u32 * LINE) as i32);
                root.draw(&Text::new(l.clone(), pos, label.clone()))
                    .map_err(|e| err(&e))?;
            }
        }
        root.present().map_err(|e| err(&e))?;
    }
    RgbImage::from_raw(width, height, buf).context("sheet buffer has the wrong size")
}

/// Renders and writes the sheet (format by extension, JPEG quality 90),
/// atomically; an existing file is an error unless `overwrite`.
pub fn save(path: &Path, sheet: &Sheet, overwrite: bool) -> Result<()> {
    let img = render(sheet).with_context(|| format!("{}", path.display()))?;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let format =
        adain::image_io::format_for_ext(ext).with_context(|| format!("{}", path.display()))?;
    let mut bytes = Cursor::new(Vec::new());
    let img = DynamicImage::ImageRgb8(img);
    match format {
        ImageFormat::Jpeg => img.write_with_encoder(
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90),
        ),
        f => img.write_to(&mut bytes, f),
    }
    .map_err(|e| anyhow!("{}: cannot encode ({e})", path.display()))?;
    adain::atomic::write_with(path, overwrite, |w| {
        Ok(std::io::Write::write_all(w, bytes.get_ref())?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_empty_cells() {
        let red = RgbImage::from_pixel(20, 16, image::Rgb([255, 0, 0]));
        let sheet = Sheet {
            title: "t".into(),
            col_labels: vec!["1e2".into(), "1e3".into()],
            row_labels: vec!["relu1_1".into(), "relu1_1,relu2_1".into()],
            cells: vec![
                vec![Some(red.clone()), None],
                vec![Some(red.clone()), Some(red)],
            ],
        };
        let img = render(&sheet).unwrap();
        // two columns and two rows of cells fit, plus margins and labels
        assert!(img.width() >= 2 * 20 + GAP + 2 * MARGIN);
        assert!(img.height() >= 2 * 16 + GAP + 2 * MARGIN);
        // the bottom-right cell is red, its neighbour above it (empty) grey
        let (x, y) = (img.width() - MARGIN - 10, img.height() - MARGIN - 8);
        assert_eq!(img.get_pixel(x, y).0, [255, 0, 0]);
        assert_eq!(img.get_pixel(x, y - 16 - GAP).0, [235, 235, 235]);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.jpg");
        save(&p, &sheet, false).unwrap();
        assert!(save(&p, &sheet, false).is_err(), "no overwrite");
        save(&p, &sheet, true).unwrap();
        assert!(render(&Sheet {
            title: String::new(),
            col_labels: vec![],
            row_labels: vec![],
            cells: vec![],
        })
        .is_err());
    }

    #[test]
    fn wraps_long_labels() {
        let Some(f) = adain::runtime::font_family() else {
            return;
        };
        let lines = wrap(f, LABEL_PX, "relu1_1, relu2_1, relu3_1, relu4_1", 70);
        assert!(lines.len() >= 2, "{lines:?}");
        assert_eq!(
            lines.join(" ").replace("  ", " "),
            "relu1_1, relu2_1, relu3_1, relu4_1"
        );
    }
}
