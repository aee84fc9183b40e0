//! HTTP/1.1 on the wire: request templates and an incremental response parser.
//!
//! The parser works on whatever bytes a connection has buffered so far and answers "need more",
//! "one complete response of N bytes" or an error; it never panics on what a server sends.

use std::borrow::Cow;
use std::fmt;

use base64::Engine as _;

/// Most response headers the parser accepts in one response.
pub const RESPONSE_HEADERS_MAX: usize = 64;

/// Longest chunk-size line (hex digits plus extensions) accepted in a chunked body.
const CHUNK_LINE_BYTES_MAX: usize = 1024;

/// Why a response could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// The status line or a header is malformed.
    Head(String),
    /// The body framing (Content-Length or chunked encoding) is malformed.
    Body(String),
    /// The response is larger than the configured limit.
    TooLarge {
        /// The limit that was exceeded.
        limit_bytes: usize,
    },
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Head(m) => write!(f, "bad response head: {m}"),
            ParseError::Body(m) => write!(f, "bad response body: {m}"),
            ParseError::TooLarge { limit_bytes } => {
                write!(f, "response larger than {limit_bytes} bytes")
            }
        }
    }
}

impl std::error::Error for ParseError {}

/// One parsed HTTP response. Borrowed from the connection's read buffer where possible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response<'a> {
    /// Status code.
    pub status: u16,
    /// The `ETag` header, quotes included, if any.
    pub etag: Option<&'a [u8]>,
    /// The `Location` header, if any (a leader hint on 307).
    pub location: Option<&'a [u8]>,
    /// The body, decoded from chunked encoding when needed.
    pub body: Cow<'a, [u8]>,
    /// The server announced it closes the connection after this response.
    pub close: bool,
}

/// Parses one response from the start of `buf`.
///
/// Returns `Ok(None)` when `buf` holds only part of a response, `Ok(Some((response, used)))`
/// when the first `used` bytes are a complete response. A response whose head plus body would
/// exceed `response_bytes_max` is an error, so a connection's buffer stays bounded.
pub fn parse_response(
    buf: &[u8],
    response_bytes_max: usize,
) -> Result<Option<(Response<'_>, usize)>, ParseError> {
    let mut headers = [httparse::EMPTY_HEADER; RESPONSE_HEADERS_MAX];
    let mut parsed = httparse::Response::new(&mut headers);
    let head_len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > response_bytes_max {
                return Err(ParseError::TooLarge {
                    limit_bytes: response_bytes_max,
                });
            }
            return Ok(None);
        }
        Err(e) => return Err(ParseError::Head(e.to_string())),
    };
    let status = parsed
        .code
        .ok_or_else(|| ParseError::Head("no status code".into()))?;
    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    let mut close = parsed.version == Some(0);
    let mut etag = None;
    let mut location = None;
    for h in parsed.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let text = std::str::from_utf8(h.value)
                .map_err(|_| ParseError::Head("content-length is not ASCII".into()))?;
            let n: usize = text
                .trim()
                .parse()
                .map_err(|_| ParseError::Head(format!("bad content-length {text:?}")))?;
            if content_length.is_some_and(|old| old != n) {
                return Err(ParseError::Head("conflicting content-length".into()));
            }
            content_length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = contains_token(h.value, b"chunked");
        } else if h.name.eq_ignore_ascii_case("connection") {
            if contains_token(h.value, b"close") {
                close = true;
            } else if contains_token(h.value, b"keep-alive") {
                close = false;
            }
        } else if h.name.eq_ignore_ascii_case("etag") {
            etag = Some(h.value);
        } else if h.name.eq_ignore_ascii_case("location") {
            location = Some(h.value);
        }
    }
    // 1xx, 204 and 304 never carry a body (RFC 9112 section 6.3).
    let bodiless = (100..200).contains(&status) || status == 204 || status == 304;
    let rest = buf.get(head_len..).unwrap_or(&[]);
    let (body, body_wire_len) = if bodiless {
        (Cow::Borrowed(&[][..]), 0)
    } else if chunked {
        match decode_chunked(rest, response_bytes_max.saturating_sub(head_len))? {
            Some((body, used)) => (Cow::Owned(body), used),
            None => return Ok(None),
        }
    } else if let Some(n) = content_length {
        if head_len.saturating_add(n) > response_bytes_max {
            return Err(ParseError::TooLarge {
                limit_bytes: response_bytes_max,
            });
        }
        match rest.get(..n) {
            Some(b) => (Cow::Borrowed(b), n),
            None => return Ok(None),
        }
    } else {
        // A body delimited by connection close cannot be pipelined; the harness insists on
        // framed responses.
        return Err(ParseError::Body(
            "response has neither content-length nor chunked encoding".into(),
        ));
    };
    Ok(Some((
        Response {
            status,
            etag,
            location,
            body,
            close,
        },
        head_len + body_wire_len,
    )))
}

