mod common;
use pipedream_rs::{Relay, SendError, WouldDeadlock};

on_every_runtime! {
    async fn handler_sending_to_itself_gets_would_deadlock() {
        let (tx, rx) = Relay::channel();
        let w = tx.weak();
        rx.sink_async::<u32, _, _>(move |n| { let w = w.clone(); async move {
            if *n == 0 {
                let e = w.send(1u32).await.unwrap_err();
                assert!(e.errors()[0].downcast_ref::<WouldDeadlock>().is_some(), "{e:?}");
            }
        }});
        tx.send(0u32).await.unwrap();
    }
    async fn child_handler_sending_to_parent_through_filter_gets_would_deadlock() {
        let (tx, rx) = Relay::channel();
        let w = tx.weak();
        let child = rx.filter::<u32, _>(|_| true);
        child.sink_async::<u32, _, _>(move |n| { let w = w.clone(); async move {
            if *n == 0 {
                match w.send(1u32).await {
                    Err(SendError::Downstream(e)) => assert!(e.downcast_ref::<WouldDeadlock>().is_some(), "{e:?}"),
                    other => panic!("{other:?}"),
                }
            }
        }});
        tx.send(0u32).await.unwrap();
    }
}
