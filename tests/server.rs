//! `adain serve`, end to end: the real binary on an ephemeral port, spoken to
//! over HTTP. Results equal `adain stylize`'s; every error has its status and
//! a one-line JSON message; a full queue gives 503; SIGTERM lets the request
//! in flight finish.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::serve::{png, Form, Server};
use common::{gradient, save};

/// A gallery of two small paintings, and the files.
fn gallery(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let g = dir.join("gallery");
    let a = g.join("Waves At Dusk.png");
    let b = g.join("wheat.png");
    save(&gradient(64, 64, 3), &a);
    save(&gradient(72, 56, 5), &b);
    (g, a, b)
}

/// `adain stylize` on the same inputs, as PNG.
fn cli(content: &Path, styles: &[&Path], flags: &[&str], out: &Path) -> image::RgbImage {
    let (vgg, decoder) = common::serve::weights();
    let mut c = Command::new(env!("CARGO_BIN_EXE_adain"));
    c.args(["stylize", "-q", "--overwrite", "-c"])
        .arg(content)
        .arg("-o")
        .arg(out)
        .arg("--vgg")
        .arg(vgg)
        .arg("--decoder")
        .arg(decoder);
    for s in styles {
        c.arg("-s").arg(s);
    }
    let o = c.args(flags).output().unwrap();
    common::ok(&o);
    image::open(out).unwrap().to_rgb8()
}

fn max_diff(a: &image::RgbImage, b: &image::RgbImage) -> u8 {
    assert_eq!(a.dimensions(), b.dimensions());
    a.as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap()
}

