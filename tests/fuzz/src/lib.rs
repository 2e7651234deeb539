//! The fuzz entry functions: one per target, each feeding bytes from a user
//! or a client to the code that reads them, as the program does. None may
//! panic (an error is a fine answer), allocate more than [`MAX_ALLOC`] or
//! run longer than libFuzzer's `-timeout` (scripts/fuzz.sh).
//!
//! One copy: `fuzz_targets/<t>.rs` calls `adain_fuzz::<t>`, and the main
//! crate's tests/fuzz_corpus.rs includes this file to replay the kept corpus
//! and regressions in the normal test suite. So the code here uses only
//! crates the `adain` package depends on too.

// train/ is the adain-train binary, not a library: its two readers are
// included as they are (they use only std, anyhow, serde, toml, tracing,
// candle and adain).
#[allow(dead_code)]
#[path = "../../../train/checkpoint.rs"]
pub mod checkpoint_rs;
#[allow(dead_code)]
#[path = "../../../train/config.rs"]
pub mod config_rs;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use adain::engine::{self, Engine, Settings};
use adain::image_io;
use adain::server::gallery::Gallery;
use adain::server::pool::Pool;
use adain::server::stylize::Form;
use adain::server::webcam::Stream;
use adain::server::{AppState, Config as ServerConfig};
use adain::weights::{self, WeightFile};

/// The pixel cap the image readers get under fuzzing (what `--max-pixels`
/// and the server pass): 1 MP, the webcam's frame cap. The decoders' own
/// allocation limit follows from it (header_checked: 8 bytes a pixel + 64 MiB).
pub const MAX_PIXELS: u64 = 1 << 20;

/// No input may make a reader hold more than this at once, nor ask for more
/// in one request: the fuzz binaries' allocator aborts past it.
pub const MAX_ALLOC: usize = 512 << 20;

// ------------------------------------------------------------------ allocator

/// The fuzz binaries' allocator: the system's, counting live bytes; past
/// [`MAX_ALLOC`] it prints one line and aborts, which libFuzzer reports as a
/// crash (`-s none` has no sanitizer allocator, so `-malloc_limit_mb` would
/// not see single requests). Only under `cfg(fuzzing)`: the corpus replay in
/// the main crate's tests keeps the normal allocator.
#[cfg(fuzzing)]
mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::sync::atomic::{AtomicUsize, Ordering};

    pub struct Counting;
    static LIVE: AtomicUsize = AtomicUsize::new(0);

    fn over(what: &str, n: usize) -> ! {
        // no allocation here: format into a stack buffer
        use std::io::Write;
        let mut buf = [0u8; 160];
        let mut w = &mut buf[..];
        let _ = write!(
            w,
            "adain-fuzz: allocation cap exceeded: {what} {n} bytes > {} MiB\n",
            super::MAX_ALLOC >> 20
        );
        let len = 160 - w.len();
        unsafe {
            libc_write(2, buf.as_ptr(), len);
        }
        std::process::abort();
    }

    extern "C" {
        #[link_name = "write"]
        fn libc_write(fd: i32, buf: *const u8, n: usize) -> isize;
    }

    fn add(n: usize) {
        if n > super::MAX_ALLOC {
            over("one request of", n);
        }
        let live = LIVE.fetch_add(n, Ordering::Relaxed) + n;
        if live > super::MAX_ALLOC {
            over("live", live);
        }
    }

    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, l: Layout) -> *mut u8 {
            add(l.size());
            System.alloc(l)
        }
        unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
            add(l.size());
            System.alloc_zeroed(l)
        }
        unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
            LIVE.fetch_sub(l.size(), Ordering::Relaxed);
            System.dealloc(p, l)
        }
        unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
            if new > l.size() {
                add(new - l.size());
            } else {
                LIVE.fetch_sub(l.size() - new, Ordering::Relaxed);
            }
            System.realloc(p, l, new)
        }
    }
}

#[cfg(fuzzing)]
#[global_allocator]
static ALLOC: counting::Counting = counting::Counting;

// ------------------------------------------------------------------- helpers

/// The repository root (this crate is tests/fuzz/ in it; the replay test
/// includes this file from the root package).
pub fn repo() -> PathBuf {
    let m = Path::new(env!("CARGO_MANIFEST_DIR"));
    if m.join("weights").is_dir() {
        m.to_owned()
    } else {
        m.join("../..")
    }
}

