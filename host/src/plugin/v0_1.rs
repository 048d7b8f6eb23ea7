//! Components built for the frozen contract 0.1.0 (`wit/0.1.0/`), adapted to the current one.
//! Their documents have no fields: they get the same text, so spans need no mapping, without
//! the list. Their derived records have no fields either: each field of the source is found
//! again in the new text through the text between fields, which a 0.1.0 augmenter that edits
//! words inside fields (as the default ones did) leaves as it was.

use similar::{Algorithm, DiffTag, capture_diff_slices};
use wasmtime::Store;
use wasmtime::component::InstancePre;

use super::bindings::v0_1::{augmenter, disambiguator, metric, normalizer, types as old};
use super::sandbox::Ctx;
use super::types::{
    Annotated, Derived, Document, Expansion, Field, Mention, PluginError, PluginInfo, PluginKind, Prediction, Reference, Score, Setting,
    Span,
};

/// The pre-instantiated code of a 0.1.0 component.
#[derive(Clone)]
pub(super) enum Pre {
    Normalizer(normalizer::NormalizerPre<Ctx>),
    Disambiguator(disambiguator::DisambiguatorPre<Ctx>),
    Augmenter(augmenter::AugmenterPre<Ctx>),
    Metric(metric::MetricPre<Ctx>),
}

/// A live instance of a 0.1.0 component.
pub(super) enum Inst {
    Normalizer(normalizer::Normalizer),
    Disambiguator(disambiguator::Disambiguator),
    Augmenter(augmenter::Augmenter),
    Metric(metric::Metric),
}

type Results<T> = wasmtime::Result<Vec<Result<T, PluginError>>>;

impl Pre {
    pub(super) fn new(kind: PluginKind, pre: InstancePre<Ctx>) -> wasmtime::Result<Self> {
        Ok(match kind {
            PluginKind::Normalizer => Pre::Normalizer(normalizer::NormalizerPre::new(pre)?),
            PluginKind::Disambiguator => Pre::Disambiguator(disambiguator::DisambiguatorPre::new(pre)?),
            PluginKind::Augmenter => Pre::Augmenter(augmenter::AugmenterPre::new(pre)?),
            PluginKind::Metric => Pre::Metric(metric::MetricPre::new(pre)?),
        })
    }

    pub(super) fn instantiate(&self, store: &mut Store<Ctx>) -> wasmtime::Result<Inst> {
        Ok(match self {
            Pre::Normalizer(p) => Inst::Normalizer(p.instantiate(store)?),
            Pre::Disambiguator(p) => Inst::Disambiguator(p.instantiate(store)?),
            Pre::Augmenter(p) => Inst::Augmenter(p.instantiate(store)?),
            Pre::Metric(p) => Inst::Metric(p.instantiate(store)?),
        })
    }
}

fn document(d: &Document) -> old::Document {
    old::Document { id: d.id.clone(), text: d.text.clone(), metadata: d.metadata.clone() }
}

fn annotated(a: &Annotated) -> old::Annotated {
    old::Annotated { document: document(&a.document), mentions: a.mentions.clone(), expansions: a.expansions.clone() }
}

fn other_kind<R>() -> wasmtime::Result<R> {
    Err(wasmtime::Error::msg("instance of another kind than its compiled code"))
}

impl Inst {
    pub(super) fn describe(&self, s: &mut Store<Ctx>) -> wasmtime::Result<PluginInfo> {
        match self {
            Inst::Normalizer(i) => i.medtune_plugin_normalizer_api().call_describe(s),
            Inst::Disambiguator(i) => i.medtune_plugin_disambiguator_api().call_describe(s),
            Inst::Augmenter(i) => i.medtune_plugin_augmenter_api().call_describe(s),
            Inst::Metric(i) => i.medtune_plugin_metric_api().call_describe(s),
        }
    }

    pub(super) fn configure(&self, s: &mut Store<Ctx>, settings: &[Setting]) -> wasmtime::Result<Result<(), PluginError>> {
        match self {
            Inst::Normalizer(i) => i.medtune_plugin_normalizer_api().call_configure(s, settings),
            Inst::Disambiguator(i) => i.medtune_plugin_disambiguator_api().call_configure(s, settings),
            Inst::Augmenter(i) => i.medtune_plugin_augmenter_api().call_configure(s, settings),
            Inst::Metric(i) => i.medtune_plugin_metric_api().call_configure(s, settings),
        }
    }

    pub(super) fn normalize(&self, s: &mut Store<Ctx>, batch: &[Document]) -> Results<Vec<Mention>> {
        let Inst::Normalizer(i) = self else { return other_kind() };
        let batch: Vec<old::Document> = batch.iter().map(document).collect();
        i.medtune_plugin_normalizer_api().call_normalize(s, &batch)
    }

    pub(super) fn disambiguate(&self, s: &mut Store<Ctx>, batch: &[Annotated]) -> Results<Vec<Expansion>> {
        let Inst::Disambiguator(i) = self else { return other_kind() };
        let batch: Vec<old::Annotated> = batch.iter().map(annotated).collect();
        i.medtune_plugin_disambiguator_api().call_disambiguate(s, &batch)
    }

