//! Sans-I/O request decoder: bytes in, requests (or one final error) out.
//!
//! Framing rules are strict on purpose: whenever two parties could disagree about where a
//! request ends (request smuggling), the decoder refuses the request and the connection is
//! closed. Once it has returned an error, the decoder keeps returning it.

use std::mem::MaybeUninit;
use std::ops::Range;

use bytes::{Buf, BytesMut};

use crate::limits::{Limits, HEADER_COUNT_CAP};
use crate::request::{HeaderSpan, Method, Request, Version};

/// Bytes a chunk-size line (size + extensions + CRLF) may take.
pub const CHUNK_LINE_BYTES_MAX: usize = 4096;

/// Room for the method, spaces, version and CRLF around the request target when deciding
/// that an unterminated request line is a too-long URI.
const REQUEST_LINE_OVERHEAD_BYTES: usize = 32;

/// A request the server refuses; the response uses the API error format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    /// Response status.
    pub status: u16,
    /// Stable snake_case error kind, used in the error body and as a metrics label.
    pub kind: &'static str,
    /// Human-readable explanation.
    pub message: &'static str,
    /// Whether the connection must be closed after the response (framing is no longer known).
    pub close: bool,
}

impl HttpError {
    const fn fatal(status: u16, kind: &'static str, message: &'static str) -> HttpError {
        HttpError {
            status,
            kind,
            message,
            close: true,
        }
    }
}

/// One step of decoding.
#[derive(Debug)]
pub enum Decoded {
    /// A complete request; the decoder is ready for the next one (pipelining).
    Request(Request),
    /// The head asked for `Expect: 100-continue` and its body has not fully arrived: send
    /// `HTTP/1.1 100 Continue` now, then keep feeding bytes. Returned at most once per request.
    ExpectContinue,
    /// More bytes are needed.
    NeedMore,
    /// The request is refused. Answer with this error and close the connection.
    Error(HttpError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Size,
    Data { remaining: u64 },
    DataEnd,
    Trailers { bytes: usize, count: usize },
}

#[derive(Debug)]
enum State {
    Head,
    Body { remaining: usize },
    Chunked(ChunkState),
    Failed(HttpError),
}

/// Where the decoder is inside the current request; the connection uses it to pick a timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Between requests or inside a head.
    Head,
    /// The head is complete and the body is being received.
    Body,
    /// The decoder returned an error.
    Failed,
}

/// Incremental HTTP/1.1 request decoder. Feed it the connection's read buffer; it consumes
/// exactly the bytes of each request it returns and leaves pipelined bytes in place.
#[derive(Debug)]
pub struct RequestDecoder {
    limits: Limits,
    state: State,
    pending: Option<Request>,
    chunked_body: BytesMut,
    continue_pending: bool,
}

