//! A live job: the watch channel that holds its latest snapshot on the
//! instance that runs it, and the interrupt that cancels its statement.
//!
//! Every change goes through [`LiveJob::change`] with a transition of
//! [`super::lifecycle`]; the engine's writer saves what changed to the
//! table, which stamps its revision.

use super::JobSnapshot;
use crate::backend::Interrupt;
use tokio::sync::watch;

#[derive(Clone)]
pub struct LiveJob {
    tx: watch::Sender<JobSnapshot>,
    pub interrupt: Interrupt,
}

impl LiveJob {
    pub fn new(job: JobSnapshot) -> LiveJob {
        LiveJob {
            tx: watch::Sender::new(job),
            interrupt: Interrupt::new(),
        }
    }

    /// Applies `transition`; the writer hears of it only when it changed
    /// something. Returns whether it did.
    pub fn change(&self, transition: impl FnOnce(&mut JobSnapshot) -> bool) -> bool {
        self.tx.send_if_modified(transition)
    }

    /// Reads the current snapshot without copying it.
    pub fn with<R>(&self, read: impl FnOnce(&JobSnapshot) -> R) -> R {
        read(&self.tx.borrow())
    }

    pub fn subscribe(&self) -> watch::Receiver<JobSnapshot> {
        self.tx.subscribe()
    }
}
