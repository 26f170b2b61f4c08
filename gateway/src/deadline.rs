//! Every request body has a deadline (DESIGN.md invariant 12: every read on a socket has a
//! timeout). actix-web times out a request's head (`client_request_timeout`) and idle
//! connections (`keep_alive`), not a body: a client that announces a body and sends it slowly or
//! never would hold its connection for ever. `Signed` reads `/v1` bodies under the body timeout
//! itself (after checking the headers); this middleware gives every other route's body (operator
//! API, bank callbacks) the same deadline: past it the body reads as an error, the handler's
//! extractor refuses the request and the connection, its body unread, is closed.

use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::middleware::Next;
use actix_web::web::{self, Bytes};
use actix_web::HttpMessage as _;

use crate::signed::BodyLimits;

/// A request body that fails once its deadline has passed.
struct Deadline {
    inner: Payload,
    sleep: Pin<Box<actix_web::rt::time::Sleep>>,
    expired: bool,
}

impl futures_core::Stream for Deadline {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.expired {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = Pin::new(&mut self.inner).poll_next(context) {
            return Poll::Ready(item);
        }
        if self.sleep.as_mut().poll(context).is_ready() {
            self.expired = true;
            let error = std::io::Error::new(std::io::ErrorKind::TimedOut, "the body did not arrive within the body timeout");
            return Poll::Ready(Some(Err(PayloadError::Io(error))));
        }
        Poll::Pending
    }
}

use std::future::Future as _;

/// Puts the body timeout on the body of every request outside `/v1` (whose `Signed` extractor
/// has its own, after the header checks). Requests without a body are left as they are.
pub async fn body_deadline(mut request: ServiceRequest, next: Next<impl MessageBody>) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let announced =
        request.headers().contains_key(actix_web::http::header::CONTENT_LENGTH) || request.headers().contains_key(actix_web::http::header::TRANSFER_ENCODING);
    if announced && !request.path().starts_with("/v1/") {
        if let Some(limits) = request.app_data::<web::Data<BodyLimits>>() {
            let sleep = Box::pin(actix_web::rt::time::sleep(limits.timeout));
            let inner = request.take_payload();
            request.set_payload(Payload::Stream { payload: Box::pin(Deadline { inner, sleep, expired: false }) });
        }
    }
    next.call(request).await
}
