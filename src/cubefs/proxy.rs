//! The follower's reverse proxy (§3): a request that needs the leader's memory is relayed to
//! the leader's HTTP address unchanged and the reply relayed back unchanged, as CubeFS's
//! master does. One hop only: the relayed request carries [`FORWARDED_HEADER`], and a node
//! that receives it serves it itself even if it no longer leads (so two nodes that disagree
//! about the leader never bounce a request between them).

use std::net::SocketAddr;
use std::time::Duration;

use mast_http::{Method, Request, Response};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

/// Marks a request relayed by a follower.
pub const FORWARDED_HEADER: &str = "x-mast-cubefs-forwarded";
/// Relayed replies larger than this are refused (a cluster view of 100,000 nodes is ~30 MB).
pub const RELAY_REPLY_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Headers of a relayed reply above this are refused.
const RELAY_HEAD_BYTES_MAX: usize = 64 * 1024;
/// Connect + whole exchange; CubeFS's SDK waits 30–60 s per request.
pub const RELAY_TIMEOUT_MS: u64 = 30_000;
/// Request headers passed on (the rest are hop-by-hop or meaningless to the leader). The
/// client's `authorization` goes along: the leader checks the same token file again.
const PASSED_HEADERS: [&str; 4] = [
    "content-type",
    "user-agent",
    "x-cfs-accept-encoding",
    "authorization",
];

/// The part of a request a relay needs; `Send`.
#[derive(Debug, Clone)]
pub struct Relayed {
    method: Method,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Relayed {
    pub fn of(req: &Request) -> Relayed {
        let target = match req.query() {
            Some(q) => format!("{}?{q}", req.path()),
            None => req.path().to_string(),
        };
        let headers = PASSED_HEADERS
            .iter()
            .filter_map(|h| req.header_str(h).map(|v| (h.to_string(), v.to_string())))
            .collect();
        Relayed {
            method: req.method(),
            target,
            headers,
            body: req.body().to_vec(),
        }
    }

    fn encode(&self, host: &str) -> Vec<u8> {
        let mut out = format!(
            "{} {} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n{FORWARDED_HEADER}: 1\r\ncontent-length: {}\r\n",
            self.method.as_str(),
            self.target,
            self.body.len()
        );
        for (k, v) in &self.headers {
            out.push_str(k);
            out.push_str(": ");
            out.push_str(v);
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// Relays `req` to `leader` and returns its reply (status, content type, CubeFS's encoding
/// header and body), or why it could not.
pub async fn relay(leader: SocketAddr, req: Relayed) -> Result<Response, String> {
    match monoio::time::timeout(
        Duration::from_millis(RELAY_TIMEOUT_MS),
        exchange(leader, req),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => Err(format!("the leader {leader} did not answer in time")),
    }
}

async fn exchange(leader: SocketAddr, req: Relayed) -> Result<Response, String> {
    let mut stream = TcpStream::connect_addr(leader)
        .await
        .map_err(|e| format!("cannot reach the leader {leader}: {e}"))?;
    let (res, _) = stream.write_all(req.encode(&leader.to_string())).await;
    res.map_err(|e| format!("writing to the leader {leader}: {e}"))?;
    let mut got: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let (res, b) = stream.read(buf).await;
        buf = b;
        let n = res.map_err(|e| format!("reading from the leader {leader}: {e}"))?;
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        if got.len() > RELAY_REPLY_BYTES_MAX + RELAY_HEAD_BYTES_MAX {
            return Err(format!(
                "the leader's reply is over {RELAY_REPLY_BYTES_MAX} bytes"
            ));
        }
        if let Some(resp) = parse_reply(&got)? {
            return Ok(resp);
        }
    }
    parse_reply(&got)?.ok_or_else(|| format!("the leader {leader} closed mid-reply"))
}

/// A complete reply in `bytes`, None if more is needed. Only Content-Length framing is
/// accepted (what mast's server writes).
fn parse_reply(bytes: &[u8]) -> Result<Option<Response>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Response::new(&mut headers);
    let head_len = match parsed.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if bytes.len() > RELAY_HEAD_BYTES_MAX => {
            return Err("the leader's reply head is too large".into())
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("the leader's reply is not HTTP: {e}")),
    };
    let status = parsed.code.unwrap_or(502);
    let mut length = None;
    let mut content_type = "application/json";
    let mut encoding = None;
    for h in parsed.headers.iter() {
        let v = std::str::from_utf8(h.value).unwrap_or("").trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            length = Some(
                v.parse::<usize>()
                    .map_err(|_| "the leader's reply has a bad content-length".to_string())?,
            );
        } else if h.name.eq_ignore_ascii_case("content-type") {
            if v.starts_with("text/plain") {
                content_type = "text/plain; charset=utf-8";
            }
        } else if h.name.eq_ignore_ascii_case("x-cfs-content-encoding") {
            encoding = Some(v.to_string());
        }
    }
    let length = length.ok_or("the leader's reply has no content-length")?;
    if length > RELAY_REPLY_BYTES_MAX {
        return Err(format!(
            "the leader's reply is over {RELAY_REPLY_BYTES_MAX} bytes"
        ));
    }
    if bytes.len() < head_len + length {
        return Ok(None);
    }
    let body = bytes::Bytes::copy_from_slice(&bytes[head_len..head_len + length]);
    let mut resp = Response::bytes(status, content_type, body);
    if let Some(e) = encoding {
        resp = resp.with_header("x-cfs-content-encoding", e);
    }
    Ok(Some(resp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse_whole_or_not_at_all() {
        let full = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-cfs-content-encoding: gzip\r\ncontent-length: 4\r\n\r\nabcd";
        let r = parse_reply(full).unwrap().unwrap();
        assert_eq!((r.status, &r.body[..]), (200, &b"abcd"[..]));
        assert!(r
            .headers
            .iter()
            .any(|(k, v)| k == "x-cfs-content-encoding" && v == "gzip"));
        assert!(parse_reply(&full[..full.len() - 1]).unwrap().is_none());
        assert!(parse_reply(&full[..20]).unwrap().is_none());
        assert!(parse_reply(b"garbage\r\n\r\n").is_err());
        assert!(parse_reply(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
        let huge = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", usize::MAX);
        assert!(parse_reply(huge.as_bytes()).is_err());
    }
}
