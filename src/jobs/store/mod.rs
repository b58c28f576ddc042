//! The database job store: jobs in a table of procgate's own, in the
//! database procgate already talks to, so that they survive restarts and are
//! shared by every gateway in front of it.
//!
//! All writes are conditional: a claim takes a PENDING row with `FOR UPDATE
//! SKIP LOCKED`, progress and the end are written only while the row is
//! RUNNING on this instance, and every write stamps the row with the next
//! value of one store-wide sequence (`revision`). So a stale update can
//! never overwrite a terminal state, two instances never run one job, and
//! the rows changed after a revision are the change feed, read in revision
//! order. Transitions are decided by [`super::lifecycle`] on a locked row,
//! never by the SQL. A deletion leaves a tombstone with the next revision.
//! Changes are announced with `pg_notify` so that other instances follow
//! them without polling (they poll too, in case a notification is lost). The store uses the async tokio-postgres client and a small
//! deadpool pool of its own: these are short bookkeeping statements, not
//! procedure calls.

pub mod codec;
pub mod memory;
pub mod oracle;
pub mod schema;
mod spool;

pub use spool::PostgresSpool;

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use serde_json::Value as Json;
use tokio::sync::broadcast;
use tokio_postgres::{NoTls, Row};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;
use uuid::Uuid;

use super::feed::{self, Tombstone, WatchFilter};
use super::lifecycle::{self, Cancel};
use super::limits::ClaimRules;
use super::plan::{JobPlan, Retries, RetryPolicy, Tick};
use super::table::{
    Announcement, CHANGES_BATCH, CancelOutcome, ChangedJob, Changes, JobTable, ListFilter, Start,
};
use super::{JobSnapshot, JobState};
use crate::error::{Error, Result};

/// The notification channel: payloads are [`Announcement::payload`]s.
pub const CHANNEL: &str = "procgate_jobs";

/// How a job's columns are read, in this order.
const COLUMNS: &str = "id, owner, request_id, call, state, progress, progress_message, \
                       messages, outputs, error, cancel_requested, create_time, start_time, \
                       end_time, revision, create_revision, schedule_id, scheduled_time, \
                       retry, expire_time, attempt, attempt_errors, not_before";

/// A tombstone's columns, in this order.
const TOMBSTONE_COLUMNS: &str = "id, owner, procedure, state, revision, deleted_at, schedule_id";

/// `translate(x, {AZ})` folds ASCII letters only, as the feed and the
/// memory table compare procedure names (`lower()` would follow the
/// database's collation).
const ASCII_FOLD: &str = "'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz'";

/// The next revision, in statement text.
const NEXT: &str = "nextval('{s}.procgate_revision')";

/// Connects to the database at `url` and applies the job store's missing
/// migrations (what `procgate migrate` does); returns the versions applied.
pub async fn migrate(url: &str, schema: &str) -> Result<Vec<i32>> {
    let (mut client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(unavailable)?;
    let driver = tokio::spawn(connection);
    let applied = schema::migrate(&mut client, schema).await;
    drop(client);
    let _ = driver.await;
    applied
}

pub struct PostgresStore {
    pool: Pool,
    url: String,
    schema: String,
}

/// The job store could not do what was asked; the message carries the
/// database's own words (tokio-postgres alone says only "db error").
pub(crate) fn unavailable(e: impl std::error::Error) -> Error {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        message = format!("{message}: {cause}");
        source = cause.source();
    }
    Error::Unavailable(format!("the job store: {message}"))
}

fn corrupt(e: String) -> Error {
    Error::Internal(format!("a stored job could not be read: {e}"))
}

impl PostgresStore {
    /// Connects and checks that the schema's version is this binary's.
    pub async fn open(url: &str, schema: &str, connections: usize) -> Result<PostgresStore> {
        let config = tokio_postgres::Config::from_str(url)
            .map_err(|e| Error::InvalidArgument(format!("invalid job store URL: {e}")))?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(connections)
            .build()
            .map_err(unavailable)?;
        let store = PostgresStore {
            pool,
            url: url.to_string(),
            schema: schema.to_string(),
        };
        let client = store.client().await?;
        schema::check(&client, schema).await?;
        Ok(store)
    }

    /// The spool of job results in this store, sharing its pool, holding at
    /// most `cap` bytes.
    pub fn spool(&self, cap: u64) -> PostgresSpool {
        PostgresSpool::new(self.pool.clone(), self.schema.clone(), cap)
    }

    /// The schedules of this store, sharing its pool.
    pub fn schedules(&self) -> crate::schedules::postgres::PostgresSchedules {
        crate::schedules::postgres::PostgresSchedules::new(self.pool.clone(), self.schema.clone())
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(unavailable)
    }

    fn sql(&self, text: &str) -> String {
        let text = text.replace("{next}", NEXT).replace("{AZ}", ASCII_FOLD);
        schema::in_schema(&text, &self.schema)
    }

