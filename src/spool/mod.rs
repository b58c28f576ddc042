//! A job's result rows past its inline part, kept whole so that
//! ReadJobResult and Arrow Flight can serve every row, however many.
//!
//! A job's call runs as ExecuteStream runs it, and [`keep`] takes its row
//! batches: the first rows stay inline in the job (within
//! `--max-cursor-rows` and `--max-inline-result-bytes`), the rest go to a
//! [`Spool`] in chunks as they are fetched. In memory mode that is a file
//! per output under `--spool-dir` ([`FileSpool`]); in database mode a table
//! of the job store, so that any instance serves them
//! (`crate::jobs::store::PostgresSpool`). Both stop at `--max-spool-bytes`:
//! the job fails with RESOURCE_EXHAUSTED and what it had spooled is freed.
//!
//! Chunks hold their rows as the API's own `procgate.v1.Row` messages,
//! length-delimited ([`codec`]): ReadJobResult sends them as they are read.

pub mod codec;
mod file;
pub mod keep;
pub mod read;

use std::sync::Arc;

use async_trait::async_trait;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::proto as pb;

pub use file::FileSpool;

/// Where spooled rows are kept.
#[async_trait]
pub trait Spool: Send + Sync {
    /// Starts keeping one output of a job; its chunks are numbered from 0.
    async fn writer(&self, job: Uuid, output: &str) -> Result<Box<dyn SpoolWriter>>;

    /// The spooled rows of an output, from its `skip`th spooled row on,
    /// chunk by chunk. NOT_FOUND when nothing is kept (any more).
    async fn reader(&self, job: Uuid, output: &str, skip: u64) -> Result<Box<dyn SpoolReader>>;

    /// Frees everything kept for a job at once; the database spool needs
    /// none (its rows go with the job's row).
    fn forget(&self, job: Uuid);
}

#[async_trait]
pub trait SpoolWriter: Send {
    /// Keeps one chunk of rows; RESOURCE_EXHAUSTED past `--max-spool-bytes`.
    async fn append(&mut self, chunk: codec::Chunk) -> Result<()>;

    /// Everything was written: the rows can be read.
    async fn finish(self: Box<Self>) -> Result<()>;

    /// The job failed: frees what this writer kept.
    async fn discard(self: Box<Self>);
}

#[async_trait]
pub trait SpoolReader: Send {
    /// The next rows, or None at the end.
    async fn next(&mut self) -> Result<Option<Vec<pb::Row>>>;
}

/// Frees a job's spooled rows when the last copy of its snapshot goes: the
/// memory table forgets it (retention, `--max-retained-jobs`,
/// `--max-retained-bytes`), or DeleteJob removes it.
pub struct SpoolHold {
    spool: Arc<dyn Spool>,
    job: Uuid,
}

impl SpoolHold {
    pub fn new(spool: Arc<dyn Spool>, job: Uuid) -> SpoolHold {
        SpoolHold { spool, job }
    }
}

impl Drop for SpoolHold {
    fn drop(&mut self) {
        self.spool.forget(self.job);
    }
}

impl std::fmt::Debug for SpoolHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SpoolHold({})", self.job)
    }
}

/// The error of a spool past its cap.
pub fn over_cap(cap: u64, scope: &str) -> Error {
    Error::Exhausted(format!(
        "the job's result does not fit in the spool: it would take more than --max-spool-bytes \
         ({cap} bytes, {scope}); what it had spooled was freed. Raise --max-spool-bytes, delete \
         finished jobs with big results, or read the rows with ExecuteStream instead"
    ))
}

/// The error of an output that has nothing (any more) in the spool.
fn gone(job: Uuid, output: &str) -> Error {
    Error::ResultNotFound(format!(
        "job {job} has no spooled rows for output {} (any more)",
        crate::name::printable(output)
    ))
}
