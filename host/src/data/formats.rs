//! Input files as a stream of JSON objects, whatever their format: JSON Lines, a JSON array
//! or an object keyed by id (PubMedQA's `ori_pqal.json`), CSV or TSV with a header row, and
//! Parquet (through the `parquet` crate's row reader). Each object comes with its place in
//! the file; a bad line or row is an error for that place and the others still come.

use std::io::BufRead as _;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::input::InputError;

/// An input file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum InputFormat {
    /// One JSON document: an array of records, or an object of records keyed by id.
    Json,
    /// One JSON object per line.
    Jsonl,
    /// Comma-separated values with a header row.
    Csv,
    /// Tab-separated values with a header row.
    Tsv,
    /// Apache Parquet.
    Parquet,
    /// PubTator: an annotated corpus's documents with their mentions (the `annotated` layout).
    Pubtator,
    /// BioC XML: an annotated corpus's documents with their passages and mentions (the
    /// `annotated` layout).
    Bioc,
}

crate::config::display_as_value_name!(InputFormat);

impl InputFormat {
    /// The format a file's extension names (`.json`, `.jsonl`/`.ndjson`, `.csv`, `.tsv`,
    /// `.parquet`/`.pq`, `.pubtator`/`.pubtator.txt`, `.xml` for BioC), if any.
    pub fn of_path(path: &Path) -> Option<Self> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        if name.ends_with(".pubtator.txt") {
            return Some(Self::Pubtator);
        }
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        Some(match ext.as_str() {
            "pubtator" => Self::Pubtator,
            "xml" => Self::Bioc,
            "json" => Self::Json,
            "jsonl" | "ndjson" => Self::Jsonl,
            "csv" => Self::Csv,
            "tsv" => Self::Tsv,
            "parquet" | "pq" => Self::Parquet,
            _ => return None,
        })
    }
}

/// One object read from an input file.
#[derive(Debug, Clone, PartialEq)]
pub struct RawRecord {
    /// Where it is: `line 7`, `row 3`, `record 12345`.
    pub place: String,
    /// Its key, for an object of records keyed by id.
    pub key: Option<String>,
    /// The 1-based number of the record in the file.
    pub number: usize,
    /// Its fields.
    pub fields: Map<String, Value>,
}

/// Reads `path` as `format`, handing each record (or the error of its line or row) to `each`.
/// An error for the whole file (unreadable, not the format) is returned.
pub fn read_objects(path: &Path, format: InputFormat, mut each: impl FnMut(Result<RawRecord, InputError>)) -> Result<(), InputError> {
    let file_err = |place: &str, message: String| InputError { file: path.to_owned(), place: place.to_owned(), message };
    let meta = std::fs::metadata(path).map_err(|e| file_err("file", format!("cannot read: {e}")))?;
    if meta.len() == 0 {
        return Err(file_err("file", "the file is empty".into()));
    }
    match format {
        InputFormat::Jsonl => read_jsonl(path, &mut each),
        InputFormat::Json => read_json(path, &mut each),
        InputFormat::Csv => read_delimited(path, b',', &mut each),
        InputFormat::Tsv => read_delimited(path, b'\t', &mut each),
        InputFormat::Parquet => read_parquet(path, &mut each),
        InputFormat::Pubtator => super::corpus::read_pubtator(path, &mut each),
        InputFormat::Bioc => super::corpus::read_bioc(path, &mut each),
    }
}

fn read_jsonl(path: &Path, each: &mut dyn FnMut(Result<RawRecord, InputError>)) -> Result<(), InputError> {
    let file = std::fs::File::open(path).map_err(|e| InputError::at(path, "file", format!("cannot read: {e}")))?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut line = Vec::new();
    let (mut n, mut number) = (0, 0);
    loop {
        line.clear();
        let read = reader.read_until(b'\n', &mut line).map_err(|e| InputError::at(path, &format!("line {}", n + 1), e.to_string()))?;
        if read == 0 {
            return Ok(());
        }
        n += 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        number += 1;
        let place = format!("line {n}");
        let parsed = std::str::from_utf8(&line)
            .map_err(|e| format!("not UTF-8 ({e})"))
            .and_then(|t| serde_json::from_str::<Value>(t).map_err(|e| format!("bad JSON: {e}")))
            .and_then(|v| match v {
                Value::Object(fields) => Ok(fields),
                other => Err(format!("must be a JSON object, found {}", kind_of(&other))),
            });
        each(match parsed {
            Ok(fields) => Ok(RawRecord { place, key: None, number, fields }),
            Err(message) => Err(InputError::at(path, &place, message)),
        });
    }
}

