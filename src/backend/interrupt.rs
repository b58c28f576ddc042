//! Cancelling a database call from another thread.
//!
//! The job runner (CancelJob, shutdown) and the sync path (deadline, client
//! gone) need to stop a statement that a blocking thread is running. The
//! backend *arms* an [`Interrupt`] with a driver hook (PostgreSQL's cancel
//! token, Oracle's `break_execution`) for exactly as long as the statement
//! runs; [`Interrupt::request`] marks the call cancelled and fires the hook.
//!
//! A cancel that reaches the server between "armed" and "statement arrived"
//! is ignored by the server, so `request` repeats the hook until the backend
//! disarms (the statement returned) or a bound is reached. A request made
//! before arming is seen by `arm`, which then refuses to start.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

type Hook = Arc<dyn Fn() + Send + Sync>;

/// How often, and how many times, a cancel is re-sent while the statement
/// keeps running.
const RESEND_EVERY: Duration = Duration::from_millis(250);
const MAX_SENDS: u32 = 40;

#[derive(Clone, Default)]
pub struct Interrupt {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// When the caller stops waiting (sync calls with a gRPC deadline).
    deadline: Option<Instant>,
    token: CancellationToken,
    hook: Mutex<Option<Hook>>,
    disarmed: Condvar,
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
                ..Inner::default()
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

    /// Requests the cancel and interrupts the running statement, if any.
    /// Blocks while it talks to the database: call it from a blocking thread.
    pub fn request(&self) {
        self.inner.token.cancel();
        let mut hook = self.inner.hook.lock().expect("interrupt lock");
        for _ in 0..MAX_SENDS {
            let Some(fire) = hook.clone() else { return };
            drop(hook);
            fire();
            hook = self.inner.hook.lock().expect("interrupt lock");
            if hook.is_some() {
                hook = self
                    .inner
                    .disarmed
                    .wait_timeout(hook, RESEND_EVERY)
                    .expect("interrupt lock")
                    .0;
            }
        }
    }

    /// Installs `hook` until the returned guard drops. Fails with
    /// [`Error::Cancelled`] when a cancel was already requested, so that a
    /// statement is never started after its cancel.
    pub fn arm(&self, hook: impl Fn() + Send + Sync + 'static) -> Result<Armed<'_>> {
        *self.inner.hook.lock().expect("interrupt lock") = Some(Arc::new(hook));
        let armed = Armed { interrupt: self };
        if self.is_requested() {
            return Err(Error::Cancelled("cancelled before it started".into()));
        }
        Ok(armed)
    }
}

/// Keeps the hook installed; dropping it disarms.
pub struct Armed<'a> {
    interrupt: &'a Interrupt,
}

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        *self.interrupt.inner.hook.lock().expect("interrupt lock") = None;
        self.interrupt.inner.disarmed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn a_request_before_arming_refuses_the_start() {
        let interrupt = Interrupt::new();
        interrupt.request();
        assert!(interrupt.is_requested());
        assert!(matches!(interrupt.arm(|| {}), Err(Error::Cancelled(_))));
    }

    #[test]
    fn the_hook_fires_until_the_statement_returns() {
        let interrupt = Interrupt::new();
        let fired = Arc::new(AtomicU32::new(0));
        let counter = fired.clone();
        let armed = interrupt.arm(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        let armed = armed.unwrap();
        let requester = {
            let interrupt = interrupt.clone();
            std::thread::spawn(move || interrupt.request())
        };
        // The "statement" ignores the first cancels, then returns.
        while fired.load(Ordering::SeqCst) < 2 {
            std::thread::yield_now();
        }
        drop(armed);
        requester.join().unwrap();
        let sent = fired.load(Ordering::SeqCst);
        assert!((2..=3).contains(&sent), "sent {sent}");
    }
}
