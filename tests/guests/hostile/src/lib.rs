//! A normalizer that misbehaves on purpose, driven by markers in the document text:
//! `LOOP` spins forever, `BOMB` allocates without end, `PANIC` panics, `SNOOP` tries to
//! read a host file, an environment variable and the network, `RANGE` returns a span past
//! the end, `CUT` a span that splits "e" from its combining accent, `NOID` an empty concept
//! id, `REFUSE config|input|resource|internal` that plugin error for the record. Any other
//! text gets one honest mention of its first character.

use medtune_plugin_sdk::{register_normalizer, Concept, Document, Mention, Normalizer, PluginError, Settings, Span};

struct Hostile;

fn mention(start: u32, end: u32, id: &str, name: &str) -> Mention {
    Mention { span: Span { start, end }, concept: Concept { id: id.into(), preferred_name: name.into() }, score: 1.0 }
}

fn snoop() -> String {
    let file = match std::fs::read_to_string("/etc/hostname") {
        Ok(s) => format!("file READ {s:?}"),
        Err(e) => format!("file denied ({e})"),
    };
    let env = match std::env::var("HOME") {
        Ok(v) => format!("env READ {v:?}"),
        Err(e) => format!("env denied ({e})"),
    };
    let net = match std::net::TcpStream::connect("127.0.0.1:22") {
        Ok(_) => "net CONNECTED".to_owned(),
        Err(e) => format!("net denied ({e})"),
    };
    format!("{file}; {env}; {net}")
}

/// Recursion that never ends in time, with a frame of 512 bytes kept across the call (through
/// a function pointer the optimizer cannot see through): the guest's stack runs out.
fn recurse(n: u64) -> u64 {
    let frame = std::hint::black_box([n as u8; 512]);
    let next: fn(u64) -> u64 = std::hint::black_box(recurse);
    let below = if n == 0 { 0 } else { next(n - 1) };
    below ^ u64::from(std::hint::black_box(&frame)[(n % 512) as usize])
}

impl Normalizer for Hostile {
    fn new(_settings: &Settings) -> Result<Self, PluginError> {
        Ok(Hostile)
    }

    fn normalize(&self, doc: &Document) -> Result<Vec<Mention>, PluginError> {
        let t = &doc.text;
        let chars = t.chars().count() as u32;
        if t.contains("LOOP") {
            let mut x: u64 = 1;
            loop {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        if t.contains("BOMB") {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        if t.contains("RECURSE") {
            return Ok(vec![mention(0, 1, "DEEP", &format!("{}", recurse(std::hint::black_box(1 << 30))))]);
        }
        if t.contains("PANIC") {
            panic!("hostile guest panics on record {}", doc.id);
        }
        if t.contains("SNOOP") {
            return Ok(vec![mention(0, 1, "SNOOP", &snoop())]);
        }
        if t.contains("RANGE") {
            return Ok(vec![mention(0, chars + 5, "D1", "past the end")]);
        }
        if let Some(i) = t.chars().position(|c| c == '\u{301}') {
            if t.contains("CUT") {
                return Ok(vec![mention(0, i as u32, "D1", "cuts a grapheme")]);
            }
        }
        if let Some(rest) = t.strip_prefix("REFUSE ") {
            let why = format!("record {} refused", doc.id);
            return Err(match rest.split_whitespace().next().unwrap_or_default() {
                "config" => PluginError::Config(why),
                "input" => PluginError::InvalidInput(why),
                "resource" => PluginError::MissingResource(why),
                _ => PluginError::Internal(why),
            });
        }
        if t.contains("NOID") {
            return Ok(vec![mention(0, 1, "", "no id")]);
        }
        if chars == 0 {
            return Ok(vec![]);
        }
        Ok(vec![mention(0, 1, "OK", "first character")])
    }
}

register_normalizer!(Hostile);
