//! The blocking HTTP/1.1 client of `mast ctl`: one request per connection, every member in
//! `--endpoints` tried in turn, 503 and unreachable members retried until a deadline, 307
//! followed (a `--redirect` server names the leader).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Response heads larger than this are refused.
const HEAD_BYTES_MAX: usize = 64 * 1024;
/// Response bodies larger than this are refused (a listing is at most 10,000 keys).
pub const BODY_BYTES_MAX: usize = 256 * 1024 * 1024;
/// Pause between rounds over the endpoints.
const RETRY_PAUSE_MS: u64 = 200;
/// Redirects followed for one request.
const REDIRECTS_MAX: usize = 3;

/// A complete response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The endpoint that answered.
    pub from: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The server's own words: the API error format's message, else the body.
    pub fn message(&self) -> String {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&self.body) {
            if let Some(m) = v["error"]["message"].as_str() {
                let kind = v["error"]["kind"].as_str().unwrap_or("error");
                return format!("{} {kind}: {m}", self.status);
            }
        }
        format!(
            "{} {}",
            self.status,
            String::from_utf8_lossy(&self.body).trim()
        )
    }
}

/// Where and how `mast ctl` talks to the cluster.
#[derive(Debug, Clone)]
pub struct Client {
    pub endpoints: Vec<String>,
    pub token: Option<String>,
    /// Total time one command may spend retrying.
    pub deadline: Duration,
    /// Per connect / read / write.
    pub io_timeout: Duration,
}

impl Client {
    /// Sends to each endpoint in turn until one answers something other than 503; retries
    /// rounds until the deadline. Errors carry the last thing seen.
    pub fn call(&self, method: &str, target: &str, body: &[u8]) -> Result<Reply, String> {
        let until = Instant::now() + self.deadline;
        let mut last = String::from("no endpoints");
        loop {
            for ep in &self.endpoints {
                match self.follow(ep, method, target, body) {
                    Ok(r) if r.status == 503 => last = format!("{ep}: {}", r.message()),
                    Ok(r) => return Ok(r),
                    Err(e) => last = format!("{ep}: {e}"),
                }
            }
            if Instant::now() + Duration::from_millis(RETRY_PAUSE_MS) >= until {
                return Err(format!("no endpoint answered in time (last: {last})"));
            }
            std::thread::sleep(Duration::from_millis(RETRY_PAUSE_MS));
        }
    }

    /// One endpoint, without retries (for per-member commands like `status`).
    pub fn call_one(
        &self,
        ep: &str,
        method: &str,
        target: &str,
        body: &[u8],
    ) -> Result<Reply, String> {
        self.follow(ep, method, target, body)
    }

    fn follow(&self, ep: &str, method: &str, target: &str, body: &[u8]) -> Result<Reply, String> {
        let mut ep = ep.to_string();
        for _ in 0..=REDIRECTS_MAX {
            let r = self.once(&ep, method, target, body)?;
            if r.status != 307 {
                return Ok(r);
            }
            // `location` is `http://HOST:PORT/...`; only its authority is used.
            let loc = r.header("location").unwrap_or("");
            let authority = loc
                .strip_prefix("http://")
                .unwrap_or(loc)
                .split('/')
                .next()
                .unwrap_or("");
            if authority.is_empty() {
                return Ok(r);
            }
            ep = authority.to_string();
        }
        Err(format!("more than {REDIRECTS_MAX} redirects"))
    }

