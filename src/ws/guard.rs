//! A bound on fragmented WebSocket messages: [`FrameGuard`] reads the client's bytes on
//! their way to the WebSocket codec and follows the frame headers; a message split into
//! more than `ws.max_fragments` frames ends the read with [`TooManyFragments`] (the
//! connection is closed with 1009). The codec bounds a message's bytes
//! (`ws.max_message_size`), but endless empty continuation frames add no bytes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A client message was split into more frames than allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyFragments {
    pub max: u32,
}

impl std::fmt::Display for TooManyFragments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a message was split into more than {} frames", self.max)
    }
}

impl std::error::Error for TooManyFragments {}

/// Whether a read error is the guard's refusal.
pub fn is_too_many_fragments(e: &io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.is::<TooManyFragments>())
}

/// Follows the frames of a client's byte stream (RFC 6455 §5.2), counting the frames of
/// the message in progress.
#[derive(Debug, Clone)]
pub struct FrameScanner {
    max_fragments: u32,
    /// The frame header being read (at most 14 bytes), or the payload bytes left to skip.
    header: [u8; 14],
    have: usize,
    payload_left: u64,
    /// Frames of the fragmented message in progress (0: none in progress).
    fragments: u32,
    failed: bool,
}

impl FrameScanner {
    pub fn new(max_fragments: u32) -> Self {
        Self {
            max_fragments: max_fragments.max(1),
            header: [0; 14],
            have: 0,
            payload_left: 0,
            fragments: 0,
            failed: false,
        }
    }

    /// The header's full length once its first two bytes are known.
    fn header_len(&self) -> usize {
        let ext = match self.header[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if self.header[1] & 0x80 != 0 { 4 } else { 0 };
        2 + ext + mask
    }

    fn payload_len(&self) -> u64 {
        match self.header[1] & 0x7f {
            126 => u16::from_be_bytes([self.header[2], self.header[3]]) as u64,
            127 => u64::from_be_bytes(self.header[2..10].try_into().expect("8 bytes")),
            n => n as u64,
        }
    }

    /// A whole header was read: counts the frame.
    fn on_header(&mut self) -> Result<(), TooManyFragments> {
        let fin = self.header[0] & 0x80 != 0;
        let opcode = self.header[0] & 0x0f;
        match opcode {
            // Control frames may come between fragments and do not count.
            8..=15 => {}
            0 => {
                if self.fragments > 0 {
                    self.fragments += 1;
                    if self.fragments > self.max_fragments {
                        self.failed = true;
                        return Err(TooManyFragments {
                            max: self.max_fragments,
                        });
                    }
                }
                if fin {
                    self.fragments = 0;
                }
            }
            // A data frame starts a message; without FIN more frames follow.
            _ => self.fragments = if fin { 0 } else { 1 },
        }
        self.payload_left = self.payload_len();
        self.have = 0;
        Ok(())
    }

    /// Feeds bytes the client sent, in order.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), TooManyFragments> {
        if self.failed {
            return Err(TooManyFragments {
                max: self.max_fragments,
            });
        }
        while !data.is_empty() {
            if self.payload_left > 0 {
                let skip = (self.payload_left.min(data.len() as u64)) as usize;
                self.payload_left -= skip as u64;
                data = &data[skip..];
                continue;
            }
            // Header bytes: two first, then the rest of its length.
            let want = if self.have < 2 { 2 } else { self.header_len() };
            let take = (want - self.have).min(data.len());
            self.header[self.have..self.have + take].copy_from_slice(&data[..take]);
            self.have += take;
            data = &data[take..];
            if self.have >= 2 && self.have == self.header_len() {
                self.on_header()?;
            }
        }
        Ok(())
    }
}

/// A connection's I/O with the client's bytes run through a [`FrameScanner`].
pub struct FrameGuard<T> {
    inner: T,
    scanner: FrameScanner,
}

impl<T> FrameGuard<T> {
    pub fn new(inner: T, max_fragments: u32) -> Self {
        Self {
            inner,
            scanner: FrameScanner::new(max_fragments),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for FrameGuard<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        match this.scanner.feed(&buf.filled()[before..]) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e))),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for FrameGuard<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n <= u16::MAX as usize => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let key = [1, 2, 3, 4];
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        f
    }

    #[test]
    fn whole_messages_and_control_frames_pass() {
        let mut s = FrameScanner::new(3);
        let mut bytes = frame(true, 1, b"hello");
        bytes.extend(frame(true, 9, b""));
        bytes.extend(frame(true, 2, &[0u8; 70_000]));
        assert_eq!(s.feed(&bytes), Ok(()));
    }

    #[test]
    fn fragments_up_to_the_limit_pass_one_more_fails() {
        let mut ok = frame(false, 1, b"a");
        ok.extend(frame(false, 0, b""));
        ok.extend(frame(true, 10, b"pong between fragments"));
        ok.extend(frame(true, 0, b"b"));
        let mut s = FrameScanner::new(3);
        assert_eq!(s.feed(&ok), Ok(()));
        // The count starts again with the next message.
        assert_eq!(s.feed(&ok), Ok(()));
        let mut too_many = frame(false, 1, b"a");
        for _ in 0..3 {
            too_many.extend(frame(false, 0, b""));
        }
        let mut s = FrameScanner::new(3);
        assert_eq!(s.feed(&too_many), Err(TooManyFragments { max: 3 }));
        assert!(s.feed(b"x").is_err(), "stays failed");
    }

    #[test]
    fn bytes_may_arrive_one_at_a_time() {
        let mut bytes = frame(false, 1, &[7u8; 300]);
        bytes.extend(frame(false, 0, b""));
        bytes.extend(frame(false, 0, b""));
        let mut s = FrameScanner::new(2);
        let mut result = Ok(());
        for b in &bytes {
            result = result.and(s.feed(std::slice::from_ref(b)));
        }
        assert_eq!(result, Err(TooManyFragments { max: 2 }));
    }
}
