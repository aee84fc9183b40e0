//! A tiny blocking HTTP/1.1 client over `std::net::TcpStream`, for tests that must not depend
//! on the server's own HTTP code being right.
//!
//! One request at a time per [`HttpClient`]; the connection is kept alive between requests
//! and replaced when the server closes it. Every socket operation has a timeout, so a paused
//! or dead server turns into an error, never a hang.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Response bodies above this are refused (the tests never store anything near it).
pub const BODY_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Status line, header and chunk-size lines above this are refused.
pub const LINE_BYTES_MAX: usize = 16 * 1024;
/// Headers per response above this are refused.
pub const HEADERS_MAX: usize = 128;

/// Why a request got no response. What matters to a caller that wrote something is whether the
/// server may have acted on the request: see [`HttpError::may_have_been_applied`].
#[derive(Debug)]
pub enum HttpError {
    /// No connection could be made: the request was never sent.
    Connect(io::Error),
    /// The request could not be written completely: the server never saw a whole request.
    Send(io::Error),
    /// The request was sent but no complete response came back (timeout, reset, EOF).
    Receive(io::Error),
    /// The response was not valid HTTP/1.1 (or was over a limit).
    Protocol(String),
}

impl HttpError {
    /// True when the server may have received the whole request, so a write's outcome is
    /// unknown (it may or may not have been applied).
    pub fn may_have_been_applied(&self) -> bool {
        matches!(self, HttpError::Receive(_) | HttpError::Protocol(_))
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Connect(e) => write!(f, "connect failed: {e}"),
            HttpError::Send(e) => write!(f, "sending the request failed: {e}"),
            HttpError::Receive(e) => write!(f, "no complete response: {e}"),
            HttpError::Protocol(m) => write!(f, "bad response: {m}"),
        }
    }
}

impl std::error::Error for HttpError {}

/// A complete response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Header names lower-cased, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The revision in `ETag: "<revision>"`, if present and well formed.
    pub fn etag_revision(&self) -> Option<u64> {
        let tag = self.header("etag")?.trim();
        let tag = tag.strip_prefix("W/").unwrap_or(tag);
        tag.strip_prefix('"')?.strip_suffix('"')?.parse().ok()
    }

    /// The body as JSON.
    pub fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_slice(&self.body).map_err(|e| {
            format!(
                "status {} body is not JSON ({e}): {}",
                self.status,
                self.body_text()
            )
        })
    }

    /// The body as text, lossily, for messages.
    pub fn body_text(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        if text.len() > 400 {
            let mut cut = 400;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            format!("{}...", &text[..cut])
        } else {
            text.into_owned()
        }
    }
}

impl fmt::Display for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.status)?;
        if let Some(etag) = self.header("etag") {
            write!(f, " etag={etag}")?;
        }
        if let Some(ra) = self.header("retry-after") {
            write!(f, " retry-after={ra}")?;
        }
        write!(f, " body={:?}", self.body_text())
    }
}

/// A blocking client for one server address.
pub struct HttpClient {
    addr: SocketAddr,
    connect_timeout: Duration,
    io_timeout: Duration,
    conn: Option<BufReader<TcpStream>>,
}