mod err {
    use super::HttpError;
    pub const HEAD_TOO_LARGE: HttpError = HttpError::fatal(
        431,
        "header_too_large",
        "request header section is too large",
    );
    pub const TOO_MANY_HEADERS: HttpError = HttpError::fatal(
        431,
        "too_many_headers",
        "request has too many header fields",
    );
    pub const URI_TOO_LONG: HttpError =
        HttpError::fatal(414, "uri_too_long", "request target is too long");
    pub const BODY_TOO_LARGE: HttpError =
        HttpError::fatal(413, "body_too_large", "request body is too large");
    pub const BAD_VERSION: HttpError = HttpError::fatal(
        505,
        "http_version_not_supported",
        "only HTTP/1.0 and HTTP/1.1 are supported",
    );
    pub const BAD_REQUEST_LINE: HttpError =
        HttpError::fatal(400, "bad_request_line", "malformed request line");
    pub const BAD_HEADER: HttpError = HttpError::fatal(400, "bad_header", "malformed header field");
    pub const OBS_FOLD: HttpError = HttpError::fatal(
        400,
        "obs_fold",
        "obsolete header line folding is not accepted",
    );
    pub const BAD_TARGET: HttpError =
        HttpError::fatal(400, "bad_target", "malformed request target");
    pub const METHOD: HttpError = HttpError::fatal(
        501,
        "method_not_implemented",
        "request method is not supported",
    );
    pub const TE_UNSUPPORTED: HttpError = HttpError::fatal(
        501,
        "unsupported_transfer_encoding",
        "only Transfer-Encoding: chunked is supported",
    );
    pub const CL_AND_TE: HttpError = HttpError::fatal(
        400,
        "conflicting_framing",
        "Content-Length and Transfer-Encoding together are not accepted",
    );
    pub const TWO_CL: HttpError = HttpError::fatal(
        400,
        "conflicting_framing",
        "more than one Content-Length is not accepted",
    );
    pub const TWO_TE: HttpError = HttpError::fatal(
        400,
        "conflicting_framing",
        "more than one Transfer-Encoding is not accepted",
    );
    pub const TE_HTTP10: HttpError = HttpError::fatal(
        400,
        "conflicting_framing",
        "Transfer-Encoding is not accepted in HTTP/1.0",
    );
    pub const BAD_CL: HttpError =
        HttpError::fatal(400, "bad_content_length", "malformed Content-Length");
    pub const NO_HOST: HttpError = HttpError::fatal(
        400,
        "missing_host",
        "HTTP/1.1 request without exactly one Host header",
    );
    pub const EXPECT: HttpError = HttpError::fatal(
        417,
        "expectation_failed",
        "only Expect: 100-continue is supported",
    );
    pub const BAD_CHUNK: HttpError = HttpError::fatal(400, "bad_chunk", "malformed chunked body");
    pub const TRAILERS_TOO_LARGE: HttpError = HttpError::fatal(
        431,
        "header_too_large",
        "chunked trailer section is too large",
    );
}

/// What the head says about framing and the connection.
struct HeadFacts {
    content_length: Option<u64>,
    chunked: bool,
    keep_alive: bool,
    expect_continue: bool,
}

impl RequestDecoder {
    /// A decoder enforcing the size limits in `limits` (timeouts are the connection's job).
    pub fn new(limits: &Limits) -> RequestDecoder {
        RequestDecoder {
            limits: limits.clone(),
            state: State::Head,
            pending: None,
            chunked_body: BytesMut::new(),
            continue_pending: false,
        }
    }

    /// Where the decoder is in the current request.
    pub fn phase(&self) -> Phase {
        match self.state {
            State::Head => Phase::Head,
            State::Body { .. } | State::Chunked(_) => Phase::Body,
            State::Failed(_) => Phase::Failed,
        }
    }

    /// Bytes the current fixed-length body still needs beyond what `buffered` holds; lets the
    /// connection size its next read. 0 when unknown.
    pub fn body_bytes_wanted(&self, buffered: usize) -> usize {
        match self.state {
            State::Body { remaining } => remaining.saturating_sub(buffered),
            _ => 0,
        }
    }

    /// Hands out a request whose head is complete while its body is still outstanding, and
    /// resets the decoder; used to build requests whose body is already at hand.
    pub(crate) fn take_pending(&mut self) -> Option<Request> {
        self.state = State::Head;
        self.continue_pending = false;
        self.pending.take()
    }

