//! Training data: dataset discovery, deterministic sampling, image loading and
//! a background prefetching batch loader.
//!
//! Everything that decides *which* image lands in *which* batch slot, and
//! where it is cropped, is a pure function of `(seed, batch_index)`. Resuming
//! a run at batch `k` therefore reproduces exactly the batches an
//! uninterrupted run would have produced, without storing any queue state.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Mutex;
use std::thread::JoinHandle;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use image::imageops::FilterType;
use rand::RngCore;
use rayon::prelude::*;
use tracing::warn;

use adain::image_io::{is_image_path, IMAGE_EXTS};

/// Seed perturbation that makes the style sampler independent of the content one.
const STYLE_SEED_XOR: u64 = 0x5EED_5EED_5EED_5EED;

// ---------------------------------------------------------------------------
// Deterministic RNG
// ---------------------------------------------------------------------------

/// SplitMix64 finaliser: a strong 64-bit mixing function.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A tiny SplitMix64 generator (Steele, Lea & Flood 2014).
///
/// It is defined here rather than taken from `rand` so that the sequence it
/// produces (and therefore every shuffle and crop of a training run) can
/// never change with a dependency upgrade. Not cryptographic.
#[derive(Debug, Clone)]
pub struct DetRng {
    state: u64,
}

impl DetRng {
    const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

    /// Generator with the given raw SplitMix64 state.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// Generator seeded from several integers (e.g. `[seed, epoch]`); every
    /// part, and its position, affects the stream.
    pub fn from_parts(parts: &[u64]) -> Self {
        let mut h = 0x6A09_E667_F3BC_C908; // arbitrary non-zero start
        for (i, &p) in parts.iter().enumerate() {
            h = mix64(h ^ mix64(p.wrapping_add((i as u64 + 1).wrapping_mul(Self::GAMMA))));
        }
        Self::new(h)
    }

    /// Uniform integer in `0..n` (`n > 0`) by widening multiplication; the
    /// bias is at most `n / 2^64`, i.e. negligible.
    pub fn below(&mut self, n: usize) -> usize {
        uniform_below(self.next_u64(), n)
    }
}

/// Map a uniform `u64` to `0..n` by widening multiplication (Lemire).
fn uniform_below(x: u64, n: usize) -> usize {
    ((x as u128 * n as u128) >> 64) as usize
}

impl RngCore for DetRng {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(Self::GAMMA);
        mix64(self.state)
    }

    fn fill_bytes(&mut self, dst: &mut [u8]) {
        for chunk in dst.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

// ---------------------------------------------------------------------------
// Discovery
// ---------------------------------------------------------------------------

/// A set of usable images under a root directory.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The directory that was scanned.
    pub root: PathBuf,
    /// Usable image files, sorted by path.
    pub files: Vec<PathBuf>,
    /// Candidate files that were rejected, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
}

impl Dataset {
    /// Number of usable images.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// The file list as data-parallel ranks compare it: the count and a
    /// SHA-256 over each usable file's path below the root and its size
    /// (not the pixels: hashing a dataset's bytes would read all of it).
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for f in &self.files {
            let rel = f.strip_prefix(&self.root).unwrap_or(f);
            h.update(rel.to_string_lossy().as_bytes());
            h.update([0]);
            let size = std::fs::metadata(f).map(|m| m.len()).unwrap_or(u64::MAX);
            h.update(size.to_le_bytes());
        }
        let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        format!("{} files, sha256 {}", self.files.len(), &hex[..16])
    }
}

/// Recursively collect files with an image extension below `dir`, following
/// symlinks (to files and directories) and guarding against symlink cycles.
fn walk(dir: &Path, visited: &mut HashSet<PathBuf>, out: &mut Vec<PathBuf>) {
    // Canonical path identifies a directory reached through several links.
    if let Ok(canon) = dir.canonicalize() {
        if !visited.insert(canon) {
            return;
        }
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            warn!("cannot read directory {}: {e}", dir.display());
            return;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        // `fs::metadata` follows symlinks; a dangling link is just ignored.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            walk(&path, visited, out);
        } else if meta.is_file() && is_image_path(&path) {
            out.push(path);
        }
    }
}

/// Run `f`, turning a panic (some decoders panic on malformed input) into
/// an error message so one bad file can never kill a run.
fn no_panic<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        format!("image decoder panicked: {msg}")
    })
}

