//! Schedules in PostgreSQL (`--job-store database`), in
//! `procgate_schedules` beside the jobs: they survive restarts and every
//! instance ticks them. A tick holds the schedule's row locked (`FOR UPDATE
//! SKIP LOCKED`, so another instance passes over it) from the moment it
//! finds it due until it commits the next tick, on a connection of its
//! own; a ticker that dies meanwhile leaves the row as it was, and the
//! next one submits the same tick's job again, which its idempotency key
//! answers with the job already there.

use std::time::SystemTime;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Object, Pool};
use serde_json::Value as Json;
use tokio_postgres::Row;
use uuid::Uuid;

use super::memory::name_taken;
use super::{Advance, Overlap, Schedule, ScheduleTable, TickLock};
use crate::error::{Error, Result};
use crate::jobs::store::{codec, schema, unavailable};

const COLUMNS: &str = "id, seq, owner, name, cron, time_zone, call, paused, overlap, retry, \
                       next_run_time, last_run_time, last_job_id, skipped_ticks, create_time";

pub struct PostgresSchedules {
    pool: Pool,
    schema: String,
}

impl PostgresSchedules {
    pub fn new(pool: Pool, schema: String) -> PostgresSchedules {
        PostgresSchedules { pool, schema }
    }

    fn sql(&self, text: &str) -> String {
        schema::in_schema(&text.replace("{columns}", COLUMNS), &self.schema)
    }

    async fn client(&self) -> Result<Object> {
        self.pool.get().await.map_err(unavailable)
    }
}

fn time(t: Option<SystemTime>) -> Option<DateTime<Utc>> {
    t.map(DateTime::<Utc>::from)
}

#[async_trait]
impl ScheduleTable for PostgresSchedules {
    async fn create(&self, s: &Schedule) -> Result<Schedule> {
        let row = self
            .client()
            .await?
            .query_opt(
                &self.sql(
                    "INSERT INTO {s}.procgate_schedules (id, owner, name, cron, time_zone, call, \
                     paused, overlap, retry, next_run_time, create_time) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                     ON CONFLICT (owner, name) DO NOTHING RETURNING {columns}",
                ),
                &[
                    &s.id,
                    &s.owner.as_ref(),
                    &s.name,
                    &s.cron,
                    &s.time_zone,
                    &codec::call_to_json(&s.call),
                    &s.paused,
                    &s.overlap.name(),
                    &s.retry.as_ref().map(codec::retry_to_json),
                    &time(s.next_run_time),
                    &DateTime::<Utc>::from(s.create_time),
                ],
            )
            .await
            .map_err(unavailable)?;
        match row {
            Some(row) => from_row(&row),
            None => Err(name_taken(&s.name)),
        }
    }

    async fn get(&self, id: &Uuid) -> Result<Option<Schedule>> {
        let row = self
            .client()
            .await?
            .query_opt(
                &self.sql("SELECT {columns} FROM {s}.procgate_schedules WHERE id = $1"),
                &[id],
            )
            .await
            .map_err(unavailable)?;
        row.as_ref().map(from_row).transpose()
    }

    async fn list(&self, owner: Option<&str>, before: u64, limit: usize) -> Result<Vec<Schedule>> {
        let rows = self
            .client()
            .await?
            .query(
                &self.sql(
                    "SELECT {columns} FROM {s}.procgate_schedules WHERE seq < $1 \
                     AND ($2::text IS NULL OR owner = $2) ORDER BY seq DESC LIMIT $3",
                ),
                &[
                    &(before.min(i64::MAX as u64) as i64),
                    &owner,
                    &(limit.min(i64::MAX as usize) as i64),
                ],
            )
            .await
            .map_err(unavailable)?;
        rows.iter().map(from_row).collect()
    }

    async fn update(&self, s: &Schedule) -> Result<bool> {
        let updated = self
            .client()
            .await?
            .execute(
                &self.sql(
                    "UPDATE {s}.procgate_schedules SET cron = $2, time_zone = $3, call = $4, \
                     paused = $5, overlap = $6, retry = $7, next_run_time = $8 WHERE id = $1",
                ),
                &[
                    &s.id,
                    &s.cron,
                    &s.time_zone,
                    &codec::call_to_json(&s.call),
                    &s.paused,
                    &s.overlap.name(),
                    &s.retry.as_ref().map(codec::retry_to_json),
                    &time(s.next_run_time),
                ],
            )
            .await
            .map_err(unavailable)?;
        Ok(updated == 1)
    }

    async fn delete(&self, id: &Uuid) -> Result<bool> {
        let deleted = self
            .client()
            .await?
            .execute(
                &self.sql("DELETE FROM {s}.procgate_schedules WHERE id = $1"),
                &[id],
            )
            .await
            .map_err(unavailable)?;
        Ok(deleted == 1)
    }