    /// Decodes as much of `buf` as possible, consuming the bytes of a returned request.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Decoded {
        let out = match self.state {
            State::Head => self.decode_head(buf),
            State::Body { remaining } => self.decode_fixed_body(buf, remaining),
            State::Chunked(_) => self.decode_chunked(buf),
            State::Failed(ref e) => return Decoded::Error(e.clone()),
        };
        match out {
            Ok(Some(req)) => Decoded::Request(req),
            Ok(None) => {
                if self.continue_pending && self.phase() == Phase::Body {
                    self.continue_pending = false;
                    Decoded::ExpectContinue
                } else {
                    Decoded::NeedMore
                }
            }
            Err(e) => {
                self.pending = None;
                self.chunked_body = BytesMut::new();
                self.state = State::Failed(e.clone());
                Decoded::Error(e)
            }
        }
    }

    fn decode_head(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, HttpError> {
        if buf.is_empty() {
            return Ok(None);
        }
        let mut slots: [MaybeUninit<httparse::Header<'_>>; HEADER_COUNT_CAP] =
            [const { MaybeUninit::uninit() }; HEADER_COUNT_CAP];
        let slot_count = self.limits.header_slots();
        let mut parsed = httparse::Request::new(&mut []);
        let status = parsed.parse_with_uninit_headers(buf, &mut slots[..slot_count]);
        let head_len = match status {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                return self.check_partial_head(buf).map(|()| None);
            }
            Err(e) => return Err(classify_head_error(e, buf)),
        };
        if head_len > self.limits.header_bytes_max {
            return Err(err::HEAD_TOO_LARGE);
        }
        let base = buf.as_ptr() as usize;
        let span = |s: &[u8]| -> Range<u32> {
            let start = (s.as_ptr() as usize).wrapping_sub(base) as u32;
            start..start + s.len() as u32
        };
        let version = match parsed.version {
            Some(0) => Version::Http10,
            Some(1) => Version::Http11,
            _ => return Err(err::BAD_VERSION),
        };
        let target = parsed.path.unwrap_or_default();
        if target.len() > self.limits.uri_bytes_max {
            return Err(err::URI_TOO_LONG);
        }
        let method = parsed
            .method
            .and_then(Method::from_token)
            .ok_or(err::METHOD)?;
        let (path, query) = split_target(target, method)?;
        let (path, query) = (span(path.as_bytes()), query.map(|q| span(q.as_bytes())));

        let mut headers = Vec::with_capacity(parsed.headers.len());
        let facts = inspect_headers(parsed.headers, version, &mut headers, span)?;
        let content_length = facts.content_length.unwrap_or(0);
        if content_length > self.limits.body_bytes_max as u64 {
            return Err(err::BODY_TOO_LARGE);
        }

        let head = buf.split_to(head_len).freeze();
        let req = Request {
            method,
            version,
            head,
            path,
            query,
            headers,
            body: bytes::Bytes::new(),
            params: Vec::new(),
            peer_addr: None,
            keep_alive: facts.keep_alive,
        };
        if facts.chunked {
            self.pending = Some(req);
            self.continue_pending = facts.expect_continue;
            self.state = State::Chunked(ChunkState::Size);
            return self.decode_chunked(buf);
        }
        // content_length <= body_bytes_max, which is a usize.
        let remaining = content_length as usize;
        if remaining == 0 {
            return Ok(Some(req));
        }
        self.pending = Some(req);
        self.continue_pending = facts.expect_continue;
        self.state = State::Body { remaining };
        self.decode_fixed_body(buf, remaining)
    }

    /// A head is still incomplete: refuse it as soon as it is certain to be over a limit.
    fn check_partial_head(&self, buf: &[u8]) -> Result<(), HttpError> {
        let uri_cap = self
            .limits
            .uri_bytes_max
            .saturating_add(REQUEST_LINE_OVERHEAD_BYTES);
        // Look no further than the cap: a longer first line is a too-long target either way.
        let window = buf.get(..buf.len().min(uri_cap + 1)).unwrap_or_default();
        if !window.contains(&b'\n') && buf.len() > uri_cap {
            return Err(err::URI_TOO_LONG);
        }
        if buf.len() > self.limits.header_bytes_max {
            return Err(err::HEAD_TOO_LARGE);
        }
        Ok(())
    }

    fn decode_fixed_body(
        &mut self,
        buf: &mut BytesMut,
        remaining: usize,
    ) -> Result<Option<Request>, HttpError> {
        if buf.len() < remaining {
            return Ok(None);
        }
        let body = buf.split_to(remaining).freeze();
        self.finish(body)
    }

    fn finish(&mut self, body: bytes::Bytes) -> Result<Option<Request>, HttpError> {
        self.state = State::Head;
        self.continue_pending = false;
        let mut req = self.pending.take().ok_or(err::BAD_REQUEST_LINE)?;
        req.body = body;
        Ok(Some(req))
    }

    fn decode_chunked(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, HttpError> {
        // Each pass consumes at least one byte or returns, so the loop ends within buf.len()
        // iterations.
        loop {
            let State::Chunked(cs) = self.state else {
                return Err(err::BAD_CHUNK);
            };
            match cs {
                ChunkState::Size => {
                    let Some(line) = take_line(buf, CHUNK_LINE_BYTES_MAX, err::BAD_CHUNK)? else {
                        return Ok(None);
                    };
                    let size = parse_chunk_line(&line)?;
                    let total = (self.chunked_body.len() as u64).saturating_add(size);
                    if total > self.limits.body_bytes_max as u64 {
                        return Err(err::BODY_TOO_LARGE);
                    }
                    self.state = State::Chunked(if size == 0 {
                        ChunkState::Trailers { bytes: 0, count: 0 }
                    } else {
                        self.chunked_body.reserve(size as usize);
                        ChunkState::Data { remaining: size }
                    });
                }
                ChunkState::Data { remaining } => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let take = (remaining.min(buf.len() as u64)) as usize;
                    self.chunked_body
                        .extend_from_slice(buf.get(..take).unwrap_or_default());
                    buf.advance(take);
                    let left = remaining - take as u64;
                    self.state = State::Chunked(if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data { remaining: left }
                    });
                }
                ChunkState::DataEnd => match buf.first() {
                    None => return Ok(None),
                    Some(b'\r') => match buf.get(1) {
                        None => return Ok(None),
                        Some(b'\n') => {
                            buf.advance(2);
                            self.state = State::Chunked(ChunkState::Size);
                        }
                        Some(_) => return Err(err::BAD_CHUNK),
                    },
                    Some(_) => return Err(err::BAD_CHUNK),
                },
                ChunkState::Trailers { bytes, count } => {
                    let room = self.limits.header_bytes_max.saturating_sub(bytes);
                    let Some(line) = take_line(buf, room, err::TRAILERS_TOO_LARGE)? else {
                        return Ok(None);
                    };
                    if line.len() == 2 {
                        let body = self.chunked_body.split().freeze();
                        return self.finish(body);
                    }
                    check_trailer_line(&line)?;
                    if count + 1 > self.limits.header_count_max {
                        return Err(err::TOO_MANY_HEADERS);
                    }
                    self.state = State::Chunked(ChunkState::Trailers {
                        bytes: bytes + line.len(),
                        count: count + 1,
                    });
                }
            }
        }
    }
}

