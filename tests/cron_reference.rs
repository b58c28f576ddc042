//! Schedule times against a reference implementation: croniter (installed
//! by scripts/setup-python.sh) walks the same expressions in the same zones,
//! across Europe/Madrid's and America/New_York's daylight-saving changes,
//! and procgate's ticks must be the same instants.
//!
//! One difference is procgate's by design (docs/schedules.md): a fixed
//! local time that a fall-back repeats runs once, at its first occurrence,
//! as Vixie cron does; croniter runs it twice. Everything else, the
//! spring-forward gap included, must match croniter exactly.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::SystemTime;

use chrono::{DateTime, SecondsFormat, Utc};
use common::*;
use procgate::proto::{self as pb, value::Kind};
use procgate::schedules::timing::Timing;
use serde_json::json;

/// (cron, time zone, after): each walked for `TICKS` ticks.
const CASES: [(&str, &str, &str); 14] = [
    ("30 2 * * *", "Europe/Madrid", "2026-03-27T12:00:00Z"),
    ("30 2 * * *", "Europe/Madrid", "2026-10-23T12:00:00Z"),
    ("0 2 * * *", "Europe/Madrid", "2027-03-26T12:00:00Z"),
    ("59 2 * * *", "Europe/Madrid", "2027-10-30T00:00:00Z"),
    ("0 9 * * MON-FRI", "Europe/Madrid", "2026-03-25T12:00:00Z"),
    ("*/30 * * * *", "Europe/Madrid", "2026-03-28T23:00:00Z"),
    ("*/30 * * * *", "Europe/Madrid", "2026-10-24T23:00:00Z"),
    ("0 * * * *", "Europe/Madrid", "2026-10-24T22:00:00Z"),
    ("15 2 * * SUN", "Europe/Madrid", "2026-03-20T00:00:00Z"),
    ("0 3 * * *", "Europe/Madrid", "2026-10-23T00:00:00Z"),
    ("@daily", "Europe/Madrid", "2026-03-27T00:00:00Z"),
    ("30 2 * * *", "America/New_York", "2027-03-12T12:00:00Z"),
    ("30 1 * * *", "America/New_York", "2027-11-05T12:00:00Z"),
    ("45 23 * * *", "UTC", "2026-12-30T00:00:00Z"),
];
const TICKS: usize = 6;

fn rfc3339(t: SystemTime) -> String {
    DateTime::<Utc>::from(t).to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// croniter's next `count` ticks for each (cron, zone, after).
fn croniter(cases: &[(&str, &str, String)], count: usize) -> Vec<Vec<String>> {
    let input = json!(
        cases
            .iter()
            .map(|(cron, zone, after)| json!({
                "cron": cron, "time_zone": zone, "after": after, "count": count
            }))
            .collect::<Vec<_>>()
    );
    let mut child = Command::new(project_python())
        .arg("tests/python/cron_reference.py")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running tests/python/cron_reference.py");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "croniter failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// croniter's ticks as procgate runs them: with a fixed hour, the second
/// occurrence of a local time that a fall-back repeats is dropped.
fn as_procgate_runs(cron: &str, zone: &str, reference: &[String]) -> Vec<String> {
    let fixed_hour = cron
        .split_whitespace()
        .nth(1)
        .is_some_and(|hour| hour.chars().all(|c| c.is_ascii_digit()));
    let zone: chrono_tz::Tz = zone.parse().unwrap();
    let local = |t: &String| {
        DateTime::parse_from_rfc3339(t)
            .unwrap()
            .with_timezone(&zone)
            .naive_local()
    };
    let mut kept: Vec<String> = Vec::new();
    for tick in reference {
        let repeated = kept.last().is_some_and(|last| local(last) == local(tick));
        if !(fixed_hour && repeated) {
            kept.push(tick.clone());
        }
    }
    kept
}

#[test]
fn ticks_across_daylight_saving_changes_match_croniter() {
    let cases: Vec<_> = CASES
        .iter()
        .map(|(cron, zone, after)| (*cron, *zone, after.to_string()))
        .collect();
    let reference = croniter(&cases, TICKS + 1);
    let mut differences = 0;
    for ((cron, zone, after), reference) in cases.iter().zip(&reference) {
        let timing = Timing::parse(cron, zone).unwrap();
        let mut at = SystemTime::from(DateTime::parse_from_rfc3339(after).unwrap());
        let ours: Vec<String> = (0..TICKS)
            .map(|_| {
                at = timing.next_after(at).expect("a next tick");
                rfc3339(at)
            })
            .collect();
        let expected = as_procgate_runs(cron, zone, reference);
        if expected.len() < reference.len() {
            differences += 1;
        }
        assert_eq!(
            ours,
            expected[..TICKS],
            "{cron} in {zone} after {after} (croniter: {reference:?})"
        );
    }
    assert!(
        differences >= 3,
        "the fall-back cases exercise the repeated hour: {differences}"
    );
}

/// What a client sees: CreateSchedule's next_run_time for 02:30 on the day
/// Madrid springs forward (28 March 2027) is croniter's, 03:00 CEST.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_schedule_answers_the_reference_next_run_time_across_the_gap() {
    let gateway = Gateway::start(&[]).await;
    let mut client = gateway.client().await;
    let mut cases = Vec::new();
    let mut created = Vec::new();
    for (name, cron) in [("spring", "30 2 28 3 *"), ("autumn", "30 2 31 10 *")] {
        let now = rfc3339(SystemTime::now());
        let schedule = client
            .create_schedule(pb::CreateScheduleRequest {
                schedule: Some(pb::Schedule {
                    name: name.into(),
                    cron: cron.into(),
                    time_zone: "Europe/Madrid".into(),
                    call: Some(call(
                        "pkg_etl.sumar",
                        vec![
                            p_in("a", Kind::IntegerValue(1)),
                            p_in("b", Kind::IntegerValue(2)),
                        ],
                    )),
                    ..Default::default()
                }),
            })
            .await;
        cases.push((cron, "Europe/Madrid", now));
        created.push(schedule);
    }
    let reference = croniter(&cases, 2);
    for (((cron, _, _), schedule), reference) in cases.iter().zip(created).zip(&reference) {
        let schedule = match schedule {
            Ok(schedule) => schedule.into_inner(),
            Err(status) => panic!("{cron}: {status:?}"),
        };
        let next: SystemTime = schedule.next_run_time.unwrap().try_into().unwrap();
        let expected = as_procgate_runs(cron, "Europe/Madrid", reference);
        assert_eq!(rfc3339(next), expected[0], "{cron}: {reference:?}");
    }
    gateway.shutdown().await.unwrap();
}
