//! The style gallery (`--styles DIR`): each painting read once at start-up,
//! its statistics computed then (so a gallery style costs nothing per
//! request), a thumbnail made, and an id a client names it by. No path ever
//! comes from a client: ids are looked up here.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::engine::{Engine, Settings, Style};
use crate::image_io;

/// Thumbnails' longer side in pixels.
const THUMB: u32 = 160;

/// One painting of the gallery.
pub struct Entry {
    pub id: String,
    /// Its file name without extension, for people.
    pub name: String,
    /// The file's bytes (colour preservation or another style size prepares
    /// the style again from them).
    pub bytes: Arc<Vec<u8>>,
    /// Prepared for the default settings, statistics included.
    pub style: Arc<Style>,
    /// JPEG.
    pub thumbnail: Vec<u8>,
}

/// What `GET /v1/styles` lists for one entry.
#[derive(Serialize)]
pub struct Listed<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub thumbnail: String,
}

#[derive(Default)]
pub struct Gallery {
    entries: BTreeMap<String, Entry>,
}

impl Gallery {
    /// Every image under `dir`, prepared with `settings` (the server's defaults).
    pub fn load(dir: &Path, engine: &Engine, settings: &Settings) -> Result<Gallery> {
        let mut entries = BTreeMap::new();
        for path in image_io::collect_images(dir, "style")? {
            let name = image_io::stem(&path);
            let id = unique(slug(&name), &entries);
            let bytes =
                std::fs::read(&path).with_context(|| format!("{}: cannot read", path.display()))?;
            let style = engine.style_bytes(&bytes, &name, settings)?;
            let thumbnail = thumbnail(&bytes, &path, settings.limits.max_pixels)?;
            tracing::info!("style {id}: {}", path.display());
            entries.insert(
                id.clone(),
                Entry {
                    id,
                    name,
                    bytes: Arc::new(bytes),
                    style,
                    thumbnail,
                },
            );
        }
        Ok(Gallery { entries })
    }

    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.entries.get(id)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries in id order, with their thumbnail URLs.
    pub fn listing(&self) -> Vec<Listed<'_>> {
        self.entries
            .values()
            .map(|e| Listed {
                id: &e.id,
                name: &e.name,
                thumbnail: format!("/v1/styles/{}/thumbnail", e.id),
            })
            .collect()
    }
}

/// Lower-case letters, digits and `-`: safe in a URL path.
fn slug(name: &str) -> String {
    let mut s = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            s.push(c.to_ascii_lowercase());
        } else if !s.ends_with('-') {
            s.push('-');
        }
    }
    let s = s.trim_matches('-').to_owned();
    if s.is_empty() {
        "style".into()
    } else {
        s
    }
}

fn unique(base: String, taken: &BTreeMap<String, Entry>) -> String {
    if !taken.contains_key(&base) {
        return base;
    }
    (2..)
        .map(|i| format!("{base}-{i}"))
        .find(|s| !taken.contains_key(s))
        .expect("some suffix is free")
}

fn thumbnail(bytes: &[u8], path: &Path, max_pixels: u64) -> Result<Vec<u8>> {
    let src = image_io::open_bytes(bytes, &path.display().to_string(), max_pixels)?;
    let img = src.image.thumbnail(THUMB, THUMB).to_rgb8();
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(
        &mut out, 85,
    ))
    .with_context(|| format!("{}: thumbnail", path.display()))?;
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    #[test]
    fn slugs_are_url_safe() {
        assert_eq!(super::slug("Starry Night (1889)"), "starry-night-1889");
        assert_eq!(super::slug("..."), "style");
        assert_eq!(super::slug("a__b"), "a-b");
    }
}