fn contains_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// Decodes a chunked body at the start of `buf`: `Ok(None)` if incomplete, else the body and the
/// number of wire bytes it used (trailers included).
fn decode_chunked(
    buf: &[u8],
    body_bytes_max: usize,
) -> Result<Option<(Vec<u8>, usize)>, ParseError> {
    let mut body = Vec::new();
    let mut pos = 0usize;
    loop {
        let rest = buf.get(pos..).unwrap_or(&[]);
        let Some(eol) = find_crlf(rest) else {
            if rest.len() > CHUNK_LINE_BYTES_MAX {
                return Err(ParseError::Body("chunk size line too long".into()));
            }
            return Ok(None);
        };
        if eol > CHUNK_LINE_BYTES_MAX {
            return Err(ParseError::Body("chunk size line too long".into()));
        }
        let line = rest.get(..eol).unwrap_or(&[]);
        let digits = line
            .split(|&b| b == b';')
            .next()
            .unwrap_or(&[])
            .trim_ascii();
        let text = std::str::from_utf8(digits)
            .map_err(|_| ParseError::Body("chunk size is not ASCII".into()))?;
        let size = usize::from_str_radix(text, 16)
            .map_err(|_| ParseError::Body(format!("bad chunk size {text:?}")))?;
        pos += eol + 2;
        if size == 0 {
            // Trailers: header lines until an empty line.
            loop {
                let rest = buf.get(pos..).unwrap_or(&[]);
                let Some(eol) = find_crlf(rest) else {
                    if rest.len() > CHUNK_LINE_BYTES_MAX {
                        return Err(ParseError::Body("trailer line too long".into()));
                    }
                    return Ok(None);
                };
                pos += eol + 2;
                if eol == 0 {
                    return Ok(Some((body, pos)));
                }
            }
        }
        if body.len().saturating_add(size) > body_bytes_max {
            return Err(ParseError::TooLarge {
                limit_bytes: body_bytes_max,
            });
        }
        let end = pos.saturating_add(size);
        let Some(data) = buf.get(pos..end) else {
            return Ok(None);
        };
        match buf.get(end..end.saturating_add(2)) {
            None => return Ok(None),
            Some(b"\r\n") => {}
            Some(_) => {
                // Only one byte may have arrived so far.
                if buf.len() < end + 2 {
                    return Ok(None);
                }
                return Err(ParseError::Body("chunk not followed by CRLF".into()));
            }
        }
        body.extend_from_slice(data);
        pos = end + 2;
    }
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

/// Values a request template can refer to.
#[derive(Debug, Clone, Copy)]
pub struct TemplateVars<'a> {
    /// `Host` header value (`ip:port` of the current target).
    pub host: &'a str,
    /// `{key}`: the operation's key.
    pub key: &'a [u8],
    /// `{value}`: the operation's value.
    pub value: &'a [u8],
    /// `{seq}`: the connection's request sequence number.
    pub seq: u64,
    /// `{conn}`: the connection's global index.
    pub conn: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(Vec<u8>),
    Key,
    KeyB64,
    Value,
    ValueB64,
    Seq,
    Conn,
}

/// Most bytes a rendered request body may have.
pub const TEMPLATE_BODY_BYTES_MAX: usize = 64 << 20;

/// A request with placeholders: `{key}`, `{key_b64}`, `{value}`, `{value_b64}`, `{seq}`,
/// `{conn}` in the path, header values and body. `{{` and `}}` are literal braces.
///
/// Rendering adds `Host` (unless given) and `Content-Length` (when there is a body or the
/// method usually has one).
#[derive(Debug, Clone)]
pub struct RequestTemplate {
    method: String,
    path: Vec<Piece>,
    headers: Vec<(String, Vec<Piece>)>,
    body: Option<Vec<Piece>>,
    has_host: bool,
}

