//! A live job: the watch channel that holds its latest snapshot, the
//! interrupt that cancels its statement, and the feed its changes are
//! recorded in.
//!
//! Every change of a live job goes through [`LiveJob::change`] with a
//! transition of [`super::lifecycle`]: in memory mode the change takes the
//! next store-wide revision and reaches WatchJobs streams; in database mode
//! (no feed here) the store stamps revisions when it writes the change.

use std::sync::Arc;

use super::JobSnapshot;
use super::feed::Feed;
use crate::backend::Interrupt;
use tokio::sync::watch;

#[derive(Clone)]
pub struct LiveJob {
    tx: watch::Sender<JobSnapshot>,
    pub interrupt: Interrupt,
    feed: Option<Arc<Feed>>,
}

impl LiveJob {
    pub fn new(job: JobSnapshot, feed: Option<Arc<Feed>>) -> LiveJob {
        LiveJob {
            tx: watch::Sender::new(job),
            interrupt: Interrupt::new(),
            feed,
        }
    }

    /// A job just submitted (memory mode): its first revision is also its
    /// place in submission order.
    pub fn submitted(job: JobSnapshot, feed: &Arc<Feed>) -> LiveJob {
        let live = LiveJob::new(job, Some(feed.clone()));
        feed.record(
            |revision| {
                live.tx.send_modify(|job| {
                    job.revision = revision;
                    job.create_revision = revision;
                });
                Ok(None)
            },
            || live.snapshot(),
        );
        live
    }

    /// Applies `transition`; watchers hear of it only when it changed
    /// something. Returns whether it did.
    pub fn change(&self, transition: impl FnOnce(&mut JobSnapshot) -> bool) -> bool {
        let Some(feed) = &self.feed else {
            return self.tx.send_if_modified(transition);
        };
        feed.record(
            |revision| {
                let mut before = Err(());
                self.tx.send_if_modified(|job| {
                    let state = job.state;
                    if !transition(job) {
                        return false;
                    }
                    job.revision = revision;
                    before = Ok(Some(state));
                    true
                });
                before
            },
            || self.snapshot(),
        )
    }

    /// Reads the current snapshot without copying it.
    pub fn with<R>(&self, read: impl FnOnce(&JobSnapshot) -> R) -> R {
        read(&self.tx.borrow())
    }

    pub fn snapshot(&self) -> JobSnapshot {
        self.tx.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<JobSnapshot> {
        self.tx.subscribe()
    }
}