/// A scratch directory of this process (in /dev/shm when there is one:
/// targets that read a path get the bytes written there).
fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let b = tempfile::Builder::new()
            .prefix("adain-fuzz-")
            .tempdir_in(if shm.is_dir() { shm } else { Path::new("/tmp") });
        b.or_else(|_| tempfile::tempdir())
            .expect("a scratch directory")
    })
    .path()
}

/// A directory of this thread under [`scratch`] (the replay test runs
/// targets on several threads).
fn thread_dir() -> PathBuf {
    thread_local!(static D: RefCell<Option<PathBuf>> = const { RefCell::new(None) });
    D.with(|d| {
        d.borrow_mut()
            .get_or_insert_with(|| {
                let p = scratch()
                    .join(format!("{:?}", std::thread::current().id()).replace(['(', ')'], ""));
                std::fs::create_dir_all(&p).expect("a thread directory");
                p
            })
            .clone()
    })
}

// ------------------------------------------------------------------- targets

/// An image as `adain stylize` and the server read one (every enabled
/// format: JPEG, PNG, WebP, BMP, TIFF), then as floats (what is stylized).
pub fn image(data: &[u8]) {
    if let Ok(src) = image_io::open_bytes(data, "fuzz.img", MAX_PIXELS) {
        let pic = src.to_picture();
        assert_eq!((pic.width(), pic.height()), (src.width(), src.height()));
    }
}

/// A mask or a label image: decoded to grey, then split as `--mask` does
/// (one binary mask for one style; a label image's distinct values for three).
pub fn mask(data: &[u8]) {
    let Ok(m) = image_io::mask_from_bytes(data, "fuzz.mask", MAX_PIXELS) else {
        return;
    };
    let size = m.dimensions();
    let _ = engine::split_masks(vec![("fuzz.mask".into(), m.clone())], 1, "content", size);
    let _ = engine::split_masks(vec![("fuzz.mask".into(), m)], 3, "content", size);
}

/// A safetensors weight file (`--vgg`, `--decoder`, `adain weights`), then
/// the shape checks of the encoder and the decoder.
pub fn weights(data: &[u8]) {
    let Ok(w) = WeightFile::from_bytes(data, Path::new("fuzz.safetensors")) else {
        return;
    };
    let _ = w.check(&weights::encoder_shapes());
    let _ = w.check(&adain::Decoder::tensor_shapes());
    let _ = w.check(&adain::johnson::TransformerNet::tensor_shapes());
}

/// A PyTorch checkpoint as `adain convert` reads it (zip or legacy pickle
/// format: `read_pth` looks at the first byte), then what it is classified as.
pub fn pth(data: &[u8]) {
    let path = thread_dir().join("fuzz.pth");
    std::fs::write(&path, data).expect("writing the scratch file");
    if let Ok(t) = weights::read_pth(&path) {
        let names: Vec<&str> = t.iter().map(|(k, _)| k.as_str()).collect();
        let _ = weights::classify(&names);
    }
    // the legacy reader directly too (read_pth only hands it 0x80 files)
    let _ = weights::read_legacy_pth(&path);
}

/// `adain-train --config FILE`: the TOML as `Config::from_file` parses it,
/// then validation; a valid config is written as the run's config.toml and
/// read back on `--resume`, so that must give the same config.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return; // from_file reads the file as UTF-8 first
    };
    let path = thread_dir().join("config.toml");
    std::fs::write(&path, text).expect("writing the scratch file");
    let Ok(cfg) = config_rs::Config::from_file(&path) else {
        return;
    };
    if cfg.validate().is_ok() {
        let again: config_rs::Config =
            toml::from_str(&cfg.to_toml()).expect("a written config.toml reads back");
        assert_eq!(again.to_toml(), cfg.to_toml());
        let _ = cfg.recipe_json();
    }
}

/// The decoder's parameter shapes as variables, and an Adam over them (made
/// once: what a resume restores into).
fn adam() -> &'static Mutex<(Vec<(String, candle_core::Var)>, adain::optim::Adam)> {
    static A: OnceLock<Mutex<(Vec<(String, candle_core::Var)>, adain::optim::Adam)>> =
        OnceLock::new();
    A.get_or_init(|| {
        let params: Vec<(String, candle_core::Var)> = adain::Decoder::tensor_shapes()
            .into_iter()
            .map(|(k, s)| {
                let v =
                    candle_core::Var::zeros(s, candle_core::DType::F32, &candle_core::Device::Cpu)
                        .expect("a variable");
                (k, v)
            })
            .collect();
        let adam = adain::optim::Adam::new(params.clone(), Default::default()).expect("Adam");
        Mutex::new((params, adam))
    })
}

