//! When a schedule's ticks fall: its cron expression in its time zone,
//! parsed and walked by `croner` with `chrono-tz`'s IANA zones.
//!
//! What is accepted is narrower than what croner parses, so that every
//! expression means the same thing to a reader who knows Vixie cron: 5
//! fields, 6 with seconds first, or `@hourly`, `@daily`, `@weekly`,
//! `@monthly`, `@yearly`; no `L`, `W`, `#` or `+`. Daylight saving follows
//! cron (and croner): a local time that a spring-forward skips runs at the
//! first instant after the gap, and one that a fall-back repeats runs once,
//! at its first occurrence.

use std::str::FromStr;
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};

use crate::error::{Error, Result};
use crate::name::printable;

const ALIASES: [&str; 5] = ["@hourly", "@daily", "@weekly", "@monthly", "@yearly"];

/// Most ticks counted when a schedule catches up after downtime; past it,
/// the count says "at least".
pub const MAX_COUNTED_TICKS: u64 = 100_000;

/// The longest cron expression accepted.
const MAX_CRON_LEN: usize = 256;

/// The fields of a 6-field expression, with their ranges; a 5-field one
/// has all but the first.
const FIELDS: [(&str, u32, u32); 6] = [
    ("second", 0, 59),
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day-of-month", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 0, 7),
];

/// One field's list items (`5`, `1-5`, `*/15`, `10-50/10`, `MON`), checked
/// before croner so that the reason names the field: numbers within its
/// range, steps above zero, no empty items. Names (JAN, MON) and the
/// letters refused elsewhere are left to croner and the checks above.
fn check_field(field: &str, name: &str, min: u32, max: u32) -> std::result::Result<(), String> {
    for item in field.split(',') {
        if item.is_empty() {
            return Err(format!(
                "the {name} field {field:?} has an empty list item (two commas in a row, or one \
                 at an end)"
            ));
        }
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => (range, Some(step)),
            None => (item, None),
        };
        let number = |text: &str| {
            (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
                .then(|| text.parse::<u64>().unwrap_or(u64::MAX))
        };
        match step.map(|step| (step, number(step))) {
            Some((_, Some(0))) => return Err(format!("the {name} step in {item:?} is zero")),
            Some((_, Some(n))) if n > u64::from(max.max(1)) => {
                return Err(format!(
                    "the {name} step in {item:?} is {n}; at most {} makes sense",
                    max.max(1)
                ));
            }
            Some((step, None)) => {
                return Err(format!(
                    "the {name} step {step:?} in {item:?} is not a number"
                ));
            }
            _ => {}
        }
        for bound in range.split('-') {
            if let Some(n) = number(bound)
                && !(u64::from(min)..=u64::from(max)).contains(&n)
            {
                return Err(format!("{name} {bound} is out of range {min}–{max}"));
            }
        }
    }
    Ok(())
}

/// A parsed cron expression in its time zone.
#[derive(Debug, Clone)]
pub struct Timing {
    cron: Cron,
    zone: Tz,
}

/// The ticks due in a span of time, as a catch-up needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DueTicks {
    /// Ticks before the catch-up window (skipped).
    pub too_old: u64,
    /// Ticks within it, which one job stands for.
    pub recent: u64,
    /// The latest tick within the window, if any.
    pub latest_recent: Option<SystemTime>,
    /// The latest tick of all.
    pub latest: Option<SystemTime>,
}