/// Check one candidate by reading only its header.
fn check_header(path: &Path, min_side: u32) -> std::result::Result<(), String> {
    let len = std::fs::metadata(path)
        .map_err(|e| format!("cannot stat: {e}"))?
        .len();
    if len == 0 {
        return Err("empty file".into());
    }
    let (w, h) = image::ImageReader::open(path)
        .map_err(|e| format!("cannot open: {e}"))?
        .with_guessed_format()
        .map_err(|e| format!("cannot read: {e}"))?
        .into_dimensions()
        .map_err(|e| format!("not a readable image: {e}"))?;
    if w.min(h) < min_side {
        return Err(format!("too small: {w}x{h} (shorter side < {min_side})"));
    }
    Ok(())
}

/// Find every usable image below `root` (recursively, following symlinks).
///
/// Only headers are read, in parallel, so this is fast even for thousands of
/// files. Files that are empty, not images, unreadable, or whose shorter side
/// is below `min_side` are recorded in [`Dataset::skipped`] with one warning
/// each. Errors if `root` is missing, not a directory, or has no usable image.
pub fn discover(root: &Path, min_side: u32) -> Result<Dataset> {
    let meta = std::fs::metadata(root)
        .with_context(|| format!("dataset directory {} does not exist", root.display()))?;
    if !meta.is_dir() {
        bail!("dataset path {} is not a directory", root.display());
    }
    let mut candidates = Vec::new();
    walk(root, &mut HashSet::new(), &mut candidates);
    candidates.sort();

    let checks: Vec<_> = candidates
        .par_iter()
        .map(|p| no_panic(|| check_header(p, min_side)).and_then(|r| r))
        .collect();
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    for (path, check) in candidates.into_iter().zip(checks) {
        match check {
            Ok(()) => files.push(path),
            Err(reason) => {
                warn!("skipping {}: {reason}", path.display());
                skipped.push((path, reason));
            }
        }
    }
    if files.is_empty() {
        bail!(
            "no usable images in {} ({} candidate files skipped; extensions {:?}, min side {min_side})",
            root.display(),
            skipped.len(),
            IMAGE_EXTS
        );
    }
    Ok(Dataset {
        root: root.to_path_buf(),
        files,
        skipped,
    })
}

// ---------------------------------------------------------------------------
// Loading one sample
// ---------------------------------------------------------------------------

/// Size `(w, h)` to resize a `w`x`h` image to before cropping.
///
/// The shorter side becomes `load` (aspect ratio kept), except that images
/// whose shorter side is already below `load` are never upscaled beyond what
/// the crop needs: their target is `max(shorter, crop)`. A `load < crop` is
/// treated as `crop`. Both returned sides are at least `crop`.
pub fn target_size(w: u32, h: u32, load: u32, crop: u32) -> (u32, u32) {
    let short = w.min(h).max(1);
    let target = short.min(load).max(crop);
    let scale = |side: u32| -> u32 {
        let s = (side as f64 * target as f64 / short as f64).round() as u32;
        s.max(target)
    };
    if w <= h {
        (target, scale(h))
    } else {
        (scale(w), target)
    }
}

/// Decode `path`, resize (see [`target_size`]), take a uniformly random
/// `crop`x`crop` crop and return it as CHW RGB `f32` in `[0, 1]`
/// (length `3 * crop * crop`). Greyscale, alpha and 16-bit images work.
///
/// The crop offsets use only `rng.next_u64()` (not `rand`'s range sampling)
/// so they stay stable across `rand` versions.
pub fn load_sample(
    path: &Path,
    load_size: u32,
    crop_size: u32,
    rng: &mut impl rand::Rng,
) -> Result<Vec<f32>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut reader = image::ImageReader::new(std::io::Cursor::new(&bytes[..]));
    if let Ok(fmt) = image::ImageFormat::from_path(path) {
        reader.set_format(fmt); // fallback when the content is not recognised
    }
    let reader = reader
        .with_guessed_format()
        .with_context(|| format!("cannot read {}", path.display()))?;
    if reader.format() == Some(image::ImageFormat::Jpeg) && !jpeg_is_complete(&bytes) {
        bail!(
            "truncated JPEG {}: no end-of-image marker after the last scan",
            path.display()
        );
    }
    let img = reader
        .decode()
        .with_context(|| format!("cannot decode {}", path.display()))?;
    let (w, h) = (img.width(), img.height());
    let (tw, th) = target_size(w, h, load_size, crop_size);
    let mut rgb = img.to_rgb8();
    if (tw, th) != (w, h) {
        rgb = image::imageops::resize(&rgb, tw, th, FilterType::Triangle);
    }
    let ox = uniform_below(rng.next_u64(), (tw - crop_size + 1) as usize) as u32;
    let oy = uniform_below(rng.next_u64(), (th - crop_size + 1) as usize) as u32;

    let c = crop_size as usize;
    let plane = c * c;
    let mut out = vec![0f32; 3 * plane];
    for y in 0..c {
        for x in 0..c {
            let p = rgb.get_pixel(ox + x as u32, oy + y as u32).0;
            for (ch, v) in p.iter().enumerate() {
                out[ch * plane + y * c + x] = *v as f32 / 255.0;
            }
        }
    }
    Ok(out)
}

