//! The WatchJob stream: a job's snapshots as protobuf messages, ending after
//! the terminal one.
//!
//! Built like tonic-health's watch: a named stream type over a
//! `WatchStream` of the job's channel. It yields the current snapshot first,
//! then the latest one after each change; a reader that falls behind skips
//! intermediate snapshots but never the last. Dropping the stream (the
//! client went away) drops its receiver and nothing else is held.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio_stream::Stream;
use tokio_stream::wrappers::WatchStream;
use tonic::Status;

use crate::api::convert::job_to_proto;
use crate::jobs::{JobSnapshot, JobWatch};
use crate::proto as pb;

pub enum JobStream {
    /// Following a live job.
    Live(WatchStream<JobSnapshot>),
    /// The one snapshot left to send (a job that already ended, or the
    /// stream is done when None).
    Last(Option<Box<JobSnapshot>>),
}

impl JobStream {
    pub fn new(watch: JobWatch) -> Self {
        match watch {
            JobWatch::Live(rx) => JobStream::Live(WatchStream::new(rx)),
            JobWatch::Ended(job) => JobStream::Last(Some(job)),
        }
    }
}

impl Stream for JobStream {
    type Item = Result<pb::Job, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let job = match &mut *self {
            JobStream::Last(last) => {
                return Poll::Ready(last.take().map(|job| Ok(job_to_proto(&job))));
            }
            JobStream::Live(inner) => ready!(Pin::new(inner).poll_next(cx)),
        };
        Poll::Ready(job.map(|job| {
            if job.state.is_terminal() {
                *self = JobStream::Last(None);
            }
            Ok(job_to_proto(&job))
        }))
    }
}
