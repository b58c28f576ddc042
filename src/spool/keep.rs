//! A job's call, with its result sets kept whole: the call runs as
//! ExecuteStream runs it, the first rows of each result set stay inline in
//! the job, and the rest go to the spool as they are fetched.

use std::sync::Arc;

use super::codec::Chunk;
use super::{Spool, SpoolHold, SpoolWriter};
use crate::backend::stream::{MAX_BATCH_BYTES, MAX_BATCH_ROWS};
use crate::backend::{Backend, Interrupt, Progress, ResultPart, RowSink, SessionTag};
use crate::call::{Column, Outputs, ProcedureCall, ResultSet, Value};
use crate::error::{Error, Result};

/// How a job keeps its results.
#[derive(Clone)]
pub struct Keeping {
    /// None: the job's result sets stay capped inline, as ExecuteSync's
    /// (a store with no spool that every instance reads: Oracle's).
    pub spool: Option<Arc<dyn Spool>>,
    /// Most rows of a result set kept inline (`--max-cursor-rows`).
    pub max_inline_rows: usize,
    /// Most bytes of a result set kept inline (`--max-inline-result-bytes`).
    pub max_inline_bytes: usize,
}

/// Runs a job's call; its outputs, and what holds its spooled rows (None
/// when nothing was spooled). A backend that cannot stream runs the call
/// as ExecuteSync does, its result sets capped and marked truncated.
pub async fn execute(
    backend: &dyn Backend,
    call: &ProcedureCall,
    progress: &Arc<dyn Progress>,
    interrupt: &Interrupt,
    job: uuid::Uuid,
    keeping: &Keeping,
    tag: &SessionTag,
) -> Result<(Outputs, Option<SpoolHold>)> {
    let Some(spool) = &keeping.spool else {
        return Ok((backend.execute(call, progress, interrupt, tag).await?, None));
    };
    let (sink, mut parts) = RowSink::channel();
    let run = async move {
        let ran = backend
            .execute_stream(call, progress, interrupt, &sink, tag)
            .await;
        drop(sink);
        ran
    };
    let target = Target {
        job,
        spool: spool.as_ref(),
        max_inline_rows: keeping.max_inline_rows,
        max_inline_bytes: keeping.max_inline_bytes,
    };
    let keep = async move {
        let mut kept = Kept::default();
        while let Some(part) = parts.recv().await {
            if let Err(e) = kept.take(part, &target).await {
                // The call's next send fails, and it stops its statement.
                drop(parts);
                kept.discard().await;
                return Err(e);
            }
        }
        Ok::<_, Error>(kept)
    };
    let (ran, kept) = tokio::join!(run, keep);
    match (ran, kept) {
        (Err(Error::Unimplemented(_)), Ok(kept)) if kept.sets.is_empty() => {
            Ok((backend.execute(call, progress, interrupt, tag).await?, None))
        }
        (Ok(mut outputs), Ok(kept)) => {
            let spooled = kept.finish(&mut outputs).await?;
            Ok((outputs, spooled.then(|| SpoolHold::new(spool.clone(), job))))
        }
        (Ok(_), Err(e)) | (Err(_), Err(e)) => Err(e),
        (Err(e), Ok(kept)) => {
            kept.discard().await;
            Err(e)
        }
    }
}

/// Where one job's rows go, and how many stay inline.
struct Target<'a> {
    job: uuid::Uuid,
    spool: &'a dyn Spool,
    max_inline_rows: usize,
    max_inline_bytes: usize,
}

#[derive(Default)]
struct Kept {
    sets: Vec<KeptSet>,
    /// What the inline rows of every result set take: one budget per job,
    /// so that its full view stays small whatever it returns.
    inline_bytes: usize,
}

struct KeptSet {
    output: String,
    set: ResultSet,
    writer: Option<Box<dyn SpoolWriter>>,
    /// Rows to spool, gathered into chunks of up to 10,000 rows and 1 MiB.
    pending: Vec<Vec<Value>>,
    pending_bytes: usize,
}

impl Kept {
    async fn take(&mut self, part: ResultPart, target: &Target<'_>) -> Result<()> {
        match part {
            ResultPart::Start { output, columns } => {
                self.sets.push(KeptSet::new(output, columns));
                Ok(())
            }
            ResultPart::Rows { output, rows } => {
                let Some(kept) = self.sets.iter_mut().rev().find(|s| s.output == output) else {
                    return Err(Error::Internal(format!(
                        "rows of {} arrived before its columns",
                        crate::name::printable(&output)
                    )));
                };
                kept.take(rows, target, &mut self.inline_bytes).await
            }
        }
    }

    /// Spools what is left and puts each result set into the outputs;
    /// whether any rows were spooled. On an error, frees them all.
    async fn finish(mut self, outputs: &mut Outputs) -> Result<bool> {
        for kept in &mut self.sets {
            if let Err(e) = kept.flush().await {
                self.discard().await;
                return Err(e);
            }
        }
        let mut writers = Vec::new();
        for kept in self.sets {
            writers.extend(kept.writer);
            let value = Value::Rows(kept.set);
            if kept.output.is_empty() {
                outputs.return_value = Some(value);
            } else {
                outputs.values.insert(kept.output, value);
            }
        }
        let spooled = !writers.is_empty();
        for writer in writers {
            writer.finish().await?;
        }
        Ok(spooled)
    }

    async fn discard(self) {
        for writer in self.sets.into_iter().filter_map(|kept| kept.writer) {
            writer.discard().await;
        }
    }
}

impl KeptSet {
    fn new(output: String, columns: Vec<Column>) -> KeptSet {
        KeptSet {
            output,
            set: ResultSet {
                columns,
                ..Default::default()
            },
            writer: None,
            pending: Vec::new(),
            pending_bytes: 0,
        }
    }

    async fn take(
        &mut self,
        rows: Vec<Vec<Value>>,
        target: &Target<'_>,
        inline_bytes: &mut usize,
    ) -> Result<()> {
        for row in rows {
            let size: usize = row.iter().map(Value::approximate_size).sum();
            if self.writer.is_none() {
                if self.set.rows.len() < target.max_inline_rows
                    && *inline_bytes + size <= target.max_inline_bytes
                {
                    *inline_bytes += size;
                    self.set.rows.push(row);
                    continue;
                }
                // The first row past the inline part: every later one is
                // spooled too, so the result keeps its order.
                self.set.truncated = true;
                self.writer = Some(target.spool.writer(target.job, &self.output).await?);
            }
            if !self.pending.is_empty()
                && (self.pending.len() == MAX_BATCH_ROWS
                    || self.pending_bytes + size > MAX_BATCH_BYTES)
            {
                self.flush().await?;
            }
            self.pending_bytes += size;
            self.pending.push(row);
        }
        Ok(())
    }

    /// Spools the rows taken since the last chunk, as one chunk.
    async fn flush(&mut self) -> Result<()> {
        let Some(writer) = self.writer.as_mut() else {
            return Ok(());
        };
        if self.pending.is_empty() {
            return Ok(());
        }
        let chunk = Chunk::encode(self.set.spooled_rows, &self.pending);
        writer.append(chunk).await?;
        self.set.spooled_rows += self.pending.len() as u64;
        self.pending.clear();
        self.pending_bytes = 0;
        Ok(())
    }
}
