//! The CubeFS master's HTTP dialect (reference §1–3): parameters in the query string (also on
//! POST), an empty value meaning "absent", every handled request answered HTTP 200 with
//! `{"code","msg","data"}`, the whole body gzipped when `x-cfs-Accept-Encoding: gzip` asks,
//! Go's boolean spellings, RFC 3339 times. Never HTTP 403 (CubeFS's SDK retries it forever).

use std::io::Write;

use mast_http::{Request, Response};
use serde::Serialize;

use crate::meta::cubefs::{CODE_INTERNAL, CODE_PARAM};

/// Query parameters of one request, decoded once; `Send`, so they can cross to shard 0.
#[derive(Debug, Clone, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

/// A request's parameter problem, already in CubeFS's words (code 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamError(pub String);

impl Params {
    pub fn of(req: &Request) -> Params {
        Params {
            pairs: req
                .query_pairs()
                .into_iter()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        }
    }

    #[cfg(test)]
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Params {
        Params {
            pairs: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// The value of `name`; absent and empty are the same (Go's `ParseForm`).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    pub fn required(&self, name: &str) -> Result<&str, ParamError> {
        self.get(name)
            .ok_or_else(|| ParamError(format!("parameter {name} not found")))
    }

    /// Go's `strconv.ParseBool`.
    pub fn bool(&self, name: &str) -> Result<Option<bool>, ParamError> {
        match self.get(name) {
            None => Ok(None),
            Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(Some(true)),
            Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(Some(false)),
            Some(v) => Err(ParamError(format!(
                "parameter {name} {v:?} is not a boolean"
            ))),
        }
    }

    pub fn u64(&self, name: &str) -> Result<Option<u64>, ParamError> {
        self.get(name)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    ParamError(format!("parameter {name} {v:?} is not an unsigned integer"))
                })
            })
            .transpose()
    }

    pub fn f64(&self, name: &str) -> Result<Option<f64>, ParamError> {
        self.get(name)
            .map(|v| {
                v.parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite())
                    .ok_or_else(|| ParamError(format!("parameter {name} {v:?} is not a number")))
            })
            .transpose()
    }

    /// Non-empty pairs, in request order.
    pub fn present(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// How the reply must be encoded (from the request's headers).
#[derive(Debug, Clone, Copy, Default)]
pub struct Encoding {
    pub gzip: bool,
}

impl Encoding {
    pub fn of(req: &Request) -> Encoding {
        Encoding {
            gzip: req
                .header_str("x-cfs-accept-encoding")
                .is_some_and(|v| v.split(',').any(|e| e.trim().eq_ignore_ascii_case("gzip"))),
        }
    }
}

#[derive(Serialize)]
struct Envelope<'a, T: Serialize> {
    code: i32,
    msg: &'a str,
    data: T,
}

fn envelope<T: Serialize>(enc: Encoding, code: i32, msg: &str, data: T) -> Response {
    let body = match serde_json::to_vec(&Envelope { code, msg, data }) {
        Ok(b) => b,
        // Only a non-string map key could fail here; answer in the envelope regardless.
        Err(e) => format!(
            r#"{{"code":{CODE_INTERNAL},"msg":{},"data":null}}"#,
            serde_json::Value::String(format!("marshal data error: {e}"))
        )
        .into_bytes(),
    };
    if !enc.gzip {
        return Response::bytes(200, "application/json", body.into());
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    match gz.write_all(&body).and_then(|()| gz.finish()) {
        Ok(zipped) => Response::bytes(200, "application/json", zipped.into())
            .with_header("x-cfs-content-encoding", "gzip"),
        // An uncompressed reply without the header is accepted by CubeFS's clients.
        Err(_) => Response::bytes(200, "application/json", body.into()),
    }
}

/// Success: code 0, msg "success".
pub fn ok<T: Serialize>(enc: Encoding, data: T) -> Response {
    envelope(enc, 0, "success", data)
}

/// Failure: code ≠ 0, the text in msg, data null.
pub fn fail(enc: Encoding, code: i32, msg: &str) -> Response {
    envelope(enc, code, msg, serde_json::Value::Null)
}

pub fn param_fail(enc: Encoding, e: &ParamError) -> Response {
    fail(enc, CODE_PARAM, &e.0)
}

/// The leader check's answer when no leader is known (§3): the SDK moves to the next master.
pub fn no_leader() -> Response {
    Response::text(400, "no leader")
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (Howard Hinnant's
/// algorithm), so times format without a calendar crate.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn split_ms(ms: u64) -> ((i64, u32, u32), u64, u64, u64) {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    (civil_from_days(days), rem / 3600, rem % 3600 / 60, rem % 60)
}

/// A `time.Time` as Go's JSON writes it (RFC 3339, UTC). 0 is Go's zero time.
pub fn rfc3339(ms: u64) -> String {
    if ms == 0 {
        return "0001-01-01T00:00:00Z".into();
    }
    let ((y, mo, d), h, mi, s) = split_ms(ms);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// CubeFS's `CreateTime` layout `2006-01-02 15:04:05` (mast writes UTC).
pub fn go_datetime(ms: u64) -> String {
    let ((y, mo, d), h, mi, s) = split_ms(ms);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}")
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_format_like_go() {
        assert_eq!(rfc3339(0), "0001-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_000), "1970-01-01T00:00:01Z");
        // 2024-02-29 12:34:56 UTC (a leap day).
        assert_eq!(rfc3339(1_709_210_096_000), "2024-02-29T12:34:56Z");
        assert_eq!(go_datetime(1_709_210_096_000), "2024-02-29 12:34:56");
    }

    #[test]
    fn params_follow_go_rules() {
        let p = Params::from_pairs(&[
            ("a", ""),
            ("b", "T"),
            ("c", "yes"),
            ("n", "7"),
            ("f", "NaN"),
        ]);
        assert_eq!(p.get("a"), None);
        assert_eq!(p.required("a").unwrap_err().0, "parameter a not found");
        assert_eq!(p.bool("b"), Ok(Some(true)));
        assert!(p.bool("c").is_err());
        assert_eq!(p.bool("zz"), Ok(None));
        assert_eq!(p.u64("n"), Ok(Some(7)));
        assert!(p.f64("f").is_err());
    }

    #[test]
    fn envelope_and_gzip() {
        let r = ok(Encoding::default(), 7u64);
        assert_eq!(
            (r.status, &r.body[..]),
            (200, &br#"{"code":0,"msg":"success","data":7}"#[..])
        );
        let r = fail(Encoding::default(), 12, "data node not exists");
        assert_eq!(
            &r.body[..],
            br#"{"code":12,"msg":"data node not exists","data":null}"#
        );
        let r = ok(Encoding { gzip: true }, "x");
        assert!(r
            .headers
            .iter()
            .any(|(k, v)| k == "x-cfs-content-encoding" && v == "gzip"));
        let mut out = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&r.body[..]), &mut out)
            .unwrap();
        assert_eq!(out, r#"{"code":0,"msg":"success","data":"x"}"#);
    }
}