    /// A job read on this connection or transaction; `lock` adds the
    /// clause that locks its row (`FOR UPDATE`), or nothing.
    async fn get_on(
        &self,
        client: &impl deadpool_postgres::GenericClient,
        id: &Uuid,
        lock: &str,
    ) -> Result<Option<JobSnapshot>> {
        let row = client
            .query_opt(
                &self.sql(&format!(
                    "SELECT {COLUMNS} FROM {{s}}.procgate_jobs WHERE id = $1 {lock}"
                )),
                &[id],
            )
            .await
            .map_err(unavailable)?;
        row.as_ref().map(from_row).transpose()
    }

    /// Writes a transition decided by the lifecycle on a row this
    /// transaction locked, with the next revision.
    async fn write(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        job: &mut JobSnapshot,
        instance: Option<&Uuid>,
    ) -> Result<()> {
        let row = tx
            .query_one(
                &self.sql(
                    "UPDATE {s}.procgate_jobs SET state = $2, progress = $3, progress_message = $4, \
                     messages = $5, outputs = $6, error = $7, cancel_requested = $8, \
                     start_time = $9, end_time = $10, \
                     instance_id = CASE WHEN $2 = 'PENDING' THEN NULL \
                       ELSE coalesce($11, instance_id) END, \
                     start_revision = CASE WHEN $2 = 'PENDING' THEN NULL ELSE start_revision END, \
                     attempt = $12, attempt_errors = $13, not_before = $14, \
                     revision = {next} WHERE id = $1 RETURNING revision",
                ),
                &[
                    &job.id,
                    &job.state.name(),
                    &(job.progress as i32),
                    &job.progress_message.as_ref(),
                    &codec::messages_to_json(&job.messages),
                    &job.outputs.as_deref().map(codec::outputs_to_json),
                    &job.error.as_deref().map(codec::error_to_json),
                    &job.cancel_requested,
                    &job.start_time.map(DateTime::<Utc>::from),
                    &job.end_time.map(DateTime::<Utc>::from),
                    &instance,
                    &(job.attempt as i32),
                    &job.retries.as_deref().map(codec::attempt_errors_to_json),
                    &job.not_before().map(DateTime::<Utc>::from),
                ],
            )
            .await
            .map_err(unavailable)?;
        job.revision = row.get::<_, i64>(0) as u64;
        Ok(())
    }

    /// Writes a claimed job's start and progress; false when the row is no
    /// longer this instance's live job.
    async fn save_progress(&self, job: &JobSnapshot, instance: &Uuid) -> Result<bool> {
        let updated = self
            .client()
            .await?
            .execute(
                &self.sql(
                    "WITH r AS (SELECT {next} AS v) \
                     UPDATE {s}.procgate_jobs j SET state = $2, start_time = $3, progress = $4, \
                     progress_message = $5, messages = $6, revision = r.v, \
                     start_revision = CASE WHEN $2 = 'RUNNING' \
                       THEN coalesce(j.start_revision, r.v) ELSE j.start_revision END \
                     FROM r WHERE j.id = $1 AND j.state IN ('PENDING', 'RUNNING') \
                     AND j.instance_id = $7 AND NOT (j.state = 'RUNNING' AND $2 = 'PENDING')",
                ),
                &[
                    &job.id,
                    &job.state.name(),
                    &job.start_time.map(DateTime::<Utc>::from),
                    &(job.progress as i32),
                    &job.progress_message.as_ref(),
                    &codec::messages_to_json(&job.messages),
                    instance,
                ],
            )
            .await
            .map_err(unavailable)?;
        Ok(updated == 1)
    }

    /// Writes a job's end; false when the row already has one (it was
    /// cancelled while pending, or a recovery failed it as INTERRUPTED).
    async fn save_end(&self, job: &JobSnapshot, instance: &Uuid) -> Result<bool> {
        let updated = self
            .client()
            .await?
            .execute(
                &self.sql(
                    "WITH s AS (SELECT {next} AS v), e AS (SELECT {next} AS v) \
                     UPDATE {s}.procgate_jobs j SET state = $2, progress = $3, \
                     progress_message = $4, messages = $5, outputs = $6, error = $7, \
                     end_time = $8, start_time = $11, \
                     cancel_requested = j.cancel_requested OR $9, \
                     revision = greatest(s.v, e.v), \
                     start_revision = CASE WHEN $11::timestamptz IS NOT NULL \
                       THEN coalesce(j.start_revision, least(s.v, e.v)) ELSE j.start_revision END \
                     FROM s, e WHERE j.id = $1 AND j.state IN ('PENDING', 'RUNNING') \
                     AND j.instance_id = $10",
                ),
                &[
                    &job.id,
                    &job.state.name(),
                    &(job.progress as i32),
                    &job.progress_message.as_ref(),
                    &codec::messages_to_json(&job.messages),
                    &job.outputs.as_deref().map(codec::outputs_to_json),
                    &job.error.as_deref().map(codec::error_to_json),
                    &job.end_time.map(DateTime::<Utc>::from),
                    &job.cancel_requested,
                    instance,
                    &job.start_time.map(DateTime::<Utc>::from),
                ],
            )
            .await
            .map_err(unavailable)?;
        Ok(updated == 1)
    }

