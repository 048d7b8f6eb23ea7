//! Every text function of medtext takes any UTF-8: PQA-L's contexts with their spaces, letters
//! and parentheses turned into multi-byte characters, through definitions, matching, salts and
//! abbreviation linking (a byte offset inside a character panics, and a panic in a plugin
//! fails its records).

use medtext::{Matcher, Options, abbrev, fold_salts, link_defined_abbreviations, parse_concepts};

#[test]
fn no_function_slices_inside_a_character() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/data/pubmedqa/ori_pqal.json");
    let raw = std::fs::read_to_string(path).expect("the bundled PQA-L");
    let rows = parse_concepts("D1\tCancer\t\nD2\tPatients\t\nD3\tSodium\t\nD4\tCells\t\n").expect("vocab");
    let m = Matcher::new(&rows, Options::default());
    let variants = [
        raw.replace(' ', "\u{a0}"),
        raw.replace('e', "\u{e9}").replace('(', " ( "),
        raw.replace(" (", "\u{2009}(").replace(") ", ")\u{a0}").replace(" ", " \u{a0}"),
    ];
    let mut matched = 0;
    for text in &variants {
        for record in text.split("\"QUESTION\"").take(300) {
            let _ = abbrev::definitions(record);
            for (i, _) in record.char_indices() {
                let _ = abbrev::short_form_after(record, i);
            }
            let mut found = m.find(record);
            matched += found.len();
            fold_salts(record, &mut found, |_| true);
            link_defined_abbreviations(&mut [(record, found)]);
        }
    }
    assert!(matched > 1000, "the texts are matched: {matched}");
}
