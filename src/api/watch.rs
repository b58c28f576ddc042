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

use crate::api::convert::{View, event_to_proto, job_to_proto, within};
use crate::jobs::{FeedEvent, JobSnapshot, JobWatch, Subscription, lifecycle};
use crate::proto as pb;

/// What a stream sends of each job: its view, within the response size.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub view: View,
    pub max_bytes: usize,
}

impl Shape {
    fn job(self, job: &JobSnapshot) -> Result<pb::Job, Status> {
        within(job_to_proto(job, self.view), self.max_bytes, "the job").map_err(Status::from)
    }
}

pub struct JobStream {
    state: Following,
    shape: Shape,
}

enum Following {
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
    pub fn new(watch: JobWatch, since: u64, shape: Shape) -> Self {
        let since = (since > 0).then_some(since);
        let state = match watch {
            JobWatch::Live(rx) => Following::Live {
                changes: WatchStream::new(rx),
                since,
            },
            JobWatch::Ended(job) if since.is_some_and(|s| job.revision <= s) => {
                Following::Last(None)
            }
            JobWatch::Ended(job) => Following::Last(Some(job)),
        };
        JobStream { state, shape }
    }
}

impl Stream for JobStream {
    type Item = Result<pb::Job, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let shape = self.shape;
        loop {
            let job = match &mut self.state {
                Following::Last(last) => {
                    return Poll::Ready(last.take().map(|job| shape.job(&job)));
                }
                Following::Live { changes, since } => {
                    let job = ready!(Pin::new(&mut *changes).poll_next(cx));
                    match job {
                        Some(job) if since.is_some_and(|s| job.revision <= s) => {
                            if job.state.is_terminal() {
                                self.state = Following::Last(None);
                            }
                            continue;
                        }
                        Some(job) => Some(job),
                        // The channel closed before the job ended: the
                        // instance is shutting down.
                        None => {
                            self.state = Following::Last(None);
                            let ended = lifecycle::watch_interrupted_by_shutdown();
                            return Poll::Ready(Some(Err(ended.into())));
                        }
                    }
                }
            };
            return Poll::Ready(job.map(|job| {
                let sent = shape.job(&job);
                if job.state.is_terminal() || sent.is_err() {
                    self.state = Following::Last(None);
                }
                sent
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
pub fn job_events(
    subscription: Subscription,
    first: Vec<FeedEvent>,
    shape: Shape,
) -> JobEventStream {
    let state = Some((subscription, first.into_iter()));
    Box::pin(futures_util::stream::unfold(
        state,
        move |state| async move {
            let (subscription, mut first) = state?;
            let event = match first.next() {
                Some(event) => Some(event),
                None => subscription.next().await,
            };
            Some(match event {
                Some(event) => {
                    let sent = within(
                        event_to_proto(&event, shape.view),
                        shape.max_bytes,
                        "the job",
                    )
                    .map_err(Status::from);
                    let more = sent.is_ok().then_some((subscription, first));
                    (sent, more)
                }
                None => (Err(lifecycle::watch_interrupted_by_shutdown().into()), None),
            })
        },
    ))
}