impl Timing {
    /// Parses `cron` in `time_zone` (empty: UTC); INVALID_ARGUMENT with
    /// the reason.
    pub fn parse(cron: &str, time_zone: &str) -> Result<Timing> {
        let zone = parse_zone(time_zone)?;
        let bad = |why: String| {
            Error::InvalidArgument(format!("cron {} is not valid: {why}", printable(cron)))
        };
        if cron.chars().count() > MAX_CRON_LEN {
            return Err(bad(format!(
                "it is {} characters long; a cron expression has at most {MAX_CRON_LEN}",
                cron.chars().count()
            )));
        }
        if cron.chars().any(char::is_control) {
            return Err(bad(
                "it contains a tab or another control character; separate the fields with spaces"
                    .into(),
            ));
        }
        let expression = cron.trim();
        if expression.starts_with('@') {
            if !ALIASES.contains(&expression.to_ascii_lowercase().as_str()) {
                return Err(bad(format!(
                    "the aliases are {}; write the fields for anything else",
                    ALIASES.join(", ")
                )));
            }
        } else {
            let fields: Vec<&str> = expression.split_whitespace().collect();
            if !(5..=6).contains(&fields.len()) {
                return Err(bad(format!(
                    "it has {} fields; write 5 (minute hour day-of-month month day-of-week) or 6 \
                     with seconds first",
                    fields.len()
                )));
            }
            let names = &FIELDS[6 - fields.len()..];
            for (field, (name, min, max)) in fields.iter().zip(names) {
                check_field(field, name, *min, *max).map_err(bad)?;
            }
            let (day_of_month, day_of_week) = (fields[fields.len() - 3], fields[fields.len() - 1]);
            if day_of_month.contains(['L', 'l', 'W', 'w']) {
                return Err(bad(
                    "L and W (last day, nearest weekday) are not supported in day-of-month".into(),
                ));
            }
            if day_of_week.contains(['#', 'L', 'l', '+']) {
                return Err(bad(
                    "#, L and + (nth or last weekday, day-and-weekday) are not supported in \
                     day-of-week"
                        .into(),
                ));
            }
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(expression)
            .map_err(|e| bad(e.to_string()))?;
        let timing = Timing { cron, zone };
        if timing.next_after(SystemTime::now()).is_none() {
            return Err(bad(
                "it never occurs (a day that the month never has, such as February 30)".into(),
            ));
        }
        Ok(timing)
    }

    /// The first tick strictly after `after`.
    pub fn next_after(&self, after: SystemTime) -> Option<SystemTime> {
        let local = DateTime::<Utc>::from(after).with_timezone(&self.zone);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|t| SystemTime::from(t.with_timezone(&Utc)))
    }

    /// The ticks from `first` (a tick, counted) through `now`, split at
    /// `window_start`: older ones are skipped, newer ones caught up.
    pub fn due(&self, first: SystemTime, now: SystemTime, window_start: SystemTime) -> DueTicks {
        let mut due = DueTicks {
            too_old: 0,
            recent: 0,
            latest_recent: None,
            latest: None,
        };
        let mut tick = Some(first);
        while let Some(t) = tick.filter(|t| *t <= now) {
            if due.too_old + due.recent >= MAX_COUNTED_TICKS && t < window_start {
                // A long outage of a frequent schedule: jump to the window.
                tick = self.next_after(window_start - std::time::Duration::from_nanos(1));
                due.latest = Some(t);
                continue;
            }
            if t < window_start {
                due.too_old += 1;
            } else {
                due.recent += 1;
                due.latest_recent = Some(t);
            }
            due.latest = Some(t);
            tick = self.next_after(t);
        }
        due
    }
}

