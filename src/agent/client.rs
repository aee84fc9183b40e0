//! A minimal HTTP/1.1 client on monoio for the agent's calls to the masters: one request
//! per connection (`Connection: close`, as CubeFS's SDK does), bounded response, deadline.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

/// Largest response accepted.
pub const RESPONSE_BYTES_MAX: usize = 8 * 1024 * 1024;

/// A response: status and body.
#[derive(Debug, Clone)]
pub struct HttpReply {
    pub status: u16,
    pub body: Vec<u8>,
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

/// Sends one request and reads the whole response within `timeout`.
pub async fn call(
    addr: &str,
    method: &str,
    target: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<HttpReply, String> {
    let sa = resolve(addr)?;
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nUser-Agent: mast-node\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    let work = async move {
        let mut stream = TcpStream::connect(sa)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let (res, _) = stream.write_all(req).await;
        res.map_err(|e| format!("write to {addr}: {e}"))?;
        let mut got: Vec<u8> = Vec::new();
        loop {
            let buf = Vec::with_capacity(16 * 1024);
            let (res, buf) = stream.read(buf).await;
            let n = res.map_err(|e| format!("read from {addr}: {e}"))?;
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            if got.len() > RESPONSE_BYTES_MAX {
                return Err(format!(
                    "response from {addr} over {RESPONSE_BYTES_MAX} bytes"
                ));
            }
            if let Some(reply) = parse(&got)? {
                return Ok(reply);
            }
        }
        parse(&got)?.ok_or_else(|| format!("truncated response from {addr}"))
    };
    match monoio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "no response from {addr} within {} ms",
            timeout.as_millis()
        )),
    }
}

/// Parses a complete response, `None` while more bytes are needed.
fn parse(buf: &[u8]) -> Result<Option<HttpReply>, String> {
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
    for h in resp.headers.iter() {
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
        return Ok(dechunk(rest)?.map(|body| HttpReply { status, body }));
    }
    match length {
        Some(n) if rest.len() >= n => Ok(Some(HttpReply {
            status,
            body: rest[..n].to_vec(),
        })),
        Some(_) => Ok(None),
        // Without a length the body ends at EOF: the caller retries after EOF.
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
        if rest.len() < size + 2 {
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
        let r = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")
            .unwrap()
            .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hi"[..]));
        assert!(parse(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nhi")
            .unwrap()
            .is_none());
        let r =
            parse(b"HTTP/1.1 400 Bad\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nno\r\n0\r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (400, &b"no"[..]));
        assert!(parse(b"garbage\r\n\r\n").is_err());
    }
}
