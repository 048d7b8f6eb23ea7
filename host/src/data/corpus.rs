//! Annotated corpora as records of the `annotated` layout: PubTator (a title line, an
//! abstract line, one line per mention, one per relation) and BioC XML (documents of passages
//! with annotations and relations), each document an object of `id`, the text, `annotations`
//! and `relations` with the corpus's own offsets (see `annotated.rs`).

use std::io::BufRead as _;
use std::path::Path;

use quick_xml::events::{BytesStart, Event};
use serde_json::{Map, Value, json};

use super::formats::RawRecord;
use super::input::InputError;

/// Reads a PubTator file: documents separated by blank lines, `PMID|t|title`, `PMID|a|text`,
/// mentions as `PMID<TAB>start<TAB>end<TAB>text<TAB>type<TAB>ids[<TAB>parts]` (ids and parts
/// `|`-separated) and relations as `PMID<TAB>type<TAB>id<TAB>id`. A document with a line
/// that fits none of these is an error naming that line; the others still come.
pub fn read_pubtator(path: &Path, each: Each<'_>) -> Result<(), InputError> {
    let file = std::fs::File::open(path).map_err(|e| InputError::at(path, "file", format!("cannot read: {e}")))?;
    let reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut doc = PubtatorDoc::default();
    let mut number = 0;
    for (i, line) in reader.lines().enumerate() {
        let n = i + 1;
        let line = line.map_err(|e| InputError::at(path, &format!("line {n}"), format!("cannot read: {e}")))?;
        if line.trim().is_empty() {
            doc.finish(path, &mut number, each);
            continue;
        }
        if doc.first_line == 0 {
            doc.first_line = n;
        }
        if doc.error.is_none()
            && let Err(e) = doc.line(&line)
        {
            doc.error = Some(format!("line {n}: {e}"));
        }
    }
    doc.finish(path, &mut number, each);
    Ok(())
}

#[derive(Default)]
struct PubtatorDoc {
    first_line: usize,
    id: Option<String>,
    title: Option<String>,
    text: Option<String>,
    annotations: Vec<Value>,
    relations: Vec<Value>,
    error: Option<String>,
}

impl PubtatorDoc {
    fn line(&mut self, line: &str) -> Result<(), String> {
        if let Some((id, rest)) = line.split_once('|')
            && !id.contains('\t')
        {
            let (kind, text) = rest.split_once('|').ok_or("a text line must be ID|t|title or ID|a|abstract")?;
            self.same_id(id)?;
            let slot = match kind {
                "t" => &mut self.title,
                "a" => &mut self.text,
                other => return Err(format!("unknown text line kind {other:?} (t or a)")),
            };
            if slot.replace(text.to_owned()).is_some() {
                return Err(format!("a second |{kind}| line"));
            }
            return Ok(());
        }
        let cols: Vec<&str> = line.split('\t').collect();
        self.same_id(cols[0])?;
        match cols.len() {
            4 => self.relations.push(json!({"type": cols[1], "ids": [cols[2], cols[3]]})),
            6 | 7 => {
                let number = |s: &str, what: &str| s.parse::<u32>().map_err(|_| format!("the {what} offset {s:?} is not a number"));
                let (start, end) = (number(cols[1], "start")?, number(cols[2], "end")?);
                if end < start {
                    return Err(format!("the mention ends ({end}) before it starts ({start})"));
                }
                let mut a = json!({"offset": start, "length": end - start, "text": cols[3], "type": cols[4], "ids": cols[5]});
                if let Some(parts) = cols.get(6) {
                    a["parts"] = Value::String((*parts).to_owned());
                }
                self.annotations.push(a);
            }
            n => return Err(format!("{n} tab-separated columns; a mention has 6 (or 7) and a relation 4")),
        }
        Ok(())
    }

    fn same_id(&mut self, id: &str) -> Result<(), String> {
        match &self.id {
            Some(known) if known != id => Err(format!("the id {id} differs from the document's {known}")),
            Some(_) => Ok(()),
            None => {
                self.id = Some(id.to_owned());
                Ok(())
            }
        }
    }

