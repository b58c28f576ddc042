//! Big results to CSV while they stream: `procgate call … --output
//! rows.csv` (ExecuteStream) and `procgate result JOB OUTPUT --csv`
//! (ReadJobResult). Rows are written batch by batch as they arrive, so
//! memory stays flat whatever the size; on a terminal a progress line shows
//! the rows and megabytes written and the rate.

use std::io::Write;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use tonic::{Status, Streaming};

use super::render::{self, value_json};
use crate::proto::execute_stream_response::Kind as Part;
use crate::proto::value::Kind;
use crate::proto::{self as pb};

/// How rows are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// RFC 4180, a header of column names, NULL as an empty field.
    Csv,
    /// One JSON array of values per line.
    JsonLines,
}

enum Sink<W: Write> {
    Csv(Box<csv::Writer<W>>),
    Lines(W),
}

/// A value in a CSV field: its exact text, empty for NULL.
fn field(value: &pb::Value) -> String {
    match value.kind.as_ref() {
        None | Some(Kind::NullValue(_)) => String::new(),
        Some(Kind::BytesValue(b)) => b.iter().map(|byte| format!("{byte:02x}")).collect(),
        _ => render::value_text(Some(value)),
    }
}

/// Writes the rows of one result set of a stream; other result sets are
/// skipped and named on stderr. Returns the `done` message, if the stream
/// had one (ExecuteStream), and how many rows were written.
pub async fn write_rows(
    mut parts: Streaming<pb::ExecuteStreamResponse>,
    out: impl Write,
    format: Format,
    wanted: Option<&str>,
) -> Result<(Option<pb::ExecuteSyncResponse>, u64), Status> {
    let failed = |e: std::io::Error| Status::unknown(format!("writing the rows failed: {e}"));
    let mut sink = match format {
        Format::Csv => Sink::Csv(Box::new(csv::Writer::from_writer(out))),
        Format::JsonLines => Sink::Lines(out),
    };
    let mut chosen: Option<String> = None;
    let mut written = Counter::new();
    let mut done = None;
    while let Some(part) = parts.message().await? {
        match part.kind {
            Some(Part::Start(start)) => {
                let take = chosen.is_none() && wanted.is_none_or(|w| w == start.output);
                if !take {
                    eprintln!(
                        "note: skipped result set {:?} (choose it with --result-set)",
                        start.output
                    );
                    continue;
                }
                chosen = Some(start.output.clone());
                if let Sink::Csv(csv) = &mut sink {
                    let names = start.columns.iter().map(|c| c.name.as_str());
                    csv.write_record(names).map_err(|e| failed(e.into()))?;
                }
            }
            Some(Part::Rows(batch)) if chosen.as_ref() == Some(&batch.output) => {
                for row in &batch.rows {
                    match &mut sink {
                        Sink::Csv(csv) => csv
                            .write_record(row.values.iter().map(field))
                            .map_err(|e| failed(e.into()))?,
                        Sink::Lines(out) => {
                            let values: Vec<_> =
                                row.values.iter().map(|v| value_json(Some(v))).collect();
                            serde_json::to_writer(&mut *out, &values)
                                .map_err(|e| failed(e.into()))?;
                            out.write_all(b"\n").map_err(failed)?;
                        }
                    }
                }
                written.add(
                    batch.rows.len() as u64,
                    prost::Message::encoded_len(&batch) as u64,
                );
            }
            Some(Part::Rows(_)) | None => {}
            Some(Part::Done(last)) => done = Some(last),
        }
    }
    match &mut sink {
        Sink::Csv(csv) => csv.flush(),
        Sink::Lines(out) => out.flush(),
    }
    .map_err(failed)?;
    written.finish();
    if chosen.is_none() {
        return Err(Status::not_found(match wanted {
            Some(name) => format!("the call returned no result set named {name:?}"),
            None => "the call returned no result set to write".into(),
        }));
    }
    Ok((done, written.rows))
}

/// Rows and bytes written so far, shown on a terminal.
struct Counter {
    rows: u64,
    bytes: u64,
    started: Instant,
    bar: ProgressBar,
}

impl Counter {
    fn new() -> Counter {
        // Draws on stderr only when it is a terminal.
        let bar = ProgressBar::new_spinner();
        bar.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("a template"));
        Counter {
            rows: 0,
            bytes: 0,
            started: Instant::now(),
            bar,
        }
    }

    fn add(&mut self, rows: u64, bytes: u64) {
        self.rows += rows;
        self.bytes += bytes;
        let seconds = self.started.elapsed().as_secs_f64().max(1e-3);
        let mb = self.bytes as f64 / 1e6;
        self.bar.set_message(format!(
            "{} rows, {mb:.1} MB, {:.1} MB/s",
            self.rows,
            mb / seconds
        ));
        self.bar.tick();
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(kind: Kind) -> pb::Value {
        pb::Value { kind: Some(kind) }
    }

    #[test]
    fn fields_keep_exact_text_and_null_is_empty() {
        assert_eq!(field(&value(Kind::NullValue(0))), "");
        assert_eq!(field(&value(Kind::NumberValue("0.10".into()))), "0.10");
        assert_eq!(field(&value(Kind::BytesValue(vec![1, 171]))), "01ab");
        assert_eq!(
            field(&value(Kind::StringValue("a,\"b\"".into()))),
            "a,\"b\""
        );
    }
}