/// Takes one CRLF-terminated line (returned with its CRLF) if it is complete; refuses lines
/// over `max_bytes` and lines ended by a bare LF.
fn take_line(
    buf: &mut BytesMut,
    max_bytes: usize,
    too_long: HttpError,
) -> Result<Option<BytesMut>, HttpError> {
    let window = buf.get(..buf.len().min(max_bytes)).unwrap_or_default();
    match window.iter().position(|&b| b == b'\n') {
        Some(nl) => {
            if nl == 0 || window.get(nl - 1) != Some(&b'\r') {
                return Err(err::BAD_CHUNK);
            }
            Ok(Some(buf.split_to(nl + 1)))
        }
        None if buf.len() >= max_bytes => Err(too_long),
        None => Ok(None),
    }
}

/// `line` ends with CRLF. Grammar: 1*HEXDIG *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] ).
fn parse_chunk_line(line: &[u8]) -> Result<u64, HttpError> {
    let content = line.get(..line.len().saturating_sub(2)).unwrap_or_default();
    let digits = content.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(err::BAD_CHUNK);
    }
    let mut size: u64 = 0;
    for &b in content.get(..digits).unwrap_or_default() {
        let v = (b as char).to_digit(16).unwrap_or(0) as u64;
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(v))
            .ok_or(err::BAD_CHUNK)?;
    }
    let rest = content.get(digits..).unwrap_or_default();
    let ext = rest.trim_ascii_start();
    if ext.is_empty() {
        // Whitespace after the size without an extension is not in the grammar.
        return if rest.is_empty() {
            Ok(size)
        } else {
            Err(err::BAD_CHUNK)
        };
    }
    if ext.first() != Some(&b';') {
        return Err(err::BAD_CHUNK);
    }
    // Extensions are skipped, but their bytes must be visible text (no CR/LF/NUL smuggling).
    if ext.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(err::BAD_CHUNK);
    }
    Ok(size)
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn check_trailer_line(line: &[u8]) -> Result<(), HttpError> {
    let content = line.get(..line.len().saturating_sub(2)).unwrap_or_default();
    if matches!(content.first(), Some(b' ' | b'\t')) {
        return Err(err::OBS_FOLD);
    }
    let colon = content
        .iter()
        .position(|&b| b == b':')
        .ok_or(err::BAD_CHUNK)?;
    let name = content.get(..colon).unwrap_or_default();
    let value = content.get(colon + 1..).unwrap_or_default();
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(err::BAD_CHUNK);
    }
    if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(err::BAD_CHUNK);
    }
    Ok(())
}

