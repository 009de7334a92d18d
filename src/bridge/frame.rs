//! The bytes a bridge puts on the wire: one [`Frame`] per message, the same for every
//! engine, so that the engine carries opaque payloads and nothing of our own protocol
//! depends on one engine's headers.
//!
//! # Layout (version 1)
//!
//! | bytes | field |
//! |---|---|
//! | 2 | magic `b"PD"` |
//! | 1 | version, `1` |
//! | 1 | kind: `0` a message, `1` a reply to a tracked message |
//! | 8 | the sending bridge's wire id (little-endian): how a bridge recognises its own frames |
//! | 8 | the message id on the sending relay (little-endian) |
//! | 2 | length of the wire name (little-endian), then that many bytes of UTF-8 |
//! | rest | the payload: the codec's bytes (a message) or an [`Outcome`] (a reply) |
//!
//! Invariant: [`Frame::decode`] accepts exactly what [`Frame::encode`] produces and
//! refuses anything else with a [`FrameError`] naming what was wrong; it never panics,
//! whatever the bytes.

use std::fmt;

const MAGIC: [u8; 2] = *b"PD";
const VERSION: u8 = 1;
const HEADER: usize = 2 + 1 + 1 + 8 + 8 + 2;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameKind {
    /// A bridged message; the payload is the codec's encoding of the value.
    Message,
    /// The answer to a tracked message; the payload is an [`Outcome`].
    Reply,
}

/// One decoded frame, borrowing its payload from the received bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame<'a> {
    pub(crate) kind: FrameKind,
    /// The wire id of the bridge that sent it.
    pub(crate) origin: u64,
    /// The message's id on the relay it was sent from.
    pub(crate) msg_id: u64,
    /// The stable name of the message's type.
    pub(crate) name: &'a str,
    pub(crate) payload: &'a [u8],
}

/// Why bytes received from an engine are not a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// Fewer bytes than the fixed header, or than the name length says.
    Truncated {
        /// How many bytes there were.
        len: usize,
    },
    /// The bytes do not start with the frame magic: not sent by a pipedream bridge.
    NotAFrame,
    /// A frame of a version this build does not read.
    Version(u8),
    /// A frame kind this build does not know.
    Kind(u8),
    /// The wire name is not UTF-8.
    Name,
    /// A reply's outcome could not be read.
    Outcome,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Truncated { len } => write!(f, "truncated frame ({len} bytes)"),
            FrameError::NotAFrame => f.write_str("not a pipedream frame (bad magic)"),
            FrameError::Version(v) => write!(f, "frame version {v} is not supported"),
            FrameError::Kind(k) => write!(f, "unknown frame kind {k}"),
            FrameError::Name => f.write_str("the wire name is not UTF-8"),
            FrameError::Outcome => f.write_str("the reply's outcome is malformed"),
        }
    }
}

impl std::error::Error for FrameError {}

impl<'a> Frame<'a> {
    /// The encoded frame: header, name, then `payload`.
    pub(crate) fn encode(
        kind: FrameKind,
        origin: u64,
        msg_id: u64,
        name: &str,
        payload: &[u8],
    ) -> Vec<u8> {
        // Names are checked at registration (`WireName`), so they fit in a u16.
        let name_len = u16::try_from(name.len()).unwrap_or(u16::MAX);
        let name = &name.as_bytes()[..usize::from(name_len)];
        let mut out = Vec::with_capacity(HEADER + name.len() + payload.len());
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(match kind {
            FrameKind::Message => 0,
            FrameKind::Reply => 1,
        });
        out.extend_from_slice(&origin.to_le_bytes());
        out.extend_from_slice(&msg_id.to_le_bytes());
        out.extend_from_slice(&name_len.to_le_bytes());
        out.extend_from_slice(name);
        out.extend_from_slice(payload);
        out
    }

