//! The database job store: jobs in a table of procgate's own, in the
//! database procgate already talks to, so that they survive restarts and are
//! shared by every gateway in front of it.
//!
//! All writes are conditional: a claim takes a PENDING row with `FOR UPDATE
//! SKIP LOCKED`, progress and the end are written only while the row is
//! RUNNING on this instance, and every write bumps a version. So a stale
//! update can never overwrite a terminal state, and two instances never run
//! one job. Changes are announced with `pg_notify` so that other instances
//! follow them without polling (they poll too, in case a notification is
//! lost). The store uses the async tokio-postgres client and a small
//! deadpool pool of its own: these are short bookkeeping statements, not
//! procedure calls.

pub mod codec;
pub mod oracle;
pub mod schema;

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use serde_json::Value as Json;
use tokio::sync::broadcast;
use tokio_postgres::{NoTls, Row};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;
use uuid::Uuid;

use super::{JobSnapshot, JobState, ListFilter};
use crate::error::{Error, Result};

/// The notification channel: payloads are a job id (it changed), `cancel:`
/// and a job id (stop it), or `pending` (a job is waiting to be claimed).
pub const CHANNEL: &str = "procgate_jobs";

/// How a job's columns are read, in this order.
const COLUMNS: &str = "id, seq, owner, request_id, call, state, progress, progress_message, \
                       messages, outputs, error, cancel_requested, create_time, start_time, \
                       end_time, version";

/// A stored job with its submission sequence and row version.
#[derive(Debug, Clone)]
pub struct StoredJob {
    pub seq: i64,
    pub version: i64,
    pub job: JobSnapshot,
}

/// What a cancel did.
pub enum CancelOutcome {
    /// It was PENDING: it is CANCELLED now.
    Cancelled(StoredJob),
    /// It is RUNNING: the instance running it was asked to stop it.
    Requested(StoredJob),
    /// It had already ended.
    Ended(JobState),
    Missing,
}

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

pub struct JobStore {
    pool: Pool,
    url: String,
    schema: String,
}

fn unavailable(e: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!("the job store: {e}"))
}

fn corrupt(e: String) -> Error {
    Error::Internal(format!("a stored job could not be read: {e}"))
}

impl JobStore {
    /// Connects and checks that the schema's version is this binary's.
    pub async fn open(url: &str, schema: &str, connections: usize) -> Result<JobStore> {
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
        let store = JobStore {
            pool,
            url: url.to_string(),
            schema: schema::quote(schema),
        };
        let client = store.client().await?;
        schema::check(&client, schema).await?;
        Ok(store)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(unavailable)
    }

    fn sql(&self, text: &str) -> String {
        text.replace("{s}", &self.schema)
    }