fn classify_head_error(e: httparse::Error, buf: &[u8]) -> HttpError {
    match e {
        httparse::Error::TooManyHeaders => err::TOO_MANY_HEADERS,
        httparse::Error::Version => {
            // A well-formed "HTTP/x.y" we do not speak is 505; anything else is a bad request.
            if request_line_has_http_version(buf) {
                err::BAD_VERSION
            } else {
                err::BAD_REQUEST_LINE
            }
        }
        httparse::Error::HeaderName | httparse::Error::HeaderValue | httparse::Error::NewLine => {
            if has_obs_fold(buf) {
                err::OBS_FOLD
            } else {
                err::BAD_HEADER
            }
        }
        _ => err::BAD_REQUEST_LINE,
    }
}

fn request_line_has_http_version(buf: &[u8]) -> bool {
    let line_end = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
    let line = buf.get(..line_end).unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Some(sp) = line.iter().rposition(|&b| b == b' ') else {
        return false;
    };
    let v = line.get(sp + 1..).unwrap_or_default();
    matches!(v, [b'H', b'T', b'T', b'P', b'/', a, b'.', c] if a.is_ascii_digit() && c.is_ascii_digit())
}

fn has_obs_fold(buf: &[u8]) -> bool {
    buf.windows(2)
        .any(|w| w[0] == b'\n' && (w[1] == b' ' || w[1] == b'\t'))
}

/// Splits a request target (RFC 9112 §3.2) into path and query, refusing malformed ones:
/// - origin-form `/path[?query]`;
/// - asterisk-form `*`, for `OPTIONS` only;
/// - absolute-form `http[s]://authority/path[?query]`: the authority must be a valid, non-empty
///   host with an optional numeric port and no userinfo (RFC 9110 §4.2.1 and §4.2.4 tell a
///   recipient to reject an empty host and to treat userinfo as an error). Its path must not
///   be empty: read as `/` by RFC 9110, it is refused here because the path handed on is a
///   slice of the received bytes;
/// - authority-form is CONNECT's only, and CONNECT is not a supported method.
///
/// No form may carry a fragment (`#`): a request target has none.
fn split_target(target: &str, method: Method) -> Result<(&str, Option<&str>), HttpError> {
    if target.contains('#') {
        return Err(err::BAD_TARGET);
    }
    let origin = if target.starts_with('/') {
        target
    } else if target == "*" && method == Method::OPTIONS {
        return Ok((target, None));
    } else {
        let lower = target.get(..8).unwrap_or(target).to_ascii_lowercase();
        let after_scheme = if lower.starts_with("http://") {
            target.get(7..)
        } else if lower.starts_with("https://") {
            target.get(8..)
        } else {
            None
        }
        .ok_or(err::BAD_TARGET)?;
        let end = after_scheme.find(['/', '?']).unwrap_or(after_scheme.len());
        let (authority, rest) = after_scheme.split_at(end);
        if !valid_authority(authority) || !rest.starts_with('/') {
            return Err(err::BAD_TARGET);
        }
        rest
    };
    Ok(match origin.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (origin, None),
    })
}

