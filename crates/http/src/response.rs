//! Responses and their encoding.

use std::borrow::Cow;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;

use crate::stream::BodyStream;

/// A header name set by a handler (any case; sent as given).
pub type HeaderName = Cow<'static, str>;
/// A header value set by a handler.
pub type HeaderValue = Cow<'static, str>;

/// What a handler returns. The server adds `content-length` and, when closing,
/// `connection: close`; handler headers with those names (or `transfer-encoding`) are dropped,
/// and so is any header whose name or value could break the framing (CR, LF, NUL, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code (100..=999; anything else is sent as 500).
    pub status: u16,
    /// Extra headers, in order.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Body; for HEAD requests it is not sent but its length is advertised.
    pub body: Bytes,
    /// A body sent as it is produced (chunked) instead of `body`; see [`crate::stream`].
    pub stream: Option<BodyStream>,
}

/// The one error body format of the API:
/// `{"error":{"status":<u16>,"kind":"<snake_case_kind>","message":"<human text>"}}`.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    /// The error.
    pub error: ErrorDetail<'a>,
}

/// Inside [`ErrorBody`].
#[derive(Debug, Serialize)]
pub struct ErrorDetail<'a> {
    /// HTTP status, repeated for clients that only keep the body.
    pub status: u16,
    /// Stable snake_case kind for programs.
    pub kind: &'a str,
    /// Human-readable text.
    pub message: &'a str,
}

const JSON: &str = "application/json";

impl Response {
    /// A response with `status` and no body.
    pub fn empty(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Bytes::new(),
            stream: None,
        }
    }

    /// `value` as JSON. A value that fails to serialize becomes a 500 in the error format.
    pub fn json(status: u16, value: &impl Serialize) -> Response {
        match serde_json::to_vec(value) {
            Ok(body) => Response {
                status,
                headers: vec![(Cow::Borrowed("content-type"), Cow::Borrowed(JSON))],
                body: Bytes::from(body),
                stream: None,
            },
            Err(_) => Response::error(500, "internal", "response could not be serialized"),
        }
    }

    /// A `text/plain; charset=utf-8` response.
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            headers: vec![(
                Cow::Borrowed("content-type"),
                Cow::Borrowed("text/plain; charset=utf-8"),
            )],
            body: Bytes::from(body.into()),
            stream: None,
        }
    }

    /// A response with raw bytes and a content type.
    pub fn bytes(status: u16, content_type: &'static str, body: Bytes) -> Response {
        Response {
            status,
            headers: vec![(Cow::Borrowed("content-type"), Cow::Borrowed(content_type))],
            body,
            stream: None,
        }
    }

    /// An error in the API's one error format (see [`ErrorBody`]). `kind` should be snake_case.
    pub fn error(status: u16, kind: &str, message: &str) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                status,
                kind,
                message,
            },
        };
        // Serializing three plain fields cannot fail; fall back to an empty body regardless.
        let body = serde_json::to_vec(&body).unwrap_or_default();
        Response {
            status,
            headers: vec![(Cow::Borrowed("content-type"), Cow::Borrowed(JSON))],
            body: Bytes::from(body),
            stream: None,
        }
    }

    /// A streamed body (`transfer-encoding: chunked`); the connection closes after it.
    pub fn streamed(status: u16, content_type: &'static str, stream: BodyStream) -> Response {
        Response {
            status,
            headers: vec![(Cow::Borrowed("content-type"), Cow::Borrowed(content_type))],
            body: Bytes::new(),
            stream: Some(stream),
        }
    }

    /// Adds a header (builder style).
    pub fn with_header(
        mut self,
        name: impl Into<HeaderName>,
        value: impl Into<HeaderValue>,
    ) -> Response {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// The canonical reason phrase, or "" for unknown codes (the phrase is optional on the wire).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        425 => "Too Early",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// Statuses that never carry a body (RFC 9110 §6.4.1 / §15.3.5 / §15.4.5).
fn bodyless(status: u16) -> bool {
    (100..200).contains(&status) || status == 204 || status == 304
}

fn header_ok(name: &str, value: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        && value
            .bytes()
            .all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
        && !name.eq_ignore_ascii_case("content-length")
        && !name.eq_ignore_ascii_case("transfer-encoding")
        && !name.eq_ignore_ascii_case("connection")
}

fn put_decimal(out: &mut BytesMut, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&digits[i..]);
}

/// Bodies at least this large are written straight from the response instead of being
/// copied into the output buffer.
pub const BODY_COPY_BYTES_MAX: usize = 16 * 1024;