    async fn due(&self, now: SystemTime) -> Result<Vec<Uuid>> {
        let rows = self
            .client()
            .await?
            .query(
                &self.sql(
                    "SELECT id FROM {s}.procgate_schedules WHERE NOT paused \
                     AND next_run_time <= $1 ORDER BY next_run_time",
                ),
                &[&DateTime::<Utc>::from(now)],
            )
            .await
            .map_err(unavailable)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn next_due(&self) -> Result<Option<SystemTime>> {
        let row = self
            .client()
            .await?
            .query_one(
                &self.sql("SELECT min(next_run_time) FROM {s}.procgate_schedules WHERE NOT paused"),
                &[],
            )
            .await
            .map_err(unavailable)?;
        Ok(row.get::<_, Option<DateTime<Utc>>>(0).map(SystemTime::from))
    }

    async fn lock_due(&self, id: &Uuid, now: SystemTime) -> Result<Option<Box<dyn TickLock>>> {
        let client = self.client().await?;
        client.batch_execute("BEGIN").await.map_err(unavailable)?;
        let mut tick = PostgresTick {
            client: Some(client),
            schedule: None,
            commit: self.sql(
                "UPDATE {s}.procgate_schedules SET \
                 next_run_time = CASE WHEN next_run_time = $2 THEN $3 ELSE next_run_time END, \
                 last_run_time = $4, last_job_id = coalesce($5, last_job_id), \
                 skipped_ticks = skipped_ticks + $6 WHERE id = $1",
            ),
        };
        let row = tick
            .client()
            .query_opt(
                &self.sql(
                    "SELECT {columns} FROM {s}.procgate_schedules WHERE id = $1 AND NOT paused \
                     AND next_run_time <= $2 FOR UPDATE SKIP LOCKED",
                ),
                &[id, &DateTime::<Utc>::from(now)],
            )
            .await
            .map_err(unavailable)?;
        let Some(row) = row else {
            tick.finish("ROLLBACK").await?;
            return Ok(None);
        };
        tick.schedule = Some(from_row(&row)?);
        Ok(Some(Box::new(tick)))
    }
}

/// A due schedule's row, locked in an open transaction on a connection of
/// its own. Dropped without a commit, the connection is closed rather than
/// pooled mid-transaction, which rolls the transaction back.
struct PostgresTick {
    client: Option<Object>,
    schedule: Option<Schedule>,
    commit: String,
}

impl PostgresTick {
    fn client(&self) -> &Object {
        self.client.as_ref().expect("the tick's connection")
    }

    async fn finish(&mut self, statement: &str) -> Result<()> {
        let ended = self.client().batch_execute(statement).await;
        if ended.is_ok() {
            // Back to the pool, out of the transaction.
            self.client.take();
        }
        ended.map_err(unavailable)
    }
}

impl Drop for PostgresTick {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            drop(Object::take(client));
        }
    }
}

#[async_trait]
impl TickLock for PostgresTick {
    fn schedule(&self) -> &Schedule {
        self.schedule.as_ref().expect("a locked schedule")
    }

    async fn commit(mut self: Box<Self>, advance: Advance) -> Result<()> {
        let schedule = self.schedule();
        let (id, expected) = (schedule.id, time(schedule.next_run_time));
        self.client()
            .execute(
                &self.commit,
                &[
                    &id,
                    &expected,
                    &time(advance.next_run_time),
                    &DateTime::<Utc>::from(advance.last_run_time),
                    &advance.started,
                    &(advance.skipped.min(i64::MAX as u64) as i64),
                ],
            )
            .await
            .map_err(unavailable)?;
        self.finish("COMMIT").await
    }
}

fn corrupt(e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("a stored schedule could not be read: {e}"))
}

fn from_row(row: &Row) -> Result<Schedule> {
    let time = |column: &str| {
        row.get::<_, Option<DateTime<Utc>>>(column)
            .map(SystemTime::from)
    };
    let overlap: String = row.get("overlap");
    Ok(Schedule {
        id: row.get("id"),
        seq: row.get::<_, i64>("seq") as u64,
        owner: row.get::<_, String>("owner").into(),
        name: row.get("name"),
        cron: row.get("cron"),
        time_zone: row.get("time_zone"),
        call: std::sync::Arc::new(
            codec::call_from_json(&row.get::<_, Json>("call")).map_err(corrupt)?,
        ),
        paused: row.get("paused"),
        overlap: Overlap::parse(&overlap)
            .ok_or_else(|| corrupt(format!("unknown overlap policy {overlap}")))?,
        retry: row
            .get::<_, Option<Json>>("retry")
            .map(|r| codec::retry_from_json(&r))
            .transpose()
            .map_err(corrupt)?,
        next_run_time: time("next_run_time"),
        last_run_time: time("last_run_time"),
        last_job_id: row.get("last_job_id"),
        create_time: time("create_time").unwrap_or(SystemTime::UNIX_EPOCH),
        skipped_ticks: row.get::<_, i64>("skipped_ticks").max(0) as u64,
    })
}