/// `host [":" port]` of RFC 3986 §3.2 with a non-empty host and no userinfo.
fn valid_authority(authority: &str) -> bool {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        // IP-literal: everything up to the closing bracket, then only a port may follow.
        let Some((literal, after)) = rest.split_once(']') else {
            return false;
        };
        if !valid_ip_literal(literal) {
            return false;
        }
        match after {
            "" => return true,
            _ => match after.strip_prefix(':') {
                Some(port) => (None, Some(port)),
                None => return false,
            },
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(authority), None),
        }
    };
    if let Some(host) = host {
        if !valid_reg_name(host) {
            return false;
        }
    }
    // An empty port is allowed by RFC 3986 and means the scheme's default.
    match port {
        None => true,
        Some(p) => {
            p.is_empty() || (p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok())
        }
    }
}

/// `IPv6address / IPvFuture` (RFC 3986 §3.2.2), the inside of the brackets.
fn valid_ip_literal(literal: &str) -> bool {
    if let Some(future) = literal.strip_prefix(['v', 'V']) {
        let Some((version, rest)) = future.split_once('.') else {
            return false;
        };
        return !version.is_empty()
            && version.bytes().all(|b| b.is_ascii_hexdigit())
            && !rest.is_empty()
            && rest
                .bytes()
                .all(|b| is_unreserved(b) || is_sub_delim(b) || b == b':');
    }
    literal.parse::<std::net::Ipv6Addr>().is_ok()
}

/// A non-empty `reg-name` (which includes dotted IPv4): unreserved, sub-delims and
/// well-formed percent-escapes. `@` (userinfo) is not among them.
fn valid_reg_name(host: &str) -> bool {
    let b = host.as_bytes();
    if b.is_empty() {
        return false;
    }
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let hex = |j: usize| b.get(j).is_some_and(|h| h.is_ascii_hexdigit());
            if !(hex(i + 1) && hex(i + 2)) {
                return false;
            }
            i += 3;
        } else if is_unreserved(c) || is_sub_delim(c) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~".contains(&b)
}

fn is_sub_delim(b: u8) -> bool {
    b"!$&'()*+,;=".contains(&b)
}

fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

fn inspect_headers(
    parsed: &[httparse::Header<'_>],
    version: Version,
    out: &mut Vec<HeaderSpan>,
    span: impl Fn(&[u8]) -> Range<u32>,
) -> Result<HeadFacts, HttpError> {
    let mut content_length: Option<u64> = None;
    let mut te_count = 0usize;
    let mut chunked = false;
    let mut hosts = 0usize;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    let mut expect_continue = false;
    for h in parsed {
        let name = h.name.as_bytes();
        let value = h.value;
        out.push(HeaderSpan {
            name: span(name),
            value: span(value),
        });
        // Dispatch on length first so most headers cost one comparison.
        match name.len() {
            4 if name.eq_ignore_ascii_case(b"host") => hosts += 1,
            6 if name.eq_ignore_ascii_case(b"expect") => {
                if value.trim_ascii().eq_ignore_ascii_case(b"100-continue") {
                    expect_continue = true;
                } else {
                    return Err(err::EXPECT);
                }
            }
            10 if name.eq_ignore_ascii_case(b"connection") => {
                conn_close |= has_token(value, b"close");
                conn_keep_alive |= has_token(value, b"keep-alive");
            }
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                if content_length.is_some() {
                    return Err(err::TWO_CL);
                }
                content_length = Some(parse_content_length(value)?);
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                te_count += 1;
                if te_count > 1 {
                    return Err(err::TWO_TE);
                }
                if value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                    chunked = true;
                } else {
                    return Err(err::TE_UNSUPPORTED);
                }
            }
            _ => {}
        }
    }
    if te_count > 0 {
        if content_length.is_some() {
            return Err(err::CL_AND_TE);
        }
        if version == Version::Http10 {
            return Err(err::TE_HTTP10);
        }
    }
    if version == Version::Http11 && hosts != 1 {
        return Err(err::NO_HOST);
    }
    if hosts > 1 {
        return Err(err::NO_HOST);
    }
    let keep_alive = match version {
        Version::Http11 => !conn_close,
        Version::Http10 => conn_keep_alive && !conn_close,
    };
    Ok(HeadFacts {
        content_length,
        chunked,
        keep_alive,
        // 100-continue is an HTTP/1.1 mechanism; a 1.0 client must not get an interim response.
        expect_continue: expect_continue && version == Version::Http11,
    })
}

