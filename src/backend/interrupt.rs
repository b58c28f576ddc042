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
//!
//! A procedure can swallow a cancel (PL/pgSQL `EXCEPTION WHEN
//! query_canceled`, Oracle code a break does not reach). After the grace of
//! its [`Terminate`] (`--cancel-grace`), the guard ends the session from
//! another connection, and the call fails with [`Error::Terminated`]; the
//! session, in flight when it ended, is never pooled again.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// interrupts it (and is called again every 250 ms while it runs on),
    /// and if it still runs after `terminate`'s grace, its session is ended.
    /// Fails with [`Error::Cancelled`] without starting `work` when the
    /// cancel was requested before, and with [`Error::Terminated`] when the
    /// session had to be ended.
    pub async fn guard<T, C, CF>(
        &self,
        work: impl Future<Output = T>,
        cancel: C,
        terminate: Terminate,
    ) -> Result<T>
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
            cancel: Some((cancel.clone(), terminate.clone())),
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
                let ending = AtomicBool::new(false);
                let escalate = terminate.end_after(terminate.grace, &ending);
                tokio::pin!(escalate);
                let terminated = Err(Error::Terminated { after: terminate.grace });
                tokio::select! {
                    output = &mut work => {
                        // The statement may fail because its session is
                        // being ended, before the end says it is done.
                        if ending.load(Ordering::SeqCst)
                            && tokio::time::timeout(SETTLE_AFTER_TERMINATE, &mut escalate).await.is_ok()
                        {
                            dropped.cancel = None;
                            return terminated;
                        }
                        output
                    }
                    () = resend => unreachable!("resending never ends on its own"),
                    () = &mut escalate => {
                        // Its connection is gone: the statement returns at
                        // once, failed, and takes the session along.
                        let _ = tokio::time::timeout(SETTLE_AFTER_TERMINATE, &mut work).await;
                        dropped.cancel = None;
                        return terminated;
                    }
                }
            }
        };
        dropped.cancel = None;
        Ok(output)
    }
}

/// How often a dropped guard's task looks whether its statement stopped.
const SETTLED_POLL: Duration = Duration::from_millis(100);

/// How long a statement whose session was ended is waited for.
const SETTLE_AFTER_TERMINATE: Duration = Duration::from_secs(5);

/// A driver's cancel, as the guard keeps it.
type CancelFn = dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync;

/// Ends a statement's session from another connection; true once it is
/// ended (or gone). The backend reports what it did, or could not do,
/// itself; a failure is tried again until the statement ends.
type TerminateFn = dyn Fn() -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync;

/// The last resort against a statement that ignores its cancels: after
/// `grace`, end its session.
#[derive(Clone)]
pub struct Terminate {
    grace: Duration,
    run: Option<Arc<TerminateFn>>,
    /// Whether the statement has stopped, for a guard dropped before it
    /// did: then nothing needs ending.
    settled: Option<Arc<dyn Fn() -> bool + Send + Sync>>,
}

impl Terminate {
    /// `end` ends the session once the statement ignored the cancel for
    /// `grace`.
    pub fn after<F, EF>(grace: Duration, end: F) -> Self
    where
        F: Fn() -> EF + Send + Sync + 'static,
        EF: Future<Output = bool> + Send + 'static,
    {
        Self {
            grace,
            run: Some(Arc::new(move || Box::pin(end()))),
            settled: None,
        }
    }

    /// `settled` says, cheaply, whether the statement has stopped: a guard
    /// dropped before it returned then ends nothing, and leaves no task
    /// behind for the grace.
    pub fn settled_when(self, settled: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        Self {
            settled: Some(Arc::new(settled)),
            ..self
        }
    }

    fn is_settled(&self) -> bool {
        self.settled.as_ref().is_some_and(|settled| settled())
    }

    /// For statements whose session cannot be ended: cancels only.
    pub fn never() -> Self {
        Self {
            grace: Duration::MAX,
            run: None,
            settled: None,
        }
    }

    /// Ends the session `first` from now, trying again (every 10 s, then
    /// less often) for as long as that fails; `ending` is set while a try
    /// runs. Never returns without a way to end sessions.
    async fn end_after(&self, first: Duration, ending: &AtomicBool) {
        let Some(end) = &self.run else {
            return std::future::pending().await;
        };
        let mut wait = first;
        let mut again = RETRY_TERMINATE;
        loop {
            tokio::time::sleep(wait).await;
            ending.store(true, Ordering::SeqCst);
            if end().await {
                return;
            }
            ending.store(false, Ordering::SeqCst);
            wait = again;
            again = (again * 2).min(MAX_RETRY_TERMINATE);
        }
    }
}

/// How soon a failed end of a session is tried again, and at most how long
/// apart the tries get.
const RETRY_TERMINATE: Duration = Duration::from_secs(10);
const MAX_RETRY_TERMINATE: Duration = Duration::from_secs(300);

/// Armed while a guarded statement runs; sends the cancel from a task of
/// its own if the guard is dropped before the statement returned, and ends
/// the session after the grace (nobody can tell any more whether the
/// statement stopped; the backend's end checks it still runs).
struct CancelIfDropped {
    interrupt: Interrupt,
    cancel: Option<(Arc<CancelFn>, Terminate)>,
}

