//! Packing `generate` examples into rows of `max_len` tokens (best fit, longest first), each
//! row one [`Example`] that remembers where its examples start, so the batch gives every
//! example its own positions and a block-diagonal causal mask: no token attends across an
//! example boundary, and no row is padded more than its last example leaves free.

use std::collections::BTreeSet;

use super::examples::Example;

/// `examples` (sequence examples, each at most `capacity` tokens) packed into rows of at most
/// `capacity` tokens. Deterministic: the longest first, ties in input order, each into the
/// fullest row it fits (a new row when none does); a row keeps its examples in the order they
/// went in. An example longer than `capacity` gets a row of its own.
pub fn pack(examples: Vec<Example>, capacity: usize) -> Vec<Example> {
    let mut order: Vec<usize> = (0..examples.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(examples[i].prompt.len()));
    let mut rows: Vec<Vec<usize>> = Vec::new();
    // (room left, row): the fullest row with enough room is the first at or above the need
    let mut room: BTreeSet<(usize, usize)> = BTreeSet::new();
    for i in order {
        let need = examples[i].prompt.len();
        match room.range((need, 0)..).next().copied() {
            Some((left, row)) => {
                room.remove(&(left, row));
                rows[row].push(i);
                room.insert((left - need, row));
            }
            None => {
                rows.push(vec![i]);
                room.insert((capacity.saturating_sub(need), rows.len() - 1));
            }
        }
    }
    let mut slots: Vec<Option<Example>> = examples.into_iter().map(Some).collect();
    rows.into_iter()
        .map(|members| {
            let parts: Vec<Example> = members.iter().filter_map(|&i| slots[i].take()).collect();
            join(parts)
        })
        .collect()
}

/// One row of `parts`, one after another.
fn join(parts: Vec<Example>) -> Example {
    if parts.len() == 1 {
        return parts.into_iter().next().unwrap_or_default();
    }
    let mut row = Example { id: parts.iter().map(|e| e.id.as_str()).collect::<Vec<_>>().join("+"), ..Example::default() };
    for e in parts {
        row.segments.push(e.prompt.len());
        row.prompt.extend(e.prompt);
        row.targets.extend(e.targets);
    }
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(id: &str, len: usize) -> Example {
        Example { id: id.into(), prompt: vec![7; len], targets: vec![true; len], ..Example::default() }
    }

    /// Longest first into the fullest row that fits: 6 and 4 share a row of 10, 5 and 3 the
    /// next, 9 is alone, and the 2 goes where 2 are left (the 5+3 row), not into the 9's row.
    #[test]
    fn best_fit_longest_first() {
        let rows = pack(vec![seq("a", 5), seq("b", 3), seq("c", 9), seq("d", 6), seq("e", 4), seq("f", 2)], 10);
        let shape: Vec<(&str, Vec<usize>, usize)> = rows.iter().map(|r| (r.id.as_str(), r.segments.clone(), r.prompt.len())).collect();
        assert_eq!(shape, [("c", vec![], 9), ("d+e", vec![6, 4], 10), ("a+b+f", vec![5, 3, 2], 10)]);
        assert!(rows.iter().all(|r| r.targets.len() == r.prompt.len()));
    }
}