    fn once(&self, ep: &str, method: &str, target: &str, body: &[u8]) -> Result<Reply, String> {
        let mut stream = self.connect(ep)?;
        let auth = self
            .token
            .as_ref()
            .map(|t| format!("authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let head = format!(
            "{method} {target} HTTP/1.1\r\nhost: {ep}\r\nuser-agent: mast-ctl\r\ncontent-length: {}\r\n{auth}connection: close\r\n\r\n",
            body.len()
        );
        stream
            .write_all(head.as_bytes())
            .and_then(|_| stream.write_all(body))
            .map_err(|e| format!("send: {e}"))?;
        let mut reply = read_reply(&mut stream, |chunk, out| {
            if out.len() + chunk.len() > BODY_BYTES_MAX {
                return Err(format!("the reply is over {BODY_BYTES_MAX} bytes"));
            }
            out.extend_from_slice(chunk);
            Ok(())
        })?;
        reply.from = ep.to_string();
        Ok(reply)
    }

    /// Connects to `ep` with the client's timeouts.
    pub fn connect(&self, ep: &str) -> Result<TcpStream, String> {
        let addr: SocketAddr = ep
            .to_socket_addrs()
            .map_err(|e| format!("{ep}: {e}"))?
            .next()
            .ok_or_else(|| format!("{ep}: no address"))?;
        let s = TcpStream::connect_timeout(&addr, self.io_timeout)
            .map_err(|e| format!("connect: {e}"))?;
        s.set_read_timeout(Some(self.io_timeout))
            .and_then(|_| s.set_write_timeout(Some(self.io_timeout)))
            .map_err(|e| e.to_string())?;
        Ok(s)
    }
}

/// Reads one response from `stream` (which the server closes after it), handing body bytes
/// to `sink` as they arrive (de-chunked). The returned reply's body is what `sink` kept in
/// the buffer it was given.
pub fn read_reply(
    stream: &mut impl Read,
    mut sink: impl FnMut(&[u8], &mut Vec<u8>) -> Result<(), String>,
) -> Result<Reply, String> {
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    let (status, headers, head_len) = loop {
        let n = stream.read(&mut chunk).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("the server closed before a complete reply".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut hs = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Response::new(&mut hs);
        match parsed.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let headers: Vec<(String, String)> = parsed
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).trim().to_string(),
                        )
                    })
                    .collect();
                break (parsed.code.unwrap_or(0), headers, len);
            }
            Ok(httparse::Status::Partial) if buf.len() > HEAD_BYTES_MAX => {
                return Err("the reply head is too large".into())
            }
            Ok(httparse::Status::Partial) => continue,
            Err(e) => return Err(format!("the reply is not HTTP: {e}")),
        }
    };
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let chunked = find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let length = match find("content-length") {
        Some(v) => Some(
            v.parse::<usize>()
                .map_err(|_| "bad content-length".to_string())?,
        ),
        None => None,
    };
    let mut body = Vec::new();
    let mut pending = buf.split_off(head_len);
    if chunked {
        let mut dec = Dechunk::default();
        loop {
            let done = dec.feed(&mut pending, |d| sink(d, &mut body))?;
            if done {
                break;
            }
            let n = stream.read(&mut chunk).map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("the server closed mid-body (truncated reply)".into());
            }
            pending.extend_from_slice(&chunk[..n]);
        }
    } else {
        let mut got = 0usize;
        if !pending.is_empty() {
            got += pending.len();
            sink(&pending, &mut body)?;
        }
        loop {
            if length.is_some_and(|l| got >= l) {
                break;
            }
            let n = stream.read(&mut chunk).map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                if length.is_some() {
                    return Err("the server closed mid-body (truncated reply)".into());
                }
                break;
            }
            got += n;
            sink(&chunk[..n], &mut body)?;
        }
    }
    Ok(Reply {
        status,
        headers,
        body,
        from: String::new(),
    })
}

/// Incremental chunked-transfer decoder.
#[derive(Default)]
struct Dechunk {
    /// Bytes left in the current chunk's data (then its CRLF).
    left: usize,
    in_data: bool,
}

impl Dechunk {
    /// Consumes what it can of `buf`; true once the last chunk was seen.
    fn feed(
        &mut self,
        buf: &mut Vec<u8>,
        mut out: impl FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<bool, String> {
        loop {
            if self.in_data {
                if self.left > 0 {
                    let take = self.left.min(buf.len());
                    if take == 0 {
                        return Ok(false);
                    }
                    out(&buf[..take])?;
                    buf.drain(..take);
                    self.left -= take;
                    continue;
                }
                if buf.len() < 2 {
                    return Ok(false);
                }
                if &buf[..2] != b"\r\n" {
                    return Err("bad chunk framing".into());
                }
                buf.drain(..2);
                self.in_data = false;
            }
            let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
                if buf.len() > 1024 {
                    return Err("chunk size line too long".into());
                }
                return Ok(false);
            };
            let line = std::str::from_utf8(&buf[..eol]).map_err(|_| "bad chunk size")?;
            let size_text = line.split(';').next().unwrap_or("").trim();
            let size =
                usize::from_str_radix(size_text, 16).map_err(|_| "bad chunk size".to_string())?;
            buf.drain(..eol + 2);
            if size == 0 {
                return Ok(true);
            }
            self.left = size;
            self.in_data = true;
        }
    }
}

/// Percent-encodes a key for `/kv/KEY` (slashes stay, as the server splits nothing).
pub fn encode_path(key: &str) -> String {
    encode(key, b"/-_.~")
}

/// Percent-encodes a query value.
pub fn encode_query(v: &str) -> String {
    encode(v, b"-_.~")
}

fn encode(s: &str, keep: &[u8]) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || keep.contains(&b) {
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

    #[test]
    fn replies_with_length_chunks_and_truncation() {
        let keep = |c: &[u8], o: &mut Vec<u8>| -> Result<(), String> {
            o.extend_from_slice(c);
            Ok(())
        };
        let r = read_reply(
            &mut &b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"[..],
            keep,
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, b"hello".as_slice()));
        let r = read_reply(
            &mut &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n"[..],
            keep,
        )
        .unwrap();
        assert_eq!(r.body, b"abcde");
        assert!(read_reply(
            &mut &b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nhello"[..],
            keep
        )
        .is_err());
        assert!(read_reply(
            &mut &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n9\r\nabc"[..],
            keep
        )
        .is_err());
        assert!(read_reply(&mut &b"nonsense\r\n\r\n"[..], keep).is_err());
    }

    #[test]
    fn messages_and_encoding() {
        let r = Reply {
            status: 403,
            headers: vec![],
            body: br#"{"error":{"status":403,"kind":"forbidden","message":"read only"}}"#.to_vec(),
            from: String::new(),
        };
        assert_eq!(r.message(), "403 forbidden: read only");
        assert_eq!(encode_path("a b/c%"), "a%20b/c%25");
        assert_eq!(encode_query("a/b"), "a%2Fb");
    }
}