/// `adain-train --resume RUN` and `adain-train export`: the bytes as the
/// run's only checkpoint, found and loaded as `checkpoint::latest` does,
/// then the model's tensors, the variables set from them and Adam's state
/// restored, as train/trainer.rs does.
pub fn checkpoint(data: &[u8]) {
    let run = thread_dir().join("run");
    let dir = checkpoint_rs::dir(&run);
    std::fs::create_dir_all(&dir).expect("creating the scratch run");
    std::fs::write(dir.join("ckpt_0000001.safetensors"), data).expect("writing the scratch file");
    let Ok(Some(ck)) = checkpoint_rs::latest(&run) else {
        return;
    };
    let _ = ck.is_johnson();
    let _ = ck.model_tensors();
    let mut guard = adam().lock().unwrap_or_else(|e| e.into_inner());
    let (params, adam) = &mut *guard;
    for (name, var) in params.iter() {
        let Some(t) = ck.file.tensors.get(name) else {
            return;
        };
        if var.set(t).is_err() {
            return;
        }
    }
    let state: std::collections::HashMap<_, _> = ck.with_prefix("adam.");
    let _ = adam.load_state(&state, ck.iteration);
}

/// A server with the shipped weights and a gallery of the two fixture
/// images (ids `cmyk` and `palette`), made once; and a runtime to read with.
pub fn server() -> &'static (tokio::runtime::Runtime, AppState) {
    static S: OnceLock<(tokio::runtime::Runtime, AppState)> = OnceLock::new();
    S.get_or_init(|| {
        let root = repo();
        let w = root.join("weights");
        let (vgg, dec) = weights::locate_model(
            Some(&w.join(weights::VGG_FILE)),
            Some(&w.join(weights::DECODER_FILE)),
        )
        .expect("the shipped weights");
        let model = adain::Model::from_sources(&vgg, &dec, &candle_core::Device::Cpu)
            .expect("the shipped weights load");
        let engine = Arc::new(Engine::new(model));
        let defaults = Settings {
            style_size: 64, // the gallery is prepared once, small
            limits: engine::Limits {
                max_pixels: MAX_PIXELS,
                ..Default::default()
            },
            ..Settings::default()
        };
        let gallery = Gallery::load(&root.join("tests/fixtures/images"), &engine, &defaults)
            .expect("the fixture gallery");
        let config = ServerConfig {
            max_upload: 1 << 20,
            timeout: std::time::Duration::from_secs(10),
            client_timeout: std::time::Duration::from_secs(10),
            max_connections: 64,
            upload_budget: 2 << 20,
            token: None,
            cors: None,
            defaults,
        };
        let state = AppState::new(engine, gallery, Pool::new(1, 1), config);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        (rt, state)
    })
}

/// The multipart boundary the fuzz bytes are sent with (seeds use it).
pub const BOUNDARY: &str = "fuzzboundary";

/// `POST /v1/stylize`: the bytes as a multipart/form-data body, read and
/// checked by `Form::read` (up to the worker's decode and model run).
pub fn server_form(data: &[u8]) {
    use axum::extract::FromRequest;
    let (rt, st) = server();
    let req = axum::http::Request::builder()
        .method("POST")
        .uri("/v1/stylize")
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(axum::body::Body::from(data.to_vec()))
        .expect("a request");
    rt.block_on(async {
        let Ok(mp) = axum::extract::Multipart::from_request(req, &()).await else {
            return;
        };
        let _ = Form::read(mp, st).await;
    });
}

/// `GET /v1/webcam?...`: the bytes as the query string, parsed as the
/// route's `Query<Vec<(String, String)>>` does, then `Stream::from_query`.
pub fn webcam_query(data: &[u8]) {
    let Ok(q) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(uri) = format!("/v1/webcam?{q}").parse::<axum::http::Uri>() else {
        return;
    };
    let Ok(axum::extract::Query(q)) =
        axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&uri)
    else {
        return;
    };
    let (_, st) = server();
    let _ = Stream::from_query(st, &q);
}

/// ffprobe's output as `adain video` parses it: the JSON of streams and
/// format, and (the same bytes as text) the packet times, then whether they
/// sit on the stream's frame-rate grid.
pub fn probe(data: &[u8]) {
    use adain::video::ffmpeg;
    let p = ffmpeg::parse_probe(Path::new("fuzz.mp4"), data);
    let times = ffmpeg::parse_frame_times(&String::from_utf8_lossy(data));
    if let Ok(p) = p {
        let _ = ffmpeg::on_grid(&times, p.rate);
        let _ = p.upright_size();
    }
}