impl HttpClient {
    /// A client with a 2 s connect timeout and the given timeout on every read and write.
    pub fn new(addr: SocketAddr, io_timeout: Duration) -> Self {
        HttpClient {
            addr,
            connect_timeout: Duration::from_secs(2),
            io_timeout,
            conn: None,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn get(&mut self, path: &str) -> Result<Response, HttpError> {
        self.request("GET", path, &[], b"")
    }

    pub fn put(&mut self, path: &str, body: &[u8]) -> Result<Response, HttpError> {
        self.request("PUT", path, &[], body)
    }

    pub fn delete(&mut self, path: &str) -> Result<Response, HttpError> {
        self.request("DELETE", path, &[], b"")
    }

    pub fn post_json(
        &mut self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<Response, HttpError> {
        let body = body.to_string();
        self.request(
            "POST",
            path,
            &[("content-type", "application/json")],
            body.as_bytes(),
        )
    }

    /// Sends one request and reads its whole response.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response, HttpError> {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nhost: {}\r\ncontent-length: {}\r\n",
            self.addr,
            body.len()
        );
        for (name, value) in headers {
            head.push_str(name);
            head.push_str(": ");
            head.push_str(value);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        let mut wire = head.into_bytes();
        wire.extend_from_slice(body);

        let conn = self.connection()?;
        if let Err(e) = conn.get_mut().write_all(&wire) {
            // A server may answer (e.g. 413) and close before taking the whole body: read
            // that answer if it is there.
            let early = read_response(conn, method == "HEAD");
            self.conn = None;
            return early.map(|(r, _)| r).map_err(|_| HttpError::Send(e));
        }
        match read_response(conn, method == "HEAD") {
            Ok((resp, reusable)) => {
                if !reusable {
                    self.conn = None;
                }
                Ok(resp)
            }
            Err(e) => {
                self.conn = None;
                Err(e)
            }
        }
    }

    /// The kept-alive connection if the server has not closed it, else a new one.
    fn connection(&mut self) -> Result<&mut BufReader<TcpStream>, HttpError> {
        let alive = match &self.conn {
            Some(c) => c.buffer().is_empty() && peer_still_open(c.get_ref()),
            None => false,
        };
        if !alive {
            self.conn = None;
            let stream = TcpStream::connect_timeout(&self.addr, self.connect_timeout)
                .map_err(HttpError::Connect)?;
            stream
                .set_read_timeout(Some(self.io_timeout))
                .and_then(|_| stream.set_write_timeout(Some(self.io_timeout)))
                .and_then(|_| stream.set_nodelay(true))
                .map_err(HttpError::Connect)?;
            self.conn = Some(BufReader::new(stream));
        }
        self.conn
            .as_mut()
            .ok_or_else(|| HttpError::Protocol("connection vanished".into()))
    }
}

/// A request written on its own connection whose response has not been read yet: lets a test
/// send to a paused server (the kernel accepts and buffers it) and read after resuming it.
pub struct PendingRequest {
    conn: BufReader<TcpStream>,
    head_only: bool,
}

impl PendingRequest {
    /// Connects and writes the whole request (with `connection: close`).
    pub fn send(
        addr: SocketAddr,
        method: &str,
        path: &str,
        body: &[u8],
        io_timeout: Duration,
    ) -> Result<PendingRequest, HttpError> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .map_err(HttpError::Connect)?;
        stream
            .set_read_timeout(Some(io_timeout))
            .and_then(|_| stream.set_write_timeout(Some(io_timeout)))
            .map_err(HttpError::Connect)?;
        let mut wire = format!(
            "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        wire.extend_from_slice(body);
        let mut conn = BufReader::new(stream);
        conn.get_mut().write_all(&wire).map_err(HttpError::Send)?;
        Ok(PendingRequest {
            conn,
            head_only: method == "HEAD",
        })
    }

    /// Reads the response (bounded by the timeout given to [`PendingRequest::send`]).
    pub fn finish(mut self) -> Result<Response, HttpError> {
        read_response(&mut self.conn, self.head_only).map(|(r, _)| r)
    }
}

/// An idle keep-alive connection the server closed shows as readable with EOF; reusing it would
/// turn a request the server never saw into an "unknown outcome", so it is replaced instead.
fn peer_still_open(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return false;
    }
    let mut probe = [0u8; 1];
    let open = match stream.peek(&mut probe) {
        Ok(0) => false,
        // Bytes nobody asked for: the connection is out of step, do not reuse it.
        Ok(_) => false,
        Err(e) => e.kind() == io::ErrorKind::WouldBlock,
    };
    stream.set_nonblocking(false).is_ok() && open
}

fn read_line(r: &mut impl BufRead) -> Result<String, HttpError> {
    let mut line = Vec::new();
    let mut limited = r.take(LINE_BYTES_MAX as u64 + 1);
    let n = limited
        .read_until(b'\n', &mut line)
        .map_err(HttpError::Receive)?;
    if n == 0 {
        return Err(HttpError::Receive(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before a complete response",
        )));
    }
    if line.last() != Some(&b'\n') {
        return Err(if line.len() > LINE_BYTES_MAX {
            HttpError::Protocol(format!("line longer than {LINE_BYTES_MAX} bytes"))
        } else {
            HttpError::Receive(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed in the middle of a line",
            ))
        });
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| HttpError::Protocol("line is not UTF-8".into()))
}

fn read_exact_body(r: &mut impl Read, n: usize, body: &mut Vec<u8>) -> Result<(), HttpError> {
    if body.len().saturating_add(n) > BODY_BYTES_MAX {
        return Err(HttpError::Protocol(format!(
            "body over {BODY_BYTES_MAX} bytes"
        )));
    }
    let start = body.len();
    body.resize(start + n, 0);
    r.read_exact(&mut body[start..]).map_err(HttpError::Receive)
}

