//! The node's WebSocket frames as they go on the wire (RFC 6455 §5.2): a server's frames
//! are not masked, so a frame is encoded once and the same bytes are written to every
//! connection that gets it. A fan-out batch is one buffer holding its frames back to back;
//! a connection that needs only the newer ones gets a slice of it.

use bytes::{BufMut, Bytes, BytesMut};

const FIN: u8 = 0x80;
const OP_TEXT: u8 = 0x1;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;

/// A ping with no payload.
pub const PING: &[u8] = &[FIN | OP_PING, 0];

fn header(out: &mut BytesMut, opcode: u8, len: usize) {
    out.put_u8(FIN | opcode);
    if len < 126 {
        out.put_u8(len as u8);
    } else if len <= u16::MAX as usize {
        out.put_u8(126);
        out.put_u16(len as u16);
    } else {
        out.put_u8(127);
        out.put_u64(len as u64);
    }
}

/// The length of a frame header for a payload of `len` bytes.
fn header_len(len: usize) -> usize {
    match len {
        0..=125 => 2,
        126..=65535 => 4,
        _ => 10,
    }
}

/// One text frame.
pub fn text(payload: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(header_len(payload.len()) + payload.len());
    header(&mut out, OP_TEXT, payload.len());
    out.put_slice(payload.as_bytes());
    out.freeze()
}

/// A close frame with `code` and `reason` (a reason is at most 123 bytes; longer ones are
/// cut at a character boundary).
pub fn close(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = &reason[..end];
    let mut out = BytesMut::with_capacity(4 + reason.len());
    header(&mut out, OP_CLOSE, 2 + reason.len());
    out.put_u16(code);
    out.put_slice(reason.as_bytes());
    out.freeze()
}

/// Text frames encoded back to back in one buffer, each with a key (a chat sequence
/// number), in ascending key order.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    bytes: Bytes,
    /// `(key, where the frame starts)`.
    frames: Vec<(u64, usize)>,
}

impl Batch {
    /// Encodes `frames` (ascending keys).
    pub fn encode<'a>(frames: impl IntoIterator<Item = (u64, &'a str)> + Clone) -> Self {
        let len: usize = frames
            .clone()
            .into_iter()
            .map(|(_, f)| header_len(f.len()) + f.len())
            .sum();
        let mut out = BytesMut::with_capacity(len);
        let mut starts = Vec::new();
        for (key, f) in frames {
            debug_assert!(
                starts.last().is_none_or(|(k, _)| *k < key),
                "ascending keys"
            );
            starts.push((key, out.len()));
            header(&mut out, OP_TEXT, f.len());
            out.put_slice(f.as_bytes());
        }
        Self {
            bytes: out.freeze(),
            frames: starts,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// The last key.
    pub fn last_key(&self) -> Option<u64> {
        self.frames.last().map(|(k, _)| *k)
    }

    /// The frames with a key above `after`: their bytes (a slice of the shared buffer) and
    /// how many there are.
    pub fn after(&self, after: u64) -> (Bytes, usize) {
        let i = self.frames.partition_point(|(k, _)| *k <= after);
        match self.frames.get(i) {
            Some((_, start)) => (self.bytes.slice(*start..), self.frames.len() - i),
            None => (Bytes::new(), 0),
        }
    }

    /// This batch with `more` frames appended (keys above this batch's).
    pub fn extended<'a>(&self, more: impl IntoIterator<Item = (u64, &'a str)> + Clone) -> Self {
        let tail = Self::encode(more);
        let mut bytes = BytesMut::with_capacity(self.bytes.len() + tail.bytes.len());
        bytes.extend_from_slice(&self.bytes);
        bytes.extend_from_slice(&tail.bytes);
        let base = self.bytes.len();
        let mut frames = self.frames.clone();
        frames.extend(tail.frames.iter().map(|(k, s)| (*k, base + s)));
        Self {
            bytes: bytes.freeze(),
            frames,
        }
    }

    /// The frames with a key above `after`, as a batch of their own (sharing the buffer).
    pub fn tail(&self, after: u64) -> Self {
        let i = self.frames.partition_point(|(k, _)| *k <= after);
        let Some((_, start)) = self.frames.get(i) else {
            return Self::default();
        };
        Self {
            bytes: self.bytes.slice(*start..),
            frames: self.frames[i..]
                .iter()
                .map(|(k, s)| (*k, s - start))
                .collect(),
        }
    }

    /// Each frame with its key, as its own slice of the shared buffer.
    pub fn frames(&self) -> impl Iterator<Item = (u64, Bytes)> + '_ {
        self.frames.iter().enumerate().map(|(i, (k, start))| {
            let end = self.frames.get(i + 1).map_or(self.bytes.len(), |(_, s)| *s);
            (*k, self.bytes.slice(*start..end))
        })
    }
}

