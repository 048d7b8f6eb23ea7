//! The protobuf wire format, as much of it as an ONNX model needs: varints, length-delimited
//! fields and nested messages, written field by field (field numbers from onnx.proto).

/// A message being written.
#[derive(Default, Clone)]
pub struct Msg(pub Vec<u8>);

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

impl Msg {
    /// A varint field (int32, int64, enum).
    pub fn int(mut self, field: u32, v: i64) -> Self {
        varint(&mut self.0, u64::from(field) << 3);
        varint(&mut self.0, v as u64);
        self
    }

    /// A length-delimited field.
    pub fn bytes(mut self, field: u32, b: &[u8]) -> Self {
        varint(&mut self.0, (u64::from(field) << 3) | 2);
        varint(&mut self.0, b.len() as u64);
        self.0.extend_from_slice(b);
        self
    }

    /// A string field.
    pub fn str(self, field: u32, s: &str) -> Self {
        self.bytes(field, s.as_bytes())
    }

    /// A nested message.
    pub fn msg(self, field: u32, m: &Msg) -> Self {
        self.bytes(field, &m.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodings checked against protobuf's documentation examples.
    #[test]
    fn wire_format() {
        assert_eq!(Msg::default().int(1, 150).0, [0x08, 0x96, 0x01]);
        assert_eq!(Msg::default().str(2, "testing").0, [0x12, 0x07, b't', b'e', b's', b't', b'i', b'n', b'g']);
        assert_eq!(Msg::default().int(1, -1).0.len(), 11);
    }
}
