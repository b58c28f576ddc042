//! The watch streams as protobuf messages.
//!
//! WatchJob is built like tonic-health's watch: a named stream type over a
//! `WatchStream` of the job's channel. It yields the current snapshot first,
//! then the latest one after each change (skipping those no newer than
//! `since_revision`); a reader that falls behind skips intermediate snapshots but
//! never the last. WatchJobs yields the first events of its subscription,
//! then what the feed queues for it. Dropping either stream (the client went
//! away) drops its receiver or subscription and nothing else is held.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio_stream::Stream;
use tokio_stream::wrappers::WatchStream;
use tonic::Status;

use crate::api::convert::{event_to_proto, job_to_proto};
use crate::jobs::{FeedEvent, JobSnapshot, JobWatch, Subscription, lifecycle};
use crate::proto as pb;

pub enum JobStream {
    /// Following a live job; snapshots no newer than `since` are skipped
    /// (the client has them), and a skipped terminal one ends the stream.
    Live {
        changes: WatchStream<JobSnapshot>,
        since: Option<u64>,
    },
    /// The one snapshot left to send (a job that already ended, or the
    /// stream is done when None).
    Last(Option<Box<JobSnapshot>>),
}

impl JobStream {
    /// `since`: the revision the client already has (0: none).
    pub fn new(watch: JobWatch, since: u64) -> Self {
        let since = (since > 0).then_some(since);
        match watch {
            JobWatch::Live(rx) => JobStream::Live {
                changes: WatchStream::new(rx),
                since,
            },
            JobWatch::Ended(job) if since.is_some_and(|s| job.revision <= s) => {
                JobStream::Last(None)
            }
            JobWatch::Ended(job) => JobStream::Last(Some(job)),
        }
    }
}

impl Stream for JobStream {
    type Item = Result<pb::Job, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let job = match &mut *self {
                JobStream::Last(last) => {
                    return Poll::Ready(last.take().map(|job| Ok(job_to_proto(&job))));
                }
                JobStream::Live { changes, since } => {
                    let job = ready!(Pin::new(&mut *changes).poll_next(cx));
                    match job {
                        Some(job) if since.is_some_and(|s| job.revision <= s) => {
                            if job.state.is_terminal() {
                                *self = JobStream::Last(None);
                            }
                            continue;
                        }
                        Some(job) => Some(job),
                        // The channel closed before the job ended: the
                        // instance is shutting down.
                        None => {
                            *self = JobStream::Last(None);
                            let ended = lifecycle::watch_interrupted_by_shutdown();
                            return Poll::Ready(Some(Err(ended.into())));
                        }
                    }
                }
            };
            return Poll::Ready(job.map(|job| {
                if job.state.is_terminal() {
                    *self = JobStream::Last(None);
                }
                Ok(job_to_proto(&job))
            }));
        }
    }
}

/// The WatchJobs stream.
pub type JobEventStream =
    Pin<Box<dyn Stream<Item = Result<pb::JobEvent, Status>> + Send + 'static>>;

/// The first events, then every change the feed queues for the
/// subscription; when the instance shuts down, UNAVAILABLE after the last
/// one, so that the client resumes elsewhere from the revision it saw.
pub fn job_events(subscription: Subscription, first: Vec<FeedEvent>) -> JobEventStream {
    let state = Some((subscription, first.into_iter()));
    Box::pin(futures_util::stream::unfold(state, |state| async move {
        let (subscription, mut first) = state?;
        let event = match first.next() {
            Some(event) => Some(event),
            None => subscription.next().await,
        };
        Some(match event {
            Some(event) => (Ok(event_to_proto(&event)), Some((subscription, first))),
            None => (Err(lifecycle::watch_interrupted_by_shutdown().into()), None),
        })
    }))
}
