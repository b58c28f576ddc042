//! The rows of a streamed call (ExecuteStream) on their way to the client.
//!
//! A backend hands each output's columns, then its rows in batches, to a
//! [`RowSink`]: a channel of one part, so that the backend reads at most
//! one batch ahead of what the client has taken and memory stays bounded
//! whatever the result's size. A send waits while the client is slow; it
//! fails at once once the client went away, and the backend then stops its
//! statement. A backend whose driver blocks (Oracle's) uses the
//! `blocking_` forms from its own thread.

use tokio::sync::mpsc;

use crate::call::{Column, Value};

/// Most rows in one batch.
pub const MAX_BATCH_ROWS: usize = 10_000;
/// A batch is closed once its rows take about this much (a bigger row
/// travels alone).
pub const MAX_BATCH_BYTES: usize = 1 << 20;

/// One part of a streamed result.
#[derive(Debug, Clone, PartialEq)]
pub enum ResultPart {
    /// Before an output's rows: its name ("" for a function's result) and
    /// columns.
    Start {
        output: String,
        columns: Vec<Column>,
    },
    Rows {
        output: String,
        rows: Vec<Vec<Value>>,
    },
}

#[derive(Clone)]
pub struct RowSink {
    tx: mpsc::Sender<ResultPart>,
}

impl RowSink {
    /// A sink and the receiving end the client reads.
    pub fn channel() -> (RowSink, mpsc::Receiver<ResultPart>) {
        let (tx, rx) = mpsc::channel(1);
        (RowSink { tx }, rx)
    }

    /// Announces an output; false once the client went away.
    pub async fn start(&self, output: &str, columns: Vec<Column>) -> bool {
        let start = ResultPart::Start {
            output: output.to_string(),
            columns,
        };
        self.tx.send(start).await.is_ok()
    }

    /// Hands rows on in batches of at most [`MAX_BATCH_ROWS`] rows and
    /// about [`MAX_BATCH_BYTES`], each waiting until the client took the
    /// one before; false once the client went away.
    pub async fn rows(&self, output: &str, rows: Vec<Vec<Value>>) -> bool {
        for rows in batches(rows) {
            let rows = ResultPart::Rows {
                output: output.to_string(),
                rows,
            };
            if self.tx.send(rows).await.is_err() {
                return false;
            }
        }
        true
    }

    /// [`RowSink::start`] from a thread that may block (never a tokio
    /// worker).
    pub fn blocking_start(&self, output: &str, columns: Vec<Column>) -> bool {
        let start = ResultPart::Start {
            output: output.to_string(),
            columns,
        };
        self.tx.blocking_send(start).is_ok()
    }

    /// [`RowSink::rows`] from a thread that may block.
    pub fn blocking_rows(&self, output: &str, rows: Vec<Vec<Value>>) -> bool {
        batches(rows).into_iter().all(|rows| {
            let rows = ResultPart::Rows {
                output: output.to_string(),
                rows,
            };
            self.tx.blocking_send(rows).is_ok()
        })
    }
}

/// Rows cut into batches of at most [`MAX_BATCH_ROWS`] rows and about
/// [`MAX_BATCH_BYTES`]; a bigger row travels alone.
fn batches(rows: Vec<Vec<Value>>) -> Vec<Vec<Vec<Value>>> {
    let mut batches = Vec::new();
    let mut batch = Vec::new();
    let mut bytes = 0;
    for row in rows {
        let size: usize = row.iter().map(Value::approximate_size).sum();
        if !batch.is_empty() && (batch.len() == MAX_BATCH_ROWS || bytes + size > MAX_BATCH_BYTES) {
            batches.push(std::mem::take(&mut batch));
            bytes = 0;
        }
        bytes += size;
        batch.push(row);
    }
    if !batch.is_empty() {
        batches.push(batch);
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rows_travel_in_bounded_batches_and_a_big_row_alone() {
        let (sink, mut rx) = RowSink::channel();
        let reader = tokio::spawn(async move {
            let mut batches = Vec::new();
            while let Some(part) = rx.recv().await {
                if let ResultPart::Rows { rows, .. } = part {
                    batches.push(rows.len());
                }
            }
            batches
        });
        let small = |i: i64| vec![Value::Integer(i)];
        let rows: Vec<_> = (0..25_000).map(small).collect();
        assert!(sink.rows("cur", rows).await);
        let big = vec![vec![Value::String("x".repeat(2 << 20))], small(1)];
        assert!(sink.rows("cur", big).await);
        drop(sink);
        assert_eq!(reader.await.unwrap(), [10_000, 10_000, 5_000, 1, 1]);
    }

    #[test]
    fn a_blocking_thread_hands_rows_on_as_the_reader_takes_them() {
        let (sink, mut rx) = RowSink::channel();
        let producer = std::thread::spawn(move || {
            assert!(sink.blocking_start("cur", Vec::new()));
            let rows: Vec<_> = (0..15_000).map(|i| vec![Value::Integer(i)]).collect();
            assert!(sink.blocking_rows("cur", rows));
        });
        let mut sizes = Vec::new();
        while let Some(part) = rx.blocking_recv() {
            if let ResultPart::Rows { rows, .. } = part {
                sizes.push(rows.len());
            }
        }
        producer.join().unwrap();
        assert_eq!(sizes, [10_000, 5_000]);
        let (sink, rx) = RowSink::channel();
        drop(rx);
        assert!(!sink.blocking_rows("cur", vec![vec![Value::Null]]));
    }

    #[tokio::test]
    async fn a_send_fails_once_the_client_went_away() {
        let (sink, rx) = RowSink::channel();
        drop(rx);
        assert!(!sink.start("", Vec::new()).await);
        assert!(!sink.rows("", vec![vec![Value::Null]]).await);
    }
}
