//! hyper answers a request head it cannot parse by itself (400 for a
//! malformed request line or header, 414, 431) with an empty body, before
//! any route sees it. The API promises `{"error": "..."}` on every refusal,
//! so the connection's write side is wrapped: a response head that is one
//! of those automatic answers is replaced by the same status with a JSON
//! body saying what was wrong.
//!
//! Telling them apart is safe because of what the API itself writes: every
//! response a route or middleware makes is JSON with a `content-type`, and
//! JSON bodies never hold a raw CR or LF, so no write of ours can look like
//! a head of hyper's. hyper writes a head in one write call (its writes are
//! flattened into one buffer, as this wrapper says it does no vectored
//! writes), so a head is always seen whole.

use serde::Serialize;
use std::{
    io,
    pin::Pin,
    task::{ready, Context, Poll},
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A connection whose automatic parse-error answers are given a JSON body.
pub struct JsonParseErrors<S> {
    inner: S,
    /// A replacement still being written, and how much of it went out.
    pending: Vec<u8>,
    sent: usize,
}

impl<S> JsonParseErrors<S> {
    pub fn new(inner: S) -> JsonParseErrors<S> {
        JsonParseErrors {
            inner,
            pending: Vec::new(),
            sent: 0,
        }
    }
}

impl<S: AsyncWrite + Unpin> JsonParseErrors<S> {
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.pending.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.pending.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for JsonParseErrors<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for JsonParseErrors<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_pending(cx))?;
        if let Some(replacement) = with_json_body(buf) {
            this.pending = replacement;
            // hyper's bytes count as written; the replacement goes out
            // before anything else, through the next write, flush or
            // shutdown (a Pending here has registered the waker).
            if let Poll::Ready(Err(e)) = this.poll_pending(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// If `buf` is exactly one of hyper's bodiless 4xx answers, the same
/// answer with a JSON body; otherwise `None`.
fn with_json_body(buf: &[u8]) -> Option<Vec<u8>> {
    if !buf.starts_with(b"HTTP/1.") {
        return None;
    }
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut head = httparse::Response::new(&mut headers);
    let Ok(httparse::Status::Complete(head_len)) = head.parse(buf) else {
        return None;
    };
    let code = head.code?;
    let has = |name: &str| {
        head.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
    };
    let bodiless = has("content-length").is_none_or(|h| h.value == b"0");
    if !(400..500).contains(&code) || has("content-type").is_some() || !bodiless {
        return None;
    }
    if head_len != buf.len() {
        return None;
    }
    let reason = head.reason.unwrap_or_default();
    let error = match code {
        400 => "malformed request: the request line or a header is not valid HTTP/1.1".to_owned(),
        414 => "the request target is too long".to_owned(),
        431 => "the request head has too many or too large header fields".to_owned(),
        _ => format!("refused: {reason}"),
    };
    #[derive(Serialize)]
    struct Body {
        error: String,
    }
    let body = serde_json::to_vec(&Body { error }).ok()?;
    let mut out = format!("HTTP/1.1 {code} {reason}\r\n").into_bytes();
    for h in head.headers.iter() {
        // Length and connection are said anew below; the rest (the date)
        // is kept.
        if ["content-length", "connection", "transfer-encoding"]
            .iter()
            .any(|n| h.name.eq_ignore_ascii_case(n))
        {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(
        format!(
            "content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(&body);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_bodiless_4xx_heads_are_rewritten() {
        let auto = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: Mon, 01 Jan 2024 00:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(with_json_body(auto).unwrap()).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
        assert!(head.contains("date: Mon, 01 Jan 2024"), "{head}");
        assert!(head.contains("content-type: application/json"), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(v["error"].as_str().unwrap().contains("malformed request"));

        let big = b"HTTP/1.1 431 Request Header Fields Too Large\r\n\r\n";
        assert!(with_json_body(big).is_some());

        for ours in [
            // A route's refusal: JSON with a content type.
            &b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"[..],
            // Not an error.
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n",
            // Part of a body, or a head with a body after it.
            b"{\"error\":\"HTTP/1.1 400 \"}",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 3\r\n\r\nabc",
            // An incomplete head.
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n",
        ] {
            assert_eq!(with_json_body(ours), None, "{}", String::from_utf8_lossy(ours));
        }
    }
}