/// Reads one response; also says whether the connection may carry another request.
fn read_response(r: &mut impl BufRead, head_only: bool) -> Result<(Response, bool), HttpError> {
    let status_line = read_line(r)?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(HttpError::Protocol(format!(
            "bad status line {status_line:?}"
        )));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|s| (100..1000).contains(s))
        .ok_or_else(|| HttpError::Protocol(format!("bad status line {status_line:?}")))?;

    let mut headers = Vec::new();
    loop {
        let line = read_line(r)?;
        if line.is_empty() {
            break;
        }
        if headers.len() == HEADERS_MAX {
            return Err(HttpError::Protocol(format!(
                "more than {HEADERS_MAX} headers"
            )));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| HttpError::Protocol(format!("bad header line {line:?}")))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let mut resp = Response {
        status,
        headers,
        body: Vec::new(),
    };
    let mut reusable = version == "HTTP/1.1";
    if let Some(conn) = resp.header("connection") {
        let conn = conn.to_ascii_lowercase();
        if conn.contains("close") {
            reusable = false;
        } else if conn.contains("keep-alive") {
            reusable = true;
        }
    }
    if (100..200).contains(&status) {
        return Err(HttpError::Protocol(format!(
            "unexpected interim response {status}"
        )));
    }
    if head_only || status == 204 || status == 304 {
        return Ok((resp, reusable));
    }
    let chunked = resp
        .header("transfer-encoding")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
    let mut body = Vec::new();
    if chunked {
        read_chunked(r, &mut body)?;
    } else if let Some(len) = resp.header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| HttpError::Protocol(format!("bad content-length {len:?}")))?;
        read_exact_body(r, len, &mut body)?;
    } else {
        // Neither length nor chunking: the body runs to the end of the connection.
        r.take(BODY_BYTES_MAX as u64 + 1)
            .read_to_end(&mut body)
            .map_err(HttpError::Receive)?;
        if body.len() > BODY_BYTES_MAX {
            return Err(HttpError::Protocol(format!(
                "body over {BODY_BYTES_MAX} bytes"
            )));
        }
        reusable = false;
    }
    resp.body = body;
    Ok((resp, reusable))
}

fn read_chunked(r: &mut impl BufRead, body: &mut Vec<u8>) -> Result<(), HttpError> {
    loop {
        let line = read_line(r)?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| HttpError::Protocol(format!("bad chunk size line {line:?}")))?;
        if size == 0 {
            // Trailers, up to the empty line.
            for _ in 0..=HEADERS_MAX {
                if read_line(r)?.is_empty() {
                    return Ok(());
                }
            }
            return Err(HttpError::Protocol(format!(
                "more than {HEADERS_MAX} trailers"
            )));
        }
        read_exact_body(r, size, body)?;
        if !read_line(r)?.is_empty() {
            return Err(HttpError::Protocol("chunk not followed by CRLF".into()));
        }
    }
}

/// Percent-encodes a key for the path of `/kv/{key}`: everything but unreserved characters and
/// '/' is escaped, so the server's percent-decoding gives the key back.
pub fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for &b in key.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-encodes a query parameter value.
pub fn encode_query(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for &b in value.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8]) -> Result<(Response, bool), HttpError> {
        read_response(&mut BufReader::new(raw), false)
    }

    #[test]
    fn reads_content_length_and_chunked_bodies() {
        let (r, reuse) =
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nETag: \"42\"\r\n\r\nhello").unwrap();
        assert_eq!(
            (r.status, r.body.as_slice(), reuse),
            (200, &b"hello"[..], true)
        );
        assert_eq!(r.etag_revision(), Some(42));

        let (r, _) = parse(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\nA\r\n0123456789\r\n0\r\nT: 1\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.body, b"abc0123456789");

        let (r, reuse) = parse(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n").unwrap();
        assert_eq!((r.status, r.body.len(), reuse), (204, 0, false));
    }

    #[test]
    fn truncated_or_malformed_responses_are_errors() {
        assert!(matches!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhel"),
            Err(HttpError::Receive(_))
        ));
        assert!(matches!(
            parse(b"SPDY 200\r\n\r\n"),
            Err(HttpError::Protocol(_))
        ));
        assert!(matches!(
            parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
            Err(HttpError::Protocol(_))
        ));
        assert!(matches!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n"),
            Err(HttpError::Protocol(_))
        ));
    }

    #[test]
    fn keys_are_percent_encoded_except_slashes() {
        assert_eq!(encode_key("a/b c%é"), "a/b%20c%25%C3%A9");
        assert_eq!(encode_query("a/b&c"), "a%2Fb%26c");
    }
}
