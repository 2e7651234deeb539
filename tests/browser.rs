//! The page of `adain serve` in a real browser: headless Chromium (Debian's
//! `chromium` and `chromium-driver`, installed by scripts/system-deps.sh)
//! driven over WebDriver. Loads `/`, uploads a photo, picks a gallery style,
//! moves the strength slider with the keyboard, waits for the preview and the
//! full-size result, checks its size and that it is not the photo, downloads
//! it, runs the webcam mode on Chromium's fake camera, and checks labels and
//! a phone-width layout. Fails (never skips) when Chromium is missing.
//!
//! `ADAIN_SERVE_SCREENSHOT=docs/serve.png cargo test --test browser` also
//! saves the page as the README shows it.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{ClientBuilder, Locator};
use serde_json::{json, Value};

use common::serve::Server;

const CHROMIUM: &str = "/usr/bin/chromium";
const DRIVER: &str = "/usr/bin/chromedriver";

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_driver() -> (Driver, String) {
    for p in [CHROMIUM, DRIVER] {
        assert!(
            Path::new(p).exists(),
            "{p} is missing: the browser test needs Debian's chromium and chromium-driver \
             (scripts/system-deps.sh installs them)"
        );
    }
    let port = free_port();
    let child = Command::new(DRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let t = Instant::now();
    while ureq::get(format!("{url}/status")).call().is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "chromedriver did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (Driver(child), url)
}

/// Polls `script` (a JS expression) until it is truthy.
async fn until(c: &fantoccini::Client, what: &str, script: &str, secs: u64) -> Value {
    let t = Instant::now();
    loop {
        let v = c
            .execute(&format!("return {script};"), vec![])
            .await
            .unwrap();
        let truthy = match &v {
            Value::Null | Value::Bool(false) => false,
            Value::String(s) => !s.is_empty(),
            Value::Number(n) => n.as_f64() != Some(0.0),
            _ => true,
        };
        if truthy {
            return v;
        }
        if t.elapsed() > Duration::from_secs(secs) {
            let status = c
                .execute(
                    "return document.getElementById('status').textContent;",
                    vec![],
                )
                .await
                .unwrap();
            panic!("timed out waiting for {what} ({script}); page status: {status}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The bytes behind an `<img>`'s blob URL.
async fn image_bytes(c: &fantoccini::Client, id: &str) -> Vec<u8> {
    let b64 = c
        .execute_async(
            "const id = arguments[0], done = arguments[arguments.length - 1];
             fetch(document.getElementById(id).src).then(r => r.blob()).then(b => {
               const fr = new FileReader();
               fr.onload = () => done(fr.result.split(',')[1]);
               fr.readAsDataURL(b);
             }).catch(e => done('error: ' + e));",
            vec![json!(id)],
        )
        .await
        .unwrap();
    let b64 = b64.as_str().unwrap();
    assert!(!b64.starts_with("error"), "{b64}");
    base64_decode(b64)
}

/// Standard base64 (the test needs no crate for it).
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64"),
        }
    };
    let s: Vec<u8> = s.bytes().filter(|c| *c != b'=').collect();
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= val(*c) << (18 - 6 * i);
        }
        for i in 0..chunk.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

fn mean_abs_diff(a: &image::RgbImage, b: &image::RgbImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let s: u64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| x.abs_diff(*y) as u64)
        .sum();
    s as f64 / a.as_raw().len() as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_stylizes_previews_downloads_and_runs_the_webcam() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let gallery = dir.path().join("gallery");
    std::fs::create_dir_all(&gallery).unwrap();
    std::fs::copy(
        root.join("examples/painting.jpg"),
        gallery.join("painting.jpg"),
    )
    .unwrap();
    common::save(&common::gradient(96, 96, 4), &gallery.join("gradient.png"));
    let server = Server::start(&["--styles", gallery.to_str().unwrap(), "--style-size", "256"]);
    let (_driver, driver_url) = start_driver();

    let downloads = dir.path().join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1100,860", "--use-fake-device-for-media-stream",
                "--use-fake-ui-for-media-stream", "--no-first-run"
            ],
            "prefs": {
                "download.default_directory": downloads.to_str().unwrap(),
                "download.prompt_for_download": false
            }
        }),
    );
    let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver_url)
        .await
        .expect("cannot start a Chromium session");

    c.goto(&format!("{}/", server.url)).await.unwrap();
    until(
        &c,
        "the gallery",
        "document.querySelectorAll('#gallery input').length === 2",
        30,
    )
    .await;

    // every control has a label; the status is announced
    let unlabelled = c
        .execute(
            "return [...document.querySelectorAll('input, select')]
               .filter(e => !(e.labels && e.labels.length)).map(e => e.id);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(unlabelled, json!([]), "controls without a label");
    let token_shown = c
        .execute(
            "return getComputedStyle(document.getElementById('token-row')).display;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        token_shown,
        json!("none"),
        "no token asked for when the server needs none"
    );
    let live = c.find(Locator::Id("status")).await.unwrap();
    assert_eq!(
        live.attr("aria-live").await.unwrap().as_deref(),
        Some("polite")
    );

    // a photo, then a gallery style: the full-size result
    let photo = root.join("examples/photo.jpg");
    c.find(Locator::Id("photo"))
        .await
        .unwrap()
        .send_keys(photo.to_str().unwrap())
        .await
        .unwrap();
    c.find(Locator::Css("label.thumb:first-child img"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(
        &c,
        "a first result",
        "document.body.dataset.fulls === '1'",
        120,
    )
    .await;
    let checked = c
        .execute(
            "return document.querySelector('#gallery input:checked').value;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(checked, json!("gradient"));
    // pick the painting instead (keyboard: arrows move within the radio group)
    c.find(Locator::Id("style-gradient"))
        .await
        .unwrap()
        .send_keys("\u{e014}") // ArrowRight
        .await
        .unwrap();
    until(
        &c,
        "the painting's result",
        "document.body.dataset.fulls === '2'",
        120,
    )
    .await;
    let checked = c
        .execute(
            "return document.querySelector('#gallery input:checked').value;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(checked, json!("painting"));

    // the strength slider, moved with the keyboard: a preview, then the full size
    c.find(Locator::Id("alpha"))
        .await
        .unwrap()
        .send_keys("\u{e012}\u{e012}\u{e012}\u{e012}") // ArrowLeft x4: 1.0 -> 0.8
        .await
        .unwrap();
    until(
        &c,
        "a preview",
        "+(document.body.dataset.previews || 0) >= 1",
        120,
    )
    .await;
    until(
        &c,
        "the full size after the slider stopped",
        "document.body.dataset.fulls === '3' && document.getElementById('result').dataset.alpha === '0.8' \
         && document.getElementById('result').dataset.kind === 'full' && document.getElementById('result').complete",
        120,
    )
    .await;
    let size = c
        .execute(
            "const i = document.getElementById('result'); return [i.naturalWidth, i.naturalHeight];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(size, json!([481, 320]), "the result has the photo's size");
    let result = image::load_from_memory(&image_bytes(&c, "result").await)
        .unwrap()
        .to_rgb8();
    let original = image::open(&photo).unwrap().to_rgb8();
    assert!(
        mean_abs_diff(&result, &original) > 10.0,
        "the result looks like the photo itself"
    );

    if let Ok(p) = std::env::var("ADAIN_SERVE_SCREENSHOT") {
        let png = c.screenshot().await.unwrap();
        std::fs::write(&p, png).unwrap();
    }

    // download: the link holds the full-size PNG, and clicking it saves it
    let href = c
        .find(Locator::Id("download"))
        .await
        .unwrap()
        .attr("href")
        .await
        .unwrap();
    assert!(href.unwrap_or_default().starts_with("blob:"));
    c.find(Locator::Id("download"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let file = downloads.join("stylized.png");
    let t = Instant::now();
    while !file.is_file() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no download in {}",
            downloads.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let saved = image::open(&file).unwrap().to_rgb8();
    assert_eq!(saved, result, "the download is the result shown");

    // webcam mode on the fake camera: frames come back over the WebSocket
    c.find(Locator::Id("webcam"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(
        &c,
        "webcam frames",
        "+(document.body.dataset.camFrames || 0) >= 3",
        120,
    )
    .await;
    let fps = until(
        &c,
        "the frame rate",
        "document.getElementById('fps').textContent.match(/frames\\/s/) && document.getElementById('fps').textContent",
        60,
    )
    .await;
    assert!(fps.as_str().unwrap().ends_with("frames/s"));
    let pressed = c
        .find(Locator::Id("webcam"))
        .await
        .unwrap()
        .attr("aria-pressed")
        .await
        .unwrap();
    assert_eq!(pressed.as_deref(), Some("true"));
    c.find(Locator::Id("webcam"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();

    // phone width: one column, nothing wider than the screen
    c.set_window_size(390, 844).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let overflow = c
        .execute(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
            vec![],
        )
        .await
        .unwrap();
    let wide = c
        .execute(
            "const w = document.documentElement.clientWidth;
             return [...document.querySelectorAll('body *')]
               .filter(e => e.getBoundingClientRect().right > w + 0.5)
               .map(e => e.tagName + '#' + e.id + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right));",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        overflow,
        json!(0),
        "the page scrolls sideways at phone width: {wide}"
    );

    c.close().await.unwrap();
    let m = server.get("/metrics").text();
    assert!(m.contains("adain_webcam_frames_total"), "{m}");
    assert!(!server.stderr().contains("panicked"), "{}", server.stderr());
}