    /// New records, each with the source's fields found again in its text.
    pub(super) fn augment(&self, s: &mut Store<Ctx>, batch: &[Annotated], seed: u64) -> Results<Vec<Derived>> {
        let Inst::Augmenter(i) = self else { return other_kind() };
        let sent: Vec<old::Annotated> = batch.iter().map(annotated).collect();
        let out = i.medtune_plugin_augmenter_api().call_augment(s, &sent, seed)?;
        if out.len() != batch.len() {
            // the caller reports the mismatch; nothing to map
            return Ok(out.into_iter().map(|r| r.map(|_| Vec::new())).collect());
        }
        Ok(out
            .into_iter()
            .zip(batch)
            .map(|(r, source)| {
                r?.into_iter()
                    .enumerate()
                    .map(|(k, d)| {
                        let fields = fields_in(&source.document, &d.text).map_err(|why| {
                            PluginError::Internal(format!(
                                "derived record {k}: {why} (a contract 0.1.0 augmenter's text is mapped back to the record's fields \
                                 through the text between them; built against 0.2.0, it would name its fields itself)"
                            ))
                        })?;
                        Ok(Derived { text: d.text, fields, metadata: d.metadata, note: d.note })
                    })
                    .collect()
            })
            .collect())
    }

    pub(super) fn compute(
        &self,
        s: &mut Store<Ctx>,
        predictions: &[Prediction],
        references: &[Reference],
    ) -> wasmtime::Result<Result<Vec<Score>, PluginError>> {
        let Inst::Metric(i) = self else { return other_kind() };
        i.medtune_plugin_metric_api().call_compute(s, predictions, references)
    }
}

/// The fields of `source` in `text`, a new version of its text: each field now starts after
/// the new place of the character before it and ends at the new place of the character
/// after it, which must both be unchanged (they are the text between fields).
fn fields_in(source: &Document, text: &str) -> Result<Vec<Field>, String> {
    let old: Vec<char> = source.text.chars().collect();
    let new: Vec<char> = text.chars().collect();
    let ops = capture_diff_slices(Algorithm::Myers, &old, &new);
    let kept = |i: usize| {
        ops.iter().find_map(|op| {
            let (tag, o, n) = op.as_tag_tuple();
            (tag == DiffTag::Equal && o.contains(&i)).then(|| n.start + (i - o.start))
        })
    };
    let mut fields = Vec::with_capacity(source.fields.len());
    for (k, f) in source.fields.iter().enumerate() {
        let (s, e) = (f.span.start as usize, f.span.end as usize);
        let start = match s {
            0 => Some(0),
            s => kept(s - 1).map(|p| p + 1),
        };
        let end = if e >= old.len() { Some(new.len()) } else { kept(e) };
        let (Some(start), Some(end)) = (start, end) else {
            let (before, after) =
                (k.checked_sub(1).map(|j| source.fields[j].name.as_str()), source.fields.get(k + 1).map(|f| f.name.as_str()));
            let which = match (start, before, after) {
                (None, Some(b), _) => format!("between fields {b} and {}", f.name),
                (_, _, Some(a)) => format!("between fields {} and {a}", f.name),
                _ => format!("around field {}", f.name),
            };
            return Err(format!("the text {which} changed"));
        };
        fields.push(Field { name: f.name.clone(), span: Span { start: start as u32, end: end as u32 } });
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str, fields: &[(&str, u32, u32)]) -> Document {
        Document {
            id: "r".into(),
            text: text.into(),
            fields: fields.iter().map(|&(n, start, end)| Field { name: n.into(), span: Span { start, end } }).collect(),
            metadata: Vec::new(),
        }
    }

    fn parts(text: &str, fields: &[Field]) -> Vec<String> {
        fields.iter().map(|f| text.chars().skip(f.span.start as usize).take((f.span.end - f.span.start) as usize).collect()).collect()
    }

    #[test]
    fn a_new_text_gets_its_fields_through_the_text_between_them() {
        let source = doc("Is MI fatal?\n\nMI kills.\n\nyes", &[("question", 0, 12), ("context", 14, 23), ("option/A", 25, 28)]);
        let text = "Is myocardial infarction fatal?\n\nHeart attacks kill.\n\nyes indeed";
        let fields = fields_in(&source, text).expect("mapped");
        assert_eq!(parts(text, &fields), ["Is myocardial infarction fatal?", "Heart attacks kill.", "yes indeed"]);
        assert_eq!(fields.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(), ["question", "context", "option/A"]);
        // a field emptied by the augmenter is an empty span where it was
        let fields = fields_in(&source, "Is MI fatal?\n\n\n\nyes").expect("emptied");
        assert_eq!(parts("Is MI fatal?\n\n\n\nyes", &fields), ["Is MI fatal?", "", "yes"]);
    }

    #[test]
    fn a_changed_boundary_is_an_error_naming_the_fields() {
        let source = doc("Is MI fatal?\n\nMI kills.", &[("question", 0, 12), ("context", 14, 23)]);
        let err = fields_in(&source, "Is MI fatal? MI kills.").expect_err("the blank line is gone");
        assert_eq!(err, "the text between fields question and context changed");
    }
}
