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

use tokio::sync::watch;
use tokio_stream::Stream;
use tokio_stream::wrappers::WatchStream;
use tonic::Status;

use crate::api::convert::job_to_proto;
use crate::jobs::JobSnapshot;
use crate::proto as pb;

pub struct JobStream {
    inner: WatchStream<JobSnapshot>,
    ended: bool,
}

impl JobStream {
    pub fn new(rx: watch::Receiver<JobSnapshot>) -> Self {
        Self {
            inner: WatchStream::new(rx),
            ended: false,
        }
    }
}

impl Stream for JobStream {
    type Item = Result<pb::Job, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match ready!(Pin::new(&mut self.inner).poll_next(cx)) {
            Some(job) => {
                self.ended = job.state.is_terminal();
                Poll::Ready(Some(Ok(job_to_proto(&job))))
            }
            None => Poll::Ready(None),
        }
    }
}
