//! The closed sets of config values: one enum each, named alike in TOML (serde) and on the
//! command line (clap `ValueEnum`); `Display` writes that name.

use serde::{Deserialize, Serialize};

/// Implements `Display` as the value's name in the config and on the command line.
macro_rules! display_as_value_name {
    ($($t:ty),*) => {$(
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let value = clap::ValueEnum::to_possible_value(self).expect("every variant has a name");
                f.write_str(value.get_name())
            }
        }
    )*};
}
pub(crate) use display_as_value_name;

/// `model.device`: where the model runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Device {
    /// The CPU.
    #[default]
    Cpu,
    /// An NVIDIA GPU (a build with the `cuda` feature).
    Cuda,
}

/// `task.kind`: what the model learns to do with a record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum TaskKind {
    /// Pick one of a label set (yes/no/maybe, an option's letter, any labels).
    #[default]
    Choice,
    /// Write the answer: supervised fine-tuning on the assistant's turns (chats, instructions,
    /// explained answers).
    Generate,
    /// Find and link concept mentions: the plugin chain's mentions scored against an
    /// annotated corpus's gold mentions (`medtune eval`); no model is trained.
    Annotate,
}

/// `train.data`: which records train.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum TrainData {
    /// The training split plus what the augmenters made (`data/augmented/`).
    #[default]
    Augmented,
    /// The training split only (`data/processed/`).
    Processed,
}

/// `train.schedule`: the learning rate's decay after warm-up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    /// Half a cosine down to zero.
    #[default]
    Cosine,
    /// A straight line down to zero.
    Linear,
    /// The peak throughout.
    Constant,
}

/// `train.balance`: label balancing in the loss.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Balance {
    /// Every example weighs the same (sampling is the `label-balancer` plugin's job).
    #[default]
    None,
    /// Each answer class weighs the inverse of its frequency.
    Weights,
}

/// `train.context_keep`: which part of a context too long for `max_len` stays.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ContextKeep {
    /// The start.
    #[default]
    Start,
    /// The end (where the results are).
    End,
}

/// `train.select`: which adapter the run ends with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Select {
    /// The last step's.
    #[default]
    Last,
    /// The one with the best dev macro-F1 among the `eval_every` evaluations.
    BestDev,
}

/// `train.loss`: the answer's loss.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum AnswerLoss {
    /// The cross-entropy of the answer token over the whole vocabulary.
    #[default]
    Token,
    /// The cross-entropy over the answer tokens only (the choice evaluation makes).
    Choice,
}

impl AnswerLoss {
    /// Whether this is the default (left out of the serialized config, so that fingerprints
    /// of runs from before the setting existed still match).
    pub fn is_token(&self) -> bool {
        *self == AnswerLoss::Token
    }
}

display_as_value_name!(Device, TaskKind, TrainData, Schedule, Balance, ContextKeep, Select, AnswerLoss);

#[cfg(test)]
mod tests {
    use super::*;

    /// The names in the config, on the command line and in `Display` are one and the same.
    #[test]
    fn names_agree_in_toml_the_command_line_and_display() {
        #[derive(Deserialize)]
        struct One<T> {
            v: T,
        }
        fn check<T: clap::ValueEnum + std::fmt::Display + PartialEq + std::fmt::Debug + for<'de> Deserialize<'de> + Serialize>() {
            for v in T::value_variants() {
                let name = v.to_string();
                let parsed: One<T> = toml::from_str(&format!("v = {name:?}")).expect("parses by its display name");
                assert_eq!(&parsed.v, v);
                assert_eq!(serde_json::to_value(v).expect("serializes"), serde_json::Value::String(name.clone()));
                assert_eq!(&T::from_str(&name, false).expect("clap knows the name"), v);
            }
        }
        check::<Device>();
        check::<TrainData>();
        check::<Schedule>();
        check::<Balance>();
        check::<ContextKeep>();
        check::<Select>();
        check::<AnswerLoss>();
        check::<crate::export::Precision>();
        check::<crate::data::Split>();
        assert_eq!(Select::BestDev.to_string(), "best-dev");
    }
}