/// A template that could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// An unknown `{name}` or an unclosed brace.
    #[error("bad placeholder in {0:?}: {1}")]
    Placeholder(String, String),
    /// The method is not a token.
    #[error("bad method {0:?}")]
    Method(String),
    /// A header is not `Name: value` or contains CR/LF.
    #[error("bad header {0:?}")]
    Header(String),
    /// The path does not start with `/` or contains whitespace.
    #[error("bad path {0:?}")]
    Path(String),
}

impl RequestTemplate {
    /// Compiles a template. `headers` are `Name: value` strings.
    pub fn new(
        method: &str,
        path: &str,
        headers: &[String],
        body: Option<&str>,
    ) -> Result<Self, TemplateError> {
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(TemplateError::Method(method.into()));
        }
        if !path.starts_with('/') || path.bytes().any(|b| b.is_ascii_whitespace()) {
            return Err(TemplateError::Path(path.into()));
        }
        let mut compiled_headers = Vec::with_capacity(headers.len());
        let mut has_host = false;
        for h in headers {
            let (name, value) = h
                .split_once(':')
                .ok_or_else(|| TemplateError::Header(h.clone()))?;
            let name = name.trim();
            if name.is_empty()
                || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                || value.contains(['\r', '\n'])
            {
                return Err(TemplateError::Header(h.clone()));
            }
            if name.eq_ignore_ascii_case("content-length") {
                // Computed per request from the rendered body.
                continue;
            }
            has_host |= name.eq_ignore_ascii_case("host");
            compiled_headers.push((name.to_string(), compile(value.trim())?));
        }
        Ok(Self {
            method: method.into(),
            path: compile(path)?,
            headers: compiled_headers,
            body: body.map(compile).transpose()?,
            has_host,
        })
    }

    /// Appends the rendered request to `out`. `scratch` is reused to render the body.
    pub fn render(&self, vars: &TemplateVars<'_>, out: &mut Vec<u8>, scratch: &mut Vec<u8>) {
        out.extend_from_slice(self.method.as_bytes());
        out.push(b' ');
        render_pieces(&self.path, vars, out);
        out.extend_from_slice(b" HTTP/1.1\r\n");
        if !self.has_host {
            out.extend_from_slice(b"Host: ");
            out.extend_from_slice(vars.host.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            render_pieces(value, vars, out);
            out.extend_from_slice(b"\r\n");
        }
        scratch.clear();
        let needs_length = matches!(self.method.as_str(), "POST" | "PUT" | "PATCH");
        if let Some(body) = &self.body {
            render_pieces(body, vars, scratch);
            scratch.truncate(TEMPLATE_BODY_BYTES_MAX);
        }
        if self.body.is_some() || needs_length {
            write_content_length(out, scratch.len());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(scratch);
    }
}

/// Appends `Content-Length: n\r\n`.
pub fn write_content_length(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(b"Content-Length: ");
    out.extend_from_slice(n.to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn compile(text: &str) -> Result<Vec<Piece>, TemplateError> {
    let mut pieces = Vec::new();
    let mut literal = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(['{', '}']) {
        literal.extend_from_slice(&rest.as_bytes()[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("{{") {
            literal.push(b'{');
            rest = after;
            continue;
        }
        if let Some(after) = tail.strip_prefix("}}") {
            literal.push(b'}');
            rest = after;
            continue;
        }
        if tail.starts_with('}') {
            return Err(TemplateError::Placeholder(text.into(), "stray '}'".into()));
        }
        let close = tail
            .find('}')
            .ok_or_else(|| TemplateError::Placeholder(text.into(), "unclosed '{'".into()))?;
        let piece = match &tail[1..close] {
            "key" => Piece::Key,
            "key_b64" => Piece::KeyB64,
            "value" => Piece::Value,
            "value_b64" => Piece::ValueB64,
            "seq" => Piece::Seq,
            "conn" => Piece::Conn,
            other => {
                return Err(TemplateError::Placeholder(
                    text.into(),
                    format!("unknown placeholder {{{other}}}"),
                ))
            }
        };
        if !literal.is_empty() {
            pieces.push(Piece::Literal(std::mem::take(&mut literal)));
        }
        pieces.push(piece);
        rest = &tail[close + 1..];
    }
    literal.extend_from_slice(rest.as_bytes());
    if !literal.is_empty() {
        pieces.push(Piece::Literal(literal));
    }
    Ok(pieces)
}

fn render_pieces(pieces: &[Piece], vars: &TemplateVars<'_>, out: &mut Vec<u8>) {
    let b64 = base64::engine::general_purpose::STANDARD;
    for p in pieces {
        match p {
            Piece::Literal(l) => out.extend_from_slice(l),
            Piece::Key => out.extend_from_slice(vars.key),
            Piece::KeyB64 => out.extend_from_slice(b64.encode(vars.key).as_bytes()),
            Piece::Value => out.extend_from_slice(vars.value),
            Piece::ValueB64 => out.extend_from_slice(b64.encode(vars.value).as_bytes()),
            Piece::Seq => out.extend_from_slice(vars.seq.to_string().as_bytes()),
            Piece::Conn => out.extend_from_slice(vars.conn.to_string().as_bytes()),
        }
    }
}

/// Parses a `Location` header value into a `host:port` authority, if it is an absolute
/// `http://` URL.
pub fn location_authority(location: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(location).ok()?.trim();
    let rest = text.strip_prefix("http://")?;
    let end = rest.find('/').unwrap_or(rest.len());
    let authority = rest.get(..end)?;
    (!authority.is_empty()).then_some(authority)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>() -> TemplateVars<'a> {
        TemplateVars {
            host: "127.0.0.1:80",
            key: b"k1",
            value: b"v",
            seq: 7,
            conn: 3,
        }
    }

    #[test]
    fn renders_placeholders_and_lengths() {
        let t = RequestTemplate::new(
            "POST",
            "/v3/kv/put?c={conn}",
            &["X-Seq: {seq}".into()],
            Some(r#"{{"key":"{key_b64}","value":"{value_b64}"}}"#),
        )
        .unwrap();
        let mut out = Vec::new();
        let mut scratch = Vec::new();
        t.render(&vars(), &mut out, &mut scratch);
        let body = r#"{"key":"azE=","value":"dg=="}"#;
        let want = format!(
            "POST /v3/kv/put?c=3 HTTP/1.1\r\nHost: 127.0.0.1:80\r\nX-Seq: 7\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        assert_eq!(String::from_utf8(out).unwrap(), want);
    }

    #[test]
    fn rejects_bad_templates() {
        assert!(RequestTemplate::new("GET", "/{nope}", &[], None).is_err());
        assert!(RequestTemplate::new("GET", "/{key", &[], None).is_err());
        assert!(RequestTemplate::new("get", "/", &[], None).is_err());
        assert!(RequestTemplate::new("GET", "nope", &[], None).is_err());
        assert!(RequestTemplate::new("GET", "/", &["NoColon".into()], None).is_err());
    }

    #[test]
    fn parses_content_length_and_partial() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nETag: \"5\"\r\n\r\nabcHTTP/1.1";
        let (resp, used) = parse_response(r, 1 << 20).unwrap().unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(&*resp.body, b"abc");
        assert_eq!(resp.etag, Some(&b"\"5\""[..]));
        assert_eq!(used, r.len() - "HTTP/1.1".len());
        for cut in 0..used {
            assert_eq!(
                parse_response(&r[..cut], 1 << 20).unwrap(),
                None,
                "cut {cut}"
            );
        }
    }

    #[test]
    fn parses_chunked_at_every_split() {
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: 1\r\n\r\n";
        let (resp, used) = parse_response(r, 1 << 20).unwrap().unwrap();
        assert_eq!(&*resp.body, b"abcde");
        assert_eq!(used, r.len());
        for cut in 0..used {
            assert_eq!(
                parse_response(&r[..cut], 1 << 20).unwrap(),
                None,
                "cut {cut}"
            );
        }
    }

    #[test]
    fn rejects_garbage_and_oversize() {
        assert!(parse_response(b"garbage\r\n\r\n", 1024).is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n\r\n", 1024).is_err());
        let big = b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n";
        assert!(matches!(
            parse_response(big, 1024),
            Err(ParseError::TooLarge { .. })
        ));
        let bad_chunk = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert!(parse_response(bad_chunk, 1024).is_err());
    }

    #[test]
    fn bodiless_statuses_and_close() {
        let r = b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n";
        let (resp, used) = parse_response(r, 1024).unwrap().unwrap();
        assert_eq!((resp.status, used, resp.close), (204, r.len(), true));
    }

    #[test]
    fn location_authority_extracts_host_port() {
        assert_eq!(
            location_authority(b"http://127.0.0.1:8080/kv/a"),
            Some("127.0.0.1:8080")
        );
        assert_eq!(location_authority(b"/kv/a"), None);
    }
}