#[test]
fn stylize_equals_the_command_line_and_the_gallery_is_listed() {
    let dir = tempfile::tempdir().unwrap();
    let (g, a, b) = gallery(dir.path());
    let photo = dir.path().join("photo.png");
    save(&gradient(96, 80, 1), &photo);
    let upload = dir.path().join("upload.png");
    save(&gradient(80, 64, 7), &upload);
    let s = Server::start(&["--styles", g.to_str().unwrap(), "--style-size", "128"]);

    // the gallery: ids from file names, thumbnails that decode
    let r = s.get("/v1/styles");
    assert_eq!(r.status, 200, "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let ids: Vec<&str> = v["styles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["waves-at-dusk", "wheat"]);
    assert_eq!(v["styles"][0]["name"], "Waves At Dusk");
    let thumb = v["styles"][0]["thumbnail"].as_str().unwrap();
    let t = s.get(thumb);
    assert_eq!((t.status, t.content_type.as_str()), (200, "image/jpeg"));
    let t = t.image();
    assert!(t.width() <= 160 && t.height() <= 160 && t.width() > 0);

    // an upload, alpha 0.7, content at 64: the CLI's pixels
    let form = Form::new()
        .file("content", std::fs::read(&photo).unwrap())
        .file("style", std::fs::read(&upload).unwrap())
        .text("alpha", "0.7")
        .text("content_size", "64")
        .text("style_size", "128")
        .text("format", "png");
    let r = s.post("/v1/stylize", &form);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.content_type, "image/png");
    let served = r.image();
    let want = cli(
        &photo,
        &[&upload],
        &[
            "--alpha",
            "0.7",
            "--content-size",
            "64",
            "--style-size",
            "128",
        ],
        &dir.path().join("cli1.png"),
    );
    assert_eq!(served.dimensions(), (96, 80));
    assert!(
        max_diff(&served, &want) <= 1,
        "served differs from adain stylize"
    );
    assert!(max_diff(&served, &image::open(&photo).unwrap().to_rgb8()) > 30);

    // two gallery ids blended 1:3 with coral colour preservation
    let form = Form::new()
        .file("content", std::fs::read(&photo).unwrap())
        .text("style_id", "waves-at-dusk")
        .text("style_id", "wheat")
        .text("style_weights", "1,3")
        .text("preserve_color", "coral")
        .text("content_size", "64")
        .text("format", "png");
    let r = s.post("/v1/stylize", &form);
    assert_eq!(r.status, 200, "{}", r.text());
    let want = cli(
        &photo,
        &[&a, &b],
        &[
            "--style-weights",
            "1,3",
            "--preserve-color",
            "coral",
            "--content-size",
            "64",
            "--style-size",
            "128",
        ],
        &dir.path().join("cli2.png"),
    );
    assert!(
        max_diff(&r.image(), &want) <= 1,
        "blend differs from adain stylize"
    );

    // one gallery id (its statistics precomputed at start-up), default JPEG
    let form = Form::new()
        .file("content", std::fs::read(&photo).unwrap())
        .text("style_id", "wheat")
        .text("content_size", "64");
    let r = s.post("/v1/stylize", &form);
    assert_eq!((r.status, r.content_type.as_str()), (200, "image/jpeg"));
    let want = cli(
        &photo,
        &[&b],
        &["--content-size", "64", "--style-size", "128"],
        &dir.path().join("cli3.png"),
    );
    // JPEG at quality 95: close, not exact
    assert!(max_diff(&r.image(), &want) <= 24);

    // a mask per style: the masked job
    let mut top = image::RgbImage::new(96, 80);
    for (_, y, p) in top.enumerate_pixels_mut() {
        *p = image::Rgb(if y < 40 { [255; 3] } else { [0; 3] });
    }
    let bottom = image::RgbImage::from_fn(96, 80, |x, y| {
        let v = 255 - top.get_pixel(x, y)[0];
        image::Rgb([v; 3])
    });
    let form = Form::new()
        .file("content", std::fs::read(&photo).unwrap())
        .text("style_id", "waves-at-dusk")
        .text("style_id", "wheat")
        .file("mask", png(&top))
        .file("mask", png(&bottom))
        .text("content_size", "64")
        .text("format", "png");
    let r = s.post("/v1/stylize", &form);
    assert_eq!(r.status, 200, "{}", r.text());
    save(&top, &dir.path().join("top.png"));
    save(&bottom, &dir.path().join("bottom.png"));
    let want = cli(
        &photo,
        &[&a, &b],
        &[
            "--mask",
            dir.path().join("top.png").to_str().unwrap(),
            "--mask",
            dir.path().join("bottom.png").to_str().unwrap(),
            "--content-size",
            "64",
            "--style-size",
            "128",
        ],
        &dir.path().join("cli4.png"),
    );
    assert!(
        max_diff(&r.image(), &want) <= 1,
        "masked differs from adain stylize"
    );

    // metrics count what happened
    let m = s.get("/metrics").text();
    assert!(
        m.contains("adain_http_requests_total{route=\"/v1/stylize\",status=\"200\"} 4"),
        "{m}"
    );
    assert!(m.contains("adain_images_stylized_total 4"), "{m}");
    assert!(m.contains("adain_stylize_seconds_count 4"), "{m}");
    assert!(m.contains("adain_queue_depth 0"), "{m}");
    assert!(!s.stderr().contains("panicked"));
}

