//! A normalizer's mention whose concept strings may borrow from the plugin.

use std::borrow::Cow;

use crate::{Concept, Mention, Span};

/// A [`Mention`] whose concept id and preferred name may borrow from the plugin (a
/// vocabulary it loaded in `new`): the SDK then hands the host a pointer to those strings
/// instead of a copy of them per mention. Owned strings (`Cow::Owned`) work too.
#[derive(Clone, Debug)]
pub struct MentionRef<'a> {
    /// Where the mention is in the original text (character offsets).
    pub span: Span,
    /// The concept's id in its vocabulary.
    pub id: Cow<'a, str>,
    /// The concept's preferred name.
    pub preferred_name: Cow<'a, str>,
    /// How sure the plugin is, from 0 (a guess) to 1 (an exact match).
    pub score: f32,
}

impl From<Mention> for MentionRef<'_> {
    fn from(m: Mention) -> Self {
        let Concept { id, preferred_name } = m.concept;
        Self { span: m.span, id: id.into(), preferred_name: preferred_name.into(), score: m.score }
    }
}

impl From<MentionRef<'_>> for Mention {
    fn from(m: MentionRef<'_>) -> Self {
        let concept = Concept { id: m.id.into_owned(), preferred_name: m.preferred_name.into_owned() };
        Self { span: m.span, concept, score: m.score }
    }
}
