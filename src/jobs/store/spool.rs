//! The database mode's spool: a job's result rows past its inline part, in
//! chunks in `procgate_job_results`, so that any instance serves them.
//! Their rows reference the job's, so retention and DeleteJob remove them
//! with it. `--max-spool-bytes` bounds the whole store: a chunk is written
//! only while the table's total stays under it (writers racing may pass
//! it by a chunk each).

use async_trait::async_trait;
use deadpool_postgres::Pool;
use uuid::Uuid;

use super::{schema, unavailable};
use crate::error::Result;
use crate::proto as pb;
use crate::spool::codec::{self, Chunk};
use crate::spool::{Spool, SpoolReader, SpoolWriter, over_cap};

/// Chunks read per round trip: about 2 MiB ahead of the reader.
const CHUNKS_PER_READ: i64 = 2;

pub struct PostgresSpool {
    pool: Pool,
    schema: String,
    cap: u64,
}

impl PostgresSpool {
    pub(super) fn new(pool: Pool, schema: String, cap: u64) -> PostgresSpool {
        PostgresSpool { pool, schema, cap }
    }

    fn sql(&self, text: &str) -> String {
        schema::in_schema(text, &self.schema)
    }
}

#[async_trait]
impl Spool for PostgresSpool {
    async fn writer(&self, job: Uuid, output: &str) -> Result<Box<dyn SpoolWriter>> {
        Ok(Box::new(PostgresWriter {
            pool: self.pool.clone(),
            insert: self.sql(
                "INSERT INTO {s}.procgate_job_results \
                 (job_id, output, chunk, first_row, row_count, size, data) \
                 SELECT $1, $2, $3, $4, $5, $6::bigint, $7 \
                 WHERE (SELECT coalesce(sum(size), 0)::bigint FROM {s}.procgate_job_results) \
                 + $6::bigint <= $8::bigint",
            ),
            delete: self
                .sql("DELETE FROM {s}.procgate_job_results WHERE job_id = $1 AND output = $2"),
            cap: self.cap,
            job,
            output: output.to_string(),
            chunks: 0,
        }))
    }

    async fn reader(&self, job: Uuid, output: &str, skip: u64) -> Result<Box<dyn SpoolReader>> {
        Ok(Box::new(PostgresReader {
            pool: self.pool.clone(),
            select: self.sql(
                "SELECT chunk, first_row, data FROM {s}.procgate_job_results \
                 WHERE job_id = $1 AND output = $2 AND chunk > $3 AND first_row + row_count > $4 \
                 ORDER BY chunk LIMIT $5",
            ),
            job,
            output: output.to_string(),
            skip,
            after_chunk: -1,
            ahead: Default::default(),
            ended: false,
        }))
    }

    fn forget(&self, _job: Uuid) {}
}

struct PostgresWriter {
    pool: Pool,
    insert: String,
    delete: String,
    cap: u64,
    job: Uuid,
    output: String,
    chunks: i32,
}

#[async_trait]
impl SpoolWriter for PostgresWriter {
    async fn append(&mut self, chunk: Chunk) -> Result<()> {
        let client = self.pool.get().await.map_err(unavailable)?;
        let size = chunk.data.len() as i64;
        let written = client
            .execute(
                &self.insert,
                &[
                    &self.job,
                    &self.output,
                    &self.chunks,
                    &(chunk.first_row as i64),
                    &(chunk.rows as i32),
                    &size,
                    &chunk.data,
                    &(self.cap.min(i64::MAX as u64) as i64),
                ],
            )
            .await
            .map_err(unavailable)?;
        if written == 0 {
            return Err(over_cap(
                self.cap,
                "the job store's spool, for every instance",
            ));
        }
        self.chunks += 1;
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<()> {
        Ok(())
    }

    async fn discard(self: Box<Self>) {
        if self.chunks == 0 {
            return;
        }
        let deleted = async {
            let client = self.pool.get().await.map_err(unavailable)?;
            client
                .execute(&self.delete, &[&self.job, &self.output])
                .await
                .map_err(unavailable)
        };
        if let Err(e) = deleted.await {
            // The rows go with the job's, at its retention.
            tracing::warn!(job = %self.job, error = %e, "freeing a failed job's spooled rows failed");
        }
    }
}

struct PostgresReader {
    pool: Pool,
    select: String,
    job: Uuid,
    output: String,
    skip: u64,
    after_chunk: i32,
    ahead: std::collections::VecDeque<(u64, Vec<u8>)>,
    ended: bool,
}

#[async_trait]
impl SpoolReader for PostgresReader {
    async fn next(&mut self) -> Result<Option<Vec<pb::Row>>> {
        if self.ahead.is_empty() && !self.ended {
            let client = self.pool.get().await.map_err(unavailable)?;
            let rows = client
                .query(
                    &self.select,
                    &[
                        &self.job,
                        &self.output,
                        &self.after_chunk,
                        &(self.skip as i64),
                        &CHUNKS_PER_READ,
                    ],
                )
                .await
                .map_err(unavailable)?;
            self.ended = (rows.len() as i64) < CHUNKS_PER_READ;
            for row in rows {
                self.after_chunk = row.get(0);
                let first_row: i64 = row.get(1);
                self.ahead.push_back((first_row as u64, row.get(2)));
            }
        }
        let Some((first_row, data)) = self.ahead.pop_front() else {
            return Ok(None);
        };
        let skip = self.skip.saturating_sub(first_row) as usize;
        codec::decode(&data, skip).map(Some)
    }
}