#[test]
fn every_bad_request_gets_its_status_and_a_one_line_json_error() {
    let dir = tempfile::tempdir().unwrap();
    let (g, _, _) = gallery(dir.path());
    let s = Server::start(&[
        "--styles",
        g.to_str().unwrap(),
        "--style-size",
        "64",
        "--max-upload",
        "1MB",
        "--max-pixels",
        "1000000",
    ]);
    let photo = png(&gradient(64, 48, 1));
    let ok = || {
        Form::new()
            .file("content", photo.clone())
            .text("style_id", "wheat")
            .text("content_size", "32")
    };
    let check = |form: Form, status: u16, needle: &str| {
        let r = s.post("/v1/stylize", &form);
        assert_eq!(
            r.status,
            status,
            "want {status} for `{needle}`: {}",
            r.text()
        );
        assert!(
            r.content_type.starts_with("application/json"),
            "{}",
            r.content_type
        );
        let e = r.error();
        assert!(e.contains(needle), "error `{e}` lacks `{needle}`");
        assert!(!e.contains('\n'));
    };
    assert_eq!(s.post("/v1/stylize", &ok()).status, 200);

    check(
        Form::new().text("style_id", "wheat"),
        400,
        "missing field `content`",
    );
    check(
        Form::new().file("content", photo.clone()),
        400,
        "missing field `style`",
    );
    check(
        ok().text("alpha", "1.5"),
        400,
        "alpha 1.5: must be between 0 and 1",
    );
    check(
        ok().text("alpha", "lots"),
        400,
        "alpha `lots`: not a number",
    );
    check(ok().text("format", "gif"), 400, "format `gif`");
    // sizes that would resize past --max-pixels (1 MP here): the client's
    // field, so 400, for the content, a gallery style and an uploaded one
    check(
        ok().text("content_size", "1200"),
        400,
        "--content-size: the content would be resized to 1600x1200",
    );
    check(ok().text("style_size", "100000"), 400, "--style-size");
    check(
        Form::new()
            .file("content", photo.clone())
            .file("style", photo.clone())
            .text("style_size", "100000"),
        400,
        "--style-size",
    );
    check(
        ok().text("preserve_color", "sepia"),
        400,
        "preserve_color `sepia`",
    );
    check(
        ok().text("style_weights", "1,2"),
        400,
        "style_weights has 2 values for 1 styles",
    );
    check(ok().text("colour", "x"), 400, "unknown field `colour`");
    check(
        Form::new()
            .file("content", photo.clone())
            .text("style_id", "starry-night"),
        404,
        "style_id `starry-night`: no such gallery style",
    );
    // not a picture
    check(
        Form::new()
            .file("content", b"this is not an image at all".to_vec())
            .text("style_id", "wheat"),
        422,
        "content",
    );
    // a style upload that is not a picture
    check(
        Form::new()
            .file("content", photo.clone())
            .file("style", vec![0x89, b'P', b'N', b'G', 0, 1, 2]),
        422,
        "style 1",
    );
    // too small for the network
    check(
        Form::new()
            .file("content", png(&gradient(8, 8, 1)))
            .text("style_id", "wheat"),
        422,
        "at least 16 px",
    );
    // a bomb: 1200x1000 declared (over --max-pixels 1e6) in a few kB, refused
    // from its header
    let bomb = png(&image::RgbImage::new(1200, 1000));
    assert!(bomb.len() < 100_000);
    check(
        Form::new().file("content", bomb).text("style_id", "wheat"),
        422,
        "declares 1200x1000",
    );
    // over --max-upload (1 MB): refused from Content-Length, before the body
    // is sent (the answer comes back after the headers alone)
    let r = raw(&s.url, "Content-Length: 1500000\r\n", &[]);
    assert!(r.starts_with("HTTP/1.1 413"), "{r}");
    assert!(r.contains("over the limit of 1000000 bytes"), "{r}");
    // and with no length given (chunked), once the body passes the cap
    let (_, body) = Form::new()
        .file("content", vec![7u8; 1_100_000])
        .text("style_id", "wheat")
        .encode();
    let r = raw(&s.url, "Transfer-Encoding: chunked\r\n", &body);
    assert!(r.starts_with("HTTP/1.1 413"), "{r}");
    assert!(r.contains("upload too large"), "{r}");
    // not a form at all
    let r = s.get_with("/v1/nothing", &[]);
    assert_eq!(r.status, 404);
    let r = s.post_with(
        "/v1/stylize",
        &Form::new(),
        &[("Content-Type", "text/plain")],
    );
    assert_eq!(r.status, 400);

    // the webcam refuses an unknown temporal mode before upgrading
    let ws = [
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    let r = s.get_with("/v1/webcam?style_id=wheat&temporal=wobble", &ws);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.error().contains("temporal `wobble`"));
    let r = s.get_with("/v1/webcam?style_id=nope", &ws);
    assert_eq!(r.status, 404);

    let m = s.get("/metrics").text();
    for status in ["400", "404", "413", "422"] {
        assert!(
            m.contains(&format!("route=\"/v1/stylize\",status=\"{status}\"")),
            "{m}"
        );
    }
    assert!(!s.stderr().contains("panicked"), "{}", s.stderr());
}

