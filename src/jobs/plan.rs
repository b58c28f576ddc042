//! What a job is submitted with besides its call: how it is tried again
//! after a transient failure ([`RetryPolicy`]), when it stops waiting
//! (`expire_after`), and which schedule tick it stands for ([`Tick`]).
//!
//! A plan is fixed at submit and shared by every copy of the job; what
//! changes between attempts (the attempt number, the errors of the failed
//! ones, when the next may start) is [`Retries`], kept on the job itself.
//! The decisions are [`super::lifecycle`]'s; this module only holds the
//! numbers and the backoff arithmetic.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use uuid::Uuid;

use crate::error::{Error, Result};

/// Most attempts a policy may ask for.
pub const MAX_ATTEMPTS: u32 = 100;

/// The longest wait between attempts a policy may ask for.
pub const MAX_BACKOFF: Duration = Duration::from_secs(7 * 24 * 3600);

/// The longest `expire_after`: a job may wait at most this long for its start.
pub const MAX_EXPIRE_AFTER: Duration = Duration::from_secs(366 * 24 * 3600);

/// A bound of whole days as messages write it: `7 days`.
pub fn in_days(bound: Duration) -> String {
    format!("{} days", bound.as_secs() / 86_400)
}

/// Failed attempts' errors a job keeps, the newest.
pub const KEPT_ATTEMPT_ERRORS: usize = 10;

/// How a job is tried again, with the request's zero fields resolved to
/// their defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; 1 means no retry.
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub multiplier: f64,
}

impl RetryPolicy {
    /// One attempt: what a job without a policy gets.
    pub const ONCE: RetryPolicy = RetryPolicy {
        max_attempts: 1,
        initial_backoff: Duration::from_secs(1),
        max_backoff: Duration::from_secs(300),
        multiplier: 2.0,
    };

    /// A policy from a request's fields, where zero means the default:
    /// `max_attempts` 0 or 1, no retry; `initial_backoff` 1s; `max_backoff`
    /// 5m; `multiplier` 2.
    pub fn new(
        max_attempts: u32,
        initial_backoff: Duration,
        max_backoff: Duration,
        multiplier: f64,
    ) -> Result<RetryPolicy> {
        if max_attempts > MAX_ATTEMPTS {
            return Err(Error::InvalidArgument(format!(
                "retry.max_attempts is {max_attempts}; at most {MAX_ATTEMPTS} attempts are allowed"
            )));
        }
        if !multiplier.is_finite() || (multiplier != 0.0 && multiplier < 1.0) {
            // 5e-324 written out in full would take 300 digits.
            let shown = match multiplier.to_string() {
                plain if plain.len() <= 24 => plain,
                _ => format!("{multiplier:e}"),
            };
            return Err(Error::InvalidArgument(format!(
                "retry.multiplier is {shown}; use a number of at least 1 (0 means 2)"
            )));
        }
        for (field, value) in [
            ("initial_backoff", initial_backoff),
            ("max_backoff", max_backoff),
        ] {
            if value > MAX_BACKOFF {
                return Err(Error::InvalidArgument(format!(
                    "retry.{field} is longer than {}, the longest wait allowed between attempts",
                    in_days(MAX_BACKOFF)
                )));
            }
        }
        let or = |value: Duration, default: Duration| {
            if value.is_zero() { default } else { value }
        };
        let policy = RetryPolicy {
            max_attempts: max_attempts.max(1),
            initial_backoff: or(initial_backoff, Self::ONCE.initial_backoff),
            max_backoff: or(max_backoff, Self::ONCE.max_backoff),
            multiplier: if multiplier == 0.0 { 2.0 } else { multiplier },
        };
        if policy.initial_backoff > policy.max_backoff {
            return Err(Error::InvalidArgument(format!(
                "retry.initial_backoff ({}) is longer than retry.max_backoff ({})",
                humantime::format_duration(policy.initial_backoff),
                humantime::format_duration(policy.max_backoff)
            )));
        }
        Ok(policy)
    }

    /// The wait after attempt `failed` (1-based) before the next:
    /// `min(initial × multiplier^(failed−1), max)`, moved by `jitter` (in
    /// −1..=1) times 20 %.
    pub fn backoff(&self, failed: u32, jitter: f64) -> Duration {
        let exponent = failed.saturating_sub(1).min(1000) as i32;
        let base = self.initial_backoff.as_secs_f64() * self.multiplier.powi(exponent);
        let capped = base.min(self.max_backoff.as_secs_f64());
        let jittered = capped * (1.0 + 0.2 * jitter.clamp(-1.0, 1.0));
        Duration::from_secs_f64(jittered.max(0.0))
    }
}