/// The payload of one unmasked frame (for tests).
#[cfg(test)]
pub fn payload(frame: &[u8]) -> &[u8] {
    let (start, len) = match frame[1] & 0x7f {
        126 => (4, u16::from_be_bytes([frame[2], frame[3]]) as usize),
        127 => (
            10,
            u64::from_be_bytes(frame[2..10].try_into().expect("8 bytes")) as usize,
        ),
        n => (2, n as usize),
    };
    &frame[start..start + len]
}

/// Splits back-to-back unmasked frames into their payloads as text (for tests).
#[cfg(test)]
pub fn texts(mut bytes: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let p = payload(bytes);
        let header = header_len(p.len());
        out.push(String::from_utf8_lossy(p).into_owned());
        bytes = &bytes[header + p.len()..];
    }
    out
}

/// [`texts`] of several buffers, in order (for tests).
#[cfg(test)]
pub fn texts_of(bufs: &[Bytes]) -> Vec<String> {
    bufs.iter().flat_map(|b| texts(b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tungstenite::protocol::{Message, Role, WebSocket};

    /// What a client's WebSocket codec reads from `bytes`.
    fn client_reads(bytes: &[u8]) -> Vec<Message> {
        let mut ws =
            WebSocket::from_raw_socket(std::io::Cursor::new(bytes.to_vec()), Role::Client, None);
        let mut out = Vec::new();
        while let Ok(m) = ws.read() {
            out.push(m);
        }
        out
    }

    #[test]
    fn frames_of_every_length_class_read_back() {
        for len in [0, 1, 125, 126, 65535, 65536, 200_000] {
            let body = "x".repeat(len);
            let got = client_reads(&text(&body));
            assert_eq!(got, vec![Message::text(body.clone())], "length {len}");
            assert_eq!(texts(&text(&body)), vec![body]);
        }
    }

    #[test]
    fn close_and_ping_read_back() {
        let got = client_reads(&close(4002, "slow_consumer"));
        match &got[..] {
            [Message::Close(Some(f))] => {
                assert_eq!(u16::from(f.code), 4002);
                assert_eq!(f.reason.as_str(), "slow_consumer");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(&client_reads(PING)[..], [Message::Ping(p)] if p.is_empty()));
        // A long reason is cut to fit a control frame, at a character boundary.
        let long = "é".repeat(100);
        assert!(close(1000, &long).len() <= 127);
    }

    #[test]
    fn a_batch_slices_the_frames_after_a_key() {
        let b = Batch::encode([(5, "m5"), (6, "m6"), (9, "m9")]);
        assert_eq!(b.len(), 3);
        assert_eq!(b.last_key(), Some(9));
        let (bytes, n) = b.after(5);
        assert_eq!(n, 2);
        assert_eq!(texts(&bytes), vec!["m6", "m9"]);
        assert_eq!(b.after(0).1, 3);
        assert_eq!(b.after(9), (Bytes::new(), 0));
        let each: Vec<(u64, Vec<String>)> = b.frames().map(|(k, f)| (k, texts(&f))).collect();
        assert_eq!(
            each,
            vec![
                (5, vec!["m5".to_string()]),
                (6, vec!["m6".to_string()]),
                (9, vec!["m9".to_string()])
            ]
        );
        let got = client_reads(&b.after(0).0);
        assert_eq!(got.len(), 3);
    }

    #[test]
    fn a_batch_grows_and_keeps_its_tail() {
        let b = Batch::encode([(5, "m5"), (6, "m6")]).extended([(7, "m7"), (8, "m8")]);
        assert_eq!(texts(&b.after(0).0), vec!["m5", "m6", "m7", "m8"]);
        assert_eq!(texts(&b.after(6).0), vec!["m7", "m8"]);
        let t = b.tail(6);
        assert_eq!(t.len(), 2);
        assert_eq!(t.last_key(), Some(8));
        assert_eq!(texts(&t.after(7).0), vec!["m8"]);
        assert!(b.tail(8).is_empty());
    }
}