/// True when a JPEG byte stream has an end-of-image marker (`FF D9`) after
/// its last start-of-scan marker (`FF DA`).
///
/// The JPEG decoder silently fills a truncated image with grey, so this
/// catches cut-off downloads. Entropy-coded data never contains these
/// markers (0xFF is byte-stuffed), and an embedded EXIF thumbnail's markers
/// come before the main image's scans, so the check is exact.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last_sos = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    last_sos.is_some_and(|i| bytes[i..].windows(2).any(|w| w == [0xFF, 0xD9]))
}

// ---------------------------------------------------------------------------
// Sampling
// ---------------------------------------------------------------------------

/// Deterministic epoch-wise sampler over `n` items.
///
/// Global sample position `p = batch_index * batch_size + slot` maps to epoch
/// `p / n` and position `p % n` in that epoch's permutation, a Fisher-Yates
/// shuffle driven by [`DetRng`] seeded from `(seed, epoch)`. The most recent
/// epoch's permutation is cached.
#[derive(Debug)]
pub struct Sampler {
    n: usize,
    seed: u64,
    cache: Mutex<Option<(u64, Vec<usize>)>>,
}

impl Sampler {
    /// Sampler over `0..n` (`n > 0`).
    pub fn new(n: usize, seed: u64) -> Self {
        assert!(n > 0, "Sampler needs at least one item");
        Self {
            n,
            seed,
            cache: Mutex::new(None),
        }
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.n
    }

    /// The permutation used for `epoch` (freshly computed, not cached).
    pub fn permutation(&self, epoch: u64) -> Vec<usize> {
        let mut rng = DetRng::from_parts(&[self.seed, epoch]);
        let mut perm: Vec<usize> = (0..self.n).collect();
        for i in (1..self.n).rev() {
            perm.swap(i, rng.below(i + 1));
        }
        perm
    }

    /// Item at global sample position `position`, shifted `skip` places
    /// further (wrapping) within the same epoch's permutation. `skip > 0`
    /// selects deterministic replacements for unreadable items.
    pub fn index_at(&self, position: u64, skip: usize) -> usize {
        let n = self.n as u64;
        let (epoch, q) = (position / n, (position % n) as usize);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.as_ref().is_none_or(|(e, _)| *e != epoch) {
            *cache = Some((epoch, self.permutation(epoch)));
        }
        let perm = &cache.as_ref().expect("cache filled above").1;
        perm[(q + skip) % self.n]
    }

    /// Indices for the `batch_size` slots of batch `batch_index`.
    #[cfg(test)]
    pub fn indices(&self, batch_index: u64, batch_size: usize) -> Vec<usize> {
        (0..batch_size)
            .map(|slot| self.index_at(batch_index * batch_size as u64 + slot as u64, 0))
            .collect()
    }
}

// ---------------------------------------------------------------------------
// Prefetching loader
// ---------------------------------------------------------------------------

/// One training batch.
#[derive(Debug)]
pub struct Batch {
    /// Batch index (0-based, counted from the start of training).
    pub index: u64,
    /// Content images (this process's slots), `[B, 3, crop, crop]` f32 in `[0, 1]` on the CPU.
    pub content: Tensor,
    /// Style images, `[B, 3, crop, crop]` f32 in `[0, 1]` on the CPU.
    pub style: Option<Tensor>,
    /// Files that failed to decode while building this batch (each was
    /// replaced by the next item of its epoch permutation). A file that is
    /// known to be bad is reported every time it is drawn, so this is a pure
    /// function of `(seed, index)`.
    pub skipped: Vec<(PathBuf, String)>,
}

