//! Just enough of the protobuf wire format to write OTLP messages (no reflection, no schema):
//! a message is written field by field into a `Vec<u8>`, nested messages by writing them
//! into their own buffer first and appending it length-delimited.
//!
//! Wire types: 0 varint (`uint32`, `uint64`, `int64`, `bool`, enums), 1 fixed 64-bit
//! (`fixed64`, `double`), 2 length-delimited (`string`, `bytes`, messages).

/// A message being written.
#[derive(Debug, Default, Clone)]
pub struct Message {
    buf: Vec<u8>,
}

impl Message {
    pub fn new() -> Message {
        Message::default()
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn varint(&mut self, mut n: u64) {
        while n >= 0x80 {
            self.buf.push((n as u8) | 0x80);
            n >>= 7;
        }
        self.buf.push(n as u8);
    }

    fn tag(&mut self, field: u32, wire_type: u8) {
        self.varint((u64::from(field) << 3) | u64::from(wire_type));
    }

    /// A `uint32`/`uint64`/enum field (written even when 0: callers skip defaults they want
    /// left out).
    pub fn uint(&mut self, field: u32, n: u64) -> &mut Self {
        self.tag(field, 0);
        self.varint(n);
        self
    }

    /// An `int64` field (two's complement as a 64-bit varint, as protobuf does).
    pub fn int64(&mut self, field: u32, n: i64) -> &mut Self {
        self.uint(field, n as u64)
    }

    pub fn bool(&mut self, field: u32, b: bool) -> &mut Self {
        self.uint(field, u64::from(b))
    }

    pub fn fixed64(&mut self, field: u32, n: u64) -> &mut Self {
        self.tag(field, 1);
        self.buf.extend_from_slice(&n.to_le_bytes());
        self
    }

    pub fn double(&mut self, field: u32, x: f64) -> &mut Self {
        self.fixed64(field, x.to_bits())
    }

    pub fn bytes(&mut self, field: u32, b: &[u8]) -> &mut Self {
        self.tag(field, 2);
        self.varint(b.len() as u64);
        self.buf.extend_from_slice(b);
        self
    }

    pub fn string(&mut self, field: u32, s: &str) -> &mut Self {
        self.bytes(field, s.as_bytes())
    }

    pub fn message(&mut self, field: u32, m: &Message) -> &mut Self {
        self.bytes(field, &m.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_written_as_protobuf_does() {
        // Examples from the protobuf encoding guide: field 1 = 150 is 08 96 01;
        // field 2 = "testing" is 12 07 74 65 73 74 69 6e 67.
        let mut m = Message::new();
        m.uint(1, 150);
        assert_eq!(m.clone().into_bytes(), [0x08, 0x96, 0x01]);
        let mut s = Message::new();
        s.string(2, "testing");
        assert_eq!(
            s.into_bytes(),
            [0x12, 0x07, 0x74, 0x65, 0x73, 0x74, 0x69, 0x6e, 0x67]
        );
        let mut n = Message::new();
        n.int64(3, -1).fixed64(7, 1).double(4, 1.5).bool(2, true);
        assert_eq!(
            n.into_bytes(),
            [
                0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, // -1
                0x39, 1, 0, 0, 0, 0, 0, 0, 0, // fixed64 7 = 1
                0x21, 0, 0, 0, 0, 0, 0, 0xf8, 0x3f, // double 4 = 1.5
                0x10, 0x01, // bool 2
            ]
        );
        let mut outer = Message::new();
        outer.message(3, &m);
        assert_eq!(outer.into_bytes(), [0x1a, 0x03, 0x08, 0x96, 0x01]);
    }
}