    /// Inserts a PENDING job. With an (owner, request_id) already stored,
    /// returns that job instead and inserts nothing.
    pub async fn insert(&self, job: &JobSnapshot) -> Result<StoredJob> {
        let client = self.client().await?;
        let call = codec::call_to_json(&job.call);
        let inserted = client
            .query_opt(
                &self.sql(
                    "INSERT INTO {s}.procgate_jobs (id, owner, request_id, procedure, call, state, \
                     progress_message, create_time) VALUES ($1, $2, $3, $4, $5, 'PENDING', $6, $7) \
                     ON CONFLICT (owner, request_id) DO NOTHING RETURNING id",
                ),
                &[
                    &job.id,
                    &job.owner.as_ref(),
                    &job.request_id.as_deref(),
                    &job.call.display_name,
                    &call,
                    &job.progress_message.as_ref(),
                    &DateTime::<Utc>::from(job.create_time),
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
        self.get_on(&client, &id)
            .await?
            .ok_or_else(|| Error::Internal("an inserted job vanished".into()))
    }

    pub async fn get(&self, id: &Uuid) -> Result<Option<StoredJob>> {
        let client = self.client().await?;
        self.get_on(&client, id).await
    }

    async fn get_on(
        &self,
        client: &tokio_postgres::Client,
        id: &Uuid,
    ) -> Result<Option<StoredJob>> {
        let row = client
            .query_opt(
                &self.sql(&format!(
                    "SELECT {COLUMNS} FROM {{s}}.procgate_jobs WHERE id = $1"
                )),
                &[id],
            )
            .await
            .map_err(unavailable)?;
        row.as_ref().map(from_row).transpose()
    }

    /// The job an owner submitted with `request_id`, if any.
    pub async fn find_by_request_id(
        &self,
        owner: &str,
        request_id: &str,
    ) -> Result<Option<StoredJob>> {
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

    /// Jobs with `seq < before`, newest first, at most `limit`.
    pub async fn list(
        &self,
        filter: &ListFilter,
        owner: Option<&str>,
        before: i64,
        limit: i64,
    ) -> Result<Vec<StoredJob>> {
        let states: Option<Vec<&str>> =
            (!filter.states.is_empty()).then(|| filter.states.iter().map(|s| s.name()).collect());
        let rows = self
            .client()
            .await?
            .query(
                &self.sql(&format!(
                    "SELECT {COLUMNS} FROM {{s}}.procgate_jobs WHERE seq < $1 \
                     AND ($2::text[] IS NULL OR state = ANY($2)) \
                     AND ($3::text IS NULL OR lower(procedure) = lower($3)) \
                     AND ($4::text IS NULL OR owner = $4) ORDER BY seq DESC LIMIT $5"
                )),
                &[&before, &states, &filter.procedure, &owner, &limit],
            )
            .await
            .map_err(unavailable)?;
        rows.iter().map(from_row).collect()
    }

    /// Jobs waiting to run, across the cluster.
    pub async fn pending(&self) -> Result<i64> {
        let row = self
            .client()
            .await?
            .query_one(
                &self.sql("SELECT count(*) FROM {s}.procgate_jobs WHERE state = 'PENDING'"),
                &[],
            )
            .await
            .map_err(unavailable)?;
        Ok(row.get(0))
    }

    /// Takes the oldest PENDING job for `instance`, if any.
    pub async fn claim(&self, instance: &Uuid) -> Result<Option<StoredJob>> {
        let row = self
            .client()
            .await?
            .query_opt(
                &self.sql(&format!(
                    "UPDATE {{s}}.procgate_jobs SET state = 'RUNNING', instance_id = $1, \
                     start_time = now(), progress_message = 'waiting for a connection', \
                     version = version + 1 \
                     WHERE id = (SELECT id FROM {{s}}.procgate_jobs WHERE state = 'PENDING' \
                                 ORDER BY seq FOR UPDATE SKIP LOCKED LIMIT 1) \
                     RETURNING {COLUMNS}"
                )),
                &[instance],
            )
            .await
            .map_err(unavailable)?;
        row.as_ref().map(from_row).transpose()
    }

    /// Writes a running job's progress; false when the row is no longer this
    /// instance's running job.
    pub async fn save_progress(&self, job: &JobSnapshot, instance: &Uuid) -> Result<bool> {
        let updated = self
            .client()
            .await?
            .execute(
                &self.sql(
                    "UPDATE {s}.procgate_jobs SET progress = $2, progress_message = $3, \
                     messages = $4, version = version + 1 \
                     WHERE id = $1 AND state = 'RUNNING' AND instance_id = $5",
                ),
                &[
                    &job.id,
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

    /// Writes a job's end; false when it was not this instance's running
    /// job any more (a recovery already failed it).
    pub async fn save_end(&self, job: &JobSnapshot, instance: &Uuid) -> Result<bool> {
        let updated = self
            .client()
            .await?
            .execute(
                &self.sql(
                    "UPDATE {s}.procgate_jobs SET state = $2, progress = $3, progress_message = $4, \
                     messages = $5, outputs = $6, error = $7, end_time = $8, \
                     cancel_requested = cancel_requested OR $9, version = version + 1 \
                     WHERE id = $1 AND state = 'RUNNING' AND instance_id = $10",
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
                ],
            )
            .await
            .map_err(unavailable)?;
        Ok(updated == 1)
    }

    /// Cancels a PENDING job at once, or flags a RUNNING one.
    pub async fn cancel(&self, id: &Uuid) -> Result<CancelOutcome> {
        let client = self.client().await?;
        let error = codec::error_to_json(&Error::Cancelled(
            "cancelled while waiting to run; it never reached the database".into(),
        ));
        let cancelled = client
            .execute(
                &self.sql(
                    "UPDATE {s}.procgate_jobs SET state = 'CANCELLED', cancel_requested = true, \
                     end_time = now(), progress_message = 'cancelled before it started', \
                     error = $2, version = version + 1 WHERE id = $1 AND state = 'PENDING'",
                ),
                &[id, &error],
            )
            .await
            .map_err(unavailable)?;
        let requested = if cancelled == 0 {
            client
                .execute(
                    &self.sql(
                        "UPDATE {s}.procgate_jobs SET cancel_requested = true, \
                         progress_message = 'cancelling', version = version + 1 \
                         WHERE id = $1 AND state = 'RUNNING' AND NOT cancel_requested",
                    ),
                    &[id],
                )
                .await
                .map_err(unavailable)?
        } else {
            0
        };
        let Some(stored) = self.get_on(&client, id).await? else {
            return Ok(CancelOutcome::Missing);
        };
        Ok(match (cancelled, requested, stored.job.state) {
            (1, _, _) => CancelOutcome::Cancelled(stored),
            (_, _, JobState::Running) => CancelOutcome::Requested(stored),
            (_, _, state) if state.is_terminal() => CancelOutcome::Ended(state),
            _ => CancelOutcome::Requested(stored),
        })
    }

    /// Running jobs of `instance` that someone asked to cancel.
    pub async fn cancel_requests(&self, instance: &Uuid) -> Result<Vec<Uuid>> {
        let rows = self
            .client()
            .await?
            .query(
                &self.sql(
                    "SELECT id FROM {s}.procgate_jobs WHERE instance_id = $1 \
                     AND state = 'RUNNING' AND cancel_requested",
                ),
                &[instance],
            )
            .await
            .map_err(unavailable)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Deletes an ended job; false when it is not there or still live.
    pub async fn delete(&self, id: &Uuid) -> Result<bool> {
        let deleted = self
            .client()
            .await?
            .execute(
                &self.sql(
                    "DELETE FROM {s}.procgate_jobs WHERE id = $1 \
                     AND state IN ('COMPLETED', 'FAILED', 'CANCELLED')",
                ),
                &[id],
            )
            .await
            .map_err(unavailable)?;
        Ok(deleted == 1)
    }

    /// Deletes jobs that ended before `now - retention`, 1,000 at a time.
    pub async fn sweep(&self, retention: Duration) -> Result<u64> {
        let client = self.client().await?;
        let cutoff = DateTime::<Utc>::from(SystemTime::now() - retention);
        let mut total = 0;
        loop {
            let deleted = client
                .execute(
                    &self.sql(
                        "DELETE FROM {s}.procgate_jobs WHERE id IN (SELECT id FROM \
                         {s}.procgate_jobs WHERE end_time < $1 LIMIT 1000)",
                    ),
                    &[&cutoff],
                )
                .await
                .map_err(unavailable)?;
            total += deleted;
            if deleted < 1000 {
                return Ok(total);
            }
        }
    }

    /// Renews this instance's lease.
    pub async fn heartbeat(&self, instance: &Uuid, name: &str, lease: Duration) -> Result<()> {
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
    pub async fn leave(&self, instance: &Uuid) -> Result<()> {
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

    /// Instances whose lease expired: their RUNNING jobs end FAILED with
    /// reason INTERRUPTED, and they are forgotten. Returns the jobs failed.
    pub async fn recover(&self) -> Result<Vec<Uuid>> {
        let rows = self
            .client()
            .await?
            .query(
                &self.sql(
                    "WITH dead AS (DELETE FROM {s}.procgate_instances WHERE lease_until < now() \
                                   RETURNING id, name, lease_until) \
                     UPDATE {s}.procgate_jobs j SET state = 'FAILED', end_time = now(), \
                       progress_message = 'interrupted', version = j.version + 1, \
                       error = jsonb_build_object('interrupted', format( \
                         'INTERRUPTED: instance %s (%s) stopped renewing its lease at %s while \
                          running this job; whether the procedure finished is unknown', \
                         dead.name, dead.id, dead.lease_until)) \
                     FROM dead WHERE j.instance_id = dead.id AND j.state = 'RUNNING' \
                     RETURNING j.id",
                ),
                &[],
            )
            .await
            .map_err(unavailable)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Announces a change to every instance.
    pub async fn notify(&self, payload: &str) {
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
    pub fn listen(
        &self,
        tasks: &TaskTracker,
        stop: CancellationToken,
    ) -> broadcast::Sender<String> {
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
        tx
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

fn from_row(row: &Row) -> Result<StoredJob> {
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
    };
    Ok(StoredJob {
        seq: row.get("seq"),
        version: row.get("version"),
        job,
    })
}