/// An IANA time zone; empty is UTC.
pub fn parse_zone(time_zone: &str) -> Result<Tz> {
    if time_zone.is_empty() {
        return Ok(Tz::UTC);
    }
    Tz::from_str(time_zone).map_err(|_| {
        Error::InvalidArgument(format!(
            "time_zone {} is not an IANA time zone name; use one such as Europe/Madrid or UTC",
            printable(time_zone)
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(text: &str) -> SystemTime {
        SystemTime::from(DateTime::parse_from_rfc3339(text).unwrap())
    }

    fn utc(t: SystemTime) -> String {
        DateTime::<Utc>::from(t).to_rfc3339()
    }

    #[test]
    fn five_and_six_fields_and_the_aliases_parse_and_the_rest_is_refused_with_a_reason() {
        for good in [
            "*/5 * * * *",
            "*/2 * * * * *",
            "0 2 * * MON-FRI",
            "@daily",
            "@HOURLY",
        ] {
            assert!(Timing::parse(good, "UTC").is_ok(), "{good}");
        }
        for (bad, why) in [
            ("* * * *", "4 fields"),
            ("0 0 0 1 1 * 2030", "7 fields"),
            ("0 0 L * *", "L and W"),
            ("0 0 15W * *", "L and W"),
            ("0 0 * * 5#2", "#, L"),
            ("0 0 * * 5L", "#, L"),
            ("@reboot", "aliases"),
            ("@annually", "aliases"),
            ("61 * * * *", "minute 61 is out of range 0–59"),
            ("0 24 * * *", "hour 24 is out of range 0–23"),
            ("0 0 0 * *", "day-of-month 0 is out of range 1–31"),
            ("0 0 1 13 *", "month 13 is out of range 1–12"),
            ("0 0 * * 8", "day-of-week 8 is out of range 0–7"),
            ("60 * * * * *", "second 60 is out of range 0–59"),
            ("5-99 * * * *", "minute 99 is out of range"),
            ("*/0 * * * *", "the minute step in \"*/0\" is zero"),
            ("*/x * * * *", "is not a number"),
            ("1,2,,3 * * * *", "empty list item"),
            ("1, * * * *", "empty list item"),
            ("0 0 31 2 *", "never occurs"),
            ("0 0 30 2 *", "never occurs"),
            ("0\t0 * * *", "control character"),
        ] {
            let error = Timing::parse(bad, "UTC").unwrap_err().to_string();
            assert!(error.contains(why), "{bad}: {error}");
        }
        assert!(
            Timing::parse("0 0 * * WED", "UTC").is_ok(),
            "W in a name is fine"
        );
        assert!(
            Timing::parse("0 0 * JUL *", "UTC").is_ok(),
            "L in a name is fine"
        );
        assert!(
            Timing::parse("0 0 29 2 *", "UTC").is_ok(),
            "leap years have it"
        );
        assert!(Timing::parse("0 0 * * 7", "UTC").is_ok(), "7 is Sunday too");
        let long = format!("{}0 0 * * *", " ".repeat(300));
        let error = Timing::parse(&long, "UTC").unwrap_err().to_string();
        assert!(error.contains("at most 256"), "{error}");
    }

    #[test]
    fn a_time_zone_must_be_an_iana_name() {
        assert!(Timing::parse("@daily", "Europe/Madrid").is_ok());
        assert!(Timing::parse("@daily", "").is_ok());
        let error = Timing::parse("@daily", "Madrid").unwrap_err().to_string();
        assert!(error.contains("IANA"), "{error}");
    }

    /// Around Europe/Madrid's changes of 2026 (29 March 02:00 → 03:00 CEST,
    /// 25 October 03:00 CEST → 02:00 CET), as Vixie cron runs them;
    /// tests/cron_reference.rs checks many more against croniter.
    #[test]
    fn daylight_saving_in_madrid_runs_a_skipped_time_after_the_gap_and_a_repeated_one_once() {
        let daily = Timing::parse("30 2 * * *", "Europe/Madrid").unwrap();
        // 02:30 does not exist on 29 March: the first instant after the gap.
        let next = daily.next_after(at("2026-03-28T12:00:00Z")).unwrap();
        assert_eq!(utc(next), "2026-03-29T01:00:00+00:00", "03:00 CEST");
        let after = daily.next_after(next).unwrap();
        assert_eq!(utc(after), "2026-03-30T00:30:00+00:00", "02:30 CEST");
        // 02:30 happens twice on 25 October: once, the first (CEST).
        let next = daily.next_after(at("2026-10-24T12:00:00Z")).unwrap();
        assert_eq!(utc(next), "2026-10-25T00:30:00+00:00", "02:30 CEST");
        let after = daily.next_after(next).unwrap();
        assert_eq!(
            utc(after),
            "2026-10-26T01:30:00+00:00",
            "02:30 CET, the next day"
        );
        // A 9:00 batch moves with local time.
        let nine = Timing::parse("0 9 * * *", "Europe/Madrid").unwrap();
        let summer = nine.next_after(at("2026-03-29T12:00:00Z")).unwrap();
        assert_eq!(utc(summer), "2026-03-30T07:00:00+00:00");
        let winter = nine.next_after(at("2026-10-25T12:00:00Z")).unwrap();
        assert_eq!(utc(winter), "2026-10-26T08:00:00+00:00");
    }

    #[test]
    fn ticks_missed_are_split_at_the_catch_up_window() {
        let minutely = Timing::parse("0 * * * * *", "UTC").unwrap();
        let first = at("2026-01-01T10:00:00Z");
        let now = at("2026-01-01T12:00:30Z");
        let due = minutely.due(first, now, now - Duration::from_secs(3600));
        assert_eq!(due.recent, 60, "{due:?}");
        assert_eq!(due.too_old, 61, "{due:?}");
        assert_eq!(
            due.latest_recent.map(utc).unwrap(),
            "2026-01-01T12:00:00+00:00"
        );
        let one = minutely.due(
            now - Duration::from_secs(30),
            now,
            now - Duration::from_secs(3600),
        );
        assert_eq!((one.too_old, one.recent), (0, 1));
    }
}