/// The schedule tick a job stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    pub schedule_id: Uuid,
    /// The exact time the cron expression gives.
    pub time: SystemTime,
}

/// What a job was submitted with besides its call.
#[derive(Debug, Clone, PartialEq)]
pub struct JobPlan {
    pub retry: RetryPolicy,
    /// PENDING past this, before its first attempt, it fails EXPIRED.
    pub expire_time: Option<SystemTime>,
    pub tick: Option<Tick>,
}

impl JobPlan {
    /// No retry, no expiry, no schedule.
    pub const PLAIN: JobPlan = JobPlan {
        retry: RetryPolicy::ONCE,
        expire_time: None,
        tick: None,
    };

    pub fn is_plain(&self) -> bool {
        *self == Self::PLAIN
    }
}

/// A failed attempt that was tried again.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptError {
    pub time: SystemTime,
    pub error: Error,
}

/// What a job that was tried again carries between attempts.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Retries {
    /// The newest [`KEPT_ATTEMPT_ERRORS`], oldest first.
    pub errors: VecDeque<AttemptError>,
    /// The next attempt starts no earlier than this.
    pub not_before: Option<SystemTime>,
}

impl Retries {
    pub fn push(&mut self, error: AttemptError) {
        if self.errors.len() == KEPT_ATTEMPT_ERRORS {
            self.errors.pop_front();
        }
        self.errors.push_back(error);
    }
}

/// A wait as a person reads it: whole seconds from one second up.
pub fn human_wait(wait: Duration) -> String {
    let rounded = if wait >= Duration::from_secs(1) {
        Duration::from_secs(wait.as_secs_f64().round() as u64)
    } else {
        Duration::from_millis(wait.as_millis() as u64)
    };
    humantime::format_duration(rounded).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_fields_take_the_defaults_and_bad_ones_are_refused() {
        let policy = RetryPolicy::new(0, Duration::ZERO, Duration::ZERO, 0.0).unwrap();
        assert_eq!(policy, RetryPolicy::ONCE);
        let policy = RetryPolicy::new(5, Duration::ZERO, Duration::ZERO, 0.0).unwrap();
        assert_eq!(
            (policy.max_attempts, policy.multiplier),
            (5, 2.0),
            "{policy:?}"
        );
        assert!(RetryPolicy::new(101, Duration::ZERO, Duration::ZERO, 0.0).is_err());
        assert!(RetryPolicy::new(3, Duration::ZERO, Duration::ZERO, 0.5).is_err());
        assert!(RetryPolicy::new(3, Duration::ZERO, Duration::ZERO, f64::NAN).is_err());
        let long_first = RetryPolicy::new(3, Duration::from_secs(600), Duration::ZERO, 0.0);
        assert!(long_first.is_err(), "10m initial over a 5m cap");
    }

    #[test]
    fn the_backoff_grows_by_the_multiplier_up_to_the_cap_within_twenty_percent() {
        let policy =
            RetryPolicy::new(10, Duration::from_secs(1), Duration::from_secs(10), 3.0).unwrap();
        assert_eq!(policy.backoff(1, 0.0), Duration::from_secs(1));
        assert_eq!(policy.backoff(2, 0.0), Duration::from_secs(3));
        assert_eq!(policy.backoff(3, 0.0), Duration::from_secs(9));
        assert_eq!(policy.backoff(4, 0.0), Duration::from_secs(10), "capped");
        assert_eq!(
            policy.backoff(60, 0.0),
            Duration::from_secs(10),
            "no overflow"
        );
        assert_eq!(policy.backoff(2, 1.0), Duration::from_secs_f64(3.6));
        assert_eq!(policy.backoff(2, -1.0), Duration::from_secs_f64(2.4));
    }

    #[test]
    fn waits_read_as_whole_seconds() {
        assert_eq!(human_wait(Duration::from_millis(1_840)), "2s");
        assert_eq!(human_wait(Duration::from_millis(250)), "250ms");
        assert_eq!(human_wait(Duration::from_secs(90)), "1m 30s");
    }

    #[test]
    fn a_job_keeps_the_last_ten_attempt_errors() {
        let mut retries = Retries::default();
        for i in 0..12 {
            retries.push(AttemptError {
                time: SystemTime::UNIX_EPOCH,
                error: Error::Unavailable(format!("{i}")),
            });
        }
        assert_eq!(retries.errors.len(), 10);
        assert_eq!(retries.errors[0].error, Error::Unavailable("2".into()));
    }
}
