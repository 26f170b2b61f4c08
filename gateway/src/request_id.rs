//! Request ids: every request gets one (`X-Request-Id`: the client's when it is sane, else one
//! generated here), echoed in the response, and a `tracing` span that carries it, so every log
//! line written while the request is handled names it.
//!
//! A client's id is kept when it is 1 to `REQUEST_ID_BYTES_MAX` bytes of RFC 9110 token
//! characters (letters, digits and ``!#$%&'*+-.^_`|~``): bounded, printable, and safe to copy into
//! a log line or a header. Anything else is replaced, not refused: the id is for tracing, and a
//! request must not fail because of it. Generated ids are 24 hex digits: 8 chosen at random when
//! the process starts and a 64-bit counter, so they are unique within a process and unlikely to
//! collide across restarts, and cost no system call.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use tracing::Instrument;

/// The header that carries the id both ways.
pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-supplied id kept, in bytes.
pub const REQUEST_ID_BYTES_MAX: usize = 64;

/// Whether a client's id is kept as it is.
pub fn acceptable(value: &[u8]) -> bool {
    (1..=REQUEST_ID_BYTES_MAX).contains(&value.len()) && value.iter().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b))
}

/// A new id: the process's random prefix and the next value of a counter, in hex.
pub fn generate() -> HeaderValue {
    static PREFIX: OnceLock<u32> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(rand::random);
    let count = NEXT.fetch_add(1, Ordering::Relaxed);
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = [0u8; 24];
    for (i, slot) in text[..8].iter_mut().enumerate() {
        *slot = DIGITS[((prefix >> (28 - 4 * i)) & 0xf) as usize];
    }
    for (i, slot) in text[8..].iter_mut().enumerate() {
        *slot = DIGITS[((count >> (60 - 4 * i)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&text).expect("hex digits are a valid header value")
}

/// Middleware: picks the request's id, runs the request inside a span that names it, echoes it
/// in the response and writes one line when the request is over (`debug` level, `error` for a
/// 5xx answer, so the default `info` level costs no line per request).
pub async fn request_span(mut request: ServiceRequest, next: Next<impl MessageBody>) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = match request.headers().get(&HEADER) {
        Some(value) if acceptable(value.as_bytes()) => value.clone(),
        _ => generate(),
    };
    // Handlers that read the header see the id the response will carry.
    request.headers_mut().insert(HEADER, id.clone());
    let id_text = id.to_str().unwrap_or("");
    let span = tracing::info_span!("request", request_id = %id_text);
    let started = Instant::now();
    // The request must not be cloned before routing (actix then panics setting its match info),
    // so an error no inner layer turned into a response (`run_to_end`'s for a handler that
    // panicked, actix's own) is answered here as actix would answer it, with the id: its
    // response is made now and handed on inside the error (helper 112#5: it had no id). Sound
    // while this layer is the outermost: actix takes that response out of the error once.
    let method = request.method().clone();
    let mut response = match next.call(request).instrument(span.clone()).await {
        Ok(response) => response,
        Err(error) => {
            let mut answer = error.error_response();
            answer.headers_mut().insert(HEADER, id);
            let status = answer.status().as_u16();
            span.in_scope(|| {
                let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
                tracing::error!(method = %method, path = "(not answered by its route)", status, elapsed_ms, "request failed");
            });
            return Err(actix_web::error::InternalError::from_response(error.to_string(), answer).into());
        }
    };
    let status = response.status().as_u16();
    // The field `path` holds the route's pattern, not the path (log readers keep their field): a
    // path can hold a bearer secret (an H5 link's token,
    // still valid when its page answered 503) or a card number (helper 103, session 63); the
    // request id ties the line to the request.
    let route = response.request().match_pattern().unwrap_or_else(|| "(no route)".to_string());
    span.in_scope(|| {
        let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
        if status >= 500 {
            tracing::error!(method = %method, path = %route, status, elapsed_ms, "request failed");
        } else {
            tracing::debug!(method = %method, path = %route, status, elapsed_ms, "request");
        }
    });
    response.headers_mut().insert(HEADER, id);
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request's log line names its route's pattern, never the path: an H5 link's token (or a
    /// card number) in a path that answered 5xx stayed in the error log (helper 103, session 63).
    #[actix_web::test]
    async fn the_log_line_names_the_route_not_the_path() {
        use actix_web::{test, web, App, HttpResponse};
        #[derive(Clone, Default)]
        struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Lines {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt().with_writer(move || writer.clone()).with_max_level(tracing::Level::DEBUG).with_ansi(false).finish();
        let _default = tracing::subscriber::set_default(subscriber);
        let app = test::init_service(
            App::new()
                .wrap(actix_web::middleware::from_fn(request_span))
                .route("/h5/s/{token}", web::get().to(|| async { HttpResponse::ServiceUnavailable().finish() })),
        )
        .await;
        let secret = "f3a9c1d2e4b5a6978812aabbccddeeff00112233445566778899aabbccddeeff";
        let response = test::call_service(&app, test::TestRequest::get().uri(&format!("/h5/s/{secret}")).to_request()).await;
        assert_eq!(response.status(), 503);
        let logged = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        assert!(logged.contains("request failed") && logged.contains("/h5/s/{token}"), "{logged}");
        assert!(!logged.contains(secret), "{logged}");
    }

    #[test]
    fn which_client_ids_are_kept() {
        let cases: [(&[u8], bool); 9] = [
            (b"abc-123", true),
            (b"0f8fad5b-d9cb-469f-a165-70867728950e", true),
            (b"a.b_c~d!e#f$g%h&i'j*k+l^m`n|o", true),
            (&[b'x'; REQUEST_ID_BYTES_MAX], true),
            (&[b'x'; REQUEST_ID_BYTES_MAX + 1], false),
            (b"", false),
            (b"has space", false),
            (b"quote\"d", false),
            ("caf\u{e9}".as_bytes(), false),
        ];
        for (value, kept) in cases {
            assert_eq!(acceptable(value), kept, "{:?}", String::from_utf8_lossy(value));
        }
    }

    #[test]
    fn generated_ids_are_distinct_and_acceptable() {
        let (first, second) = (generate(), generate());
        assert_ne!(first, second);
        for id in [first, second] {
            assert_eq!(id.len(), 24);
            assert!(acceptable(id.as_bytes()), "{id:?}");
            assert!(id.as_bytes().iter().all(u8::is_ascii_hexdigit), "{id:?}");
        }
    }
}
