//! Where WebSocket frames begin and end in a tunnelled byte stream, so that
//! a close frame can be put between two frames and never inside one.
//!
//! Only frame heads are read (2 to 14 bytes); payloads are counted and
//! passed over, never unmasked or copied.

/// The frame boundaries of one direction of a WebSocket tunnel.
#[derive(Debug, Default)]
pub struct Frames {
    /// Bytes of the current frame's mask key and payload still to pass.
    remaining: u64,
    /// The head being read, when it came in pieces.
    head: [u8; 14],
    head_len: u8,
}

impl Frames {
    /// Passes over `data`, the next bytes of the stream.
    pub fn advance(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = usize::try_from(self.remaining).map_or(data.len(), |r| r.min(data.len()));
                self.remaining -= n as u64;
                data = &data[n..];
                continue;
            }
            self.head[usize::from(self.head_len)] = data[0];
            self.head_len += 1;
            data = &data[1..];
            if let Some(rest) = self.rest_of_frame() {
                self.remaining = rest;
                self.head_len = 0;
            }
        }
    }

    /// The mask key and payload length behind a complete head, `None`
    /// while the head is incomplete.
    fn rest_of_frame(&self) -> Option<u64> {
        let head = &self.head[..usize::from(self.head_len)];
        if head.len() < 2 {
            return None;
        }
        let mask = if head[1] & 0x80 != 0 { 4 } else { 0 };
        let (extended, len) = match head[1] & 0x7f {
            126 => (2, None),
            127 => (8, None),
            len => (0, Some(u64::from(len))),
        };
        if head.len() < 2 + extended {
            return None;
        }
        let len = len.unwrap_or_else(|| {
            head[2..2 + extended]
                .iter()
                .fold(0u64, |n, b| (n << 8) | u64::from(*b))
        });
        Some(len.saturating_add(mask))
    }

    /// Whether the bytes passed so far end with a whole frame (or none).
    pub fn at_boundary(&self) -> bool {
        self.remaining == 0 && self.head_len == 0
    }
}

/// A close frame with code 1001 ("going away"), as a server sends it
/// (unmasked) or, with `mask`, as a client must (masked with that key).
pub fn going_away(mask: Option<[u8; 4]>) -> Vec<u8> {
    let code = 1001u16.to_be_bytes();
    match mask {
        None => vec![0x88, 0x02, code[0], code[1]],
        Some(m) => vec![
            0x88,
            0x82,
            m[0],
            m[1],
            m[2],
            m[3],
            code[0] ^ m[0],
            code[1] ^ m[1],
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries_are_found_however_the_bytes_are_cut() {
        // A masked 5-byte text frame, a 300-byte binary frame (16-bit
        // length), an unmasked 70000-byte frame (64-bit length).
        let mut stream = vec![0x81, 0x85, 1, 2, 3, 4, b'h', b'e', b'l', b'l', b'o'];
        let first = stream.len();
        stream.extend([0x82, 126, 0x01, 0x2c]);
        stream.extend(std::iter::repeat_n(7, 300));
        let second = stream.len();
        stream.extend([0x82, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
        stream.extend(std::iter::repeat_n(9, 70000));
        for piece in [1, 3, 7, 1000, usize::MAX] {
            let mut frames = Frames::default();
            let mut boundaries = Vec::new();
            let mut at = 0;
            for chunk in stream.chunks(piece.min(stream.len())) {
                for (i, b) in chunk.iter().enumerate() {
                    frames.advance(std::slice::from_ref(b));
                    if frames.at_boundary() {
                        boundaries.push(at + i + 1);
                    }
                }
                at += chunk.len();
            }
            assert_eq!(
                boundaries,
                [first, second, stream.len()],
                "pieces of {piece}"
            );
        }
        let mut whole = Frames::default();
        whole.advance(&stream[..second + 3]);
        assert!(!whole.at_boundary());
        whole.advance(&stream[second + 3..]);
        assert!(whole.at_boundary());
    }

    #[test]
    fn the_close_frame_carries_1001_masked_or_not() {
        assert_eq!(going_away(None), [0x88, 0x02, 0x03, 0xe9]);
        let masked = going_away(Some([0xff, 0, 0, 0]));
        assert_eq!(masked, [0x88, 0x82, 0xff, 0, 0, 0, 0xfc, 0xe9]);
    }
}
