//! A minimal HTTP/1.1 client on monoio for the agent's calls to the masters: keep-alive
//! connections shared by every simulated node of the process (so thousands of nodes
//! posting answers do not open a connection each), bounded response, deadline.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

/// Largest response accepted.
pub const RESPONSE_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Idle connections kept per master.
pub const IDLE_PER_ADDR_MAX: usize = 64;

/// A response: status and body.
#[derive(Debug, Clone)]
pub struct HttpReply {
    pub status: u16,
    pub body: Vec<u8>,
    /// The server keeps the connection open.
    pub keep_alive: bool,
}

/// Keep-alive connections to the masters, for one thread.
#[derive(Default)]
pub struct HttpPool {
    idle: RefCell<HashMap<SocketAddr, Vec<TcpStream>>>,
}

impl HttpPool {
    /// Sends one request and reads its response within `timeout`, on an idle connection
    /// if there is one. A reused connection the server closed meanwhile is replaced once
    /// (requests the agent sends are safe to repeat: registration is idempotent per
    /// address, and an answer applied twice changes nothing).
    pub async fn call(
        &self,
        addr: &str,
        method: &str,
        target: &str,
        body: &[u8],
        timeout: Duration,
    ) -> Result<HttpReply, String> {
        let sa = resolve(addr)?;
        let mut req = format!(
            "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nUser-Agent: mast-node\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        let work = async {
            let pooled = self.idle.borrow_mut().get_mut(&sa).and_then(Vec::pop);
            if let Some(stream) = pooled {
                if let Ok((reply, stream)) = exchange(stream, addr, req.clone()).await {
                    self.give_back(sa, reply.keep_alive, stream);
                    return Ok(reply);
                }
            }
            let stream = TcpStream::connect(sa)
                .await
                .map_err(|e| format!("connect {addr}: {e}"))?;
            let _ = stream.set_nodelay(true);
            let (reply, stream) = exchange(stream, addr, req).await?;
            self.give_back(sa, reply.keep_alive, stream);
            Ok(reply)
        };
        match monoio::time::timeout(timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "no response from {addr} within {} ms",
                timeout.as_millis()
            )),
        }
    }

    fn give_back(&self, sa: SocketAddr, keep_alive: bool, stream: TcpStream) {
        if !keep_alive {
            return;
        }
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry(sa).or_default();
        if list.len() < IDLE_PER_ADDR_MAX {
            list.push(stream);
        }
    }
}

/// Writes a request and reads one whole response on `stream`.
async fn exchange(
    mut stream: TcpStream,
    addr: &str,
    req: Vec<u8>,
) -> Result<(HttpReply, TcpStream), String> {
    let (res, _) = stream.write_all(req).await;
    res.map_err(|e| format!("write to {addr}: {e}"))?;
    let mut got: Vec<u8> = Vec::new();
    loop {
        let buf = Vec::with_capacity(16 * 1024);
        let (res, buf) = stream.read(buf).await;
        let n = res.map_err(|e| format!("read from {addr}: {e}"))?;
        if n == 0 {
            let mut reply = parse(&got, true)?
                .ok_or_else(|| format!("connection to {addr} closed mid-response"))?;
            reply.keep_alive = false;
            return Ok((reply, stream));
        }
        got.extend_from_slice(&buf[..n]);
        if got.len() > RESPONSE_BYTES_MAX {
            return Err(format!(
                "response from {addr} over {RESPONSE_BYTES_MAX} bytes"
            ));
        }
        if let Some(reply) = parse(&got, false)? {
            return Ok((reply, stream));
        }
    }
}

fn resolve(addr: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = addr.parse() {
        return Ok(a);
    }
    addr.to_socket_addrs()
        .map_err(|e| format!("{addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr}: no address"))
}

/// Parses a complete response, `None` while more bytes are needed (`eof`: the body of a
/// response without a length ends here).
fn parse(buf: &[u8], eof: bool) -> Result<Option<HttpReply>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let head = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("bad response: {e}")),
    };
    let status = resp.code.unwrap_or(0);
    let mut length = None;
    let mut chunked = false;
    let mut keep_alive = true;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("connection") && h.value.eq_ignore_ascii_case(b"close") {
            keep_alive = false;
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            length = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok());
        } else if h.name.eq_ignore_ascii_case("transfer-encoding")
            && h.value.eq_ignore_ascii_case(b"chunked")
        {
            chunked = true;
        }
    }
    let rest = &buf[head..];
    if chunked {
        return Ok(dechunk(rest)?.map(|body| HttpReply {
            status,
            body,
            keep_alive,
        }));
    }
    match length {
        Some(n) if rest.len() >= n => Ok(Some(HttpReply {
            status,
            body: rest[..n].to_vec(),
            keep_alive,
        })),
        Some(_) => Ok(None),
        // Without a length the body ends at EOF, and the connection with it.
        None if eof => Ok(Some(HttpReply {
            status,
            body: rest.to_vec(),
            keep_alive: false,
        })),
        None => Ok(None),
    }
}

fn dechunk(mut rest: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut body = Vec::new();
    loop {
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&rest[..eol]).map_err(|_| "bad chunk size")?;
        let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("bad chunk size {line:?}"))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(Some(body));
        }
        let Some(need) = size.checked_add(2).filter(|&n| n <= RESPONSE_BYTES_MAX) else {
            return Err(format!("chunk of {size} bytes over the response limit"));
        };
        if rest.len() < need {
            return Ok(None);
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// CubeFS's envelope `{"code":N,"msg":…,"data":…}`.
#[derive(Debug, serde::Deserialize)]
pub struct Envelope {
    pub code: i64,
    #[serde(default)]
    pub msg: String,
    #[serde(default)]
    pub data: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_length_and_chunked_bodies() {
        let r = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi", false)
            .unwrap()
            .unwrap();
        assert_eq!(
            (r.status, r.body.as_slice(), r.keep_alive),
            (200, &b"hi"[..], true)
        );
        assert!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nhi", false)
                .unwrap()
                .is_none()
        );
        let r = parse(
            b"HTTP/1.1 400 Bad\r\nConnection: close\r\n\r\nno leader",
            true,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (r.body.as_slice(), r.keep_alive),
            (&b"no leader"[..], false)
        );
        let r = parse(
            b"HTTP/1.1 400 Bad\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nno\r\n0\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (400, &b"no"[..]));
        assert!(parse(b"garbage\r\n\r\n", false).is_err());
        let huge = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nx";
        assert!(parse(huge, false).is_err());
    }
}
