//! Reading an input file into records: its format (`formats.rs`) and layout (`layout.rs`),
//! detected or named in the config. Good records go through; each bad one is reported with its
//! file, place and field.

use std::path::{Path, PathBuf};

use super::formats::{InputFormat, read_objects};
use super::layout::{FieldMap, IndexBase, Layout, Reader};
use super::record::Record;

/// A record (or a whole file) that cannot be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}: {place}: {message}")]
pub struct InputError {
    /// The input file.
    pub file: PathBuf,
    /// The record or line, e.g. `record 12345` or `line 7`.
    pub place: String,
    /// What is wrong, naming the field.
    pub message: String,
}

impl InputError {
    /// An error at `place` of `file`.
    pub fn at(file: &Path, place: &str, message: String) -> Self {
        Self { file: file.to_owned(), place: place.to_owned(), message }
    }
}

/// How an input is read: its format and layout where the config names them, and the reader of
/// its fields.
#[derive(Debug, Clone, Copy)]
pub struct InputSpec<'a> {
    /// The format (else from the file's extension).
    pub format: Option<InputFormat>,
    /// The layout (else from the first record).
    pub layout: Option<Layout>,
    /// The task the records are for.
    pub task: crate::config::TaskKind,
    /// Field names and answer conventions.
    pub reader: Reader<'a>,
}

impl InputSpec<'static> {
    /// Format and layout detected, fields under their usual names.
    pub fn detected() -> Self {
        static USUAL: FieldMap = FieldMap {
            id: None,
            question: None,
            context: None,
            answer: None,
            options: None,
            long_answer: None,
            meshes: None,
            text: None,
            label: None,
            split: None,
            messages: None,
            instruction: None,
            input: None,
            output: None,
        };
        Self {
            format: None,
            layout: None,
            task: crate::config::TaskKind::Choice,
            reader: Reader {
                fields: &USUAL,
                answer_index: IndexBase::ZeroBased,
                question: DEFAULT_QUESTION,
                split_field: false,
                long_answer_field: false,
            },
        }
    }
}

/// Why records of layout `l` cannot train `task`, if they cannot.
fn unfit(l: Layout, task: crate::config::TaskKind) -> Option<String> {
    use crate::config::TaskKind;
    match (task, l) {
        (TaskKind::Choice, Layout::Chat | Layout::Instruction) => Some(format!(
            "{l} records train a `generate` task (task.kind = \"generate\"); a `choice` task reads qa, multiple-choice or labelled records"
        )),
        (TaskKind::Generate, Layout::MultipleChoice | Layout::Labelled) => Some(format!(
            "{l} records train a `choice` task; a `generate` task reads chat, instruction or qa records (a question with its answer and explanation)"
        )),
        (TaskKind::Annotate, l) if l != Layout::Annotated => Some(format!(
            "{l} records have no gold mentions; an `annotate` task reads annotated documents (PubTator, BioC XML, or JSON with `annotations`)"
        )),
        (TaskKind::Choice | TaskKind::Generate, Layout::Annotated) => Some(format!(
            "{l} documents are scored against their gold mentions (task.kind = \"annotate\"); they have no answer to train on"
        )),
        _ => None,
    }
}

/// The question a labelled record's text is asked under when the config names none.
pub const DEFAULT_QUESTION: &str = "Which label fits this text?";

/// What was read from an input.
#[derive(Debug, Default)]
pub struct Input {
    /// The good records, in file order.
    pub records: Vec<Record>,
    /// The records (or the file) that could not be read.
    pub errors: Vec<InputError>,
    /// The layout the records were read as.
    pub layout: Option<Layout>,
}

/// Reads `path` as `spec` says.
pub fn read(path: &Path, spec: &InputSpec) -> Input {
    let mut input = Input::default();
    input.layout = read_each(path, spec, |item| {
        match item {
            Ok(r) => input.records.push(r),
            Err(e) => input.errors.push(e),
        }
        true
    });
    input
}

/// Reads `path` as `spec` says, one record (or the error of one) at a time, in file order,
/// until `each` returns false; returns the layout the records were read as.
pub fn read_each(path: &Path, spec: &InputSpec, mut each: impl FnMut(Result<Record, InputError>) -> bool) -> Option<Layout> {
    let format = match spec.format.or_else(|| InputFormat::of_path(path)) {
        Some(f) => f,
        None => {
            each(Err(InputError::at(
                path,
                "file",
                "the format is not known from the extension (.json, .jsonl, .csv, .tsv, .parquet, .pubtator, .xml); set data.format".into(),
            )));
            return spec.layout;
        }
    };
    let source = path.display().to_string();
    let mut layout = spec.layout;
    let mut stopped = false;
    let outcome = read_objects(path, format, |raw| {
        if stopped {
            return;
        }
        let raw = match raw {
            Ok(raw) => raw,
            Err(e) => {
                stopped = !each(Err(e));
                return;
            }
        };
        let l = match layout {
            Some(l) => l,
            None => match spec.reader.detect(&raw) {
                Ok(l) => *layout.insert(l),
                Err(message) => {
                    stopped = true;
                    each(Err(InputError::at(path, &raw.place, message)));
                    return;
                }
            },
        };
        if let Some(message) = unfit(l, spec.task) {
            stopped = true;
            each(Err(InputError::at(path, &raw.place, message)));
            return;
        }
        let place = match &raw.key {
            Some(key) => format!("{source}#{key}"),
            None => format!("{source}:{}", raw.place),
        };
        stopped = !each(spec.reader.record(l, &raw, &place).map_err(|message| InputError::at(path, &raw.place, message)));
    });
    if let Err(e) = outcome {
        each(Err(e));
    }
    layout
}
