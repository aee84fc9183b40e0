//! KV dialects: how a KV operation becomes an HTTP request for a given server, and how its
//! response is judged. mast speaks `PUT/GET /kv/{key}` with `If-Match` for CAS; etcd speaks its
//! v3 JSON gateway (`POST /v3/kv/put|range|txn` with base64 keys and values).

use base64::Engine as _;

use crate::http::{write_content_length, Response};
use crate::stats::{ErrorKind, Outcome};

/// What a KV response said, once judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvReply {
    /// How the operation ended.
    pub outcome: Outcome,
    /// The key's revision after this operation, when the server told it.
    pub revision: Option<u64>,
}

impl KvReply {
    fn of(outcome: Outcome) -> Self {
        Self {
            outcome,
            revision: None,
        }
    }
}

/// A server's KV HTTP dialect.
pub trait KvApi: Send + Sync {
    /// Appends a request writing `value` to `key`; with `if_revision`, only if the key's
    /// current revision is that one (compare-and-swap).
    fn put(
        &self,
        host: &str,
        key: &[u8],
        value: &[u8],
        if_revision: Option<u64>,
        out: &mut Vec<u8>,
    );
    /// Appends a linearizable read of `key`.
    fn get(&self, host: &str, key: &[u8], out: &mut Vec<u8>);
    /// Judges the response to a `put` (`cas` tells whether it carried a revision).
    fn put_reply(&self, response: &Response<'_>, cas: bool) -> KvReply;
    /// Judges the response to a `get`.
    fn get_reply(&self, response: &Response<'_>) -> KvReply;
}

/// Maps a status the dialect did not expect to an outcome (redirects, no leader, errors).
pub fn status_outcome(status: u16) -> Outcome {
    match status {
        200..=299 => Outcome::Ok,
        307 | 308 => Outcome::Redirect,
        300..=399 => Outcome::Error(ErrorKind::Status3xx),
        400..=499 => Outcome::Error(ErrorKind::Status4xx),
        503 => Outcome::Error(ErrorKind::Unavailable),
        _ => Outcome::Error(ErrorKind::Status5xx),
    }
}

/// mast's KV API: `PUT /kv/{key}` (204), `GET /kv/{key}` (200 or 404), CAS with
/// `If-Match: "<rev>"` (or `If-None-Match: *` for "absent"; 412 on mismatch). Revisions are
/// read from `ETag` when present.
#[derive(Debug, Clone, Copy, Default)]
pub struct MastApi;

fn etag_revision(response: &Response<'_>) -> Option<u64> {
    let tag = response.etag?;
    let tag = tag.strip_prefix(b"W/").unwrap_or(tag);
    let inner = tag
        .strip_prefix(b"\"")
        .and_then(|t| t.strip_suffix(b"\""))
        .unwrap_or(tag);
    std::str::from_utf8(inner).ok()?.parse().ok()
}

impl KvApi for MastApi {
    fn put(
        &self,
        host: &str,
        key: &[u8],
        value: &[u8],
        if_revision: Option<u64>,
        out: &mut Vec<u8>,
    ) {
        out.extend_from_slice(b"PUT /kv/");
        out.extend_from_slice(key);
        out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        out.extend_from_slice(host.as_bytes());
        out.extend_from_slice(b"\r\n");
        match if_revision {
            None => {}
            // Revision 0 stands for "the key does not exist".
            Some(0) => out.extend_from_slice(b"If-None-Match: *\r\n"),
            Some(rev) => out.extend_from_slice(format!("If-Match: \"{rev}\"\r\n").as_bytes()),
        }
        write_content_length(out, value.len());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(value);
    }

    fn get(&self, host: &str, key: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(b"GET /kv/");
        out.extend_from_slice(key);
        out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        out.extend_from_slice(host.as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
    }

    fn put_reply(&self, response: &Response<'_>, cas: bool) -> KvReply {
        match response.status {
            200 | 201 | 204 => KvReply {
                outcome: Outcome::Ok,
                revision: etag_revision(response),
            },
            // The 412 tells the key's current revision: the next attempt can use it directly.
            412 if cas => KvReply {
                outcome: Outcome::Conflict,
                revision: etag_revision(response),
            },
            s => KvReply::of(status_outcome(s)),
        }
    }

    fn get_reply(&self, response: &Response<'_>) -> KvReply {
        match response.status {
            200 => KvReply {
                outcome: Outcome::Ok,
                revision: etag_revision(response),
            },
            404 => KvReply::of(Outcome::NotFound),
            s => KvReply::of(status_outcome(s)),
        }
    }
}

/// etcd's v3 JSON gateway (`/v3/kv/put`, `/v3/kv/range`, `/v3/kv/txn`); CAS is a txn comparing
/// the key's `mod_revision`.
#[derive(Debug, Clone, Copy, Default)]
pub struct EtcdApi;

fn etcd_request(host: &str, path: &str, body: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(b"POST ");
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\nContent-Type: application/json\r\n");
    write_content_length(out, body.len());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
}

/// etcd encodes int64 as JSON strings; accept numbers too.
fn json_u64(v: Option<&serde_json::Value>) -> Option<u64> {
    match v? {
        serde_json::Value::String(s) => s.parse().ok(),
        serde_json::Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

fn json_field<'v>(
    v: &'v serde_json::Value,
    snake: &str,
    camel: &str,
) -> Option<&'v serde_json::Value> {
    v.get(snake).or_else(|| v.get(camel))
}

impl KvApi for EtcdApi {
    fn put(
        &self,
        host: &str,
        key: &[u8],
        value: &[u8],
        if_revision: Option<u64>,
        out: &mut Vec<u8>,
    ) {
        let b64 = base64::engine::general_purpose::STANDARD;
        let (k, v) = (b64.encode(key), b64.encode(value));
        match if_revision {
            None => etcd_request(
                host,
                "/v3/kv/put",
                &format!(r#"{{"key":"{k}","value":"{v}"}}"#),
                out,
            ),
            Some(rev) => etcd_request(
                host,
                "/v3/kv/txn",
                &format!(
                    r#"{{"compare":[{{"key":"{k}","target":"MOD","result":"EQUAL","mod_revision":"{rev}"}}],"success":[{{"request_put":{{"key":"{k}","value":"{v}"}}}}]}}"#
                ),
                out,
            ),
        }
    }

    fn get(&self, host: &str, key: &[u8], out: &mut Vec<u8>) {
        let k = base64::engine::general_purpose::STANDARD.encode(key);
        etcd_request(host, "/v3/kv/range", &format!(r#"{{"key":"{k}"}}"#), out);
    }

    fn put_reply(&self, response: &Response<'_>, cas: bool) -> KvReply {
        if response.status != 200 {
            return KvReply::of(status_outcome(response.status));
        }
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(&response.body) else {
            return KvReply::of(Outcome::Error(ErrorKind::BadBody));
        };
        let revision = json.get("header").and_then(|h| json_u64(h.get("revision")));
        if cas && json.get("succeeded").and_then(|s| s.as_bool()) != Some(true) {
            return KvReply::of(Outcome::Conflict);
        }
        KvReply {
            outcome: Outcome::Ok,
            revision,
        }
    }

    fn get_reply(&self, response: &Response<'_>) -> KvReply {
        if response.status != 200 {
            return KvReply::of(status_outcome(response.status));
        }
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(&response.body) else {
            return KvReply::of(Outcome::Error(ErrorKind::BadBody));
        };
        match json
            .get("kvs")
            .and_then(|k| k.as_array())
            .and_then(|a| a.first())
        {
            Some(kv) => KvReply {
                outcome: Outcome::Ok,
                revision: json_u64(json_field(kv, "mod_revision", "modRevision")),
            },
            None => KvReply::of(Outcome::NotFound),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn resp(status: u16, etag: Option<&'static [u8]>, body: &'static [u8]) -> Response<'static> {
        Response {
            status,
            etag,
            location: None,
            body: Cow::Borrowed(body),
            close: false,
        }
    }

    #[test]
    fn mast_requests_and_replies() {
        let mut out = Vec::new();
        MastApi.put("h:1", b"k", b"vv", Some(9), &mut out);
        assert_eq!(
            out,
            b"PUT /kv/k HTTP/1.1\r\nHost: h:1\r\nIf-Match: \"9\"\r\nContent-Length: 2\r\n\r\nvv"
        );
        let ok = MastApi.put_reply(&resp(204, Some(b"\"10\""), b""), true);
        assert_eq!(ok.outcome, Outcome::Ok);
        assert_eq!(ok.revision, Some(10));
        let lost = MastApi.put_reply(&resp(412, Some(b"\"12\""), b""), true);
        assert_eq!((lost.outcome, lost.revision), (Outcome::Conflict, Some(12)));
        out.clear();
        MastApi.put("h:1", b"k", b"vv", Some(0), &mut out);
        assert!(String::from_utf8(out.clone())
            .unwrap()
            .contains("\r\nIf-None-Match: *\r\n"));
        assert_eq!(
            MastApi.put_reply(&resp(412, None, b""), false).outcome,
            Outcome::Error(ErrorKind::Status4xx)
        );
        assert_eq!(
            MastApi.get_reply(&resp(404, None, b"")).outcome,
            Outcome::NotFound
        );
        assert_eq!(
            MastApi.get_reply(&resp(307, None, b"")).outcome,
            Outcome::Redirect
        );
        assert_eq!(
            MastApi.get_reply(&resp(503, None, b"")).outcome,
            Outcome::Error(ErrorKind::Unavailable)
        );
    }

    #[test]
    fn etcd_requests_and_replies() {
        let mut out = Vec::new();
        EtcdApi.get("h:1", b"k", &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("POST /v3/kv/range HTTP/1.1\r\n"));
        assert!(text.ends_with(r#"{"key":"aw=="}"#));
        let found = EtcdApi.get_reply(&resp(
            200,
            None,
            br#"{"header":{"revision":"12"},"kvs":[{"key":"aw==","mod_revision":"11"}],"count":"1"}"#,
        ));
        assert_eq!((found.outcome, found.revision), (Outcome::Ok, Some(11)));
        let missing = EtcdApi.get_reply(&resp(200, None, br#"{"header":{"revision":"12"}}"#));
        assert_eq!(missing.outcome, Outcome::NotFound);
        let lost = EtcdApi.put_reply(&resp(200, None, br#"{"header":{"revision":"12"}}"#), true);
        assert_eq!(lost.outcome, Outcome::Conflict);
        let won = EtcdApi.put_reply(
            &resp(
                200,
                None,
                br#"{"header":{"revision":"13"},"succeeded":true}"#,
            ),
            true,
        );
        assert_eq!((won.outcome, won.revision), (Outcome::Ok, Some(13)));
        assert_eq!(
            EtcdApi
                .put_reply(&resp(200, None, b"not json"), false)
                .outcome,
            Outcome::Error(ErrorKind::BadBody)
        );
    }
}
