//! Spooled rows on disk and in the job store: a chunk is its rows as
//! `procgate.v1.Row` messages, each length-delimited, so that a reader
//! decodes exactly the messages ReadJobResult sends.

use prost::Message;

use crate::api::convert::row_to_proto;
use crate::call::Value;
use crate::error::{Error, Result};
use crate::proto as pb;

/// Consecutive rows of one output, encoded.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// The index of its first row among the output's spooled rows.
    pub first_row: u64,
    pub rows: u32,
    pub data: Vec<u8>,
}

impl Chunk {
    pub fn encode(first_row: u64, rows: &[Vec<Value>]) -> Chunk {
        let messages: Vec<pb::Row> = rows.iter().map(|row| row_to_proto(row)).collect();
        let size = messages
            .iter()
            .map(|m| {
                let len = m.encoded_len();
                len + prost::length_delimiter_len(len)
            })
            .sum();
        let mut data = Vec::with_capacity(size);
        for message in &messages {
            message
                .encode_length_delimited(&mut data)
                .expect("a Vec grows as needed");
        }
        Chunk {
            first_row,
            rows: rows.len() as u32,
            data,
        }
    }
}

/// The rows of an encoded chunk, skipping its first `skip`.
pub fn decode(mut data: &[u8], skip: usize) -> Result<Vec<pb::Row>> {
    let mut rows = Vec::new();
    let mut index = 0;
    while !data.is_empty() {
        if index < skip {
            let len = prost::decode_length_delimiter(&mut data).map_err(corrupt)?;
            data = data.get(len..).ok_or_else(|| corrupt("a cut row"))?;
        } else {
            rows.push(pb::Row::decode_length_delimited(&mut data).map_err(corrupt)?);
        }
        index += 1;
    }
    Ok(rows)
}

fn corrupt(e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("a spooled chunk could not be read: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_round_trip_and_skip_rows() {
        let rows: Vec<Vec<Value>> = (0..5)
            .map(|i| {
                vec![
                    Value::Integer(i),
                    Value::String(format!("r{i}")),
                    Value::Null,
                ]
            })
            .collect();
        let chunk = Chunk::encode(7, &rows);
        assert_eq!((chunk.first_row, chunk.rows), (7, 5));
        let all = decode(&chunk.data, 0).unwrap();
        assert_eq!(all.len(), 5);
        assert_eq!(all[3], row_to_proto(&rows[3]));
        let tail = decode(&chunk.data, 3).unwrap();
        assert_eq!(tail, all[3..]);
        assert!(decode(&chunk.data, 9).unwrap().is_empty());
        assert!(decode(&chunk.data[..chunk.data.len() - 1], 0).is_err());
    }
}
