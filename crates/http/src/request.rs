//! The request a handler receives.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;

/// Request methods the server accepts; any other method is answered with 501.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(clippy::upper_case_acronyms)]
pub enum Method {
    /// GET
    GET,
    /// HEAD (served by GET routes unless a HEAD route exists; the body is dropped)
    HEAD,
    /// POST
    POST,
    /// PUT
    PUT,
    /// DELETE
    DELETE,
    /// PATCH
    PATCH,
    /// OPTIONS
    OPTIONS,
}

impl Method {
    /// Parses a method token exactly (methods are case-sensitive).
    pub fn from_token(token: &str) -> Option<Method> {
        Some(match token {
            "GET" => Method::GET,
            "HEAD" => Method::HEAD,
            "POST" => Method::POST,
            "PUT" => Method::PUT,
            "DELETE" => Method::DELETE,
            "PATCH" => Method::PATCH,
            "OPTIONS" => Method::OPTIONS,
            _ => return None,
        })
    }

    /// The method token.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::GET => "GET",
            Method::HEAD => "HEAD",
            Method::POST => "POST",
            Method::PUT => "PUT",
            Method::DELETE => "DELETE",
            Method::PATCH => "PATCH",
            Method::OPTIONS => "OPTIONS",
        }
    }
}

/// HTTP version of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.0: no keep-alive unless asked for, no chunked bodies.
    Http10,
    /// HTTP/1.1
    Http11,
}

/// Where a header sits inside the request head bytes.
#[derive(Debug, Clone)]
pub(crate) struct HeaderSpan {
    pub(crate) name: Range<u32>,
    pub(crate) value: Range<u32>,
}

/// A fully received request. Cheap to move: the head is one shared buffer, the body another.
/// `Send`, so it can be handed to the shard that owns its key.
///
/// Path, query and header accessors return views into the raw head; nothing is decoded
/// unless asked for (`param_decoded`, `query_pairs`).
#[derive(Debug, Clone)]
pub struct Request {
    pub(crate) method: Method,
    pub(crate) version: Version,
    pub(crate) head: Bytes,
    pub(crate) path: Range<u32>,
    pub(crate) query: Option<Range<u32>>,
    pub(crate) headers: Vec<HeaderSpan>,
    pub(crate) body: Bytes,
    pub(crate) params: Vec<(Arc<str>, Range<u32>)>,
    pub(crate) peer_addr: Option<SocketAddr>,
    pub(crate) keep_alive: bool,
}

fn range(r: &Range<u32>) -> Range<usize> {
    r.start as usize..r.end as usize
}