    /// Hands the document on (if there is one) and starts the next.
    fn finish(&mut self, path: &Path, number: &mut usize, each: Each<'_>) {
        let doc = std::mem::take(self);
        if doc.first_line == 0 {
            return;
        }
        *number += 1;
        let place = format!("line {}", doc.first_line);
        if let Some(e) = doc.error {
            return each(Err(InputError::at(path, &place, e)));
        }
        let mut fields = Map::new();
        fields.insert("id".into(), Value::String(doc.id.clone().unwrap_or_default()));
        fields.insert("title".into(), Value::String(doc.title.unwrap_or_default()));
        fields.insert("text".into(), Value::String(doc.text.unwrap_or_default()));
        fields.insert("annotations".into(), Value::Array(doc.annotations));
        fields.insert("relations".into(), Value::Array(doc.relations));
        each(Ok(RawRecord { place, key: doc.id, number: *number, fields }));
    }
}

/// Reads a BioC XML collection: each `<document>` (its `<id>`, passages with their `type`
/// infon, `<offset>` and `<text>`, annotations with their `type` and identifier infons
/// (`MESH`, `identifier`) and one `<location>`, relations with their infons) becomes one
/// record. A document medtune cannot take whole (a mention in several locations, a number
/// that is not one) is an error naming it; malformed XML stops the file there.
pub fn read_bioc(path: &Path, each: Each<'_>) -> Result<(), InputError> {
    let file = std::fs::File::open(path).map_err(|e| InputError::at(path, "file", format!("cannot read: {e}")))?;
    let mut reader = quick_xml::Reader::from_reader(std::io::BufReader::with_capacity(1 << 20, file));
    let mut buf = Vec::new();
    let mut stack: Vec<String> = Vec::new();
    let mut text = String::new();
    let mut doc: Option<BiocDoc> = None;
    let mut number = 0;
    let mut seen_collection = false;
    loop {
        let at = reader.buffer_position();
        let event = reader.read_event_into(&mut buf).map_err(|e| InputError::at(path, &format!("byte {at}"), format!("not XML: {e}")))?;
        match event {
            Event::Start(e) => {
                let name = e.local_name().as_ref().to_owned();
                seen_collection |= name == "collection";
                text.clear();
                if let Some(d) = &mut doc {
                    d.start(&name, &e);
                } else if name == "document" {
                    number += 1;
                    doc = Some(BiocDoc { number, ..BiocDoc::default() });
                }
                stack.push(name);
            }
            Event::Empty(e) => {
                if let Some(d) = &mut doc {
                    d.start(e.local_name().as_ref(), &e);
                    d.end(e.local_name().as_ref(), "");
                }
            }
            Event::Text(t) => text.push_str(&t.xml10_content()),
            Event::CData(t) => text.push_str(&t.into_inner()),
            Event::GeneralRef(r) => match r.resolve_char_ref() {
                Ok(Some(c)) => text.push(c),
                _ => {
                    let name = r.xml10_content();
                    match quick_xml::escape::resolve_predefined_entity(&name) {
                        Some(s) => text.push_str(s),
                        None => {
                            if let Some(d) = &mut doc {
                                d.fail(format!("unknown entity &{name};"));
                            }
                        }
                    }
                }
            },
            Event::End(_) => {
                let name = stack.pop().unwrap_or_default();
                if name == "document" {
                    if let Some(d) = doc.take() {
                        each(d.record(path));
                    }
                } else if let Some(d) = &mut doc {
                    d.end(&name, &text);
                }
                text.clear();
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if !seen_collection {
        return Err(InputError::at(path, "file", "not a BioC collection (no <collection> element)".into()));
    }
    Ok(())
}

/// An annotation's `<location>`: offset and length.
type Location = (u32, u32);

/// What [`read_pubtator`] and [`read_bioc`] hand each record (or error) to.
pub type Each<'a> = &'a mut dyn FnMut(Result<RawRecord, InputError>);

#[derive(Default)]
struct BiocDoc {
    number: usize,
    id: String,
    passages: Vec<Value>,
    annotations: Vec<Value>,
    relations: Vec<Value>,
    /// What is being read: a passage, annotation or relation, as its JSON so far.
    passage: Option<Map<String, Value>>,
    annotation: Option<(Map<String, Value>, Vec<Location>)>,
    relation: Option<Vec<(String, String)>>,
    infon_key: Option<String>,
    error: Option<String>,
}

impl BiocDoc {
    fn fail(&mut self, message: String) {
        self.error.get_or_insert(message);
    }

    fn start(&mut self, name: &str, e: &BytesStart) {
        let attr = |key: &str| -> Option<String> {
            e.try_get_attribute(key)
                .ok()
                .flatten()
                .and_then(|a| a.normalized_value(quick_xml::XmlVersion::Implicit1_0).ok().map(|v| v.into_owned()))
        };
        match name {
            "passage" => self.passage = Some(Map::new()),
            "annotation" => self.annotation = Some((Map::new(), Vec::new())),
            "relation" => self.relation = Some(Vec::new()),
            "infon" => self.infon_key = attr("key"),
            "location" => {
                let loc = (attr("offset").and_then(|v| v.parse().ok()), attr("length").and_then(|v| v.parse().ok()));
                match (&mut self.annotation, loc) {
                    (Some((_, locations)), (Some(o), Some(l))) => locations.push((o, l)),
                    (Some(_), _) => self.fail("an annotation's <location> needs whole-number offset and length".into()),
                    _ => {}
                }
            }
            _ => {}
        }
    }

    fn end(&mut self, name: &str, text: &str) {
        match name {
            "id" if self.passage.is_none() && self.annotation.is_none() && self.relation.is_none() => self.id = text.trim().to_owned(),
            "infon" => {
                let key = self.infon_key.take().unwrap_or_default();
                if let Some(r) = &mut self.relation {
                    r.push((key, text.to_owned()));
                } else if let Some((a, _)) = &mut self.annotation {
                    a.insert(format!("infon:{key}"), Value::String(text.to_owned()));
                } else if let Some(p) = &mut self.passage {
                    p.insert(format!("infon:{key}"), Value::String(text.to_owned()));
                }
            }
            "offset" => {
                if let Some(p) = &mut self.passage
                    && self.annotation.is_none()
                {
                    match text.trim().parse::<u32>() {
                        Ok(o) => drop(p.insert("offset".into(), o.into())),
                        Err(_) => self.fail(format!("a passage's <offset> {text:?} is not a whole number")),
                    }
                }
            }
            "text" => {
                if let Some((a, _)) = &mut self.annotation {
                    a.insert("text".into(), Value::String(text.to_owned()));
                } else if let Some(p) = &mut self.passage {
                    p.insert("text".into(), Value::String(text.to_owned()));
                }
            }
            "annotation" => {
                if let Some((a, locations)) = self.annotation.take() {
                    self.annotation_done(a, locations);
                }
            }
            "passage" => {
                if let Some(p) = self.passage.take() {
                    let kind = p.get("infon:type").cloned().unwrap_or_else(|| Value::String("paragraph".into()));
                    let offset = p.get("offset").cloned().unwrap_or(Value::Null);
                    let text = p.get("text").cloned().unwrap_or_else(|| Value::String(String::new()));
                    self.passages.push(json!({"type": kind, "offset": offset, "text": text}));
                }
            }
            "relation" => {
                if let Some(infons) = self.relation.take() {
                    let kind = infons.iter().find(|(k, _)| k == "relation" || k == "type").map(|(_, v)| v.clone()).unwrap_or_default();
                    let ids: Vec<&str> = infons.iter().filter(|(k, _)| k != "relation" && k != "type").map(|(_, v)| v.as_str()).collect();
                    self.relations.push(json!({"type": kind, "ids": ids}));
                }
            }
            _ => {}
        }
    }

    fn annotation_done(&mut self, a: Map<String, Value>, locations: Vec<Location>) {
        let n = self.annotations.len() + 1;
        let &[(offset, length)] = locations.as_slice() else {
            return self.fail(format!(
                "annotation {n} has {} locations; medtune reads mentions in one piece (a discontinuous mention is not supported)",
                locations.len()
            ));
        };
        let infon = |keys: &[&str]| {
            a.iter().find(|(k, _)| k.strip_prefix("infon:").is_some_and(|k| keys.iter().any(|w| k.eq_ignore_ascii_case(w)))).map(|(_, v)| v)
        };
        let kind = infon(&["type"]).cloned().unwrap_or_else(|| Value::String(String::new()));
        let ids = infon(&["MESH", "identifier", "MeSH"]).cloned().unwrap_or_else(|| Value::String("-1".into()));
        let text = a.get("text").cloned().unwrap_or_else(|| Value::String(String::new()));
        self.annotations.push(json!({"offset": offset, "length": length, "text": text, "type": kind, "ids": ids}));
    }

    fn record(self, path: &Path) -> Result<RawRecord, InputError> {
        let place = if self.id.is_empty() { format!("document {}", self.number) } else { format!("document {}", self.id) };
        if let Some(e) = self.error {
            return Err(InputError::at(path, &place, e));
        }
        let mut fields = Map::new();
        let key = (!self.id.is_empty()).then(|| self.id.clone());
        fields.insert("id".into(), Value::String(self.id));
        fields.insert("passages".into(), Value::Array(self.passages));
        fields.insert("annotations".into(), Value::Array(self.annotations));
        fields.insert("relations".into(), Value::Array(self.relations));
        Ok(RawRecord { place, key, number: self.number, fields })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &Path, f: fn(&Path, Each<'_>) -> Result<(), InputError>) -> Vec<Result<RawRecord, String>> {
        let mut out = Vec::new();
        f(path, &mut |r| out.push(r.map_err(|e| e.to_string()))).expect("readable");
        out
    }

    #[test]
    fn pubtator_documents_with_mentions_relations_and_a_bad_line_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cdr.pubtator");
        std::fs::write(
            &path,
            "1|t|Lithium toxicity.\n1|a|Breast and ovarian cancer.\n1\t0\t7\tLithium\tChemical\tD008094\n\
             1\t18\t43\tBreast and ovarian cancer\tDisease\tD001943|D010051\tBreast cancer|ovarian cancer\n1\tCID\tD008094\tD001943\n\n\
             2|t|Two.\n2\tx\t3\tTwo\tDisease\tD1\n\n3|t|Three.\n3|a|\n",
        )
        .expect("write");
        let docs = read(&path, read_pubtator);
        assert_eq!(docs.len(), 3);
        let first = docs[0].as_ref().expect("first");
        assert_eq!((first.place.as_str(), first.key.as_deref()), ("line 1", Some("1")));
        let r = super::super::annotated::record("1".into(), &first.fields, "f").expect("record");
        assert_eq!(r.gold[1].ids, ["D001943", "D010051"]);
        assert_eq!(r.gold[1].parts, ["Breast cancer", "ovarian cancer"]);
        assert_eq!(r.relations[0].kind, "CID");
        assert!(docs[1].as_ref().expect_err("bad offset").ends_with("line 7: line 8: the start offset \"x\" is not a number"));
        assert_eq!(docs[2].as_ref().expect("third").place, "line 10");
    }

    #[test]
    fn bioc_documents_become_passages_and_annotations() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cdr.xml");
        std::fs::write(
            &path,
            r#"<?xml version="1.0"?><collection><source>t</source>
<document><id>227508</id>
<passage><infon key="type">title</infon><offset>0</offset><text>Naloxone &amp; clonidine.</text>
<annotation id="0"><infon key="type">Chemical</infon><infon key="MESH">D009270</infon><location offset="0" length="8"/><text>Naloxone</text></annotation></passage>
<passage><infon key="type">abstract</infon><offset>22</offset><text>Clonidine&#44; again.</text>
<annotation id="1"><infon key="type">Chemical</infon><infon key="MESH">D003000</infon><location offset="22" length="9"></location><text>Clonidine</text></annotation></passage>
<relation id="R0"><infon key="relation">CID</infon><infon key="Chemical">D003000</infon><infon key="Disease">D007022</infon></relation>
</document>
<document><id>9</id><passage><infon key="type">title</infon><offset>0</offset><text>A b.</text>
<annotation id="0"><infon key="type">Disease</infon><location offset="0" length="1"/><location offset="2" length="1"/><text>A b</text></annotation></passage></document>
</collection>"#,
        )
        .expect("write");
        let docs = read(&path, read_bioc);
        let first = docs[0].as_ref().expect("first");
        assert_eq!(first.place, "document 227508");
        let r = super::super::annotated::record("227508".into(), &first.fields, "f").expect("record");
        assert_eq!(r.text, "Naloxone & clonidine.\n\nClonidine, again.");
        assert_eq!(r.gold.iter().map(|g| g.ids[0].as_str()).collect::<Vec<_>>(), ["D009270", "D003000"]);
        assert_eq!(r.relations[0].ids, ["D003000", "D007022"]);
        let err = docs[1].as_ref().expect_err("two locations");
        assert!(err.contains("document 9: annotation 1 has 2 locations"), "{err}");
    }
}
