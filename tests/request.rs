//! Request/response: typed replies, a distinct error for each way a request can fail,
//! several responders, and cancellation.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{quiet_intended_panics, within};
use futures::FutureExt;
use pipedream_rs::{Relay, Request, RequestError, SendError};

/// Long enough for anything that should happen; only reached when something hangs.
const WAIT: Duration = Duration::from_secs(10);

const INTENDED: &str = "intended responder panic (request test)";

on_every_runtime! {
    async fn a_request_gets_its_typed_reply() {
        let (tx, rx) = Relay::channel();
        rx.respond::<String, usize>(|s| s.len());
        rx.respond::<u32, String>(|n| format!("#{n}"));
        let len = within(WAIT, "a reply", tx.request::<String, usize>("four".into())).await;
        assert_eq!(len, Ok(4));
        let text = within(WAIT, "a reply", tx.request::<u32, String>(7)).await;
        assert_eq!(text.as_deref(), Ok("#7"));
    }

    async fn each_way_a_request_fails_has_its_own_error() {
        quiet_intended_panics(INTENDED);
        let (tx, rx) = Relay::channel();
        // Nobody responds to u8 -> u8 (a responder of u8 -> u16 is another pair).
        rx.respond::<u8, u16>(|n| u16::from(*n));
        assert_eq!(
            within(WAIT, "no responder", tx.request::<u8, u8>(1)).await,
            Err(RequestError::NoResponder { query: "u8", reply: "u8" })
        );
        // An observer is no responder.
        let _observer = rx.subscribe::<Request<i8, i8>>();
        assert!(matches!(
            within(WAIT, "only an observer", tx.request::<i8, i8>(1)).await,
            Err(RequestError::NoResponder { .. })
        ));
        // A responder that fails, and one that panics.
        rx.try_respond::<i16, i16, _>(|_| Err::<i16, _>("refused"));
        match within(WAIT, "a failing responder", tx.request::<i16, i16>(1)).await {
            Err(RequestError::Failed(e)) => assert_eq!(e.error.to_string(), "refused"),
            other => panic!("expected Failed, got {other:?}"),
        }
        rx.respond::<i32, i32>(|_| -> i32 { panic!("{INTENDED}") });
        match within(WAIT, "a panicking responder", tx.request::<i32, i32>(1)).await {
            Err(RequestError::Failed(e)) => assert!(e.is_panic(), "{e}"),
            other => panic!("expected a panic, got {other:?}"),
        }
        // The panicking responder goes on serving (and failing).
        assert!(matches!(
            within(WAIT, "the responder again", tx.request::<i32, i32>(2)).await,
            Err(RequestError::Failed(_))
        ));
        // Closed.
        let weak = tx.weak();
        drop(tx);
        assert_eq!(
            within(WAIT, "a closed relay", weak.request::<u8, u16>(1)).await,
            Err(RequestError::Closed)
        );
    }

    async fn several_responders_request_takes_the_first_and_request_all_takes_every_reply() {
        let (tx, rx) = Relay::channel();
        rx.respond::<u8, u32>(|n| u32::from(*n) + 100);
        rx.respond::<u8, u32>(|n| u32::from(*n) + 200);
        let first = within(WAIT, "the first reply", tx.request::<u8, u32>(1)).await.unwrap();
        assert!(first == 101 || first == 201, "{first}");
        let mut all = within(WAIT, "every reply", tx.request_all::<u8, u32>(2)).await.unwrap();
        all.sort_unstable();
        assert_eq!(all, [102, 202]);
        // One of two fails: `request` still has a reply, `request_all` fails.
        rx.respond::<u16, u16>(|n| *n);
        rx.try_respond::<u16, u16, _>(|_| Err::<u16, _>("no"));
        assert_eq!(within(WAIT, "one reply", tx.request::<u16, u16>(5)).await, Ok(5));
        assert!(matches!(
            within(WAIT, "all replies", tx.request_all::<u16, u16>(5)).await,
            Err(RequestError::Failed(_))
        ));
    }

    async fn a_responder_behind_a_filter_answers_the_parent_s_requests() {
        let (tx, rx) = Relay::channel();
        let evens = rx.filter::<Request<u32, u32>>(|r| r.query() % 2 == 0);
        evens.respond::<u32, u32>(|n| n / 2);
        assert_eq!(within(WAIT, "through the filter", tx.request::<u32, u32>(8)).await, Ok(4));
        assert!(matches!(
            within(WAIT, "filtered out", tx.request::<u32, u32>(7)).await,
            Err(RequestError::NoResponder { .. })
        ));
    }

    async fn a_dropped_request_leaves_nothing_behind() {
        let (tx, rx) = Relay::channel();
        let served = Arc::new(AtomicUsize::new(0));
        let s = served.clone();
        rx.respond::<u64, u64>(move |n| {
            s.fetch_add(1, Ordering::SeqCst);
            n * 2
        });
        // Polled once (the request is queued for the responder), then dropped.
        let mut asked = Box::pin(tx.request::<u64, u64>(1));
        let _ = (&mut asked).now_or_never();
        drop(asked);
        // The relay goes on: the next request gets its own reply, not the dropped one's.
        assert_eq!(within(WAIT, "the next request", tx.request::<u64, u64>(5)).await, Ok(10));
        assert!(served.load(Ordering::SeqCst) >= 1);
    }

    async fn the_error_chain_reaches_the_responder_s_error() {
        let (tx, rx) = Relay::channel();
        rx.try_respond::<u8, u8, _>(|_| Err::<u8, _>("inner cause"));
        let err = within(WAIT, "a failing request", tx.request::<u8, u8>(0)).await.unwrap_err();
        let mut chain = Vec::new();
        let mut layer: Option<&(dyn std::error::Error + 'static)> = Some(&err);
        while let Some(e) = layer {
            chain.push(e.to_string());
            layer = e.source();
        }
        assert_eq!(chain.first().map(String::as_str), Some("the responder failed"));
        assert_eq!(chain.last().map(String::as_str), Some("inner cause"));
        // A send error of another kind is wrapped, not lost.
        let wrapped = RequestError::Send(SendError::TypeMismatch);
        assert!(std::error::Error::source(&wrapped).is_some());
    }
}