/// Loader settings.
#[derive(Debug, Clone)]
pub struct LoaderConfig {
    /// Images per batch (for each of content and style).
    pub batch_size: usize,
    /// Shorter side after resizing (see [`target_size`]).
    pub load_size: u32,
    /// Side of the square random crop.
    pub crop_size: u32,
    /// Seed of all sampling and cropping.
    pub seed: u64,
    /// Number of finished batches queued ahead of the trainer.
    pub prefetch: usize,
    /// The slots of each batch this process loads (its share of the global
    /// batch in data-parallel training); `None`: all of them.
    pub slots: Option<std::ops::Range<usize>>,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        Self {
            batch_size: 8,
            load_size: 512,
            crop_size: 256,
            seed: 0,
            prefetch: 2,
            slots: None,
        }
    }
}

/// Which dataset a slot draws from (also part of the crop RNG seed).
#[derive(Clone, Copy)]
enum Side {
    Content = 0,
    Style = 1,
}

/// State owned by the producer thread.
struct Producer {
    content: Dataset,
    /// `None` for a model trained against one fixed style (Johnson's).
    style: Option<(Dataset, Sampler)>,
    content_sampler: Sampler,
    cfg: LoaderConfig,
    /// Files that already failed to decode (path -> reason), so they are not
    /// decoded or warned about again.
    bad: HashMap<PathBuf, String>,
}

/// Result of filling one slot: the pixels plus the files skipped on the way.
type SlotResult = Result<(Vec<f32>, Vec<(PathBuf, String)>)>;

impl Producer {
    /// Load the image for one slot, falling back to the following items of the
    /// epoch permutation when a file cannot be decoded.
    fn load_slot(&self, batch_index: u64, slot: usize, side: Side) -> SlotResult {
        let (ds, sampler) = match side {
            Side::Content => (&self.content, &self.content_sampler),
            Side::Style => match &self.style {
                Some((ds, sampler)) => (ds, sampler),
                None => bail!("no style dataset"),
            },
        };
        let position = batch_index * self.cfg.batch_size as u64 + slot as u64;
        let mut rng = DetRng::from_parts(&[self.cfg.seed, batch_index, slot as u64, side as u64]);
        let mut skipped = Vec::new();
        for skip in 0..sampler.len() {
            let path = &ds.files[sampler.index_at(position, skip)];
            if let Some(reason) = self.bad.get(path) {
                skipped.push((path.clone(), reason.clone()));
                continue;
            }
            let (load, crop) = (self.cfg.load_size, self.cfg.crop_size);
            let loaded =
                no_panic(|| load_sample(path, load, crop, &mut rng).map_err(|e| format!("{e:#}")));
            match loaded.and_then(|r| r) {
                Ok(px) => return Ok((px, skipped)),
                Err(reason) => {
                    warn!("skipping unreadable image {}: {reason}", path.display());
                    skipped.push((path.clone(), reason));
                }
            }
        }
        bail!(
            "no image in {} could be decoded ({} files tried)",
            ds.root.display(),
            sampler.len()
        )
    }

    /// Build batch `index`, decoding all 2*B images in parallel.
    fn build(&mut self, index: u64) -> Result<Batch> {
        let slots = self.cfg.slots.clone().unwrap_or(0..self.cfg.batch_size);
        let b = slots.len();
        let jobs: Vec<(usize, Side)> = slots
            .clone()
            .map(|s| (s, Side::Content))
            .chain(
                slots
                    .filter(|_| self.style.is_some())
                    .map(|s| (s, Side::Style)),
            )
            .collect();
        let results: Vec<SlotResult> = jobs
            .par_iter()
            .map(|&(slot, side)| self.load_slot(index, slot, side))
            .collect();
        let c = self.cfg.crop_size as usize;
        let mut content = Vec::with_capacity(b * 3 * c * c);
        let mut style = Vec::with_capacity(b * 3 * c * c);
        let mut skipped = Vec::new();
        for (r, &(_, side)) in results.into_iter().zip(&jobs) {
            let (px, sk) = r?;
            for (p, reason) in &sk {
                self.bad.entry(p.clone()).or_insert_with(|| reason.clone());
            }
            skipped.extend(sk);
            match side {
                Side::Content => content.extend(px),
                Side::Style => style.extend(px),
            }
        }
        let shape = (b, 3, c, c);
        Ok(Batch {
            index,
            content: Tensor::from_vec(content, shape, &Device::Cpu)?,
            style: match self.style {
                Some(_) => Some(Tensor::from_vec(style, shape, &Device::Cpu)?),
                None => None,
            },
            skipped,
        })
    }

