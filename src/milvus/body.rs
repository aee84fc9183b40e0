//! Request bodies and replies as Milvus's REST v2 handlers decode and write them (reference
//! §1.3–1.5): JSON objects whose field names match case-insensitively, 1801 for a body that
//! is not JSON or has a value of the wrong type, 1802 for a missing required field, and the
//! `{"code":N,"message":…}` / `{"code":0,"data":…}` envelope.

use mast_http::Response;
use serde_json::{Map, Value};

pub const CODE_NOT_READY: i32 = 1;
pub const CODE_INTERNAL: i32 = 5;
pub const CODE_INVALID_DB_NAME: i32 = 802;
pub const CODE_DATABASES_EXCEEDED: i32 = 801;
pub const CODE_COLLECTIONS_EXCEEDED: i32 = 102;
pub const CODE_CAPACITY_EXCEEDED: i32 = 250;
pub const CODE_INVALID: i32 = 1100;
pub const CODE_MISSING: i32 = 1101;
pub const CODE_FIELD_NAME_INVALID: i32 = 1701;
pub const CODE_BAD_JSON: i32 = 1801;
pub const CODE_REQUIRED: i32 = 1802;
pub const CODE_TIMEOUT: i32 = 10001;
pub const CODE_UNEXPECTED: i32 = 65535;

/// A Milvus error: its code and message (HTTP 200 unless `http` says otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MErr {
    pub code: i32,
    pub message: String,
    pub http: u16,
}

impl MErr {
    pub fn new(code: i32, message: impl Into<String>) -> MErr {
        MErr {
            code,
            message: message.into(),
            http: 200,
        }
    }

    /// 1100 with Milvus's `<context>: invalid parameter` text.
    pub fn invalid(context: impl std::fmt::Display) -> MErr {
        MErr::new(CODE_INVALID, format!("{context}: invalid parameter"))
    }

    pub fn response(&self) -> Response {
        Response::json(
            self.http,
            &serde_json::json!({"code": self.code, "message": self.message}),
        )
    }
}

pub type MResult<T> = Result<T, MErr>;

/// `{"code":0,"data":…}`.
pub fn ok(data: Value) -> Response {
    Response::json(200, &serde_json::json!({"code": 0, "data": data}))
}

#[derive(serde::Serialize)]
struct Envelope<'a, T: serde::Serialize + ?Sized> {
    code: i32,
    data: &'a T,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
}

/// `{"code":0,"data":…}` (with `"message"` when given) from any serializable data, written
/// straight to bytes: the hot reads (describe, has, list) build no `Value` tree.
pub fn ok_ser<T: serde::Serialize + ?Sized>(data: &T, message: Option<&str>) -> Response {
    Response::json(
        200,
        &Envelope {
            code: 0,
            data,
            message,
        },
    )
}

/// `{"code":0,"data":…,"message":…}` (describe collection, load state).
pub fn ok_with_message(data: Value, message: &str) -> Response {
    Response::json(
        200,
        &serde_json::json!({"code": 0, "data": data, "message": message}),
    )
}

fn bad_json(detail: impl std::fmt::Display) -> MErr {
    MErr::new(
        CODE_BAD_JSON,
        format!("can only accept json format request, error: {detail}"),
    )
}

pub fn required(name: &str) -> MErr {
    MErr::new(
        CODE_REQUIRED,
        format!(
            "missing required parameters, error: Key: '{name}' Error:Field validation for '{name}' failed on the 'required' tag"
        ),
    )
}

/// A decoded request body: a JSON object.
#[derive(Debug, Clone, Default)]
pub struct Body {
    obj: Map<String, Value>,
}

