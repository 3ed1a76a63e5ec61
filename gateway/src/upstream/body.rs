//! The request body sent upstream: the downstream body as it is, or — for the first request on a
//! connection that probes the endpoint's HTTP version — a taped one whose frames are kept (up to
//! [`TAPE_LIMIT`]) so the request can be sent again in the other version.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};

/// Most body bytes kept for a replay.
pub(super) const TAPE_LIMIT: usize = 64 * 1024;

/// A request body upstream.
pub struct Body(Kind);

enum Kind {
    /// Straight from downstream.
    Direct(Incoming),
    /// Through a tape: recording, or replaying what was recorded and then the rest.
    Taped {
        tape: Arc<Mutex<Tape>>,
        /// Replaying: the next kept frame to yield. `None`: recording.
        cursor: Option<usize>,
    },
}

/// The frames of one body read so far, shared by the first attempt and a replay.
struct Tape {
    body: Incoming,
    kept: Vec<Bytes>,
    kept_len: usize,
    /// More was read than kept: no replay.
    overflow: bool,
    /// A trailers frame was read (kept apart).
    trailers: Option<http::HeaderMap>,
    /// The body ended.
    ended: bool,
}

impl Body {
    /// The downstream body, untouched.
    pub fn direct(body: Incoming) -> Self {
        Self(Kind::Direct(body))
    }

    /// A taped body and the handle to replay it.
    pub fn taped(body: Incoming) -> (Self, Replay) {
        let tape = Arc::new(Mutex::new(Tape {
            body,
            kept: Vec::new(),
            kept_len: 0,
            overflow: false,
            trailers: None,
            ended: false,
        }));
        (
            Self(Kind::Taped {
                tape: tape.clone(),
                cursor: None,
            }),
            Replay(tape),
        )
    }
}

/// The handle of a taped body.
pub struct Replay(Arc<Mutex<Tape>>);

impl Replay {
    /// The body again from its start, unless more of it was read than kept.
    pub fn again(self) -> Option<Body> {
        let overflow = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .overflow;
        (!overflow).then(|| {
            Body(Kind::Taped {
                tape: self.0,
                cursor: Some(0),
            })
        })
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut self.get_mut().0 {
            Kind::Direct(body) => Pin::new(body).poll_frame(cx),
            Kind::Taped { tape, cursor } => {
                let mut tape = tape.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(next) = cursor {
                    if let Some(data) = tape.kept.get(*next) {
                        *next += 1;
                        return Poll::Ready(Some(Ok(Frame::data(data.clone()))));
                    }
                    if let Some(trailers) = tape.trailers.take() {
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                    if tape.ended {
                        return Poll::Ready(None);
                    }
                    // Past what was kept: the rest of the body, no longer recorded.
                    return Pin::new(&mut tape.body).poll_frame(cx);
                }
                let frame = std::task::ready!(Pin::new(&mut tape.body).poll_frame(cx));
                match &frame {
                    None => tape.ended = true,
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            if tape.kept_len + data.len() <= TAPE_LIMIT {
                                tape.kept_len += data.len();
                                tape.kept.push(data.clone());
                            } else {
                                tape.overflow = true;
                            }
                        } else if let Some(trailers) = frame.trailers_ref() {
                            tape.trailers = Some(trailers.clone());
                        }
                    }
                    Some(Err(_)) => tape.overflow = true,
                }
                Poll::Ready(frame)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Direct(body) => body.is_end_stream(),
            Kind::Taped { tape, cursor } => {
                let tape = tape.lock().unwrap_or_else(PoisonError::into_inner);
                let replayed_all = cursor.is_none_or(|next| next >= tape.kept.len());
                replayed_all
                    && (cursor.is_none() || tape.trailers.is_none())
                    && (tape.ended || tape.body.is_end_stream())
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Direct(body) => body.size_hint(),
            Kind::Taped { tape, cursor } => {
                let tape = tape.lock().unwrap_or_else(PoisonError::into_inner);
                let rest = tape.body.size_hint();
                match cursor {
                    None => rest,
                    Some(_) => {
                        // The kept bytes again, then what is still unread.
                        let kept = tape.kept_len as u64;
                        let mut hint = SizeHint::new();
                        hint.set_lower(rest.lower() + kept);
                        if let Some(upper) = rest.upper() {
                            hint.set_upper(upper + kept);
                        }
                        hint
                    }
                }
            }
        }
    }
}