    /// Produce batches until the receiver is dropped or an error occurs.
    fn run(mut self, start: u64, tx: SyncSender<Result<Batch>>) {
        for index in start.. {
            let batch = self.build(index);
            let failed = batch.is_err();
            if tx.send(batch).is_err() || failed {
                return; // receiver gone (loader dropped) or fatal error sent
            }
        }
    }
}

/// Background batch loader: a producer thread builds batches
/// `start_batch, start_batch + 1, ...` in order and queues up to
/// `prefetch` of them. Dropping the loader stops the thread.
pub struct Loader {
    rx: Option<Receiver<Result<Batch>>>,
    handle: Option<JoinHandle<()>>,
}

impl Loader {
    /// Start loading at batch `start_batch`. Content and style use
    /// independent samplers (seeds `seed` and `seed ^ 0x5EED...`).
    ///
    /// # Panics
    /// If `batch_size` is zero or a dataset is empty (never the case for a
    /// dataset from [`discover`]), or the thread cannot be spawned.
    pub fn new(
        content: Dataset,
        style: Option<Dataset>,
        cfg: LoaderConfig,
        start_batch: u64,
    ) -> Self {
        assert!(cfg.batch_size > 0, "batch_size must be positive");
        let producer = Producer {
            content_sampler: Sampler::new(content.len(), cfg.seed),
            content,
            style: style.map(|ds| {
                let sampler = Sampler::new(ds.len(), cfg.seed ^ STYLE_SEED_XOR);
                (ds, sampler)
            }),
            cfg: cfg.clone(),
            bad: HashMap::new(),
        };
        let (tx, rx) = sync_channel(cfg.prefetch);
        let handle = std::thread::Builder::new()
            .name("adain-loader".into())
            .spawn(move || producer.run(start_batch, tx))
            .expect("failed to spawn loader thread");
        Self {
            rx: Some(rx),
            handle: Some(handle),
        }
    }