impl Drop for CancelIfDropped {
    fn drop(&mut self) {
        let Some((cancel, terminate)) = self.cancel.take() else {
            return;
        };
        self.interrupt.request();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        tracing::info!(
            "the caller stopped waiting (it left, or its deadline passed); cancelling its statement"
        );
        runtime.spawn(async move {
            let started = tokio::time::Instant::now();
            for _ in 0..SENDS_AFTER_DROP {
                cancel().await;
                tokio::time::sleep(RESEND_EVERY).await;
            }
            if terminate.run.is_none() {
                return;
            }
            while started.elapsed() < terminate.grace {
                if terminate.is_settled() {
                    return;
                }
                tokio::time::sleep(SETTLED_POLL).await;
            }
            if !terminate.is_settled() {
                terminate
                    .end_after(Duration::ZERO, &AtomicBool::new(false))
                    .await;
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
        let result = interrupt
            .guard(async { "ran" }, cancel, Terminate::never())
            .await;
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
        assert_eq!(
            interrupt
                .guard(statement, cancel, Terminate::never())
                .await
                .unwrap(),
            "stopped"
        );
        assert_eq!(fired.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_guard_dropped_mid_statement_still_cancels() {
        let interrupt = Interrupt::new();
        let (fired, cancel) = counting();
        let guarded = interrupt.guard(std::future::pending::<()>(), cancel, Terminate::never());
        let _ = tokio::time::timeout(Duration::from_millis(50), guarded).await;
        assert!(interrupt.is_requested());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(fired.load(Ordering::SeqCst), SENDS_AFTER_DROP);

        // A statement that returned leaves nothing armed behind.
        let (fired, cancel) = counting();
        Interrupt::new()
            .guard(async {}, cancel, Terminate::never())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(fired.load(Ordering::SeqCst), 0);
    }

    /// A terminate that counts its runs and answers `ends`.
    fn ending(ends: bool) -> (Arc<AtomicU32>, Terminate) {
        let ran = Arc::new(AtomicU32::new(0));
        let counter = ran.clone();
        let terminate = Terminate::after(Duration::from_secs(10), move || {
            counter.fetch_add(1, Ordering::SeqCst);
            std::future::ready(ends)
        });
        (ran, terminate)
    }

    #[tokio::test(start_paused = true)]
    async fn a_statement_that_ignores_its_cancels_is_ended_after_the_grace() {
        let interrupt = Interrupt::new();
        let (_, cancel) = counting();
        let (ended, terminate) = ending(true);
        let requester = interrupt.clone();
        let started = tokio::time::Instant::now();
        tokio::spawn(async move { requester.request() });
        let result = interrupt
            .guard(std::future::pending::<()>(), cancel, terminate)
            .await;
        assert_eq!(
            result,
            Err(Error::Terminated {
                after: Duration::from_secs(10)
            })
        );
        assert_eq!(
            result.unwrap_err().to_string(),
            "terminated after 10s: the procedure did not stop on cancel"
        );
        assert_eq!(ended.load(Ordering::SeqCst), 1);
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(10) && waited < Duration::from_secs(16),
            "{waited:?}"
        );

        // One that stops within the grace is never ended.
        let interrupt = Interrupt::new();
        let (fired, cancel) = counting();
        let (ended, terminate) = ending(true);
        let statement = {
            let fired = fired.clone();
            async move {
                while fired.load(Ordering::SeqCst) < 2 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                "stopped"
            }
        };
        let requester = interrupt.clone();
        tokio::spawn(async move { requester.request() });
        assert_eq!(
            interrupt.guard(statement, cancel, terminate).await,
            Ok("stopped")
        );
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert_eq!(ended.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_that_cannot_be_ended_is_waited_for() {
        let interrupt = Interrupt::new();
        let (_, cancel) = counting();
        let (ended, terminate) = ending(false);
        let requester = interrupt.clone();
        tokio::spawn(async move { requester.request() });
        let statement = async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            "finished on its own"
        };
        let result = interrupt.guard(statement, cancel, terminate).await;
        assert_eq!(result, Ok("finished on its own"));
        assert_eq!(
            ended.load(Ordering::SeqCst),
            2,
            "tried at 10 s and again at 20 s"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_guard_dropped_mid_statement_ends_the_session_after_the_grace() {
        let interrupt = Interrupt::new();
        let (_, cancel) = counting();
        let (ended, terminate) = ending(true);
        let guarded = interrupt.guard(std::future::pending::<()>(), cancel, terminate);
        let _ = tokio::time::timeout(Duration::from_millis(50), guarded).await;
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert_eq!(ended.load(Ordering::SeqCst), 0, "not before the grace");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(ended.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_guard_whose_statement_stopped_ends_nothing() {
        let interrupt = Interrupt::new();
        let (_, cancel) = counting();
        let (ended, terminate) = ending(true);
        let stopped = Arc::new(AtomicBool::new(false));
        let probe = stopped.clone();
        let terminate = terminate.settled_when(move || probe.load(Ordering::SeqCst));
        let guarded = interrupt.guard(std::future::pending::<()>(), cancel, terminate);
        let _ = tokio::time::timeout(Duration::from_millis(50), guarded).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        stopped.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert_eq!(ended.load(Ordering::SeqCst), 0);
    }
}