impl Request {
    /// Builds a request without a socket, e.g. for a request forwarded from another node or
    /// for testing handlers through [`crate::Router::dispatch`]. `target` is the raw
    /// path-and-query. The request goes through the same decoder (and default [`Limits`]) as
    /// network input; `content-length`/`transfer-encoding` in `headers` are ignored and a
    /// `host` header is added when missing.
    ///
    /// [`Limits`]: crate::Limits
    pub fn new(
        method: Method,
        target: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Request, crate::HttpError> {
        use std::fmt::Write as _;
        let mut head = String::with_capacity(64 + target.len());
        let _ = write!(head, "{} {} HTTP/1.1\r\n", method.as_str(), target);
        let mut has_host = false;
        for (name, value) in headers {
            if name.eq_ignore_ascii_case("content-length")
                || name.eq_ignore_ascii_case("transfer-encoding")
            {
                continue;
            }
            has_host |= name.eq_ignore_ascii_case("host");
            let _ = write!(head, "{name}: {value}\r\n");
        }
        if !has_host {
            head.push_str("host: local\r\n");
        }
        let _ = write!(head, "content-length: {}\r\n\r\n", body.len());
        let mut buf = bytes::BytesMut::from(head.as_bytes());
        let mut decoder = crate::RequestDecoder::new(&crate::Limits::default());
        let decoded = decoder.decode(&mut buf);
        if !buf.is_empty() {
            // Leftover bytes mean a header value smuggled in a line break.
            return Err(crate::HttpError {
                status: 400,
                kind: "bad_header",
                message: "malformed header field",
                close: true,
            });
        }
        let req = match decoded {
            crate::Decoded::Request(req) => Some(req),
            crate::Decoded::Error(e) => return Err(e),
            // The head is complete and waits for the body, which we hold already.
            _ => decoder.take_pending(),
        };
        let mut req = req.ok_or(crate::HttpError {
            status: 400,
            kind: "bad_request_line",
            message: "malformed request line",
            close: true,
        })?;
        req.body = body;
        Ok(req)
    }

    /// Sets the client address (builder style).
    pub fn with_peer_addr(mut self, addr: SocketAddr) -> Request {
        self.peer_addr = Some(addr);
        self
    }

    /// The request method.
    pub fn method(&self) -> Method {
        self.method
    }

    /// The request's HTTP version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The raw (not percent-decoded) path, always starting with '/' (or `*` for `OPTIONS *`).
    pub fn path(&self) -> &str {
        self.head_str(&self.path)
    }

    /// The raw query string after '?', if any.
    pub fn query(&self) -> Option<&str> {
        self.query.as_ref().map(|q| self.head_str(q))
    }

    /// Query pairs, percent-decoded ('+' is a space). Pairs whose escapes are malformed are
    /// returned with the raw text.
    pub fn query_pairs(&self) -> Vec<(Cow<'_, str>, Cow<'_, str>)> {
        let Some(q) = self.query() else {
            return Vec::new();
        };
        q.split('&')
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (decode_form(k), decode_form(v))
            })
            .collect()
    }

    /// The first query value for `name` (percent-decoded).
    pub fn query_param(&self, name: &str) -> Option<Cow<'_, str>> {
        self.query_pairs()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    /// The first header with this name (case-insensitive), raw bytes.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| {
                self.head_bytes(&h.name)
                    .eq_ignore_ascii_case(name.as_bytes())
            })
            .map(|h| self.head_bytes(&h.value))
    }

    /// The first header with this name (case-insensitive), if it is valid UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// All headers in arrival order, names as sent.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        self.headers
            .iter()
            .map(|h| (self.head_str(&h.name), self.head_bytes(&h.value)))
    }

    /// The decoded body (chunked framing removed).
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Takes the body out of the request without copying.
    pub fn take_body(&mut self) -> Bytes {
        std::mem::take(&mut self.body)
    }

    /// A path parameter captured by the route pattern (`{name}` or `*name`), raw.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| &**n == name)
            .map(|(_, r)| self.head_str(r))
    }

    /// A path parameter, percent-decoded ('+' stays '+'). `Err` names the parameter when it
    /// is missing or its escapes do not decode to UTF-8.
    pub fn param_decoded(&self, name: &str) -> Result<Cow<'_, str>, String> {
        let raw = self
            .param(name)
            .ok_or_else(|| format!("missing path parameter {name}"))?;
        percent_decode(raw, false)
            .ok_or_else(|| format!("path parameter {name} is not valid percent-encoded UTF-8"))
    }

    /// The client's address, when the request came from a socket.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer_addr
    }

    /// Whether the connection stays open after this request's response.
    pub fn keep_alive(&self) -> bool {
        self.keep_alive
    }

    fn head_bytes(&self, r: &Range<u32>) -> &[u8] {
        self.head.get(range(r)).unwrap_or_default()
    }

    fn head_str(&self, r: &Range<u32>) -> &str {
        // The decoder only records spans it validated as UTF-8, so the fallback is unreachable.
        std::str::from_utf8(self.head_bytes(r)).unwrap_or_default()
    }
}

fn decode_form(s: &str) -> Cow<'_, str> {
    percent_decode(s, true).unwrap_or(Cow::Borrowed(s))
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes `s`; `plus_is_space` applies the form-encoding rule for query strings.
/// `None` when an escape is malformed or the result is not UTF-8.
pub fn percent_decode(s: &str, plus_is_space: bool) -> Option<Cow<'_, str>> {
    let bytes = s.as_bytes();
    if !bytes
        .iter()
        .any(|&b| b == b'%' || (plus_is_space && b == b'+'))
    {
        return Some(Cow::Borrowed(s));
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hi = hex_val(*bytes.get(i + 1)?)?;
                let lo = hex_val(*bytes.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}