    /// The next batch (blocks until it is ready).
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Batch> {
        let rx = self.rx.as_ref().context("loader already shut down")?;
        rx.recv()
            .map_err(|_| anyhow::anyhow!("loader thread stopped (after an error or a panic)"))?
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // Closing the channel makes the producer's next `send` fail; it then
        // exits after finishing the batch it is building.
        drop(self.rx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{DynamicImage, ImageFormat, RgbImage};

    /// A smooth colour gradient so crops at different offsets differ.
    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([
                (x * 255 / w) as u8,
                (y * 255 / h) as u8,
                ((x + y) % 256) as u8,
            ])
        })
    }

    fn save(img: &RgbImage, path: &Path, fmt: ImageFormat) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        img.save_with_format(path, fmt).unwrap();
    }

    /// Directory with good, bad and odd files. Returns the directory and the
    /// two truncated files, which pass discovery but fail to load.
    fn fixture() -> (tempfile::TempDir, [PathBuf; 2]) {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        save(&gradient(64, 48), &r.join("a.png"), ImageFormat::Png);
        save(&gradient(50, 70), &r.join("sub/b.JPG"), ImageFormat::Jpeg);
        save(
            &gradient(80, 40),
            &r.join("sub/deeper/c.jpeg"),
            ImageFormat::Jpeg,
        );
        save(&gradient(10, 10), &r.join("small.png"), ImageFormat::Png);
        std::fs::write(r.join("empty.png"), b"").unwrap();
        std::fs::write(r.join("x.jpg"), b"this is not an image").unwrap();
        std::fs::write(r.join("notes.txt"), b"ignored").unwrap();
        // First half of a valid PNG: header fine, pixel data cut off.
        let mut buf = std::io::Cursor::new(Vec::new());
        gradient(64, 64)
            .write_to(&mut buf, ImageFormat::Png)
            .unwrap();
        let bytes = buf.into_inner();
        let trunc = r.join("trunc.png");
        std::fs::write(&trunc, &bytes[..bytes.len() / 2]).unwrap();
        // First half of a valid JPEG: the header survives, the scan is cut.
        let mut buf = std::io::Cursor::new(Vec::new());
        gradient(256, 256)
            .write_to(&mut buf, ImageFormat::Jpeg)
            .unwrap();
        let bytes = buf.into_inner();
        let trunc_jpg = r.join("trunc.jpg");
        std::fs::write(&trunc_jpg, &bytes[..bytes.len() / 2]).unwrap();
        (dir, [trunc, trunc_jpg])
    }

    fn names(paths: &[PathBuf], root: &Path) -> Vec<String> {
        paths
            .iter()
            .map(|p| p.strip_prefix(root).unwrap().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn detrng_matches_reference_splitmix64() {
        // Reference SplitMix64 outputs for seed 0.
        let mut r = DetRng::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_ne!(
            DetRng::from_parts(&[1, 2]).next_u64(),
            DetRng::from_parts(&[2, 1]).next_u64()
        );
    }

    #[test]
    fn no_panic_turns_panics_into_errors() {
        assert_eq!(no_panic(|| 3), Ok(3));
        let e = no_panic(|| -> u8 { panic!("boom") }).unwrap_err();
        assert!(e.contains("boom"), "{e}");
    }

    #[test]
    fn discover_counts_and_skips() {
        let (dir, _) = fixture();
        let ds = discover(dir.path(), 16).unwrap();
        assert_eq!(
            names(&ds.files, dir.path()),
            [
                "a.png",
                "sub/b.JPG",
                "sub/deeper/c.jpeg",
                "trunc.jpg",
                "trunc.png"
            ]
        );
        let mut skipped = names(
            &ds.skipped.iter().map(|s| s.0.clone()).collect::<Vec<_>>(),
            dir.path(),
        );
        skipped.sort();
        assert_eq!(skipped, ["empty.png", "small.png", "x.jpg"]);
        assert!(ds.skipped.iter().all(|(_, why)| !why.is_empty()));
        // With min_side 0 the small image is accepted.
        assert_eq!(discover(dir.path(), 0).unwrap().len(), 6);
    }

    #[cfg(unix)]
    #[test]
    fn discover_follows_symlinked_dirs_without_looping() {
        let outside = tempfile::tempdir().unwrap();
        save(
            &gradient(32, 32),
            &outside.path().join("o.png"),
            ImageFormat::Png,
        );
        let dir = tempfile::tempdir().unwrap();
        save(
            &gradient(32, 32),
            &dir.path().join("d.png"),
            ImageFormat::Png,
        );
        std::os::unix::fs::symlink(outside.path(), dir.path().join("linked")).unwrap();
        std::os::unix::fs::symlink(dir.path(), dir.path().join("loop")).unwrap();
        let ds = discover(dir.path(), 1).unwrap();
        assert_eq!(names(&ds.files, dir.path()), ["d.png", "linked/o.png"]);
        // Root given as a symlink works too.
        let link = outside.path().join("root_link");
        std::os::unix::fs::symlink(dir.path(), &link).unwrap();
        assert_eq!(discover(&link, 1).unwrap().len(), 2);
    }

    #[test]
    fn discover_errors_name_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let e = format!("{:#}", discover(&missing, 1).unwrap_err());
        assert!(e.contains("nope"), "{e}");
        let file = dir.path().join("f.png");
        save(&gradient(8, 8), &file, ImageFormat::Png);
        let e = format!("{:#}", discover(&file, 1).unwrap_err());
        assert!(e.contains("not a directory"), "{e}");
        // Only an unusable image -> error naming the root.
        let e = format!("{:#}", discover(dir.path(), 100).unwrap_err());
        assert!(e.contains("no usable images") && e.contains(&*dir.path().to_string_lossy()));
    }

    #[test]
    fn target_size_rules() {
        // Large image: shorter side -> load.
        assert_eq!(target_size(2000, 1000, 512, 256), (1024, 512));
        assert_eq!(target_size(1000, 2000, 512, 256), (512, 1024));
        // Typical COCO size: shorter side < load, so kept as is.
        assert_eq!(target_size(640, 480, 512, 256), (640, 480));
        // Shorter side between crop and load: unchanged.
        assert_eq!(target_size(400, 300, 512, 256), (400, 300));
        // Shorter side below crop: upscale only to crop (not to load).
        assert_eq!(target_size(40, 30, 64, 32), (43, 32));
        // Exact fit.
        assert_eq!(target_size(32, 32, 64, 32), (32, 32));
        // load < crop behaves as crop.
        assert_eq!(target_size(100, 100, 16, 32), (32, 32));
    }

    #[test]
    fn load_sample_shapes_range_and_colour_modes() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = DetRng::new(7);
        let p = dir.path().join("g.png");
        save(&gradient(40, 30), &p, ImageFormat::Png);
        let v = load_sample(&p, 64, 32, &mut rng).unwrap();
        assert_eq!(v.len(), 3 * 32 * 32);
        assert!(v.iter().all(|x| (0.0..=1.0).contains(x)));

        // Greyscale, RGBA and 16-bit all load; a flat colour stays flat.
        let grey =
            DynamicImage::ImageLuma8(image::GrayImage::from_pixel(20, 20, image::Luma([51])));
        let rgba = DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(
            20,
            20,
            image::Rgba([255, 0, 51, 128]),
        ));
        let rgb16 = DynamicImage::ImageRgb16(image::ImageBuffer::from_pixel(
            20,
            20,
            image::Rgb([65535u16, 0, 13107]),
        ));
        let cases = [
            (grey, [0.2f32, 0.2, 0.2]),
            (rgba, [1.0, 0.0, 0.2]),
            (rgb16, [1.0, 0.0, 0.2]),
        ];
        for (i, (img, expect)) in cases.into_iter().enumerate() {
            let p = dir.path().join(format!("m{i}.png"));
            img.save_with_format(&p, ImageFormat::Png).unwrap();
            let v = load_sample(&p, 64, 16, &mut rng).unwrap();
            assert_eq!(v.len(), 3 * 16 * 16);
            for (ch, e) in expect.iter().enumerate() {
                let plane = &v[ch * 256..(ch + 1) * 256];
                assert!(
                    plane.iter().all(|x| (x - e).abs() < 1e-6),
                    "case {i} ch {ch}"
                );
            }
        }
        // A corrupt file is an error naming it, not a panic.
        let bad = dir.path().join("bad.png");
        std::fs::write(&bad, b"junk").unwrap();
        let e = format!("{:#}", load_sample(&bad, 64, 16, &mut rng).unwrap_err());
        assert!(e.contains("bad.png"), "{e}");
    }

    #[test]
    fn load_sample_crop_is_deterministic_and_random() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g.png");
        save(&gradient(200, 100), &p, ImageFormat::Png);
        let a = load_sample(&p, 100, 32, &mut DetRng::new(1)).unwrap();
        let b = load_sample(&p, 100, 32, &mut DetRng::new(1)).unwrap();
        assert_eq!(a, b);
        let differs = (2..10).any(|s| load_sample(&p, 100, 32, &mut DetRng::new(s)).unwrap() != a);
        assert!(differs);
    }

    #[test]
    fn sampler_covers_each_epoch_and_is_deterministic() {
        let n = 10;
        let s = Sampler::new(n, 42);
        let s2 = Sampler::new(n, 42);
        // Batch size 4 does not divide 10: batches straddle epochs.
        let all: Vec<usize> = (0..10).flat_map(|b| s.indices(b, 4)).collect();
        let all2: Vec<usize> = (0..10).flat_map(|b| s2.indices(b, 4)).collect();
        assert_eq!(all, all2);
        for epoch in all.chunks(n) {
            let mut e = epoch.to_vec();
            e.sort();
            assert_eq!(e, (0..n).collect::<Vec<_>>());
        }
        assert_ne!(all[..n], all[n..2 * n], "epochs should be reshuffled");
        assert_ne!(Sampler::new(n, 43).indices(0, n), all[..n]);
        // Out-of-order queries (cache misses) give the same answers.
        assert_eq!(s.indices(3, 4), all[12..16]);
        assert_eq!(s.indices(0, 4), all[..4]);
    }

    fn tensor_bits(t: &Tensor) -> Vec<u32> {
        t.flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect()
    }

    fn good_dataset() -> (tempfile::TempDir, Dataset) {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..5 {
            let img = gradient(40 + 7 * i, 36 + 3 * i);
            save(&img, &dir.path().join(format!("{i}.png")), ImageFormat::Png);
        }
        let ds = discover(dir.path(), 1).unwrap();
        (dir, ds)
    }

    #[test]
    fn loader_resume_is_equivalent() {
        let (_d, ds) = good_dataset();
        let cfg = LoaderConfig {
            batch_size: 3,
            load_size: 40,
            crop_size: 24,
            seed: 9,
            prefetch: 2,
            slots: None,
        };
        let mut from0 = Loader::new(ds.clone(), Some(ds.clone()), cfg.clone(), 0);
        let seq: Vec<Batch> = (0..5).map(|_| from0.next().unwrap()).collect();
        for (i, b) in seq.iter().enumerate() {
            assert_eq!(b.index, i as u64);
            assert_eq!(b.content.dims(), &[3, 3, 24, 24]);
            assert_eq!(b.style.as_ref().unwrap().dims(), &[3, 3, 24, 24]);
        }
        assert_ne!(
            tensor_bits(&seq[0].content),
            tensor_bits(seq[0].style.as_ref().unwrap())
        );
        let mut from3 = Loader::new(ds.clone(), Some(ds), cfg, 3);
        for want in &seq[3..] {
            let got = from3.next().unwrap();
            assert_eq!(got.index, want.index);
            assert_eq!(tensor_bits(&got.content), tensor_bits(&want.content));
            assert_eq!(
                tensor_bits(got.style.as_ref().unwrap()),
                tensor_bits(want.style.as_ref().unwrap())
            );
        }
        drop(from0); // must not hang with a full queue
    }

    #[test]
    fn shards_of_a_batch_are_its_slices() {
        // Data-parallel ranks load only their slots: together they must be
        // exactly the batch one process loads.
        let (_d, ds) = good_dataset();
        let cfg = LoaderConfig {
            batch_size: 4,
            load_size: 40,
            crop_size: 24,
            seed: 5,
            prefetch: 1,
            slots: None,
        };
        let mut whole = Loader::new(ds.clone(), Some(ds.clone()), cfg.clone(), 2);
        let mut halves: Vec<Loader> = [0..2, 2..4]
            .into_iter()
            .map(|r| {
                let c = LoaderConfig {
                    slots: Some(r),
                    ..cfg.clone()
                };
                Loader::new(ds.clone(), Some(ds.clone()), c, 2)
            })
            .collect();
        for _ in 0..2 {
            let w = whole.next().unwrap();
            let parts: Vec<Batch> = halves.iter_mut().map(|l| l.next().unwrap()).collect();
            for p in &parts {
                assert_eq!(p.index, w.index);
                assert_eq!(p.content.dims(), &[2, 3, 24, 24]);
            }
            let cat =
                |f: fn(&Batch) -> &Tensor| Tensor::cat(&[f(&parts[0]), f(&parts[1])], 0).unwrap();
            assert_eq!(tensor_bits(&cat(|b| &b.content)), tensor_bits(&w.content));
            assert_eq!(
                tensor_bits(&cat(|b| b.style.as_ref().unwrap())),
                tensor_bits(w.style.as_ref().unwrap())
            );
        }
    }

    #[test]
    fn loader_skips_truncated_file_at_load_time() {
        let (dir, truncated) = fixture();
        let content = discover(dir.path(), 16).unwrap();
        for t in &truncated {
            assert!(content.files.contains(t), "{t:?} passes discovery");
            let e = format!(
                "{:#}",
                load_sample(t, 32, 16, &mut DetRng::new(0)).unwrap_err()
            );
            assert!(
                e.contains(&*t.file_name().unwrap().to_string_lossy()),
                "{e}"
            );
        }
        let (_d, style) = good_dataset();
        let cfg = LoaderConfig {
            batch_size: content.len(), // one batch = one full epoch
            load_size: 32,
            crop_size: 16,
            seed: 3,
            prefetch: 1,
            slots: None,
        };
        let mut loader = Loader::new(content, Some(style), cfg, 0);
        for i in 0..3 {
            let b = loader.next().unwrap();
            assert_eq!(b.content.dims(), &[5, 3, 16, 16]);
            for t in &truncated {
                assert!(b.skipped.iter().any(|(p, _)| p == t), "batch {i}: {t:?}");
            }
            let v = b.content.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(v.iter().all(|x| (0.0..=1.0).contains(x)));
        }
    }

    #[test]
    fn loader_reports_fully_undecodable_dataset() {
        let dir = tempfile::tempdir().unwrap();
        let mut buf = std::io::Cursor::new(Vec::new());
        gradient(64, 64)
            .write_to(&mut buf, ImageFormat::Png)
            .unwrap();
        let bytes = buf.into_inner();
        std::fs::write(dir.path().join("t.png"), &bytes[..bytes.len() / 2]).unwrap();
        let ds = discover(dir.path(), 1).unwrap();
        let cfg = LoaderConfig {
            batch_size: 2,
            load_size: 32,
            crop_size: 16,
            ..Default::default()
        };
        let mut loader = Loader::new(ds.clone(), Some(ds), cfg, 0);
        let e = format!("{:#}", loader.next().unwrap_err());
        assert!(e.contains("could be decoded"), "{e}");
        assert!(loader.next().is_err());
    }
}
