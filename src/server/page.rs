//! The web page at `/` and the API description at `/openapi.json`, built into
//! the binary (no CDN, no network: the page needs only this server). A
//! content security policy keeps the page to its own script and this origin.

use axum::http::header;
use axum::response::IntoResponse;

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/app.css");
const OPENAPI: &str = include_str!("assets/openapi.json");

const CSP: &str = "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob: mediastream:; \
                   connect-src 'self' blob: ws: wss:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

pub async fn index() -> impl IntoResponse {
    asset("text/html; charset=utf-8", INDEX)
}

pub async fn script() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

pub async fn style() -> impl IntoResponse {
    asset("text/css; charset=utf-8", STYLE)
}

pub async fn openapi() -> impl IntoResponse {
    asset("application/json", OPENAPI)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_openapi_document_is_json_and_lists_every_route() {
        let v: serde_json::Value = serde_json::from_str(super::OPENAPI).unwrap();
        let paths = v["paths"].as_object().unwrap();
        for p in [
            "/v1/stylize",
            "/v1/styles",
            "/v1/styles/{id}/thumbnail",
            "/v1/webcam",
            "/healthz",
            "/metrics",
        ] {
            assert!(paths.contains_key(p), "{p} missing");
        }
    }

    #[test]
    fn the_page_needs_nothing_from_elsewhere() {
        for text in [super::INDEX, super::SCRIPT, super::STYLE] {
            assert!(!text.contains("http://") && !text.contains("https://"));
        }
    }
}