    /// Reads a frame, or says why the bytes are not one.
    pub(crate) fn decode(bytes: &'a [u8]) -> Result<Frame<'a>, FrameError> {
        let truncated = FrameError::Truncated { len: bytes.len() };
        let Some((header, rest)) = bytes.split_first_chunk::<HEADER>() else {
            return Err(if bytes.len() >= 2 && bytes[..2] != MAGIC {
                FrameError::NotAFrame
            } else {
                truncated
            });
        };
        if header[..2] != MAGIC {
            return Err(FrameError::NotAFrame);
        }
        if header[2] != VERSION {
            return Err(FrameError::Version(header[2]));
        }
        let kind = match header[3] {
            0 => FrameKind::Message,
            1 => FrameKind::Reply,
            other => return Err(FrameError::Kind(other)),
        };
        let word = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&header[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let name_len = usize::from(u16::from_le_bytes([header[20], header[21]]));
        if rest.len() < name_len {
            return Err(truncated);
        }
        let (name, payload) = rest.split_at(name_len);
        let name = std::str::from_utf8(name).map_err(|_| FrameError::Name)?;
        Ok(Frame {
            kind,
            origin: word(4),
            msg_id: word(12),
            name,
            payload,
        })
    }
}

/// What a remote relay answers to a tracked message: its id, and either how many tracked
/// handlers processed the message or what they reported.
///
/// Layout: status byte (`0` processed, `1` failed), the remote relay's id (u64), the
/// number of tracked handlers that processed it (u32), then for a failure the number of
/// errors (u16) and each error's text as a u32 length and UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(not(feature = "nats"), allow(dead_code))]
pub(crate) struct Outcome {
    pub(crate) relay_id: u64,
    pub(crate) handled: u32,
    /// Empty: processed. Otherwise what the remote handlers (or the remote send) reported.
    pub(crate) errors: Vec<String>,
}

#[cfg_attr(not(feature = "nats"), allow(dead_code))]
impl Outcome {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(16 + self.errors.iter().map(|e| e.len() + 4).sum::<usize>());
        out.push(u8::from(!self.errors.is_empty()));
        out.extend_from_slice(&self.relay_id.to_le_bytes());
        out.extend_from_slice(&self.handled.to_le_bytes());
        if !self.errors.is_empty() {
            let count = u16::try_from(self.errors.len()).unwrap_or(u16::MAX);
            out.extend_from_slice(&count.to_le_bytes());
            for error in self.errors.iter().take(usize::from(count)) {
                let len = u32::try_from(error.len()).unwrap_or(u32::MAX);
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(&error.as_bytes()[..len as usize]);
            }
        }
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Outcome, FrameError> {
        let mut at = 0usize;
        let mut take = |n: usize| -> Result<&[u8], FrameError> {
            let end = at.checked_add(n).ok_or(FrameError::Outcome)?;
            let chunk = bytes.get(at..end).ok_or(FrameError::Outcome)?;
            at = end;
            Ok(chunk)
        };
        let failed = match take(1)?[0] {
            0 => false,
            1 => true,
            _ => return Err(FrameError::Outcome),
        };
        let mut relay = [0u8; 8];
        relay.copy_from_slice(take(8)?);
        let mut handled = [0u8; 4];
        handled.copy_from_slice(take(4)?);
        let mut errors = Vec::new();
        if failed {
            let count = take(2)?;
            let count = u16::from_le_bytes([count[0], count[1]]);
            for _ in 0..count {
                let mut len = [0u8; 4];
                len.copy_from_slice(take(4)?);
                let len =
                    usize::try_from(u32::from_le_bytes(len)).map_err(|_| FrameError::Outcome)?;
                let text = std::str::from_utf8(take(len)?).map_err(|_| FrameError::Outcome)?;
                errors.push(text.to_owned());
            }
            if errors.is_empty() {
                errors.push("the remote relay reported a failure without a reason".to_owned());
            }
        }
        if at != bytes.len() {
            return Err(FrameError::Outcome);
        }
        Ok(Outcome {
            relay_id: u64::from_le_bytes(relay),
            handled: u32::from_le_bytes(handled),
            errors,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_reads_back_as_written() {
        let bytes = Frame::encode(FrameKind::Message, 7, 42, "shop.order.v1", b"\x01\x02");
        let frame = Frame::decode(&bytes).unwrap();
        assert_eq!(
            frame,
            Frame {
                kind: FrameKind::Message,
                origin: 7,
                msg_id: 42,
                name: "shop.order.v1",
                payload: b"\x01\x02",
            }
        );
    }

    #[test]
    fn every_prefix_and_every_corruption_is_an_error_not_a_panic() {
        let bytes = Frame::encode(FrameKind::Reply, 1, 2, "name", b"payload");
        for len in 0..HEADER + 4 {
            assert!(Frame::decode(&bytes[..len]).is_err(), "prefix of {len}");
        }
        for at in 0..bytes.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bad = bytes.clone();
                bad[at] ^= flip;
                let _ = Frame::decode(&bad); // must not panic
            }
        }
        assert_eq!(
            Frame::decode(b"hello world, not a frame"),
            Err(FrameError::NotAFrame)
        );
        let mut future = bytes.clone();
        future[2] = 9;
        assert_eq!(Frame::decode(&future), Err(FrameError::Version(9)));
    }

    #[test]
    fn outcomes_read_back_and_refuse_garbage() {
        for outcome in [
            Outcome {
                relay_id: 3,
                handled: 2,
                errors: vec![],
            },
            Outcome {
                relay_id: 4,
                handled: 1,
                errors: vec!["boom".into(), "ünïcode".into()],
            },
        ] {
            assert_eq!(Outcome::decode(&outcome.encode()), Ok(outcome.clone()));
            let bytes = outcome.encode();
            for len in 0..bytes.len() {
                assert!(Outcome::decode(&bytes[..len]).is_err());
            }
        }
        assert_eq!(Outcome::decode(&[2]), Err(FrameError::Outcome));
    }
}