/// What a response says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionHeader {
    /// Persistent by default (HTTP/1.1): nothing to say.
    KeepAlive,
    /// Persistent, announced with `connection: keep-alive` (HTTP/1.0 clients assume close).
    KeepAliveAnnounced,
    /// `connection: close`; the server closes after this response.
    Close,
}

/// Encodes the status line and headers of `resp` into `out`; appends the body too unless
/// `head_only` or the body is at least [`BODY_COPY_BYTES_MAX`]. Returns whether the body
/// still has to be written by the caller.
///
/// Interim (1xx) and out-of-range statuses from handlers are sent as 500: an interim status
/// would leave the client waiting for a final response that never comes.
pub fn encode_response(
    out: &mut BytesMut,
    resp: &Response,
    head_only: bool,
    connection: ConnectionHeader,
) -> bool {
    let status = if (200..=999).contains(&resp.status) {
        resp.status
    } else {
        500
    };
    let reason = reason_phrase(status);
    out.reserve(64 + reason.len() + resp.body.len().min(BODY_COPY_BYTES_MAX));
    out.put_slice(b"HTTP/1.1 ");
    put_decimal(out, u64::from(status));
    out.put_u8(b' ');
    out.put_slice(reason.as_bytes());
    out.put_slice(b"\r\n");
    for (name, value) in &resp.headers {
        if header_ok(name, value) {
            out.put_slice(name.as_bytes());
            out.put_slice(b": ");
            out.put_slice(value.as_bytes());
            out.put_slice(b"\r\n");
        }
    }
    let has_body = !bodyless(status);
    if resp.stream.is_some() {
        // Streamed: chunked, and the connection's last response.
        out.put_slice(b"transfer-encoding: chunked\r\nconnection: close\r\n\r\n");
        return false;
    }
    if has_body {
        out.put_slice(b"content-length: ");
        put_decimal(out, resp.body.len() as u64);
        out.put_slice(b"\r\n");
    }
    match connection {
        ConnectionHeader::KeepAlive => {}
        ConnectionHeader::KeepAliveAnnounced => out.put_slice(b"connection: keep-alive\r\n"),
        ConnectionHeader::Close => out.put_slice(b"connection: close\r\n"),
    }
    out.put_slice(b"\r\n");
    if !has_body || head_only || resp.body.is_empty() {
        return false;
    }
    if resp.body.len() >= BODY_COPY_BYTES_MAX {
        return true;
    }
    out.put_slice(&resp.body);
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(resp: &Response, head_only: bool, keep_alive: bool) -> String {
        let mut out = BytesMut::new();
        let conn = if keep_alive {
            ConnectionHeader::KeepAlive
        } else {
            ConnectionHeader::Close
        };
        assert!(!encode_response(&mut out, resp, head_only, conn));
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn error_body_format() {
        let r = Response::error(404, "not_found", "no \"route\"");
        assert_eq!(
            &r.body[..],
            br#"{"error":{"status":404,"kind":"not_found","message":"no \"route\""}}"#
        );
    }

    #[test]
    fn encodes_length_and_close() {
        let s = encode(&Response::text(200, "hi"), false, false);
        assert_eq!(
            s,
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 2\r\nconnection: close\r\n\r\nhi"
        );
    }

    #[test]
    fn head_keeps_length_but_drops_body() {
        let s = encode(&Response::text(200, "hello"), true, true);
        assert!(s.ends_with("content-length: 5\r\n\r\n"), "{s}");
    }

    #[test]
    fn unsafe_headers_are_dropped() {
        let r = Response::empty(204)
            .with_header("x-ok", "1")
            .with_header("x-bad", "a\r\nSet-Cookie: x")
            .with_header("Content-Length", "99")
            .with_header("bad name", "v");
        let s = encode(&r, false, true);
        assert_eq!(s, "HTTP/1.1 204 No Content\r\nx-ok: 1\r\n\r\n");
    }

    #[test]
    fn interim_statuses_from_handlers_become_500() {
        let s = encode(&Response::empty(101), false, true);
        assert!(s.starts_with("HTTP/1.1 500 "), "{s}");
    }

    #[test]
    fn large_bodies_are_left_to_the_caller() {
        let r = Response::bytes(200, "x/y", Bytes::from(vec![7u8; BODY_COPY_BYTES_MAX]));
        let mut out = BytesMut::new();
        assert!(encode_response(
            &mut out,
            &r,
            false,
            ConnectionHeader::KeepAlive
        ));
        assert!(out.ends_with(b"\r\n\r\n"));
    }
}