/// Strict: 1 to 19 ASCII digits, nothing else (no sign, no list, no inner spaces).
fn parse_content_length(value: &[u8]) -> Result<u64, HttpError> {
    let v = value.trim_ascii();
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return Err(err::BAD_CL);
    }
    Ok(v.iter()
        .fold(0u64, |acc, &b| acc * 10 + u64::from(b - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            header_bytes_max: 512,
            header_count_max: 8,
            uri_bytes_max: 64,
            body_bytes_max: 100,
            ..Limits::default()
        }
    }

    fn decode_all(input: &[u8]) -> (Vec<Request>, Option<HttpError>, usize) {
        let mut d = RequestDecoder::new(&limits());
        let mut buf = BytesMut::from(input);
        let mut reqs = Vec::new();
        let mut continues = 0;
        for _ in 0..100 {
            match d.decode(&mut buf) {
                Decoded::Request(r) => reqs.push(r),
                Decoded::ExpectContinue => continues += 1,
                Decoded::NeedMore => return (reqs, None, continues),
                Decoded::Error(e) => return (reqs, Some(e), continues),
            }
        }
        panic!("decoder did not settle")
    }

    fn status_of(input: &[u8]) -> Option<u16> {
        decode_all(input).1.map(|e| e.status)
    }

    #[test]
    fn simple_get_with_query_and_headers() {
        let (reqs, e, _) = decode_all(b"GET /a/b?x=1&y=%20z HTTP/1.1\r\nHost: h\r\nX-Y: v\r\n\r\n");
        assert!(e.is_none());
        let r = &reqs[0];
        assert_eq!(r.method(), Method::GET);
        assert_eq!(r.path(), "/a/b");
        assert_eq!(r.query(), Some("x=1&y=%20z"));
        assert_eq!(r.query_param("y").as_deref(), Some(" z"));
        assert_eq!(r.header("x-y"), Some(&b"v"[..]));
        assert!(r.keep_alive());
    }

    #[test]
    fn pipelined_requests_come_out_in_order() {
        let (reqs, e, _) = decode_all(
            b"POST /1 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcGET /2 HTTP/1.1\r\nHost: h\r\n\r\n",
        );
        assert!(e.is_none());
        assert_eq!(reqs.len(), 2);
        assert_eq!(&reqs[0].body()[..], b"abc");
        assert_eq!(reqs[1].path(), "/2");
    }

    #[test]
    fn chunked_with_extensions_and_trailers() {
        let (reqs, e, _) = decode_all(
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3;a=b\r\nabc\r\n2 ; x\r\nde\r\n0\r\nT: v\r\n\r\n",
        );
        assert!(e.is_none(), "{e:?}");
        assert_eq!(&reqs[0].body()[..], b"abcde");
    }

    #[test]
    fn framing_attacks_are_refused() {
        let cases: &[(&[u8], u16)] = &[
            (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +3\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 3\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
            (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n", 400),
            (b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505),
            (b"GET / HTTP/1.1\r\n\r\n", 400),
            (b"BREW / HTTP/1.1\r\nHost: h\r\n\r\n", 501),
            (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 101\r\n\r\n", 413),
            (b"GET / HTTP/1.1\r\nHost: h\r\nExpect: magic\r\n\r\n", 417),
        ];
        for (input, status) in cases {
            assert_eq!(
                status_of(input),
                Some(*status),
                "{}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn limits_give_their_statuses() {
        let long_uri = format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", "a".repeat(100));
        assert_eq!(status_of(long_uri.as_bytes()), Some(414));
        let unterminated = format!("GET /{}", "a".repeat(200));
        assert_eq!(status_of(unterminated.as_bytes()), Some(414));
        // A request line longer than the whole head limit is still a URI problem.
        let huge_line = format!("GET /{} HTTP/1.1\r\nHost: h\r\n", "a".repeat(600));
        assert_eq!(status_of(huge_line.as_bytes()), Some(414));
        let many = format!("GET / HTTP/1.1\r\nHost: h\r\n{}\r\n", "A: b\r\n".repeat(9));
        assert_eq!(status_of(many.as_bytes()), Some(431));
        let big = format!(
            "GET / HTTP/1.1\r\nHost: h\r\nA: {}\r\n\r\n",
            "b".repeat(600)
        );
        assert_eq!(status_of(big.as_bytes()), Some(431));
        let chunked_big = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n65\r\n";
        assert_eq!(status_of(chunked_big), Some(413));
    }

    #[test]
    fn expect_continue_is_signalled_once_before_the_body() {
        let mut d = RequestDecoder::new(&limits());
        let mut buf = BytesMut::from(
            &b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"[..],
        );
        assert!(matches!(d.decode(&mut buf), Decoded::ExpectContinue));
        assert!(matches!(d.decode(&mut buf), Decoded::NeedMore));
        buf.extend_from_slice(b"ok");
        match d.decode(&mut buf) {
            Decoded::Request(r) => assert_eq!(&r.body()[..], b"ok"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_are_sticky() {
        let mut d = RequestDecoder::new(&limits());
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n"[..]);
        assert!(matches!(d.decode(&mut buf), Decoded::Error(_)));
        let mut fresh = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"[..]);
        assert!(matches!(d.decode(&mut fresh), Decoded::Error(_)));
    }

    #[test]
    fn http10_keep_alive_rules() {
        let (reqs, _, _) = decode_all(b"GET / HTTP/1.0\r\n\r\n");
        assert!(!reqs[0].keep_alive());
        let (reqs, _, _) = decode_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert!(reqs[0].keep_alive());
        let (reqs, _, _) = decode_all(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
        assert!(!reqs[0].keep_alive());
    }

    #[test]
    fn malformed_targets_are_refused() {
        for target in [
            "http:///healthz",
            "http://[::1/healthz",
            "http://[::1]x/healthz",
            "http://[zz]/healthz",
            "http://[v1]/healthz",
            "http://user@h/healthz",
            "http://@h/healthz",
            "http://h:x/healthz",
            "http://h:99999/healthz",
            "http://:80/healthz",
            "http://h%zz/x",
            "http://h",
            "http://h?q",
            "ftp://h/x",
            "h:80",
            "healthz",
            "*",
            "/healthz#frag",
            "http://h/x#f",
        ] {
            let raw = format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n");
            let (reqs, e, _) = decode_all(raw.as_bytes());
            assert!(reqs.is_empty(), "{target} was accepted");
            let e = e.unwrap_or_else(|| panic!("{target}: no error"));
            assert_eq!(e.status, 400, "{target}");
        }
    }

    #[test]
    fn well_formed_absolute_targets_are_accepted() {
        for (target, path) in [
            ("http://h/x", "/x"),
            ("HTTPS://h:443/x", "/x"),
            ("http://h:/x", "/x"),
            ("http://[::1]/x", "/x"),
            ("http://[::1]:8080/x?q", "/x"),
            ("http://[v1.fe]/x", "/x"),
            ("http://127.0.0.1:80/x", "/x"),
            ("http://a-b.c%41/x", "/x"),
        ] {
            let raw = format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n");
            let (reqs, e, _) = decode_all(raw.as_bytes());
            assert!(e.is_none(), "{target}: {e:?}");
            assert_eq!(reqs[0].path(), path, "{target}");
        }
        let (reqs, e, _) = decode_all(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n");
        assert!(e.is_none());
        assert_eq!(reqs[0].path(), "*");
    }

    #[test]
    fn absolute_form_keeps_the_path() {
        let (reqs, e, _) = decode_all(b"GET http://h:80/x/y?q HTTP/1.1\r\nHost: h\r\n\r\n");
        assert!(e.is_none());
        assert_eq!(reqs[0].path(), "/x/y");
        assert_eq!(reqs[0].query(), Some("q"));
    }
}