    /// The store's current revision and the highest purged tombstone's.
    async fn revisions(
        client: &impl deadpool_postgres::GenericClient,
        sql: &str,
    ) -> Result<(u64, u64)> {
        let row = client.query_one(sql, &[]).await.map_err(unavailable)?;
        Ok((row.get::<_, i64>(0) as u64, row.get::<_, i64>(1) as u64))
    }
}

#[async_trait]
impl JobTable for PostgresStore {
    fn durable(&self) -> bool {
        true
    }

    /// Inserts a PENDING job. With an (owner, request_id) already stored,
    /// returns that job instead and inserts nothing.
    async fn insert(&self, job: &JobSnapshot) -> Result<JobSnapshot> {
        let client = self.client().await?;
        let call = codec::call_to_json(&job.call);
        let inserted = client
            .query_opt(
                &self.sql(
                    "WITH r AS (SELECT {next} AS v) \
                     INSERT INTO {s}.procgate_jobs (id, owner, request_id, procedure, call, state, \
                     progress_message, create_time, revision, create_revision, messages, \
                     schedule_id, scheduled_time, retry, expire_time) \
                     SELECT $1, $2, $3, $4, $5, 'PENDING', $6, $7, r.v, r.v, $8, $9, $10, $11, $12 \
                     FROM r ON CONFLICT DO NOTHING RETURNING id",
                ),
                &[
                    &job.id,
                    &job.owner.as_ref(),
                    &job.request_id.as_deref(),
                    &job.call.display_name,
                    &call,
                    &job.progress_message.as_ref(),
                    &DateTime::<Utc>::from(job.create_time),
                    &codec::messages_to_json(&job.messages),
                    &job.schedule_id(),
                    &job.plan().tick.map(|t| DateTime::<Utc>::from(t.time)),
                    &(job.plan().retry != RetryPolicy::ONCE)
                        .then(|| codec::retry_to_json(&job.plan().retry)),
                    &job.plan().expire_time.map(DateTime::<Utc>::from),
                ],
            )
            .await
            .map_err(unavailable)?;
        let id = match inserted {
            Some(row) => row.get::<_, Uuid>(0),
            None => client
                .query_one(
                    &self.sql(
                        "SELECT id FROM {s}.procgate_jobs WHERE owner = $1 AND request_id = $2",
                    ),
                    &[&job.owner.as_ref(), &job.request_id.as_deref()],
                )
                .await
                .map_err(unavailable)?
                .get(0),
        };
        // The same connection: taking a second one from the pool while
        // holding this one could deadlock against other callers doing so.
        self.get_on(&client, &id, "")
            .await?
            .ok_or_else(|| Error::Internal("an inserted job vanished".into()))
    }

    async fn get(&self, id: &Uuid) -> Result<Option<JobSnapshot>> {
        let client = self.client().await?;
        self.get_on(&client, id, "").await
    }

