//! gRPC's status conventions for errors tonic raises before a handler runs: a message over
//! `--max-message-bytes` is `RESOURCE_EXHAUSTED` (tonic says `OUT_OF_RANGE`), and bytes that
//! are not a valid request (bad protobuf, a non-UTF-8 id) are `INVALID_ARGUMENT` (tonic says
//! `INTERNAL`, which would blame the server). The `Labeller`'s own codec already refuses its
//! requests that way, naming the bad image ([`super::codec`]); this covers the other services.

use tonic::codegen::http;
use tonic::{Code, Status};

/// The status a client should get for `code` and `message`, when tonic's own differs.
fn convention(code: Code, message: &str) -> Option<(Code, String)> {
    match code {
        Code::OutOfRange if message.contains("message length too large") => Some((
            Code::ResourceExhausted,
            format!("the message is over the server's --max-message-bytes limit ({message}); send fewer or smaller images per request"),
        )),
        Code::Internal if message.contains("decode Protobuf message") => Some((
            Code::InvalidArgument,
            format!("the request is not a valid aelabel.v1 message ({message}); ids must be UTF-8"),
        )),
        _ => None,
    }
}

/// `status`, with the code and message the conventions above give it.
pub fn remap_status(status: Status) -> Status {
    match convention(status.code(), status.message()) {
        Some((code, message)) => Status::new(code, message),
        None => status,
    }
}

/// Makes a trailers-only error response (how tonic answers a unary request it could not
/// decode) follow the conventions; other responses pass untouched. `LabelStream` remaps the
/// errors of its inbound stream itself, with [`remap_status`].
pub fn remap_response<B>(mut response: http::Response<B>) -> http::Response<B> {
    remap_headers(response.headers_mut());
    response
}

/// Rewrites `grpc-status` and `grpc-message` in `headers` (or trailers) by the conventions.
fn remap_headers(headers: &mut http::HeaderMap) {
    let code = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map(Code::from_i32);
    let message = headers
        .get("grpc-message")
        .map(|v| percent_decode(v.as_bytes()))
        .unwrap_or_default();
    let Some((code, message)) = code.and_then(|c| convention(c, &message)) else {
        return;
    };
    // The message came from a header value, so it stays a valid one; fall back to the code.
    if let Ok(value) = http::HeaderValue::from_str(&message) {
        headers.insert("grpc-message", value);
    }
    headers.insert("grpc-status", http::HeaderValue::from(code as i32));
}

/// A `grpc-message` header as text: gRPC percent-encodes bytes outside printable ASCII.
fn percent_decode(raw: &[u8]) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match (
            raw[i],
            raw.get(i + 1).copied().and_then(hex),
            raw.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tonic_codes_become_grpc_conventions_and_others_pass() {
        let too_large = Status::out_of_range(
            "Error, decoded message length too large: found 5 bytes, the limit is: 4 bytes",
        );
        assert_eq!(remap_status(too_large).code(), Code::ResourceExhausted);
        let bad = Status::internal("failed to decode Protobuf message: invalid string value");
        assert_eq!(remap_status(bad).code(), Code::InvalidArgument);
        let other = Status::internal("engine stopped");
        assert_eq!(remap_status(other).code(), Code::Internal);

        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-status", http::HeaderValue::from_static("13"));
        headers.insert(
            "grpc-message",
            http::HeaderValue::from_static("failed%20to%20decode%20Protobuf%20message: Image.id"),
        );
        remap_headers(&mut headers);
        assert_eq!(headers["grpc-status"], "3");
        assert!(headers["grpc-message"]
            .to_str()
            .unwrap()
            .contains("ids must be UTF-8"));
    }
}
