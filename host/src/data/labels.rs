//! A `choice` task's label set: from the config, the options' letters, PubMedQA's answers in
//! their order, or the data's answers sorted; and each record's answer checked against it
//! (spelled as the label, whatever its case).

use super::layout::letter;
use super::record::Record;

/// PubMedQA's answers, in the order its figures are reported.
pub const PUBMEDQA_LABELS: [&str; 3] = ["yes", "no", "maybe"];

/// Why there is no usable label set.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct LabelSetError(pub String);

/// The most distinct answers a label set is found among (more: `task.labels` must name it).
pub const MAX_DISTINCT_ANSWERS: usize = 1000;

/// What a label set is found from, gathered record by record: the distinct answers (up to
/// [`MAX_DISTINCT_ANSWERS`] and one) and the most options a record has.
#[derive(Debug, Default)]
pub struct Answers {
    distinct: std::collections::BTreeSet<String>,
    most_options: usize,
}

impl Answers {
    /// Counts `record`'s answer and options.
    pub fn add(&mut self, record: &Record) {
        self.most_options = self.most_options.max(record.options.len());
        if let Some(a) = &record.answer
            && self.distinct.len() <= MAX_DISTINCT_ANSWERS
        {
            self.distinct.insert(a.clone());
        }
    }

    /// The label set of the records added: `configured` if the config names one; the letters
    /// of the most options a record has for multiple-choice records; PubMedQA's `yes`, `no`,
    /// `maybe` where any answer is one of them (so a stray `perhaps` is refused, not made a
    /// class of its own; yes/no data names its two in `task.labels`); else the distinct
    /// answers, sorted.
    pub fn label_set(&self, configured: Option<&[String]>) -> Result<Vec<String>, LabelSetError> {
        if let Some(labels) = configured {
            return Ok(labels.to_vec());
        }
        label_set_of(&self.distinct, self.most_options)
    }
}

fn label_set_of(distinct: &std::collections::BTreeSet<String>, most_options: usize) -> Result<Vec<String>, LabelSetError> {
    if most_options == 0 && distinct.len() > MAX_DISTINCT_ANSWERS {
        return Err(LabelSetError(format!(
            "the answers take over {MAX_DISTINCT_ANSWERS} values, too many to be a label set found from the data: name it in task.labels, or train a `generate` task"
        )));
    }
    let labels: Vec<String> = if most_options > 0 {
        (0..most_options).map(letter).collect()
    } else {
        let answers: std::collections::BTreeSet<&str> = distinct.iter().map(String::as_str).collect();
        let pubmedqa = |a: &&str| PUBMEDQA_LABELS.iter().any(|l| l.eq_ignore_ascii_case(a));
        if answers.iter().any(pubmedqa) {
            PUBMEDQA_LABELS.map(str::to_owned).to_vec()
        } else {
            let mut seen = std::collections::BTreeSet::new();
            answers.into_iter().filter(|a| seen.insert(a.to_lowercase())).map(str::to_owned).collect()
        }
    };
    match labels.len() {
        0 => Err(LabelSetError("no record has an answer, so there is no label set: label the records or set task.labels".into())),
        1 => Err(LabelSetError(format!(
            "every answer is {:?}: a choice needs at least two labels (set task.labels to name the others)",
            labels[0]
        ))),
        _ => Ok(labels),
    }
}

/// Spells `record`'s answer as its label; `Err` names the answer and the labels when it is
/// none of them (a multiple-choice answer must also be one of the record's own options).
pub fn check_answer(record: &mut Record, labels: &[String]) -> Result<(), String> {
    let Some(answer) = record.answer.as_deref() else { return Ok(()) };
    let Some(label) = labels.iter().find(|l| l.eq_ignore_ascii_case(answer.trim())) else {
        return Err(format!("the answer {answer:?} is not among the labels ({}); task.labels names a task's own", labels.join(", ")));
    };
    if !record.options.is_empty() && labels.iter().position(|l| l == label).is_none_or(|i| i >= record.options.len()) {
        return Err(format!("the answer {answer:?} names no option of the {} this question has", record.options.len()));
    }
    record.answer = Some(label.clone());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label_set(configured: Option<&[String]>, records: &[Record]) -> Result<Vec<String>, LabelSetError> {
        let mut answers = Answers::default();
        records.iter().for_each(|r| answers.add(r));
        answers.label_set(configured)
    }

    fn rec(answer: Option<&str>, options: usize) -> Record {
        let mut r = Record::new("1".into(), "q".into(), String::new(), answer.map(str::to_owned), vec![], "t".into());
        r.options = (0..options).map(|i| format!("option {i}")).collect();
        r
    }

    #[test]
    fn the_label_set_follows_the_config_the_options_pubmedqa_or_the_answers() {
        let own = vec!["urgent".to_owned(), "routine".to_owned()];
        assert_eq!(label_set(Some(&own), &[rec(Some("x"), 0)]).expect("configured"), own);
        assert_eq!(label_set(None, &[rec(Some("B"), 4), rec(Some("A"), 5)]).expect("options"), ["A", "B", "C", "D", "E"]);
        assert_eq!(
            label_set(None, &[rec(Some("maybe"), 0), rec(Some("Yes"), 0), rec(Some("no"), 0)]).expect("pubmedqa"),
            ["yes", "no", "maybe"]
        );
        // a stray answer beside PubMedQA's is not a class of its own
        assert_eq!(
            label_set(None, &[rec(Some("no"), 0), rec(Some("perhaps"), 0), rec(None, 0)]).expect("pubmedqa"),
            ["yes", "no", "maybe"]
        );
        assert_eq!(
            label_set(None, &[rec(Some("ESI-3"), 0), rec(Some("ESI-1"), 0), rec(Some("esi-1"), 0)]).expect("sorted"),
            ["ESI-1", "ESI-3"]
        );
        assert!(label_set(None, &[rec(Some("urgent"), 0), rec(Some("urgent"), 0)]).expect_err("one").0.contains("at least two labels"));
        assert!(label_set(None, &[rec(None, 0)]).is_err());
    }

    #[test]
    fn answers_are_spelled_as_their_label_and_strangers_are_named() {
        let labels: Vec<String> = ["yes", "no", "maybe"].map(str::to_owned).to_vec();
        let mut r = rec(Some(" Yes"), 0);
        check_answer(&mut r, &labels).expect("yes");
        assert_eq!(r.answer.as_deref(), Some("yes"));
        let message = check_answer(&mut rec(Some("perhaps"), 0), &labels).expect_err("not a label");
        assert!(message.starts_with("the answer \"perhaps\" is not among the labels (yes, no, maybe)"), "{message}");
        let letters: Vec<String> = (0..5).map(letter).collect();
        assert!(check_answer(&mut rec(Some("E"), 4), &letters).expect_err("no option E").contains("no option of the 4"));
        check_answer(&mut rec(None, 0), &labels).expect("unlabelled records pass");
    }
}
