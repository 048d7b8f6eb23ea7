//! The text fields of a record as plugins see them (contract 0.2.0's `document.fields`): one
//! text holding every field, each after a blank line, and the name and span of each.

use crate::plugin::types::{Field, Span};

use super::record::Role;

/// What a field of a record's text is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// An annotated document's title.
    Title,
    /// The question.
    Question,
    /// The question's context (an abstract, a note).
    Context,
    /// A multiple-choice option, by index (its letter in the name: `option/A`).
    Option(usize),
    /// The explained answer (PubMedQA's long answer).
    LongAnswer,
    /// Turn N of a chat, with who says it (`message/N/ROLE`).
    Message(usize, Role),
}

/// The text between two fields.
pub const SEPARATOR: &str = "\n\n";

impl Part {
    /// The field's name in the contract.
    pub fn name(self) -> String {
        match self {
            Part::Title => "title".into(),
            Part::Question => "question".into(),
            Part::Context => "context".into(),
            Part::LongAnswer => "long-answer".into(),
            Part::Option(i) => format!("option/{}", super::layout::letter(i)),
            Part::Message(i, role) => format!("message/{i}/{role}"),
        }
    }

    /// The part a field name stands for, if it is one.
    pub fn parse(name: &str) -> Option<Part> {
        match name {
            "title" => Some(Part::Title),
            "question" => Some(Part::Question),
            "context" => Some(Part::Context),
            "long-answer" => Some(Part::LongAnswer),
            _ => {
                if let Some(letter) = name.strip_prefix("option/") {
                    let mut chars = letter.chars();
                    let (Some(c @ 'A'..='Z'), None) = (chars.next(), chars.next()) else { return None };
                    return Some(Part::Option(c as usize - 'A' as usize));
                }
                let (i, role) = name.strip_prefix("message/")?.split_once('/')?;
                let role = [Role::System, Role::User, Role::Assistant].into_iter().find(|r| r.to_string() == role)?;
                Some(Part::Message(i.parse().ok()?, role))
            }
        }
    }
}

/// One text of `parts` (empty ones left out) with each field's name and span.
pub fn compose<'a>(parts: impl IntoIterator<Item = (Part, &'a str)>) -> (String, Vec<Field>) {
    let mut text = String::new();
    let mut fields = Vec::new();
    let mut at = 0u32;
    for (part, content) in parts.into_iter().filter(|(_, c)| !c.is_empty()) {
        if !fields.is_empty() {
            text.push_str(SEPARATOR);
            at += SEPARATOR.len() as u32;
        }
        let len = content.chars().count() as u32;
        text.push_str(content);
        fields.push(Field { name: part.name(), span: Span { start: at, end: at + len } });
        at += len;
    }
    (text, fields)
}

/// The text of `span` (character offsets) in `text`.
pub fn slice(text: &str, span: Span) -> String {
    let (a, b) = (span.start as usize, span.end.max(span.start) as usize);
    if text.is_ascii() {
        return text.get(a..b.min(text.len())).unwrap_or_default().to_owned();
    }
    text.chars().skip(a).take(b - a).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_strangers_are_refused() {
        for part in [
            Part::Title,
            Part::Question,
            Part::Context,
            Part::LongAnswer,
            Part::Option(0),
            Part::Option(4),
            Part::Message(3, Role::Assistant),
        ] {
            assert_eq!(Part::parse(&part.name()), Some(part), "{}", part.name());
        }
        assert_eq!(Part::Option(2).name(), "option/C");
        assert_eq!(Part::Message(0, Role::System).name(), "message/0/system");
        for stranger in ["answer", "option/a", "option/AB", "message/x/user", "message/1/robot", "message/1"] {
            assert_eq!(Part::parse(stranger), None, "{stranger}");
        }
    }

    #[test]
    fn compose_joins_the_non_empty_parts_with_blank_lines() {
        let (text, fields) =
            compose([(Part::Question, "Is MI rare?"), (Part::Context, ""), (Part::Option(0), "yes"), (Part::Option(1), "né")]);
        assert_eq!(text, "Is MI rare?\n\nyes\n\nné");
        let got: Vec<(String, String)> = fields.iter().map(|f| (f.name.clone(), slice(&text, f.span))).collect();
        assert_eq!(got, [("question".into(), "Is MI rare?".into()), ("option/A".into(), "yes".into()), ("option/B".into(), "né".into())]);
        assert_eq!(fields[2].span, Span { start: 18, end: 20 });
    }
}