#[test]
fn a_token_guards_every_v1_call() {
    let dir = tempfile::tempdir().unwrap();
    let (g, _, _) = gallery(dir.path());
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    let s = Server::start(&[
        "--styles",
        g.to_str().unwrap(),
        "--style-size",
        "64",
        "--token-file",
        token.to_str().unwrap(),
    ]);
    let r = s.get("/v1/styles");
    assert_eq!(r.status, 401);
    assert!(r.error().contains("token"));
    let r = s.get_with("/v1/styles", &[("Authorization", "Bearer s3cret-tokeN")]);
    assert_eq!(r.status, 401);
    let r = s.get_with("/v1/styles", &[("Authorization", "s3cret-token")]);
    assert_eq!(r.status, 401);
    let r = s.get_with("/v1/styles", &[("Authorization", "Bearer s3cret-token")]);
    assert_eq!(r.status, 200);
    let form = Form::new()
        .file("content", png(&gradient(48, 48, 2)))
        .text("style_id", "wheat")
        .text("content_size", "32");
    assert_eq!(s.post("/v1/stylize", &form).status, 401);
    let r = s.post_with(
        "/v1/stylize",
        &form,
        &[("Authorization", "Bearer s3cret-token")],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // the page, health and metrics stay open; no CORS header without --cors
    let r = s.get_with("/healthz", &[("Origin", "https://elsewhere.example")]);
    assert_eq!(r.status, 200);
    assert!(r.text().contains("\"auth\":true"));
    assert_eq!(s.get("/").status, 200);
    let openapi: serde_json::Value = serde_json::from_slice(&s.get("/openapi.json").body).unwrap();
    assert!(openapi["paths"]["/v1/stylize"]["post"].is_object());
}

#[test]
fn cors_only_for_the_origin_given() {
    let s = Server::start(&["--cors", "https://app.example"]);
    let h = |origin: &str| {
        let mut r = ureq::get(format!("{}/healthz", s.url))
            .header("Origin", origin)
            .call()
            .unwrap();
        let v = r
            .headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap().to_owned());
        let _ = r.body_mut().read_to_vec();
        v
    };
    assert_eq!(
        h("https://app.example").as_deref(),
        Some("https://app.example")
    );
    // another origin is not granted (the header names only the allowed one)
    assert_ne!(
        h("https://evil.example").as_deref(),
        Some("https://evil.example")
    );
    let plain = Server::start(&[]);
    let r = ureq::get(format!("{}/healthz", plain.url))
        .header("Origin", "https://app.example")
        .call()
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

/// A multipart POST to /v1/stylize over a bare socket: `headers`, then
/// `body` (chunked when the headers say so; write errors ignored: the server
/// may answer and close early); what came back.
fn raw(url: &str, headers: &str, body: &[u8]) -> String {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://");
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let head = format!(
        "POST /v1/stylize HTTP/1.1\r\nHost: {addr}\r\n\
         Content-Type: multipart/form-data; boundary=adain-test-boundary-7d2f1c\r\n{headers}\r\n"
    );
    c.write_all(head.as_bytes()).unwrap();
    if !body.is_empty() {
        for chunk in body.chunks(64 << 10) {
            let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
            framed.extend_from_slice(chunk);
            framed.extend_from_slice(b"\r\n");
            if c.write_all(&framed).is_err() {
                break;
            }
        }
        let _ = c.write_all(b"0\r\n\r\n");
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    // the status line and the JSON body are enough
    while let Ok(n) = c.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&out);
        if text.contains("\r\n\r\n") && text.trim_end().ends_with('}') {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A request slow enough to overlap others: a 512 px content and style.
fn slow_form() -> Form {
    Form::new()
        .file("content", png(&gradient(512, 512, 1)))
        .file("style", png(&gradient(512, 512, 4)))
        .text("content_size", "512")
        .text("style_size", "512")
}

#[test]
fn a_full_queue_answers_503_with_retry_after() {
    let s = Server::start(&["--workers", "1", "--queue", "1"]);
    let url = s.url.clone();
    let s = std::sync::Arc::new(s);
    let handles: Vec<_> = (0..5)
        .map(|i| {
            let s = s.clone();
            std::thread::spawn(move || {
                // different styles: no request is a cache hit for another
                let form = slow_form().file("style", png(&gradient(256, 256, 10 + i)));
                s.post("/v1/stylize", &form)
            })
        })
        .collect();
    let replies: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let ok = replies.iter().filter(|r| r.status == 200).count();
    let busy: Vec<_> = replies.iter().filter(|r| r.status == 503).collect();
    assert_eq!(ok + busy.len(), 5, "only 200 and 503: {replies:?}");
    assert!(ok >= 1, "some requests must be served");
    assert!(
        !busy.is_empty(),
        "5 at once with 1 worker and a queue of 1: some must be refused"
    );
    for b in &busy {
        assert!(b.error().contains("queue is full"));
        let secs: u64 = b
            .retry_after
            .as_deref()
            .expect("Retry-After")
            .parse()
            .unwrap();
        assert!(secs >= 1);
    }
    let m = s.get("/metrics").text();
    assert!(
        m.contains(&format!(
            "route=\"/v1/stylize\",status=\"503\"}} {}",
            busy.len()
        )),
        "{m}"
    );
    drop(url);
}

#[test]
fn sigterm_lets_the_request_in_flight_finish_and_refuses_new_ones() {
    let mut s = Server::start(&["--workers", "1"]);
    let url = s.url.clone();
    let form = slow_form();
    let shared = std::sync::Arc::new(std::sync::Mutex::new(None));
    let out = shared.clone();
    let u = url.clone();
    let t = std::thread::spawn(move || {
        let (ct, body) = form.encode();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut r = agent
            .post(format!("{u}/v1/stylize"))
            .header("Content-Type", ct)
            .send(&body[..])
            .unwrap();
        let status = r.status().as_u16();
        let bytes = r
            .body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_vec()
            .unwrap();
        *out.lock().unwrap() = Some((status, bytes));
    });
    // wait until a worker runs it
    let running = || s.get("/metrics").text().contains("adain_jobs_running 1");
    let mut n = 0;
    while !running() {
        n += 1;
        assert!(n < 600, "the request never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    s.terminate();
    std::thread::sleep(std::time::Duration::from_millis(300));
    // no new connections while it finishes
    let refused = ureq::get(format!("{url}/healthz")).call();
    assert!(refused.is_err(), "a new request after SIGTERM was served");
    t.join().unwrap();
    let (status, bytes) = shared.lock().unwrap().take().unwrap();
    assert_eq!(status, 200);
    let img = image::load_from_memory(&bytes).unwrap();
    assert_eq!((img.width(), img.height()), (512, 512));
    let status = s.wait(60).expect("the server did not exit after SIGTERM");
    assert!(status.success(), "exit {status:?}: {}", s.stderr());
}

#[test]
fn a_request_past_the_timeout_gets_504_and_its_queued_job_is_skipped() {
    let s = std::sync::Arc::new(Server::start(&[
        "--workers",
        "1",
        "--queue",
        "8",
        "--timeout",
        "1",
    ]));
    // four 1024 px requests at once: whatever runs first, the ones behind it
    // wait for it and pass 1 s
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let s = s.clone();
            std::thread::spawn(move || {
                let form = Form::new()
                    .file("content", png(&gradient(1024, 1024, i)))
                    .file("style", png(&gradient(512, 512, 20 + i)))
                    .text("content_size", "1024");
                s.post("/v1/stylize", &form)
            })
        })
        .collect();
    let replies: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let late: Vec<_> = replies.iter().filter(|r| r.status == 504).collect();
    assert!(
        replies.iter().all(|r| r.status == 200 || r.status == 504),
        "{replies:?}"
    );
    assert!(!late.is_empty(), "no request passed --timeout 1");
    for r in &late {
        assert!(r.error().contains("timed out after 1 s"), "{}", r.error());
    }
    // the worker finishes what it had started; the jobs whose clients left are skipped
    let metrics = || s.get("/metrics").text();
    let t = std::time::Instant::now();
    while !(metrics().contains("adain_jobs_running 0") && metrics().contains("adain_queue_depth 0"))
    {
        assert!(t.elapsed().as_secs() < 120, "the pool did not drain");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let m = metrics();
    let skipped: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("adain_jobs_skipped_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(skipped >= 1, "{m}");
    assert_eq!(s.get("/healthz").status, 200);
}
