//! How the API answers: JSON bodies, and every refusal as
//! `{"error": "..."}` with a status that says whose fault it was. The
//! extractors here ([`JsonBody`], [`Params`]) refuse in that same shape, so
//! a route never answers in any other.

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Request},
    http::{header, request::Parts, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use pilus_controlplane::Error as AgentError;
use serde::{de::DeserializeOwned, Serialize};

/// A refusal or failure, answered as `{"error": message}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl From<AgentError> for ApiError {
    fn from(e: AgentError) -> ApiError {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::error!(error = %e.message(), "request failed");
        }
        ApiError::new(status, e.message())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body<'a> {
            error: &'a str,
        }
        json(
            self.status,
            &Body {
                error: &self.message,
            },
        )
    }
}

/// `value` as a JSON body. A value that does not serialize (a map with
/// non-string keys) is a bug of the route: a 500, not a panic.
pub fn json(status: StatusCode, value: &(impl Serialize + ?Sized)) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let mut r = (status, body).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(e) => ApiError::internal(format!("cannot encode the response: {e}")).into_response(),
    }
}

/// `Ok` as 200 with the value, `Err` as its error.
pub fn ok<T: Serialize>(r: Result<T, AgentError>) -> Response {
    with_status(StatusCode::OK, r)
}

pub fn with_status<T: Serialize>(status: StatusCode, r: Result<T, AgentError>) -> Response {
    match r {
        Ok(v) => json(status, &v),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// A JSON request body. Unlike axum's `Json`, it needs no Content-Type
/// (`curl -d` sends a form type) and refuses with the API's error shape:
/// 413 over the body limit, 400 for a body that did not arrive whole or
/// does not decode.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let what = format!("body of {} {}", req.method(), req.uri().path());
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::new(e.status(), format!("request body: {}", e.body_text())))?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request(format!("request body: {what}: invalid JSON: {e}")))
    }
}

/// The query's `name=value` pairs in order, percent-decoded (`+` is a
/// space, as in HTML forms); a name without `=` has an empty value. A
/// query that is not valid percent-encoded UTF-8 is refused (400) rather
/// than read lossily: a caller would not get what it asked for.
pub struct Params(pub Vec<(String, String)>);

impl Params {
    /// The value of the first parameter called `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parse_query(parts.uri.query().unwrap_or_default())
            .map(Params)
            .map_err(ApiError::bad_request)
    }
}

fn parse_query(raw: &str) -> Result<Vec<(String, String)>, String> {
    raw.split('&')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (name, value) = part.split_once('=').unwrap_or((part, ""));
            match (percent_decode(name), percent_decode(value)) {
                (Some(name), Some(value)) => Ok((name, value)),
                _ => Err(format!(
                    "query parameter {part:?} is not valid percent-encoded UTF-8"
                )),
            }
        })
        .collect()
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hi = char::from(hex[0]).to_digit(16)?;
                let lo = char::from(hex[1]).to_digit(16)?;
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clients_queries_decode_to_what_was_encoded() {
        let pairs = [
            ("a", "1"),
            ("sp ace", "x y"),
            ("amp&eq=", "+%/?#"),
            ("ünï", "日本"),
        ];
        let encoded = pilus_client::encode_query(&pairs);
        let decoded = parse_query(&encoded).unwrap();
        let expected: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(decoded, expected);
        assert_eq!(parse_query("x&y=&z=1").unwrap()[0], ("x".into(), "".into()));
        assert_eq!(
            parse_query("a+b=c+d").unwrap()[0],
            ("a b".into(), "c d".into())
        );
        assert!(parse_query("x=%4").is_err());
        assert!(parse_query("x=%ff").is_err());
        assert!(parse_query("x=%zz").is_err());
    }
}
