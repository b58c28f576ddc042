//! Reading one result set of a completed job whole, from any row: its
//! inline rows, then its spooled ones. ReadJobResult and Flight's DoGet
//! both read through this.

use std::sync::Arc;

use super::{Spool, SpoolReader};
use crate::api::convert::row_to_proto;
use crate::backend::stream::{MAX_BATCH_BYTES, MAX_BATCH_ROWS};
use crate::call::{Column, ResultSet, Value};
use crate::error::{Error, Result};
use crate::jobs::{JobSnapshot, JobState};
use crate::name::printable;
use crate::proto as pb;

/// The readers of job results that may be open at once
/// (`--max-result-readers`): each holds an open spool file or a job store
/// connection while its client reads.
#[derive(Clone)]
pub struct Readers {
    permits: Arc<tokio::sync::Semaphore>,
    max: usize,
}

impl Readers {
    pub fn new(max: usize) -> Readers {
        Readers {
            permits: Arc::new(tokio::sync::Semaphore::new(max)),
            max,
        }
    }

    fn admit(&self) -> Result<tokio::sync::OwnedSemaphorePermit> {
        self.permits.clone().try_acquire_owned().map_err(|_| {
            Error::Exhausted(format!(
                "{} ReadJobResult and Flight DoGet reads are already open, this gateway's \
                 --max-result-readers; retry when one ends",
                self.max
            ))
        })
    }
}

/// One output of a job, being read.
pub struct JobResult {
    pub output: String,
    pub columns: Vec<Column>,
    /// Every row of the result, inline and spooled.
    pub total_rows: u64,
    inline: std::vec::IntoIter<Vec<Value>>,
    spool: Option<Box<dyn SpoolReader>>,
    job: uuid::Uuid,
    /// Rows still owed to the reader.
    left: u64,
    /// Held until the read ends.
    _admitted: tokio::sync::OwnedSemaphorePermit,
}

/// The result set `output` of a job ("" for a function's result).
pub fn find<'a>(job: &'a JobSnapshot, output: &str) -> Result<&'a ResultSet> {
    if job.state != JobState::Completed {
        return Err(Error::WrongJobState(format!(
            "job {} is {}: its results can be read once it is COMPLETED",
            job.id,
            job.state.name()
        )));
    }
    let outputs = job.outputs.as_deref();
    let sets: Vec<(&str, &ResultSet)> = outputs
        .map(|o| o.result_sets().collect())
        .unwrap_or_default();
    sets.iter()
        .find(|(name, _)| *name == output)
        .map(|(_, set)| *set)
        .ok_or_else(|| {
            let names: Vec<String> = sets
                .iter()
                .map(|(name, _)| match *name {
                    "" => "\"\" (the function's result)".to_string(),
                    name => format!("{name:?}"),
                })
                .collect();
            let known = if names.is_empty() {
                "it has none".to_string()
            } else {
                format!("its result sets: {}", names.join(", "))
            };
            Error::ResultNotFound(format!(
                "job {} has no result set named {}; {known}",
                job.id,
                printable(output)
            ))
        })
}

impl JobResult {
    /// Opens `output` of a completed job at row `start_row` (0-based, over
    /// the whole result).
    pub async fn open(
        job: &JobSnapshot,
        output: &str,
        start_row: u64,
        spool: &Arc<dyn Spool>,
        readers: &Readers,
    ) -> Result<JobResult> {
        let set = find(job, output)?;
        let admitted = readers.admit()?;
        let total_rows = set.total_rows();
        if start_row > total_rows {
            return Err(Error::OutOfRange(format!(
                "start_row {start_row} is past the end of {}, which has {total_rows} rows",
                printable(output)
            )));
        }
        let inline_len = set.rows.len() as u64;
        let inline: Vec<Vec<Value>> = set
            .rows
            .get(start_row.min(inline_len) as usize..)
            .unwrap_or_default()
            .to_vec();
        let spool = if set.spooled_rows > 0 && start_row < total_rows {
            let skip = start_row.saturating_sub(inline_len);
            Some(spool.reader(job.id, output, skip).await?)
        } else {
            None
        };
        Ok(JobResult {
            output: output.to_string(),
            columns: set.columns.clone(),
            total_rows,
            inline: inline.into_iter(),
            spool,
            job: job.id,
            left: total_rows - start_row,
            _admitted: admitted,
        })
    }

    /// The next rows (at most 10,000 and about 1 MiB), or None at the end.
    pub async fn next_batch(&mut self) -> Result<Option<Vec<pb::Row>>> {
        let mut batch = Vec::new();
        let mut bytes = 0;
        while batch.len() < MAX_BATCH_ROWS && bytes < MAX_BATCH_BYTES {
            let Some(row) = self.inline.next() else { break };
            bytes += row.iter().map(Value::approximate_size).sum::<usize>();
            batch.push(row_to_proto(&row));
        }
        if batch.is_empty() {
            batch = match &mut self.spool {
                Some(spool) => spool.next().await?.unwrap_or_default(),
                None => Vec::new(),
            };
        }
        if batch.is_empty() && self.left > 0 {
            // The spooled rows went with the job (a DeleteJob, or its
            // retention), and the read would end short without a word.
            return Err(Error::ResultNotFound(format!(
                "job {} was deleted while its rows were read: {} rows were not sent",
                self.job, self.left
            )));
        }
        self.left = self.left.saturating_sub(batch.len() as u64);
        Ok((!batch.is_empty()).then_some(batch))
    }
}
