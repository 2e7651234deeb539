//! Starting the real `adain serve` on an ephemeral port, and a small HTTP
//! client for it (multipart bodies built by hand).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The real weights that ship in weights/.
pub fn weights() -> (PathBuf, PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    (super::vgg_path(), root.join("weights/decoder.safetensors"))
}

/// A running server; killed when dropped.
pub struct Server {
    pub child: Child,
    pub url: String,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    /// `adain serve --port 0` with the shipped weights and `args`; waits for
    /// the address it prints.
    pub fn start(args: &[&str]) -> Server {
        Server::start_env(args, &[])
    }

    /// [`Server::start`] with environment variables (e.g. `RUST_LOG`).
    pub fn start_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("server.log");
        let (vgg, decoder) = weights();
        let mut child = Command::new(env!("CARGO_BIN_EXE_adain"))
            .arg("serve")
            .args(["--port", "0", "--vgg"])
            .arg(&vgg)
            .arg("--decoder")
            .arg(&decoder)
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if let Some(u) = line.strip_prefix("listening on ") {
                    let _ = tx.send(u.trim().to_owned());
                }
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(u) => u,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "adain serve printed no address: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        };
        Server {
            child,
            url,
            log,
            _dir: dir,
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `host:port`, for bare sockets.
    pub fn addr(&self) -> String {
        self.url.trim_start_matches("http://").to_owned()
    }

    /// The server's resident memory now and at its peak (VmRSS, VmHWM), in MB.
    pub fn memory_mb(&self) -> (f64, f64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("/proc/PID/status");
        let kb = |key: &str| -> f64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
                .unwrap_or_else(|| panic!("no {key} in /proc/PID/status"))
        };
        (kb("VmRSS:") / 1024.0, kb("VmHWM:") / 1024.0)
    }

    /// One unlabelled value from `/metrics`.
    pub fn metric(&self, name: &str) -> u64 {
        let m = self.get("/metrics").text();
        m.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in /metrics: {m}"))
            .trim()
            .parse()
            .unwrap()
    }

    /// Fails the test if the server's log shows a panic.
    pub fn assert_no_panic(&self) {
        let log = self.stderr();
        assert!(!log.contains("panicked"), "the server panicked: {log}");
    }

    pub fn get(&self, path: &str) -> Reply {
        self.get_with(path, &[])
    }

    pub fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut r = agent().get(format!("{}{path}", self.url));
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        Reply::from(r.call())
    }

    pub fn post(&self, path: &str, form: &Form) -> Reply {
        self.post_with(path, form, &[])
    }

    pub fn post_with(&self, path: &str, form: &Form, headers: &[(&str, &str)]) -> Reply {
        let (ct, body) = form.encode();
        let mut r = agent()
            .post(format!("{}{path}", self.url))
            .header("Content-Type", ct);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        Reply::from(r.send(&body[..]))
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
    }

    /// Waits up to `secs` for the process to exit; its status.
    pub fn wait(&mut self, secs: u64) -> Option<std::process::ExitStatus> {
        for _ in 0..secs * 20 {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(300)))
        .build()
        .into()
}

/// What came back.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub retry_after: Option<String>,
    pub body: Vec<u8>,
}

impl Reply {
    fn from(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Reply {
        let mut r = r.expect("HTTP request failed");
        let h = |k: &str| {
            r.headers()
                .get(k)
                .map(|v| v.to_str().unwrap_or("").to_owned())
        };
        let content_type = h("content-type").unwrap_or_default();
        let retry_after = h("retry-after");
        let status = r.status().as_u16();
        let mut body = Vec::new();
        r.body_mut()
            .with_config()
            .limit(1 << 30)
            .reader()
            .read_to_end(&mut body)
            .unwrap();
        Reply {
            status,
            content_type,
            retry_after,
            body,
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `error` of a JSON error body.
    pub fn error(&self) -> String {
        let v: serde_json::Value = serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON ({}): {}", self.status, self.text()));
        v["error"].as_str().expect("an `error` string").to_owned()
    }

    pub fn image(&self) -> image::RgbImage {
        image::load_from_memory(&self.body)
            .unwrap_or_else(|e| panic!("not an image ({e}): {} {}", self.status, self.text()))
            .to_rgb8()
    }
}

/// A multipart form: (name, optional file name, bytes) in order.
#[derive(Default, Clone)]
pub struct Form {
    parts: Vec<(String, Option<String>, Vec<u8>)>,
}

impl Form {
    pub fn new() -> Form {
        Form::default()
    }

    pub fn text(mut self, name: &str, value: &str) -> Form {
        self.parts
            .push((name.into(), None, value.as_bytes().to_vec()));
        self
    }

    pub fn file(mut self, name: &str, bytes: Vec<u8>) -> Form {
        self.parts
            .push((name.into(), Some(format!("{name}.bin")), bytes));
        self
    }

    pub fn encode(&self) -> (String, Vec<u8>) {
        let boundary = BOUNDARY;
        let mut body = Vec::new();
        for (name, file, bytes) in &self.parts {
            body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
            match file {
                Some(f) => body.extend_from_slice(
                    format!(
                        "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\n\
                         Content-Type: application/octet-stream\r\n\r\n"
                    )
                    .as_bytes(),
                ),
                None => body.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
                ),
            }
            body.extend_from_slice(bytes);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        (format!("multipart/form-data; boundary={boundary}"), body)
    }
}

/// The multipart boundary of [`Form::encode`] (hand-built uploads use it too).
pub const BOUNDARY: &str = "adain-test-boundary-7d2f1c";

/// `img` encoded as PNG.
pub fn png(img: &image::RgbImage) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}