fn read_json(path: &Path, each: &mut dyn FnMut(Result<RawRecord, InputError>)) -> Result<(), InputError> {
    let bytes = std::fs::read(path).map_err(|e| InputError::at(path, "file", format!("cannot read: {e}")))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(InputError::at(path, "file", "the file is empty".into()));
    }
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        let line = bytes[..e.valid_up_to()].iter().filter(|&&b| b == b'\n').count() + 1;
        InputError::at(path, &format!("line {line}"), format!("not UTF-8 ({e})"))
    })?;
    let value: Value = serde_json::from_str(text).map_err(|e| {
        InputError::at(
            path,
            &format!("line {}", e.line()),
            format!("not a JSON document (an array of records or an object of records keyed by id): {e}"),
        )
    })?;
    match value {
        Value::Array(items) => {
            for (i, item) in items.into_iter().enumerate() {
                let place = format!("record {}", i + 1);
                each(match item {
                    Value::Object(fields) => Ok(RawRecord { place, key: None, number: i + 1, fields }),
                    other => Err(InputError::at(path, &place, format!("must be a JSON object, found {}", kind_of(&other)))),
                });
            }
            Ok(())
        }
        Value::Object(map) => {
            for (i, (key, item)) in map.into_iter().enumerate() {
                let place = format!("record {key}");
                each(match item {
                    Value::Object(fields) => Ok(RawRecord { place, key: Some(key), number: i + 1, fields }),
                    other => Err(InputError::at(
                        path,
                        &place,
                        format!("must be a JSON object (a file that is one object holds records keyed by id), found {}", kind_of(&other)),
                    )),
                });
            }
            Ok(())
        }
        other => Err(InputError::at(
            path,
            "file",
            format!("must be an array of records or an object of records keyed by id, found {}", kind_of(&other)),
        )),
    }
}

fn read_delimited(path: &Path, delimiter: u8, each: &mut dyn FnMut(Result<RawRecord, InputError>)) -> Result<(), InputError> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(false)
        .from_path(path)
        .map_err(|e| InputError::at(path, "file", format!("cannot read: {e}")))?;
    let headers = reader.headers().map_err(|e| InputError::at(path, "line 1", format!("the header row: {e}")))?.clone();
    if headers.iter().all(str::is_empty) {
        return Err(InputError::at(path, "line 1", "the header row names no column".into()));
    }
    let mut row = csv::StringRecord::new();
    let mut number = 0;
    loop {
        let line = reader.position().line() + 1;
        match reader.read_record(&mut row) {
            Ok(false) => return Ok(()),
            Ok(true) => {
                number += 1;
                let line = row.position().map_or(line, csv::Position::line);
                // an empty cell is a missing value
                let fields = headers
                    .iter()
                    .zip(row.iter())
                    .map(|(k, v)| (k.to_owned(), if v.is_empty() { Value::Null } else { Value::String(v.to_owned()) }))
                    .collect();
                each(Ok(RawRecord { place: format!("line {line}"), key: None, number, fields }));
            }
            Err(e) => {
                let place = e.position().map_or(format!("line {line}"), |p| format!("line {}", p.line()));
                let message = match e.kind() {
                    csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
                        format!("{len} fields where the header names {expected_len}")
                    }
                    _ => e.to_string(),
                };
                each(Err(InputError::at(path, &place, message)));
                if !matches!(e.kind(), csv::ErrorKind::UnequalLengths { .. } | csv::ErrorKind::Utf8 { .. }) {
                    return Ok(());
                }
            }
        }
    }
}

fn read_parquet(path: &Path, each: &mut dyn FnMut(Result<RawRecord, InputError>)) -> Result<(), InputError> {
    use parquet::file::reader::{FileReader as _, SerializedFileReader};
    let file = std::fs::File::open(path).map_err(|e| InputError::at(path, "file", format!("cannot read: {e}")))?;
    let reader = SerializedFileReader::new(file).map_err(|e| InputError::at(path, "file", format!("not a Parquet file: {e}")))?;
    let rows = reader.get_row_iter(None).map_err(|e| InputError::at(path, "file", format!("cannot read its rows: {e}")))?;
    for (i, row) in rows.enumerate() {
        let place = format!("row {}", i + 1);
        match row {
            Ok(row) => match row.to_json_value() {
                Value::Object(fields) => each(Ok(RawRecord { place, key: None, number: i + 1, fields })),
                other => each(Err(InputError::at(path, &place, format!("not a record, found {}", kind_of(&other))))),
            },
            // a row that cannot be decoded (a compression this build lacks, a corrupt page)
            // stops the file: the rows after it cannot be found either
            Err(e) => {
                each(Err(InputError::at(path, &place, e.to_string())));
                return Ok(());
            }
        }
    }
    Ok(())
}

