//! The server's error type: what went wrong, as the status code a client can
//! act on (a bad form is a 400, a picture that cannot be read a 422, a full
//! queue a 503), written as `{"error": "..."}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

/// One failed request; the message is one line naming the problem.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A missing field or a bad value (400).
    #[error("{0}")]
    BadRequest(String),
    /// No token, or the wrong one (401).
    #[error("missing or wrong bearer token")]
    Unauthorized,
    /// An unknown style id or path (404).
    #[error("{0}")]
    NotFound(String),
    /// The upload passes `--max-upload` (413).
    #[error("{0}")]
    TooLarge(String),
    /// A picture that cannot be decoded, is too small, or declares more pixels
    /// than `--max-pixels` (422).
    #[error("{0}")]
    BadImage(String),
    /// Every worker busy and the queue full (503), with the seconds to wait.
    #[error("server busy: the queue is full, retry in {0} s")]
    Busy(u64),
    /// The client did not send its form within `--client-timeout` (408).
    #[error("the request body did not arrive within {0} s (--client-timeout)")]
    ClientTimeout(u64),
    /// The request passed `--timeout` (504).
    #[error("request timed out after {0} s")]
    Timeout(u64),
    /// The uploads being read already hold their whole budget (503).
    #[error("server busy: too many uploads in progress, retry in 1 s")]
    Uploads,
    /// Shutting down: no new work (503).
    #[error("server is shutting down")]
    ShuttingDown,
    /// Anything else: the server's fault (500).
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BadImage(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Busy(_) | ApiError::Uploads | ApiError::ShuttingDown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::ClientTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// An anyhow chain as one line, as the binaries print it.
    pub fn line(e: &anyhow::Error) -> String {
        format!("{e:#}").replace('\n', " ")
    }

    pub fn bad_request(e: anyhow::Error) -> Self {
        ApiError::BadRequest(Self::line(&e))
    }

    /// 422, except for a size field that asked for too large a picture (400).
    pub fn bad_image(e: anyhow::Error) -> Self {
        if is_size_field(&e) {
            return Self::bad_request(e);
        }
        ApiError::BadImage(Self::line(&e))
    }

    /// An engine error: a 400 where the client's size field asked for too
    /// large a picture, else the server's fault (500).
    pub fn engine(e: anyhow::Error) -> Self {
        if is_size_field(&e) {
            Self::bad_request(e)
        } else {
            Self::internal(e)
        }
    }

    pub fn internal(e: anyhow::Error) -> Self {
        ApiError::Internal(Self::line(&e))
    }
}

/// A size field of the client's that asked for too large a picture.
fn is_size_field(e: &anyhow::Error) -> bool {
    e.downcast_ref::<crate::engine::WorkingSizeTooLarge>()
        .is_some()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!("{status}: {self}");
        }
        let mut r = (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response();
        let h = r.headers_mut();
        match self {
            ApiError::Busy(secs) => {
                h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            ApiError::ShuttingDown => {
                h.insert(header::RETRY_AFTER, HeaderValue::from(5u64));
            }
            ApiError::Uploads => {
                h.insert(header::RETRY_AFTER, HeaderValue::from(1u64));
                // the body is not read: this connection is done
                h.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            ApiError::ClientTimeout(_) => {
                // the rest of the body is not read: this connection is done
                h.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            ApiError::Unauthorized => {
                h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        r
    }
}
