//! How a bridged type becomes bytes and back: the [`Codec`] trait, and [`Postcard`], the
//! default (serde with the `postcard` format).
//!
//! `postcard` is the default because its wire format is specified and frozen since its
//! 1.0 release (a payload written by one build reads in any later one), it is compact
//! (varint integers, no field names) and it is fast. A codec never sees the frame around
//! the payload (`bridge/frame.rs`): names, ids and versions are the bridge's business.

use std::fmt;

/// A payload could not be encoded or decoded.
///
/// # Examples
///
/// ```
/// use pipedream_rs::bridge::CodecError;
/// let e = CodecError::new("unexpected end of input");
/// assert_eq!(e.to_string(), "unexpected end of input");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecError {
    reason: String,
}

impl CodecError {
    /// An error with this reason.
    ///
    /// # Examples
    ///
    /// ```
    /// use pipedream_rs::bridge::CodecError;
    /// assert_eq!(CodecError::new("bad").to_string(), "bad");
    /// ```
    pub fn new(reason: impl fmt::Display) -> Self {
        CodecError {
            reason: reason.to_string(),
        }
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for CodecError {}

/// Turns values of `T` into payload bytes and back. One codec per bridged type and
/// direction; it is shared by the bridge's tasks, so it is `Send + Sync`.
///
/// # Examples
///
/// A codec of its own for a type without serde:
///
/// ```
/// use pipedream_rs::bridge::{Codec, CodecError};
/// struct Celsius(f32);
/// struct LittleEndian;
/// impl Codec<Celsius> for LittleEndian {
///     fn encode(&self, value: &Celsius) -> Result<Vec<u8>, CodecError> {
///         Ok(value.0.to_le_bytes().to_vec())
///     }
///     fn decode(&self, bytes: &[u8]) -> Result<Celsius, CodecError> {
///         let b: [u8; 4] = bytes.try_into().map_err(|_| CodecError::new("expected 4 bytes"))?;
///         Ok(Celsius(f32::from_le_bytes(b)))
///     }
/// }
/// let bytes = LittleEndian.encode(&Celsius(21.5)).unwrap();
/// assert_eq!(LittleEndian.decode(&bytes).unwrap().0, 21.5);
/// assert!(LittleEndian.decode(&[1, 2]).is_err());
/// ```
pub trait Codec<T>: Send + Sync + 'static {
    /// The payload for `value`.
    ///
    /// # Errors
    ///
    /// Whatever the format refuses (the bridge reports it and sends nothing).
    fn encode(&self, value: &T) -> Result<Vec<u8>, CodecError>;

    /// The value a payload encodes.
    ///
    /// # Errors
    ///
    /// Bytes that are not a value of `T` in this format (the bridge reports it, with the
    /// subject, and goes on).
    fn decode(&self, bytes: &[u8]) -> Result<T, CodecError>;
}

/// The default codec: serde with the `postcard` format (see the module docs for why).
///
/// # Examples
///
/// ```
/// use pipedream_rs::bridge::{Codec, Postcard};
/// #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
/// struct Order { id: u64, item: String }
/// let codec = Postcard;
/// let order = Order { id: 7, item: "tea".into() };
/// let bytes = codec.encode(&order).unwrap();
/// let back: Order = codec.decode(&bytes).unwrap();
/// assert_eq!(back, order);
/// assert!(Codec::<Order>::decode(&codec, &[0xff]).is_err());
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Postcard;

impl<T> Codec<T> for Postcard
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    fn encode(&self, value: &T) -> Result<Vec<u8>, CodecError> {
        postcard::to_allocvec(value).map_err(CodecError::new)
    }

    fn decode(&self, bytes: &[u8]) -> Result<T, CodecError> {
        // Trailing bytes are an error too: a payload is exactly one value.
        match postcard::take_from_bytes(bytes) {
            Ok((value, [])) => Ok(value),
            Ok((_, rest)) => Err(CodecError::new(format_args!(
                "{} bytes left over after the value",
                rest.len()
            ))),
            Err(e) => Err(CodecError::new(e)),
        }
    }
}