    /// The job an owner submitted with `request_id`, if any.
    async fn find_by_request_id(
        &self,
        owner: &str,
        request_id: &str,
    ) -> Result<Option<JobSnapshot>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &self.sql(&format!(
                    "SELECT {COLUMNS} FROM {{s}}.procgate_jobs WHERE owner = $1 AND request_id = $2"
                )),
                &[&owner, &request_id],
            )
            .await
            .map_err(unavailable)?;
        row.as_ref().map(from_row).transpose()
    }

    /// Jobs submitted before revision `before`, newest first, at most `limit`.
    async fn list(
        &self,
        filter: &ListFilter,
        owner: Option<&str>,
        before: u64,
        limit: usize,
    ) -> Result<Vec<JobSnapshot>> {
        let (before, limit) = (before.min(i64::MAX as u64) as i64, limit as i64);
        let states: Option<Vec<&str>> =
            (!filter.states.is_empty()).then(|| filter.states.iter().map(|s| s.name()).collect());
        let rows = self
            .client()
            .await?
            .query(
                &self.sql(&format!(
                    "SELECT {COLUMNS} FROM {{s}}.procgate_jobs WHERE create_revision < $1 \
                     AND ($2::text[] IS NULL OR state = ANY($2)) \
                     AND ($3::text IS NULL OR translate(procedure, {{AZ}}) = translate($3, {{AZ}})) \
                     AND ($4::text IS NULL OR owner = $4) \
                     AND ($6::uuid IS NULL OR schedule_id = $6) \
                     ORDER BY create_revision DESC LIMIT $5"
                )),
                &[
                    &before,
                    &states,
                    &filter.procedure,
                    &owner,
                    &limit,
                    &filter.schedule_id,
                ],
            )
            .await
            .map_err(unavailable)?;
        rows.iter().map(from_row).collect()
    }

    /// Jobs waiting to run, across the cluster.
    async fn count_by_state(&self) -> Result<Vec<(JobState, u64)>> {
        let rows = self
            .client()
            .await?
            .query(
                &self.sql("SELECT state, count(*) FROM {s}.procgate_jobs GROUP BY state"),
                &[],
            )
            .await
            .map_err(unavailable)?;
        Ok(rows
            .iter()
            .filter_map(|row| {
                let state = JobState::parse(row.get::<_, &str>(0))?;
                Some((state, row.get::<_, i64>(1) as u64))
            })
            .collect())
    }

    async fn pending(&self) -> Result<u64> {
        let row = self
            .client()
            .await?
            .query_one(
                &self.sql("SELECT count(*) FROM {s}.procgate_jobs WHERE state = 'PENDING'"),
                &[],
            )
            .await
            .map_err(unavailable)?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    /// Takes the oldest claimable PENDING job nobody took for `instance`,
    /// if any. It stays PENDING, at its place in the queue, until the
    /// instance has a connection for it: one that finds the database gone
    /// gives it back. With procedure limits, claims of every instance take
    /// one advisory lock in turn, so that two cannot both fill a limit's
    /// last place; each statement after it sees the claims committed before.
    async fn claim(&self, instance: &Uuid, rules: &ClaimRules) -> Result<Option<JobSnapshot>> {
        // A claim changes only the message, the lifecycle's, on a row that
        // `lifecycle::claim` accepts (PENDING).
        let limits: String = rules
            .limits
            .iter()
            .map(|limit| {
                format!(
                    " AND NOT (replace(j.procedure, '\"', '') ~* {re} AND ({active}) >= {max})",
                    re = sql_text(&limit.regex()),
                    active = active_count(&limit.regex()),
                    max = limit.max
                )
            })
            .collect();
        let claim = self.sql(&format!(
            "UPDATE {{s}}.procgate_jobs SET instance_id = $1, progress_message = $2, \
             revision = {{next}} \
             WHERE id = (SELECT j.id FROM {{s}}.procgate_jobs j WHERE j.state = 'PENDING' \
                         AND j.instance_id IS NULL \
                         AND (j.not_before IS NULL OR j.not_before <= now()) \
                         AND (j.expire_time IS NULL OR j.attempt > 1 OR j.expire_time > now()) \
                         AND (j.schedule_id IS NULL OR NOT EXISTS (SELECT 1 FROM \
                           {{s}}.procgate_jobs o WHERE o.schedule_id = j.schedule_id \
                           AND o.state IN ('PENDING', 'RUNNING') \
                           AND o.create_revision < j.create_revision)){limits} \
                         ORDER BY j.create_revision FOR UPDATE SKIP LOCKED LIMIT 1) \
             RETURNING {COLUMNS}"
        ));
        let mut client = self.client().await?;
        if rules.limits.is_empty() {
            let row = client
                .query_opt(&claim, &[instance, &lifecycle::CLAIMED])
                .await
                .map_err(unavailable)?;
            return row.as_ref().map(from_row).transpose();
        }
        let tx = client.transaction().await.map_err(unavailable)?;
        tx.execute("SELECT pg_advisory_xact_lock(7041991)", &[])
            .await
            .map_err(unavailable)?;
        let row = tx
            .query_opt(&claim, &[instance, &lifecycle::CLAIMED])
            .await
            .map_err(unavailable)?;
        for limit in &rules.limits {
            // The jobs passed over for this limit say so, once.
            let re = sql_text(&limit.regex());
            tx.execute(
                &self.sql(&format!(
                    "UPDATE {{s}}.procgate_jobs j SET progress_message = $1, revision = {{next}} \
                     WHERE j.state = 'PENDING' AND j.instance_id IS NULL \
                     AND replace(j.procedure, '\"', '') ~* {re} AND j.progress_message <> $1 \
                     AND ({active}) >= {max}",
                    active = active_count(&limit.regex()),
                    max = limit.max
                )),
                &[&limit.waiting_message()],
            )
            .await
            .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)?;
        row.as_ref().map(from_row).transpose()
    }

    /// Writes a job this instance ran back to PENDING for its next attempt,
    /// on its locked row; a cancel requested meanwhile ends it instead.
    async fn retry(&self, job: &JobSnapshot, instance: &Uuid) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        let locked = tx
            .query_opt(
                &self.sql(
                    "SELECT cancel_requested FROM {s}.procgate_jobs WHERE id = $1 \
                     AND state IN ('PENDING', 'RUNNING') AND instance_id = $2 FOR UPDATE",
                ),
                &[&job.id, instance],
            )
            .await
            .map_err(unavailable)?;
        let Some(locked) = locked else {
            return Ok(false);
        };
        let mut job = job.clone();
        if locked.get::<_, bool>(0) {
            lifecycle::cancel_pending(&mut job, SystemTime::now());
        }
        self.write(&tx, &mut job, None).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(true)
    }

    /// Ends EXPIRED every unclaimed PENDING job past its expiry, on rows it
    /// locks (skipping those another instance holds).
    async fn expire_due(&self, now: SystemTime) -> Result<Vec<Uuid>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        let rows = tx
            .query(
                &self.sql(&format!(
                    "SELECT {COLUMNS} FROM {{s}}.procgate_jobs WHERE state = 'PENDING' \
                     AND instance_id IS NULL AND attempt = 1 AND expire_time <= $1 \
                     FOR UPDATE SKIP LOCKED"
                )),
                &[&DateTime::<Utc>::from(now)],
            )
            .await
            .map_err(unavailable)?;
        let mut expired = Vec::new();
        for row in &rows {
            let mut job = from_row(row)?;
            if lifecycle::expire(&mut job, now) {
                self.write(&tx, &mut job, None).await?;
                expired.push(job.id);
            }
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(expired)
    }

    async fn save(&self, job: &JobSnapshot, instance: &Uuid) -> Result<bool> {
        if job.state.is_terminal() {
            self.save_end(job, instance).await
        } else {
            self.save_progress(job, instance).await
        }
    }

    /// Gives back a claimed job that could not get a connection: it waits,
    /// PENDING at its place, for any instance to claim it again.
    async fn release(&self, job: &JobSnapshot, instance: &Uuid) -> Result<()> {
        self.client()
            .await?
            .execute(
                &self.sql(
                    "UPDATE {s}.procgate_jobs SET instance_id = NULL, progress_message = $2, \
                     revision = {next} WHERE id = $1 AND state = 'PENDING' AND instance_id = $3",
                ),
                &[&job.id, &job.progress_message.as_ref(), instance],
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// CancelJob on a locked row: the lifecycle ends a PENDING job at once
    /// and flags a RUNNING one; a job that already ended refuses.
    async fn cancel(&self, id: &Uuid) -> Result<CancelOutcome> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        let Some(mut job) = self.get_on(&tx, id, "FOR UPDATE").await? else {
            return Ok(CancelOutcome::Missing);
        };
        let outcome = lifecycle::cancel(&mut job, SystemTime::now())?;
        if outcome != Cancel::AlreadyRequested {
            self.write(&tx, &mut job, None).await?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(match outcome {
            Cancel::Ended => CancelOutcome::Cancelled(job),
            Cancel::Requested | Cancel::AlreadyRequested => CancelOutcome::Requested(job),
        })
    }

    /// Which of these live jobs someone asked to cancel.
    async fn cancel_requests(&self, live: &[Uuid]) -> Result<Vec<Uuid>> {
        if live.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self
            .client()
            .await?
            .query(
                &self.sql(
                    "SELECT id FROM {s}.procgate_jobs WHERE id = ANY($1) AND cancel_requested",
                ),
                &[&live],
            )
            .await
            .map_err(unavailable)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Deletes an ended job, leaving a tombstone; false when it is not there
    /// or still live.
    async fn delete(&self, id: &Uuid) -> Result<bool> {
        let deleted = self
            .client()
            .await?
            .execute(
                &self.sql(
                    "WITH gone AS (DELETE FROM {s}.procgate_jobs WHERE id = $1 \
                     AND state IN ('COMPLETED', 'FAILED', 'CANCELLED') \
                     RETURNING id, owner, procedure, state, schedule_id) \
                     INSERT INTO {s}.procgate_tombstones (id, owner, procedure, state, schedule_id, \
                     revision) SELECT id, owner, procedure, state, schedule_id, {next} FROM gone",
                ),
                &[id],
            )
            .await
            .map_err(unavailable)?;
        Ok(deleted == 1)
    }

    /// Deletes jobs that ended before `now - retention` (1,000 at a time),
    /// leaving tombstones, and purges tombstones older than
    /// `tombstone_retention`.
    async fn sweep(&self, retention: Duration, tombstone_retention: Duration) -> Result<u64> {
        let client = self.client().await?;
        let cutoff = DateTime::<Utc>::from(SystemTime::now() - retention);
        let mut total = 0;
        loop {
            let deleted = client
                .execute(
                    &self.sql(
                        "WITH gone AS (DELETE FROM {s}.procgate_jobs WHERE id IN (SELECT id FROM \
                         {s}.procgate_jobs WHERE end_time < $1 LIMIT 1000) \
                         RETURNING id, owner, procedure, state, schedule_id) \
                         INSERT INTO {s}.procgate_tombstones (id, owner, procedure, state, \
                         schedule_id, revision) \
                         SELECT id, owner, procedure, state, schedule_id, {next} FROM gone",
                    ),
                    &[&cutoff],
                )
                .await
                .map_err(unavailable)?;
            total += deleted;
            if deleted < 1000 {
                break;
            }
        }
        let purge_before = DateTime::<Utc>::from(SystemTime::now() - tombstone_retention);
        client
            .execute(
                &self.sql(
                    "WITH purged AS (DELETE FROM {s}.procgate_tombstones WHERE deleted_at < $1 \
                     RETURNING revision) UPDATE {s}.procgate_feed \
                     SET purged_through = greatest(purged_through, (SELECT max(revision) FROM purged))",
                ),
                &[&purge_before],
            )
            .await
            .map_err(unavailable)?;
        Ok(total)
    }

    /// The change feed: jobs changed and deleted after revision `after`, in
    /// revision order, at most a batch.
    async fn changes(&self, after: u64) -> Result<Changes> {
        let client = self.client().await?;
        let after_i = after as i64;
        let jobs_sql = self.sql(&format!(
            "SELECT {COLUMNS}, start_revision FROM {{s}}.procgate_jobs WHERE revision > $1 \
             ORDER BY revision LIMIT {CHANGES_BATCH}"
        ));
        let deleted_sql = self.sql(&format!(
            "SELECT {TOMBSTONE_COLUMNS} FROM {{s}}.procgate_tombstones WHERE revision > $1 \
             ORDER BY revision LIMIT {CHANGES_BATCH}"
        ));
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&after_i];
        let jobs = client.query(&jobs_sql, &params);
        let deleted = client.query(&deleted_sql, &params);
        // Both on one connection, pipelined: one round trip.
        let (jobs, deleted) = futures_util::future::try_join(jobs, deleted)
            .await
            .map_err(unavailable)?;
        let jobs = jobs
            .iter()
            .map(|row| {
                Ok(ChangedJob {
                    job: from_row(row)?,
                    start_revision: row
                        .get::<_, Option<i64>>("start_revision")
                        .map(|r| r as u64),
                })
            })
            .collect::<Result<_>>()?;
        let deleted = deleted
            .iter()
            .map(tombstone_from_row)
            .collect::<Result<_>>()?;
        Ok(Changes::from_batches(jobs, deleted, after))
    }

    /// The store's current revision.
    async fn revision(&self) -> Result<u64> {
        let client = self.client().await?;
        Ok(Self::revisions(&client, &self.sql(REVISIONS)).await?.0)
    }

    /// What a WatchJobs stream starts from, in one snapshot: the live jobs
    /// that match (`since` None), or every job changed and deleted after
    /// `since` whatever its state, after checking that the store can replay
    /// from there.
    async fn start_of_watch(&self, filter: &WatchFilter, since: Option<u64>) -> Result<Start> {
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(unavailable)?;
        let (revision, purged_through) = Self::revisions(&tx, &self.sql(REVISIONS)).await?;
        let owner = (!filter.caller.admin).then_some(filter.caller.name.as_ref());
        let procedure = filter.procedure.as_deref();
        let mut start = Start {
            revision,
            ..Start::default()
        };
        // A replay: every job changed after `since`, whatever its state;
        // else the live jobs the states filter wants.
        let (after, states): (Option<i64>, Option<Vec<&str>>) = match since {
            Some(since) => {
                feed::check_resumable(since, revision, purged_through)?;
                (Some(since as i64), None)
            }
            None => {
                let live = [JobState::Pending, JobState::Running]
                    .into_iter()
                    .filter(|s| filter.states.is_empty() || filter.states.contains(s));
                (None, Some(live.map(JobState::name).collect()))
            }
        };
        let rows = tx
            .query(
                &self.sql(&format!(
                    "SELECT {COLUMNS} FROM {{s}}.procgate_jobs \
                     WHERE ($1::bigint IS NULL OR revision > $1) \
                     AND ($2::text[] IS NULL OR state = ANY($2)) \
                     AND ($3::text IS NULL OR translate(procedure, {{AZ}}) = translate($3, {{AZ}})) \
                     AND ($4::text IS NULL OR owner = $4) \
                     AND ($5::uuid IS NULL OR schedule_id = $5) ORDER BY revision"
                )),
                &[&after, &states, &procedure, &owner, &filter.schedule_id],
            )
            .await
            .map_err(unavailable)?;
        start.jobs = rows.iter().map(from_row).collect::<Result<_>>()?;
        if let Some(after) = after {
            let rows = tx
                .query(
                    &self.sql(&format!(
                        "SELECT {TOMBSTONE_COLUMNS} FROM {{s}}.procgate_tombstones \
                         WHERE revision > $1 \
                         AND ($2::text IS NULL OR translate(procedure, {{AZ}}) = translate($2, {{AZ}})) \
                         AND ($3::text IS NULL OR owner = $3) \
                         AND ($4::uuid IS NULL OR schedule_id = $4) ORDER BY revision",
                    )),
                    &[&after, &procedure, &owner, &filter.schedule_id],
                )
                .await
                .map_err(unavailable)?;
            start.deleted = rows.iter().map(tombstone_from_row).collect::<Result<_>>()?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(start)
    }

    /// The jobs with these ids, as stored now.
    async fn get_many(&self, ids: &[Uuid]) -> Result<Vec<JobSnapshot>> {
        let rows = self
            .client()
            .await?
            .query(
                &self.sql(&format!(
                    "SELECT {COLUMNS} FROM {{s}}.procgate_jobs WHERE id = ANY($1)"
                )),
                &[&ids],
            )
            .await
            .map_err(unavailable)?;
        rows.iter().map(from_row).collect()
    }

    /// Renews this instance's lease.
    async fn heartbeat(&self, instance: &Uuid, name: &str, lease: Duration) -> Result<()> {
        let until = DateTime::<Utc>::from(SystemTime::now() + lease);
        self.client()
            .await?
            .execute(
                &self.sql(
                    "INSERT INTO {s}.procgate_instances (id, name, lease_until) VALUES ($1, $2, $3) \
                     ON CONFLICT (id) DO UPDATE SET lease_until = $3",
                ),
                &[instance, &name, &until],
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Removes this instance (a clean shutdown).
    async fn leave(&self, instance: &Uuid) -> Result<()> {
        self.client()
            .await?
            .execute(
                &self.sql("DELETE FROM {s}.procgate_instances WHERE id = $1"),
                &[instance],
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Instances whose lease expired: the lifecycle fails their RUNNING jobs
    /// with reason INTERRUPTED, and they are forgotten. Returns the jobs
    /// failed.
    async fn recover(&self) -> Result<Vec<Uuid>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        let dead = tx
            .query(
                &self.sql(
                    "DELETE FROM {s}.procgate_instances WHERE lease_until < now() \
                     RETURNING id, name, lease_until",
                ),
                &[],
            )
            .await
            .map_err(unavailable)?;
        let mut failed = Vec::new();
        for instance in &dead {
            let (id, name): (Uuid, String) = (instance.get("id"), instance.get("name"));
            // What it claimed but never started goes back to the queue, at
            // its place: no transition, the job stays PENDING.
            tx.execute(
                &self.sql(
                    "UPDATE {s}.procgate_jobs SET instance_id = NULL, revision = {next} \
                     WHERE instance_id = $1 AND state = 'PENDING'",
                ),
                &[&id],
            )
            .await
            .map_err(unavailable)?;
            let lease_until = SystemTime::from(instance.get::<_, DateTime<Utc>>("lease_until"));
            let rows = tx
                .query(
                    &self.sql(&format!(
                        "SELECT {COLUMNS} FROM {{s}}.procgate_jobs \
                         WHERE instance_id = $1 AND state = 'RUNNING' FOR UPDATE"
                    )),
                    &[&id],
                )
                .await
                .map_err(unavailable)?;
            for row in &rows {
                let mut job = from_row(row)?;
                let who = format!("{name} ({id})");
                if lifecycle::interrupt(&mut job, &who, lease_until, SystemTime::now()) {
                    self.write(&tx, &mut job, None).await?;
                    failed.push(job.id);
                }
            }
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(failed)
    }

    /// Announces a change to every instance.
    async fn notify(&self, announcement: Announcement) {
        let payload = announcement.payload();
        let sent = match self.client().await {
            Ok(client) => client
                .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
                .await
                .map(drop)
                .map_err(unavailable),
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            warn!(error = %e, "could not announce a job change; others will poll");
        }
    }

    /// Listens for notifications on a connection of its own, reconnecting
    /// when it drops, and forwards their payloads.
    /// Starts forwarding the channel's notifications, on a task of
    /// `tasks` that reconnects after a failure and ends with `stop`.
    fn listen(
        &self,
        tasks: &TaskTracker,
        stop: CancellationToken,
    ) -> Option<broadcast::Sender<String>> {
        let (tx, _) = broadcast::channel(1024);
        let sender = tx.clone();
        let url = self.url.clone();
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    listened = listen_once(&url, &sender) => if let Err(e) = listened {
                        warn!(error = %e, "job notifications stopped; reconnecting");
                    },
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        });
        Some(tx)
    }
}

/// LISTENs on one connection and forwards what it hears until the
/// connection ends. Driving the connection and sending LISTEN happen in this
/// one future, so that dropping it closes the connection and leaves nothing
/// behind.
async fn listen_once(
    url: &str,
    sender: &broadcast::Sender<String>,
) -> std::result::Result<(), tokio_postgres::Error> {
    let (client, mut connection) = tokio_postgres::connect(url, NoTls).await?;
    let drive = async {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                    let _ = sender.send(n.payload().to_string());
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            }
        }
    };
    let statement = format!("LISTEN {CHANNEL}");
    let listen = client.batch_execute(&statement);
    tokio::pin!(drive);
    tokio::select! {
        ended = &mut drive => return ended,
        listened = listen => listened?,
    }
    drive.await
}

fn from_row(row: &Row) -> Result<JobSnapshot> {
    let state: &str = row.get("state");
    let state = JobState::parse(state).ok_or_else(|| corrupt(format!("unknown state {state}")))?;
    let call = codec::call_from_json(&row.get::<_, Json>("call")).map_err(corrupt)?;
    let time = |column: &str| {
        row.get::<_, Option<DateTime<Utc>>>(column)
            .map(SystemTime::from)
    };
    let outputs: Option<Json> = row.get("outputs");
    let error: Option<Json> = row.get("error");
    let messages: Json = row.get("messages");
    let job = JobSnapshot {
        id: row.get("id"),
        state,
        progress: row.get::<_, i32>("progress").clamp(0, 100) as u32,
        progress_message: row.get::<_, String>("progress_message").into(),
        create_time: time("create_time").unwrap_or(SystemTime::UNIX_EPOCH),
        start_time: time("start_time"),
        end_time: time("end_time"),
        outputs: outputs
            .map(|o| codec::outputs_from_json(&o).map(std::sync::Arc::new))
            .transpose()
            .map_err(corrupt)?,
        error: error
            .map(|e| codec::error_from_json(&e).map(Box::new))
            .transpose()
            .map_err(corrupt)?,
        cancel_requested: row.get("cancel_requested"),
        call: std::sync::Arc::new(call),
        messages: codec::messages_from_json(&messages).map_err(corrupt)?,
        request_id: row.get::<_, Option<String>>("request_id").map(Into::into),
        owner: row.get::<_, String>("owner").into(),
        revision: row.get::<_, i64>("revision") as u64,
        create_revision: row.get::<_, i64>("create_revision") as u64,
        spool: None,
        plan: plan_from_row(row)?,
        attempt: row.get::<_, i32>("attempt").max(1) as u32,
        retries: retries_from_row(row)?,
    };
    Ok(job)
}

/// A job's plan from its columns; None for a plain job.
fn plan_from_row(row: &Row) -> Result<Option<std::sync::Arc<JobPlan>>> {
    let time = |column: &str| {
        row.get::<_, Option<DateTime<Utc>>>(column)
            .map(SystemTime::from)
    };
    let retry = row
        .get::<_, Option<Json>>("retry")
        .map(|r| codec::retry_from_json(&r))
        .transpose()
        .map_err(corrupt)?;
    let tick = match (
        row.get::<_, Option<Uuid>>("schedule_id"),
        time("scheduled_time"),
    ) {
        (Some(schedule_id), Some(time)) => Some(Tick { schedule_id, time }),
        _ => None,
    };
    let plan = JobPlan {
        retry: retry.unwrap_or(RetryPolicy::ONCE),
        expire_time: time("expire_time"),
        tick,
    };
    Ok((!plan.is_plain()).then(|| std::sync::Arc::new(plan)))
}

/// The errors of a job's failed attempts and when its next may start.
fn retries_from_row(row: &Row) -> Result<Option<Box<Retries>>> {
    let errors = row.get::<_, Option<Json>>("attempt_errors");
    let not_before = row
        .get::<_, Option<DateTime<Utc>>>("not_before")
        .map(SystemTime::from);
    if errors.is_none() && not_before.is_none() {
        return Ok(None);
    }
    let errors = errors
        .map(|e| codec::attempt_errors_from_json(&e))
        .transpose()
        .map_err(corrupt)?
        .unwrap_or_default();
    Ok(Some(Box::new(Retries { errors, not_before })))
}

/// A string literal of statement text.
fn sql_text(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Statement text counting the claimed live jobs of procedures matching
/// `regex`, on every instance.
fn active_count(regex: &str) -> String {
    format!(
        "SELECT count(*) FROM {{s}}.procgate_jobs a WHERE replace(a.procedure, '\"', '') ~* {} \
         AND a.instance_id IS NOT NULL AND a.state IN ('PENDING', 'RUNNING')",
        sql_text(regex)
    )
}

fn tombstone_from_row(row: &Row) -> Result<Tombstone> {
    let state: &str = row.get("state");
    Ok(Tombstone {
        id: row.get("id"),
        owner: row.get::<_, String>("owner").into(),
        procedure: row.get("procedure"),
        state: JobState::parse(state).ok_or_else(|| corrupt(format!("unknown state {state}")))?,
        revision: row.get::<_, i64>("revision") as u64,
        deleted_at: row.get::<_, DateTime<Utc>>("deleted_at").into(),
        schedule_id: row.get("schedule_id"),
    })
}

/// The current revision (the highest stamped on a job or tombstone) and the
/// highest purged one.
const REVISIONS: &str = "SELECT greatest( \
       (SELECT coalesce(max(revision), 0) FROM {s}.procgate_jobs), \
       (SELECT coalesce(max(revision), 0) FROM {s}.procgate_tombstones), \
       (SELECT purged_through FROM {s}.procgate_feed)), \
     (SELECT purged_through FROM {s}.procgate_feed)";
