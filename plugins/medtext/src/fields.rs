//! Edits of a text made of named fields: each edit replaces a character range inside one
//! field, and the fields' ranges move with the edits (contract 0.2.0's `derived.fields`).

/// A half-open range of character offsets.
pub type Range = (u32, u32);

/// Applies `edits` (character range, replacement) to `text`, whose fields are at `fields`
/// (ascending, not overlapping), and returns the new text with each field's new range.
///
/// The edits are taken in order of their start; each must lie inside one field (an edit
/// between fields or across a boundary would leave a field's new extent undefined) and not
/// overlap the one before. An edit may be empty (an insertion) at a field's start or end.
pub fn rewrite(text: &str, fields: &[Range], edits: &[(Range, &str)]) -> Result<(String, Vec<Range>), String> {
    let chars: Vec<char> = text.chars().collect();
    let n = chars.len() as u32;
    let mut order: Vec<usize> = (0..edits.len()).collect();
    order.sort_by_key(|&i| edits[i].0);
    let mut out = String::with_capacity(text.len());
    // per field: the change in length of the edits inside it so far
    let mut grow = vec![0i64; fields.len()];
    let mut at = 0u32;
    for &i in &order {
        let ((start, end), with) = edits[i];
        if start > end || end > n {
            return Err(format!("edit {start}..{end} is outside the text ({n} characters)"));
        }
        if start < at {
            return Err(format!("edit {start}..{end} overlaps the edit before it (which ends at {at})"));
        }
        let Some(f) = fields.iter().position(|&(a, b)| a <= start && end <= b) else {
            return Err(format!("edit {start}..{end} is not inside one field"));
        };
        out.extend(&chars[at as usize..start as usize]);
        out.push_str(with);
        grow[f] += with.chars().count() as i64 - i64::from(end - start);
        at = end;
    }
    out.extend(&chars[at as usize..]);
    let mut shift = 0i64;
    let moved = fields
        .iter()
        .zip(&grow)
        .map(|(&(a, b), &g)| {
            let start = (i64::from(a) + shift) as u32;
            shift += g;
            (start, (i64::from(b) + shift) as u32)
        })
        .collect();
    Ok((out, moved))
}

/// Replaces each field's content by what `f` makes of it (given its index and text),
/// keeping the text between fields as it is.
pub fn map(text: &str, fields: &[Range], mut f: impl FnMut(usize, &str) -> String) -> (String, Vec<Range>) {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut moved = Vec::with_capacity(fields.len());
    let (mut at, mut len) = (0usize, 0u32);
    for (i, &(a, b)) in fields.iter().enumerate() {
        let (a, b) = (a as usize, (b as usize).min(chars.len()));
        let between: String = chars[at.min(a)..a].iter().collect();
        len += between.chars().count() as u32;
        out.push_str(&between);
        let field: String = chars[a..b.max(a)].iter().collect();
        let new = f(i, &field);
        let start = len;
        len += new.chars().count() as u32;
        out.push_str(&new);
        moved.push((start, len));
        at = b.max(a);
    }
    out.extend(&chars[at.min(chars.len())..]);
    (out, moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_move_the_fields_after_them() {
        // "Is MI rare?" "MI patients." "A. yes"
        let text = "Is MI rare?\n\nMI patients.\n\nA. yes";
        let fields = [(0, 11), (13, 25), (27, 33)];
        let (out, moved) = rewrite(text, &fields, &[((13, 15), "myocardial infarction"), ((3, 5), "heart attack")]).expect("edits");
        assert_eq!(out, "Is heart attack rare?\n\nmyocardial infarction patients.\n\nA. yes");
        assert_eq!(moved, [(0, 21), (23, 54), (56, 62)]);
        let part = |(a, b): Range| out.chars().skip(a as usize).take((b - a) as usize).collect::<String>();
        assert_eq!(part(moved[1]), "myocardial infarction patients.");
        assert_eq!(part(moved[2]), "A. yes");
        // an insertion at a field's end belongs to it; non-ASCII counts in characters
        let (out, moved) = rewrite("é\n\nb", &[(0, 1), (3, 4)], &[((1, 1), "ü!")]).expect("insert");
        assert_eq!((out.as_str(), moved), ("éü!\n\nb", vec![(0, 3), (5, 6)]));
    }

    #[test]
    fn edits_across_fields_or_overlapping_are_refused() {
        let text = "ab\n\ncd";
        let fields = [(0, 2), (4, 6)];
        assert_eq!(rewrite(text, &fields, &[((1, 5), "x")]).expect_err("across"), "edit 1..5 is not inside one field");
        assert_eq!(rewrite(text, &fields, &[((2, 4), "x")]).expect_err("between"), "edit 2..4 is not inside one field");
        let err = rewrite(text, &fields, &[((0, 2), "x"), ((1, 2), "y")]).expect_err("overlap");
        assert_eq!(err, "edit 1..2 overlaps the edit before it (which ends at 2)");
        assert_eq!(rewrite(text, &fields, &[((5, 9), "x")]).expect_err("outside"), "edit 5..9 is outside the text (6 characters)");
    }

    #[test]
    fn map_rewrites_each_field_and_keeps_what_is_between() {
        let (out, moved) =
            map("q?\n\nctx\n\nA. x", &[(0, 2), (4, 7), (9, 13)], |i, s| if i == 1 { s.to_uppercase() } else { format!("[{s}]") });
        assert_eq!(out, "[q?]\n\nCTX\n\n[A. x]");
        assert_eq!(moved, [(0, 4), (6, 9), (11, 17)]);
    }
}
