//! Device identity: Ed25519 keys and the device id, their public key in text form.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Length of a device id in its text form: 32 bytes in unpadded lowercase base32.
pub const DEVICE_ID_TEXT_LEN: usize = 52;

/// A device's id: its Ed25519 public key.
///
/// The text form is the 32 key bytes in lowercase base32 without padding
/// (52 characters), which survives copy and paste, shells and URLs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId([u8; 32]);

/// Why a string or byte slice is not a device id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceIdError {
    /// The text does not have the length of a device id.
    #[error("a device id has {DEVICE_ID_TEXT_LEN} characters, got {0}")]
    Length(usize),
    /// The text is not lowercase base32.
    #[error("a device id is lowercase base32 (a-z, 2-7)")]
    Encoding,
    /// The bytes are not a valid Ed25519 public key.
    #[error("not a valid Ed25519 public key")]
    Key,
}

/// Why a signature did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("signature does not verify")]
pub struct SignatureError;

impl DeviceId {
    /// The raw public key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Builds a device id from public key bytes, checking that they are a valid key.
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self, DeviceIdError> {
        VerifyingKey::from_bytes(&bytes).map_err(|_| DeviceIdError::Key)?;
        Ok(Self(bytes))
    }

    /// A short prefix of the text form for logs and progress output.
    pub fn short(&self) -> String {
        let mut s = self.to_string();
        s.truncate(10);
        s
    }

    /// Verifies an Ed25519 signature made by this device over `msg`.
    pub fn verify(&self, msg: &[u8], signature: &[u8; 64]) -> Result<(), SignatureError> {
        let key = VerifyingKey::from_bytes(&self.0).map_err(|_| SignatureError)?;
        key.verify(msg, &Signature::from_bytes(signature))
            .map_err(|_| SignatureError)
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&base32().encode(&self.0))
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({})", self.short())
    }
}

impl FromStr for DeviceId {
    type Err = DeviceIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != DEVICE_ID_TEXT_LEN {
            return Err(DeviceIdError::Length(s.len()));
        }
        let bytes = base32()
            .decode(s.as_bytes())
            .map_err(|_| DeviceIdError::Encoding)?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| DeviceIdError::Encoding)?;
        Self::from_bytes(bytes)
    }
}

impl Serialize for DeviceId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DeviceId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

fn base32() -> data_encoding::Encoding {
    let mut spec = data_encoding::Specification::new();
    spec.symbols.push_str("abcdefghijklmnopqrstuvwxyz234567");
    // The specification above is fixed and valid; encoding() cannot fail on it.
    spec.encoding()
        .unwrap_or_else(|_| data_encoding::BASE32_NOPAD.clone())
}

/// A device's secret key. It never leaves the device.
#[derive(Clone)]
pub struct Identity {
    key: SigningKey,
}

impl Identity {
    /// Builds an identity from 32 secret bytes (a fresh random seed, or one read back
    /// from the identity file). The core has no random source: the caller supplies it.
    pub fn from_secret_bytes(secret: [u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(&secret),
        }
    }

    /// The 32 secret bytes, to persist the identity.
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// This device's id.
    pub fn device_id(&self) -> DeviceId {
        DeviceId(self.key.verifying_key().to_bytes())
    }

    /// Signs `msg` with the device key.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.key.sign(msg).to_bytes()
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("device_id", &self.device_id())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips() {
        let id = Identity::from_secret_bytes([7; 32]).device_id();
        let text = id.to_string();
        assert_eq!(text.len(), DEVICE_ID_TEXT_LEN);
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
        );
        assert_eq!(text.parse::<DeviceId>().unwrap(), id);
    }

    #[test]
    fn bad_text_is_rejected() {
        assert_eq!("abc".parse::<DeviceId>(), Err(DeviceIdError::Length(3)));
        let upper = Identity::from_secret_bytes([7; 32])
            .device_id()
            .to_string()
            .to_uppercase();
        assert_eq!(upper.parse::<DeviceId>(), Err(DeviceIdError::Encoding));
    }

    #[test]
    fn signatures_verify_only_for_the_signer() {
        let a = Identity::from_secret_bytes([1; 32]);
        let b = Identity::from_secret_bytes([2; 32]);
        let sig = a.sign(b"hello");
        assert!(a.device_id().verify(b"hello", &sig).is_ok());
        assert!(a.device_id().verify(b"hellp", &sig).is_err());
        assert!(b.device_id().verify(b"hello", &sig).is_err());
    }
}