impl Body {
    pub fn parse(bytes: &[u8]) -> MResult<Body> {
        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            return Err(bad_json(
                "EOF, the request body should be nil, however {} is valid",
            ));
        }
        match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(obj)) => Ok(Body { obj }),
            Ok(other) => Err(bad_json(format!(
                "json: cannot unmarshal {} into a request object",
                kind(&other)
            ))),
            Err(e) => Err(bad_json(e)),
        }
    }

    pub fn from_map(obj: Map<String, Value>) -> Body {
        Body { obj }
    }

    /// The value of a field, exact name first, then ignoring ASCII case (Go's
    /// `encoding/json`). `null` counts as absent, as Go leaves the zero value.
    pub fn get(&self, name: &str) -> Option<&Value> {
        let v = self.obj.get(name).or_else(|| {
            self.obj
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
        })?;
        (!v.is_null()).then_some(v)
    }

    pub fn str_opt(&self, name: &str) -> MResult<Option<String>> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(mismatch(name, v, "string")),
        }
    }

    /// A string that is absent or empty counts as "" (Go's zero value).
    pub fn str_or_empty(&self, name: &str) -> MResult<String> {
        Ok(self.str_opt(name)?.unwrap_or_default())
    }

    /// A required string field: missing or empty is 1802.
    pub fn str_req(&self, name: &str) -> MResult<String> {
        match self.str_opt(name)? {
            Some(s) if !s.is_empty() => Ok(s),
            _ => Err(required(name)),
        }
    }

    pub fn bool_opt(&self, name: &str) -> MResult<Option<bool>> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(mismatch(name, v, "bool")),
        }
    }

    pub fn int_opt(&self, name: &str) -> MResult<Option<i64>> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_i64() {
                Some(i) => Ok(Some(i)),
                None => Err(mismatch(name, &Value::Number(n.clone()), "int")),
            },
            Some(v) => Err(mismatch(name, v, "int")),
        }
    }

    pub fn object_opt(&self, name: &str) -> MResult<Option<Body>> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(Body { obj: m.clone() })),
            Some(v) => Err(mismatch(name, v, "object")),
        }
    }

    pub fn array_opt(&self, name: &str) -> MResult<Option<Vec<Value>>> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a.clone())),
            Some(v) => Err(mismatch(name, v, "array")),
        }
    }

    /// An array of strings (`partitionNames`, `propertyKeys`).
    pub fn strings_opt(&self, name: &str) -> MResult<Option<Vec<String>>> {
        let Some(items) = self.array_opt(name)? else {
            return Ok(None);
        };
        items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                v => Err(mismatch(name, &v, "string")),
            })
            .collect::<MResult<Vec<_>>>()
            .map(Some)
    }

    /// A map whose values Milvus stringifies (`properties`, `params`, `elementTypeParams`):
    /// strings pass through, anything else is JSON-encoded. Keys keep the client's order.
    pub fn kvs_opt(&self, name: &str) -> MResult<Option<Vec<(String, String)>>> {
        Ok(self.object_opt(name)?.map(|b| b.kvs()))
    }

    pub fn kvs(&self) -> Vec<(String, String)> {
        self.obj
            .iter()
            .map(|(k, v)| (k.clone(), stringify(v)))
            .collect()
    }

    /// A field name as present in the body (case-insensitive), for the `params` maps whose keys
    /// are matched exactly by Milvus.
    pub fn raw(&self) -> &Map<String, Value> {
        &self.obj
    }
}

pub fn stringify(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn mismatch(name: &str, v: &Value, want: &str) -> MErr {
    bad_json(format!(
        "json: cannot unmarshal {} into Go struct field .{name} of type {want}",
        kind(v)
    ))
}

/// `[{"key":k,"value":v}]`, Milvus's rendering of KV lists.
pub fn kv_list(kvs: &[(String, String)]) -> Value {
    Value::Array(
        kvs.iter()
            .map(|(k, v)| serde_json::json!({"key": k, "value": v}))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_match_case_insensitively_and_types_are_checked() {
        let b = Body::parse(br#"{"CollectionNAME":"c","autoId":true,"dim":"x","n":null}"#)
            .expect("object");
        assert_eq!(b.str_req("collectionName").unwrap(), "c");
        assert_eq!(b.bool_opt("autoID").unwrap(), Some(true));
        assert_eq!(b.int_opt("dim").unwrap_err().code, CODE_BAD_JSON);
        assert_eq!(b.str_opt("n").unwrap(), None);
        assert_eq!(b.str_req("partitionName").unwrap_err().code, CODE_REQUIRED);
        for bad in [&b""[..], b"  ", b"[1]", b"{", b"\"s\""] {
            assert_eq!(Body::parse(bad).unwrap_err().code, CODE_BAD_JSON, "{bad:?}");
        }
    }

    #[test]
    fn values_are_stringified() {
        let b = Body::parse(br#"{"p":{"dim":128,"s":"x","b":true,"o":{"a":1}}}"#).unwrap();
        let mut got = b.kvs_opt("p").unwrap().unwrap();
        got.sort();
        assert_eq!(
            got,
            vec![
                ("b".to_string(), "true".to_string()),
                ("dim".into(), "128".into()),
                ("o".into(), "{\"a\":1}".into()),
                ("s".into(), "x".into()),
            ]
        );
    }
}
