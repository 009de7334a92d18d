//! Request/response on one relay: [`RelayReceiver::respond`] answers queries of a type,
//! [`RelaySender::request`] asks one and awaits the typed reply.
//!
//! A request travels as an ordinary tracked message, a [`Request<Q, R>`], and a
//! responder is a `sink` for it that stores its reply in the request. So everything the
//! relay promises of tracked sends holds for requests: the snapshot at the call, the
//! verdict once every responder has run, a failure or panic of a responder coming back
//! (and published as a [`RelayError`]), cancellation safety, the deadlock check.

use std::any::Any;
use std::future::Future;
use std::sync::{Arc, Mutex};

use crate::relay::error::{RelayError, SendError};

/// The message a request travels as: the query, and the replies of its responders in
/// the order they finished. You rarely name it, but it is an ordinary message type:
/// `subscribe::<Request<Q, R>>()` observes the requests (an observer is no responder).
///
/// # Examples
///
/// ```
/// # futures::executor::block_on(async {
/// use pipedream_rs::{Relay, Request};
/// let (tx, rx) = Relay::channel();
/// let mut seen = rx.subscribe::<Request<u32, u32>>();
/// rx.respond::<u32, u32>(|n| n * 2);
/// assert_eq!(tx.request::<u32, u32>(21).await, Ok(42));
/// assert_eq!(*seen.recv().await.unwrap().query(), 21);
/// # });
/// ```
pub struct Request<Q, R> {
    query: Q,
    /// Shared with the requester, who reads them once every responder has run.
    replies: Arc<Mutex<Vec<R>>>,
}

impl<Q, R> Request<Q, R> {
    /// The query.
    ///
    /// # Examples
    ///
    /// See [`Request`].
    pub fn query(&self) -> &Q {
        &self.query
    }

    /// Adds a responder's reply.
    pub(crate) fn answer(&self, reply: R) {
        // A reply is pushed in one step: a poisoned lock still holds whole replies.
        lock(&self.replies).push(reply);
    }
}

fn lock<R>(replies: &Mutex<Vec<R>>) -> std::sync::MutexGuard<'_, Vec<R>> {
    replies.lock().unwrap_or_else(|e| e.into_inner())
}

impl<Q: std::fmt::Debug, R> std::fmt::Debug for Request<Q, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("query", &self.query)
            .field("reply", &std::any::type_name::<R>())
            .finish()
    }
}

/// Why a [`request`](crate::RelaySender::request) has no reply.
///
/// # Examples
///
/// ```
/// # futures::executor::block_on(async {
/// use pipedream_rs::{Relay, RequestError};
/// let (tx, _rx) = Relay::channel();
/// let asked = tx.request::<u32, String>(7).await;
/// assert!(matches!(asked, Err(RequestError::NoResponder { .. })));
/// # });
/// ```
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// No responder answered: nobody responds to this query type (the request was
    /// unrouted), or only observers got it.
    #[error("no responder for `{query}` answering `{reply}`")]
    NoResponder {
        /// The query's type.
        query: &'static str,
        /// The reply's type.
        reply: &'static str,
    },
    /// The responder failed (returned `Err`) or panicked. With several responders:
    /// for `request`, every one failed; for `request_all`, at least one did. The first
    /// failure is here; each is also published as a `RelayError` event.
    #[error("the responder failed")]
    Failed(#[source] RelayError),
    /// The relay is closed (or gone).
    #[error("the relay is closed")]
    Closed,
    /// The request could not be sent for another reason (for example a
    /// [`WouldDeadlock`](crate::WouldDeadlock): a responder requesting from itself).
    #[error("the request could not be sent")]
    Send(#[source] SendError),
}

/// The replies of one request, shared by the request and its requester.
pub(crate) type Replies<R> = Arc<Mutex<Vec<R>>>;

impl<Q, R> Request<Q, R> {
    /// A request for `query`, and the requester's handle on its replies.
    pub(crate) fn new(query: Q) -> (Self, Replies<R>) {
        let replies = Arc::new(Mutex::new(Vec::new()));
        let request = Request {
            query,
            replies: replies.clone(),
        };
        (request, replies)
    }
}

/// Awaits a request's send (made at the call) and turns its verdict into the replies, in
/// the order the responders finished (at least one), or the request's error. `first`:
/// one reply is enough (`request`), so failures of other responders do not matter if
/// one replied; otherwise (`request_all`) every responder must succeed.
pub(crate) async fn ask<Q: Any, R>(
    send: impl Future<Output = Result<crate::Receipt, SendError>>,
    replies: Replies<R>,
    first: bool,
) -> Result<Vec<R>, RequestError> {
    let verdict = send.await;
    let no_responder = || RequestError::NoResponder {
        query: std::any::type_name::<Q>(),
        reply: std::any::type_name::<R>(),
    };
    // Every responder has run (the send is tracked): the replies are all in.
    let replies = std::mem::take(&mut *lock(&replies));
    match verdict {
        Ok(_) if replies.is_empty() => Err(no_responder()),
        Ok(_) => Ok(replies),
        Err(SendError::Closed) => Err(RequestError::Closed),
        Err(SendError::Unrouted { .. }) => Err(no_responder()),
        Err(_) if first && !replies.is_empty() => Ok(replies),
        Err(SendError::Downstream(e)) => Err(RequestError::Failed(e)),
        Err(SendError::Aggregate(mut all)) if !all.is_empty() => {
            Err(RequestError::Failed(all.swap_remove(0)))
        }
        Err(other) => Err(RequestError::Send(other)),
    }
}

/// `request`: the first reply of [`ask`].
pub(crate) async fn ask_first<Q: Any, R>(
    send: impl Future<Output = Result<crate::Receipt, SendError>>,
    replies: Replies<R>,
) -> Result<R, RequestError> {
    let replies = ask::<Q, R>(send, replies, true).await?;
    // `ask` hands back at least one reply.
    replies.into_iter().next().ok_or(RequestError::Closed)
}