/// A JSON value's kind, for messages.
pub(crate) fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn objects(path: &Path, format: InputFormat) -> (Vec<RawRecord>, Vec<InputError>) {
        let (mut good, mut bad) = (Vec::new(), Vec::new());
        read_objects(path, format, |r| match r {
            Ok(r) => good.push(r),
            Err(e) => bad.push(e),
        })
        .expect("readable");
        (good, bad)
    }

    /// CSV and TSV rows are objects of strings keyed by the header, an empty cell is missing,
    /// and a row with a field too many is an error for its line while the others come.
    #[test]
    fn delimited_rows_are_objects_by_header_and_bad_rows_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let csv = dir.path().join("notes.csv");
        std::fs::write(&csv, "id,text,label\n1,\"Chest pain, sweating\",emergent\n2,too,many,fields\n3,Rash,\n").expect("csv");
        let (good, bad) = objects(&csv, InputFormat::Csv);
        assert_eq!(good.len(), 2);
        assert_eq!(good[0].fields["text"], "Chest pain, sweating");
        assert_eq!((good[1].place.as_str(), &good[1].fields["label"]), ("line 4", &Value::Null));
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].to_string(), format!("{}: line 3: 4 fields where the header names 3", csv.display()));
        let tsv = dir.path().join("notes.tsv");
        std::fs::write(&tsv, "text\tlabel\nA, b\tx\n").expect("tsv");
        assert_eq!(objects(&tsv, InputFormat::Tsv).0[0].fields["text"], "A, b");
    }

    /// A JSON array's items and an object's keyed records both come, each with its place.
    #[test]
    fn json_arrays_and_keyed_objects_are_read_and_a_scalar_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("in.json");
        std::fs::write(&path, r#"[{"question": "a"}, 3, {"question": "b"}]"#).expect("json");
        let (good, bad) = objects(&path, InputFormat::Json);
        assert_eq!((good.len(), good[1].place.as_str(), good[1].number), (2, "record 3", 3));
        assert!(bad[0].to_string().ends_with("record 2: must be a JSON object, found a number"), "{}", bad[0]);
        std::fs::write(&path, r#"{"17": {"QUESTION": "a"}}"#).expect("json");
        assert_eq!(objects(&path, InputFormat::Json).0[0].key.as_deref(), Some("17"));
        std::fs::write(&path, "42").expect("json");
        let err = read_objects(&path, InputFormat::Json, |_| {}).expect_err("a number is no input");
        assert!(err.to_string().contains("must be an array of records or an object of records keyed by id"), "{err}");
    }

    /// A Parquet file (snappy-compressed, as pandas and pyarrow write) is read row by row into
    /// objects of its columns' values.
    #[test]
    fn parquet_rows_are_objects_of_their_columns() {
        use parquet::basic::Compression;
        use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
        use parquet::file::properties::WriterProperties;
        use parquet::file::writer::SerializedFileWriter;
        use std::sync::Arc;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mcq.parquet");
        let schema = "message schema { REQUIRED BYTE_ARRAY question (UTF8); REQUIRED BYTE_ARRAY opa (UTF8); \
                      REQUIRED BYTE_ARRAY opb (UTF8); REQUIRED INT64 cop; }";
        let schema = Arc::new(parquet::schema::parser::parse_message_type(schema).expect("schema"));
        let props = Arc::new(WriterProperties::builder().set_compression(Compression::SNAPPY).build());
        let mut writer = SerializedFileWriter::new(std::fs::File::create(&path).expect("file"), schema, props).expect("writer");
        let mut group = writer.next_row_group().expect("row group");
        for texts in [["Which vitamin prevents scurvy?", "Which ion is low in tetany?"], ["Vitamin C", "Calcium"], ["Vitamin D", "Sodium"]]
        {
            let mut col = group.next_column().expect("column").expect("a column");
            col.typed::<ByteArrayType>().write_batch(&texts.map(ByteArray::from), None, None).expect("write");
            col.close().expect("close");
        }
        let mut col = group.next_column().expect("column").expect("a column");
        col.typed::<Int64Type>().write_batch(&[1, 1], None, None).expect("write");
        col.close().expect("close");
        group.close().expect("close");
        writer.close().expect("close");
        let (good, bad) = objects(&path, InputFormat::Parquet);
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(good.len(), 2);
        assert_eq!(good[1].place, "row 2");
        assert_eq!(
            Value::Object(good[0].fields.clone()),
            serde_json::json!({"question": "Which vitamin prevents scurvy?", "opa": "Vitamin C", "opb": "Vitamin D", "cop": 1})
        );
        std::fs::write(&path, "not parquet at all").expect("write");
        let err = read_objects(&path, InputFormat::Parquet, |_| {}).expect_err("not parquet");
        assert!(err.to_string().contains("not a Parquet file"), "{err}");
    }
}
