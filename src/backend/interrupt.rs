//! Cancelling a database call that is in flight.
//!
//! Three things stop a running call: CancelJob or shutdown (jobs), a passed
//! deadline, and a caller that hangs up (sync calls). Each of them only
//! *requests* the cancel on the call's [`Interrupt`], which never blocks.
//! The backend runs its statement through [`Interrupt::guard`], which turns
//! a request into the driver's own cancel (PostgreSQL's cancel request,
//! Oracle's break) and repeats it while the statement keeps running: a
//! cancel that reaches the server before the statement does is ignored
//! there. A request made before the statement starts refuses the start.
//!
//! A guard dropped mid-statement (the sync caller went away and its handler
//! with it) requests the cancel itself and sends it from a task of its own,
//! so that no session stays busy behind a caller that left.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

/// How often, and how many times, a cancel is re-sent while the statement
/// keeps running.
const RESEND_EVERY: Duration = Duration::from_millis(250);
const MAX_SENDS: u32 = 40;
/// Sends of a guard dropped mid-statement: nobody waits for the statement
/// any more, so a few are enough to reach it once it has arrived.
const SENDS_AFTER_DROP: u32 = 4;

#[derive(Clone, Default)]
pub struct Interrupt {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// When the caller stops waiting (sync calls with a gRPC deadline).
    deadline: Option<Instant>,
    token: CancellationToken,
}

impl Interrupt {
    pub fn new() -> Self {
        Self::default()
    }

    /// An interrupt for a caller that stops waiting at `deadline`; backends
    /// that can also bound the call themselves (Oracle's call timeout) use it.
    pub fn with_deadline(deadline: Instant) -> Self {
        Self {
            inner: Arc::new(Inner {
                deadline: Some(deadline),
                token: CancellationToken::new(),
            }),
        }
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.inner.deadline
    }

    pub fn is_requested(&self) -> bool {
        self.inner.token.is_cancelled()
    }

    /// Resolves once a cancel was requested.
    pub async fn requested(&self) {
        self.inner.token.cancelled().await
    }

    /// Requests the cancel. The statement's guard, if one runs, sends it to
    /// the database; this returns at once.
    pub fn request(&self) {
        self.inner.token.cancel();
    }

    /// Runs `work`, the statement; once a cancel is requested, `cancel`
    /// interrupts it (and is called again every 250 ms while it runs on).
    /// Fails with [`Error::Cancelled`] without starting `work` when the
    /// cancel was requested before.
    pub async fn guard<T, C, CF>(&self, work: impl Future<Output = T>, cancel: C) -> Result<T>
    where
        C: Fn() -> CF + Send + Sync + 'static,
        CF: Future<Output = ()> + Send + 'static,
    {
        if self.is_requested() {
            return Err(Error::Cancelled("cancelled before it started".into()));
        }
        let cancel: Arc<CancelFn> = Arc::new(move || Box::pin(cancel()));
        let mut dropped = CancelIfDropped {
            interrupt: self.clone(),
            cancel: Some(cancel.clone()),
        };
        tokio::pin!(work);
        let output = tokio::select! {
            biased;
            output = &mut work => output,
            () = self.requested() => {
                let resend = async {
                    for _ in 0..MAX_SENDS {
                        cancel().await;
                        tokio::time::sleep(RESEND_EVERY).await;
                    }
                    std::future::pending::<()>().await;
                };
                tokio::select! {
                    output = &mut work => output,
                    () = resend => unreachable!("resending never ends on its own"),
                }
            }
        };
        dropped.cancel = None;
        Ok(output)
    }
}

/// A driver's cancel, as the guard keeps it.
type CancelFn = dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync;

/// Armed while a guarded statement runs; sends the cancel from a task of
/// its own if the guard is dropped before the statement returned.
struct CancelIfDropped {
    interrupt: Interrupt,
    cancel: Option<Arc<CancelFn>>,
}

impl Drop for CancelIfDropped {
    fn drop(&mut self) {
        let Some(cancel) = self.cancel.take() else {
            return;
        };
        self.interrupt.request();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        tracing::info!("the caller went away; cancelling its statement");
        runtime.spawn(async move {
            for _ in 0..SENDS_AFTER_DROP {
                cancel().await;
                tokio::time::sleep(RESEND_EVERY).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn counting() -> (
        Arc<AtomicU32>,
        impl Fn() -> std::future::Ready<()> + Send + Sync,
    ) {
        let fired = Arc::new(AtomicU32::new(0));
        let counter = fired.clone();
        let cancel = move || {
            counter.fetch_add(1, Ordering::SeqCst);
            std::future::ready(())
        };
        (fired, cancel)
    }

    #[tokio::test]
    async fn a_request_before_the_statement_refuses_the_start() {
        let interrupt = Interrupt::new();
        interrupt.request();
        let (fired, cancel) = counting();
        let result = interrupt.guard(async { "ran" }, cancel).await;
        assert!(matches!(result, Err(Error::Cancelled(_))));
        assert_eq!(fired.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_cancel_is_resent_until_the_statement_returns() {
        let interrupt = Interrupt::new();
        let (fired, cancel) = counting();
        let statement = {
            let fired = fired.clone();
            async move {
                // The "statement" ignores the first two cancels.
                while fired.load(Ordering::SeqCst) < 3 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                "stopped"
            }
        };
        let requester = interrupt.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            requester.request();
        });
        assert_eq!(interrupt.guard(statement, cancel).await.unwrap(), "stopped");
        assert_eq!(fired.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_guard_dropped_mid_statement_still_cancels() {
        let interrupt = Interrupt::new();
        let (fired, cancel) = counting();
        let guarded = interrupt.guard(std::future::pending::<()>(), cancel);
        let _ = tokio::time::timeout(Duration::from_millis(50), guarded).await;
        assert!(interrupt.is_requested());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(fired.load(Ordering::SeqCst), SENDS_AFTER_DROP);

        // A statement that returned leaves nothing armed behind.
        let (fired, cancel) = counting();
        Interrupt::new().guard(async {}, cancel).await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(fired.load(Ordering::SeqCst), 0);
    }
}
