//! Status codes for requests that never reached a handler.
//!
//! tonic answers a request it cannot decode before any handler runs:
//! INTERNAL for bytes that are not the declared message (bad protobuf,
//! invalid UTF-8 in a string field) and OUT_OF_RANGE for a message over
//! `--max-request-bytes`. Both are the client's doing, so this layer
//! rewrites them, in the trailers-only response tonic sends, to
//! INVALID_ARGUMENT and RESOURCE_EXHAUSTED, keeping tonic's message.

use http::{HeaderValue, Response};
use tonic::Code;

const GRPC_STATUS: &str = "grpc-status";
const GRPC_MESSAGE: &str = "grpc-message";

/// Rewrites the status of undecodable and oversized requests.
pub fn classify_transport_errors<B>(mut response: Response<B>) -> Response<B> {
    let headers = response.headers();
    let code = headers
        .get(GRPC_STATUS)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map(Code::from_i32);
    let message = headers
        .get(GRPC_MESSAGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let rewritten = match code {
        Some(Code::Internal) if message.starts_with("failed%20to%20decode") => {
            Code::InvalidArgument
        }
        Some(Code::OutOfRange) if message.contains("message%20length%20too%20large") => {
            Code::ResourceExhausted
        }
        _ => return response,
    };
    response
        .headers_mut()
        .insert(GRPC_STATUS, HeaderValue::from(rewritten as i32));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(code: Code, message: &str) -> Response<()> {
        let mut response = Response::new(());
        response
            .headers_mut()
            .insert(GRPC_STATUS, HeaderValue::from(code as i32));
        response
            .headers_mut()
            .insert(GRPC_MESSAGE, HeaderValue::from_str(message).unwrap());
        response
    }

    fn status(response: &Response<()>) -> &str {
        response.headers()[GRPC_STATUS].to_str().unwrap()
    }

    #[test]
    fn client_errors_get_client_codes() {
        let bad = classify_transport_errors(response(
            Code::Internal,
            "failed%20to%20decode%20Protobuf%20message",
        ));
        assert_eq!(status(&bad), "3");
        let big = classify_transport_errors(response(
            Code::OutOfRange,
            "Error,%20decoded%20message%20length%20too%20large",
        ));
        assert_eq!(status(&big), "8");
        let other = classify_transport_errors(response(Code::Internal, "a%20bug"));
        assert_eq!(status(&other), "13");
    }
}
