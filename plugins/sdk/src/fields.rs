//! A document's fields (contract 0.2.0): reading them, and the new text and field spans of
//! a record an augmenter rewrites.

use crate::{Derived, Document, Field, PluginError, Span};

/// A document's text after edits, with its fields moved along: what a [`Derived`] record
/// is made of.
#[derive(Debug, Clone)]
pub struct Rewritten {
    /// The new text.
    pub text: String,
    /// The source's fields, by the same names and in the same order, at their new spans.
    pub fields: Vec<Field>,
}

impl Rewritten {
    /// The new record, with `note` for the audit trail and no metadata of its own.
    pub fn into_derived(self, note: impl Into<String>) -> Derived {
        Derived { text: self.text, fields: self.fields, metadata: Vec::new(), note: note.into() }
    }
}

fn ranges(doc: &Document) -> Vec<(u32, u32)> {
    doc.fields.iter().map(|f| (f.span.start, f.span.end)).collect()
}

fn moved(doc: &Document, text: String, ranges: Vec<(u32, u32)>) -> Rewritten {
    let fields =
        doc.fields.iter().zip(ranges).map(|(f, (start, end))| Field { name: f.name.clone(), span: Span { start, end } }).collect();
    Rewritten { text, fields }
}

impl Document {
    /// The field named `name` (`question`, `context`, `option/A`, `message/2/assistant`...).
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// The text of one of this document's fields.
    pub fn field_text(&self, field: &Field) -> String {
        self.text.chars().skip(field.span.start as usize).take(field.span.end.saturating_sub(field.span.start) as usize).collect()
    }

    /// The text with each `(span, replacement)` applied: spans are character offsets into
    /// `text`, none overlapping, each inside one field (the mentions a normalizer found
    /// are). Fields move with the edits.
    pub fn rewrite(&self, edits: &[(Span, String)]) -> Result<Rewritten, PluginError> {
        let edits: Vec<((u32, u32), &str)> = edits.iter().map(|(s, t)| ((s.start, s.end), t.as_str())).collect();
        let (text, ranges) = medtext::fields::rewrite(&self.text, &ranges(self), &edits)
            .map_err(|e| PluginError::InvalidInput(format!("document {}: {e}", self.id)))?;
        Ok(moved(self, text, ranges))
    }

    /// Each field replaced by what `f` makes of it (given the field and its text); the text
    /// between fields stays as it is.
    pub fn map_fields(&self, mut f: impl FnMut(&Field, &str) -> String) -> Rewritten {
        let (text, ranges) = medtext::fields::map(&self.text, &ranges(self), |i, s| f(&self.fields[i], s));
        moved(self, text, ranges)
    }

    /// An unchanged copy of the document as a new record (for oversampling), with `note`.
    pub fn copy(&self, note: impl Into<String>) -> Derived {
        Rewritten { text: self.text.clone(), fields: self.fields.clone() }.into_derived(note)
    }
}
