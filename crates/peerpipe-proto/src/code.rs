//! One-time codes: `7-amber-falcon`, and the PAKE that turns one into a key.
//!
//! A code is a *nameplate* (a small number the server hands out, see
//! [`crate::signal::ClientMessage::CodeAllocate`]) and two words from [`WORDS`]
//! that the allocating device picks and never sends to the server. The device
//! that types the code in claims the nameplate; then the two run symmetric
//! SPAKE2 (Ed25519 group) with the whole code as the password, through the
//! server, which learns nothing it could test a guess against. A nameplate can be
//! claimed once, so an attacker gets one online guess in 65 536 per code.
//!
//! After SPAKE2 each side sends a key confirmation (HMAC-SHA256 under a key
//! derived from the SPAKE2 output, over its side and the nameplate) and checks
//! the other's: a mismatch means the two typed different codes
//! ([`PakeError::WrongCode`]). Only then does each side say who it is: a
//! [`CodeFrame::Hello`] with its device id and label, authenticated under the
//! same key. The server tells neither device about the other, so a device
//! that claims a code with the wrong words (a squatter guessing numbers)
//! learns nothing of the device that offered it. On success both hold the
//! same [`Psk`], derived from the SPAKE2 output with another label, which
//! authenticates their session's Noise handshake (`KKpsk2`, see
//! [`crate::session::handshake`]) between exactly the two introduced devices.
//!
//! The exchange is sans-IO, with typed states that consume themselves:
//! [`Pake::start`] gives the first [`CodeFrame`] to send; [`Pake::finish`] takes the
//! peer's and gives a [`Confirm`] (and our confirmation frame); [`Confirm::verify`]
//! takes the peer's confirmation and gives [`Keyed`]; [`Keyed::hello`] is our
//! introduction and [`Keyed::accept`] takes the peer's, giving who it is and the
//! [`Psk`].
//!
//! ```
//! use peerpipe_proto::code::{Code, CodeFrame, Pake, Side};
//! use peerpipe_proto::id::Identity;
//! use peerpipe_proto::signal::PeerInfo;
//!
//! let code: Code = "7-amber-falcon".parse().unwrap();
//! let me = |n, label: &str| PeerInfo {
//!     id: Identity::from_secret_bytes([n; 32]).device_id(),
//!     label: label.into(),
//! };
//! let (alice, bob) = (me(1, "alice's laptop"), me(2, "bob's phone"));
//! let (a, a_msg) = Pake::start(&code, Side::Allocator, [3; 32]);
//! let (b, b_msg) = Pake::start(&code, Side::Claimer, [4; 32]);
//! let (CodeFrame::Pake(a_msg), CodeFrame::Pake(b_msg)) = (a_msg, b_msg) else { unreachable!() };
//! let (a, a_confirm) = a.finish(&b_msg).unwrap();
//! let (b, b_confirm) = b.finish(&a_msg).unwrap();
//! let (CodeFrame::Confirm(a_confirm), CodeFrame::Confirm(b_confirm)) = (a_confirm, b_confirm)
//! else { unreachable!() };
//! let a = a.verify(&b_confirm).unwrap();
//! let b = b.verify(&a_confirm).unwrap();
//! let (a_hello, b_hello) = (a.hello(&alice).encode(), b.hello(&bob).encode());
//! let (who_b, a_psk) = a.accept(&CodeFrame::decode(&b_hello).unwrap()).unwrap();
//! let (who_a, b_psk) = b.accept(&CodeFrame::decode(&a_hello).unwrap()).unwrap();
//! assert_eq!((who_a, who_b), (alice, bob));
//! assert_eq!(a_psk, b_psk);
//! ```

use std::fmt;
use std::str::FromStr;

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use sha2::Sha256;
use spake2::{Ed25519Group, Identity as SpakeIdentity, Password, Spake2};

use crate::id::DeviceId;
pub use crate::session::handshake::Psk;
use crate::signal::{MAX_LABEL_LEN, PeerInfo};

/// The 256 words of a code: distinct, lowercase ASCII, 3 to 8 letters.
pub const WORDS: [&str; 256] = [
    "acid", "acorn", "actor", "adobe", "agent", "alarm", "album", "alley", "amber", "angel",
    "ankle", "apple", "apron", "arena", "arrow", "aspen", "atlas", "attic", "autumn", "award",
    "bacon", "badge", "bagel", "baker", "bamboo", "banjo", "barn", "basil", "basin", "beach",
    "beacon", "bean", "bear", "beaver", "bell", "berry", "bison", "blade", "boat", "bonnet",
    "book", "border", "bottle", "breeze", "brick", "bridge", "brook", "broom", "bubble", "bucket",
    "bugle", "butter", "button", "cabin", "cactus", "camel", "candle", "canoe", "canyon", "carbon",
    "carpet", "castle", "cedar", "cello", "chalk", "cherry", "chess", "cider", "circus", "clay",
    "cliff", "clock", "cloud", "clover", "cobalt", "cocoa", "comet", "copper", "coral", "cotton",
    "cousin", "coyote", "crane", "crayon", "crystal", "cup", "daisy", "dancer", "delta", "desert",
    "diamond", "dinner", "dolphin", "donkey", "dragon", "dream", "drum", "eagle", "earth", "echo",
    "elbow", "ember", "engine", "falcon", "feather", "fern", "fiddle", "finch", "flame", "flute",
    "forest", "fossil", "fox", "galaxy", "garden", "garlic", "gecko", "ginger", "glacier", "globe",
    "goose", "grape", "gravel", "guitar", "hammer", "harbor", "harvest", "hazel", "helmet",
    "heron", "hollow", "honey", "horizon", "hornet", "igloo", "island", "ivory", "jacket",
    "jaguar", "jelly", "jungle", "kayak", "kettle", "kitten", "koala", "ladder", "lagoon",
    "lantern", "lava", "lemon", "lily", "lizard", "lobster", "locket", "lotus", "magnet", "mango",
    "maple", "marble", "meadow", "melon", "meteor", "mint", "mirror", "monkey", "moose", "mosaic",
    "muffin", "napkin", "nectar", "needle", "nest", "noodle", "nutmeg", "oasis", "ocean", "olive",
    "onion", "orange", "orbit", "orchid", "otter", "owl", "paddle", "panda", "paper", "parrot",
    "pasta", "peach", "pebble", "pepper", "piano", "pickle", "pigeon", "pillow", "pine", "planet",
    "plum", "pocket", "pony", "poppy", "potato", "prism", "pumpkin", "puzzle", "quartz", "quill",
    "rabbit", "radar", "raven", "ribbon", "river", "robin", "rocket", "rose", "ruby", "saddle",
    "salmon", "sandal", "saturn", "scarf", "shadow", "shell", "silver", "sketch", "sled", "snail",
    "spider", "spruce", "squid", "staple", "stone", "storm", "sugar", "summit", "sunset", "swan",
    "table", "tiger", "timber", "toast", "tomato", "torch", "tulip", "tunnel", "turtle", "velvet",
    "violin", "walnut", "walrus", "whale", "willow", "window", "wizard", "yogurt", "zebra",
];

/// The most decimal digits of a nameplate in a code's text.
const MAX_NAMEPLATE_DIGITS: usize = 9;
/// The SPAKE2 identity both sides use (symmetric mode).
const SPAKE_ID: &[u8] = b"peerpipe-code-v2";
const CONFIRM_INFO: &[u8] = b"peerpipe-code-v2 confirm";
const PSK_INFO: &[u8] = b"peerpipe-code-v2 psk";
const CONFIRM_DOMAIN: &[u8] = b"peerpipe-code-v2 confirmation\0";
const HELLO_DOMAIN: &[u8] = b"peerpipe-code-v2 hello\0";
/// Length of a SPAKE2 message (side byte and a group element).
pub const PAKE_MSG_LEN: usize = 33;
/// Length of a key confirmation.
pub const CONFIRM_LEN: usize = 32;

/// A one-time code: a nameplate and two words.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Code {
    nameplate: u32,
    words: [u8; 2],
}

impl Code {
    /// The code with `nameplate` (at least 1) and the words at indices `words`
    /// of [`WORDS`]; `None` for nameplate 0.
    pub fn new(nameplate: u32, words: [u8; 2]) -> Option<Self> {
        (nameplate != 0).then_some(Self { nameplate, words })
    }

    /// The nameplate: the number the server knows the code by.
    pub fn nameplate(&self) -> u32 {
        self.nameplate
    }

    /// The two words' indices in [`WORDS`].
    pub fn word_indices(&self) -> [u8; 2] {
        self.words
    }

    /// The two words.
    pub fn words(&self) -> [&'static str; 2] {
        [
            WORDS[usize::from(self.words[0])],
            WORDS[usize::from(self.words[1])],
        ]
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b] = self.words();
        write!(f, "{}-{a}-{b}", self.nameplate)
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The words are the secret part.
        write!(f, "Code({}-<redacted>)", self.nameplate)
    }
}

/// Why a code's text does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodeParseError {
    /// Not of the form `NUMBER-WORD-WORD`.
    #[error("a code looks like 7-amber-falcon: a number and two words, joined by -")]
    Shape,
    /// The number is not 1 to 999999999.
    #[error("the number of a code is 1 to 999999999")]
    Nameplate,
    /// A code chosen by the user has a number over
    /// [`MAX_CHOSEN_NAMEPLATE`](crate::signal::MAX_CHOSEN_NAMEPLATE).
    #[error("the number of a chosen code is 1 to 999999")]
    ChosenNameplate,
    /// A word is not in the code word list.
    #[error("{0:?} is not a code word")]
    Word(String),
}

impl FromStr for Code {
    type Err = CodeParseError;

    /// Parses `NUMBER-WORD-WORD`; surrounding white space and the case of the
    /// words are ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let mut parts = s.split('-');
        let (Some(num), Some(w1), Some(w2), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(CodeParseError::Shape);
        };
        if num.is_empty()
            || num.len() > MAX_NAMEPLATE_DIGITS
            || !num.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(CodeParseError::Nameplate);
        }
        let nameplate: u32 = num.parse().map_err(|_| CodeParseError::Nameplate)?;
        if nameplate == 0 {
            return Err(CodeParseError::Nameplate);
        }
        let word = |w: &str| {
            let lower = w.to_ascii_lowercase();
            WORDS
                .iter()
                .position(|x| *x == lower)
                .and_then(|i| u8::try_from(i).ok())
                .ok_or_else(|| {
                    let mut shown: String = w.chars().take(16).collect();
                    if shown.len() < w.len() {
                        shown.push('…');
                    }
                    CodeParseError::Word(shown)
                })
        };
        Ok(Self {
            nameplate,
            words: [word(w1)?, word(w2)?],
        })
    }
}

/// Which device of a code this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The device that allocated the nameplate and shows the code.
    Allocator,
    /// The device that claimed it with the code typed in.
    Claimer,
}

impl Side {
    fn label(self) -> &'static [u8] {
        match self {
            Self::Allocator => b"alloc",
            Self::Claimer => b"claim",
        }
    }

    fn other(self) -> Self {
        match self {
            Self::Allocator => Self::Claimer,
            Self::Claimer => Self::Allocator,
        }
    }
}

/// A message of the code exchange, the body of a
/// [`CodeMessage`](crate::signal::ClientMessage::CodeMessage).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeFrame {
    /// The SPAKE2 message.
    Pake([u8; PAKE_MSG_LEN]),
    /// The key confirmation.
    Confirm([u8; CONFIRM_LEN]),
    /// Who the sender is, sent once the confirmations matched: its device id,
    /// its label (at most [`MAX_LABEL_LEN`] bytes of UTF-8), and a MAC over
    /// both under the confirmed key.
    Hello {
        /// The sender's device.
        peer: PeerInfo,
        /// HMAC-SHA256 over side, device id, label and nameplate.
        mac: [u8; CONFIRM_LEN],
    },
}

/// Why a code exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PakeError {
    /// A frame is not a valid code frame.
    #[error("malformed code exchange message")]
    Malformed,
    /// The key confirmation does not match: the two devices used different codes.
    #[error("the codes do not match")]
    WrongCode,
}

impl CodeFrame {
    const PAKE: u8 = 1;
    const CONFIRM: u8 = 2;
    const HELLO: u8 = 3;

    /// The frame's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(1 + 32 + 1 + MAX_LABEL_LEN + CONFIRM_LEN);
        match self {
            Self::Pake(m) => {
                v.push(Self::PAKE);
                v.extend_from_slice(m);
            }
            Self::Confirm(m) => {
                v.push(Self::CONFIRM);
                v.extend_from_slice(m);
            }
            Self::Hello { peer, mac } => {
                v.push(Self::HELLO);
                v.extend_from_slice(peer.id.as_bytes());
                // A label is at most MAX_LABEL_LEN (64) bytes: its length fits a byte.
                let label = &peer.label.as_bytes()[..peer.label.len().min(MAX_LABEL_LEN)];
                v.push(label.len() as u8);
                v.extend_from_slice(label);
                v.extend_from_slice(mac);
            }
        }
        v
    }

    /// Decodes a frame; anything but an exact frame is [`PakeError::Malformed`].
    pub fn decode(bytes: &[u8]) -> Result<Self, PakeError> {
        let bad = |_| PakeError::Malformed;
        match bytes.split_first() {
            Some((&Self::PAKE, m)) => m.try_into().map(Self::Pake).map_err(bad),
            Some((&Self::CONFIRM, m)) => m.try_into().map(Self::Confirm).map_err(bad),
            Some((&Self::HELLO, m)) => {
                let (id, rest) = m.split_at_checked(32).ok_or(PakeError::Malformed)?;
                let (&len, rest) = rest.split_first().ok_or(PakeError::Malformed)?;
                let len = usize::from(len);
                if len > MAX_LABEL_LEN || rest.len() != len + CONFIRM_LEN {
                    return Err(PakeError::Malformed);
                }
                let (label, mac) = rest.split_at(len);
                let id: [u8; 32] = id.try_into().map_err(bad)?;
                let label = std::str::from_utf8(label).map_err(|_| PakeError::Malformed)?;
                if label.chars().any(char::is_control) {
                    return Err(PakeError::Malformed);
                }
                Ok(Self::Hello {
                    peer: PeerInfo {
                        id: DeviceId::from_bytes(id).map_err(|_| PakeError::Malformed)?,
                        label: label.to_owned(),
                    },
                    mac: mac.try_into().map_err(bad)?,
                })
            }
            _ => Err(PakeError::Malformed),
        }
    }
}

/// The first state of the exchange: our SPAKE2 message is out.
pub struct Pake {
    spake: Spake2<Ed25519Group>,
    side: Side,
    nameplate: u32,
}

impl fmt::Debug for Pake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pake")
            .field("side", &self.side)
            .field("nameplate", &self.nameplate)
            .finish_non_exhaustive()
    }
}

impl Pake {
    /// Starts the exchange for `code` as `side`; `seed` (32 random bytes from the
    /// caller) feeds the SPAKE2 scalar. Returns the frame to send.
    pub fn start(code: &Code, side: Side, seed: [u8; 32]) -> (Self, CodeFrame) {
        let password = Password::new(code.to_string().as_bytes());
        let (spake, msg) = Spake2::<Ed25519Group>::start_symmetric_with_rng(
            &password,
            &SpakeIdentity::new(SPAKE_ID),
            ChaCha20Rng::from_seed(seed),
        );
        let mut out = [0; PAKE_MSG_LEN];
        // SPAKE2 over Ed25519 always gives 33 bytes.
        if msg.len() == PAKE_MSG_LEN {
            out.copy_from_slice(&msg);
        }
        let pake = Self {
            spake,
            side,
            nameplate: code.nameplate,
        };
        (pake, CodeFrame::Pake(out))
    }

    /// Takes the peer's SPAKE2 message; returns the next state and our key
    /// confirmation frame.
    pub fn finish(self, peer_msg: &[u8; PAKE_MSG_LEN]) -> Result<(Confirm, CodeFrame), PakeError> {
        let key = self
            .spake
            .finish(peer_msg)
            .map_err(|_| PakeError::Malformed)?;
        let hk = Hkdf::<Sha256>::new(None, &key);
        let mut confirm_key = [0; 32];
        let mut psk = [0; 32];
        hk.expand(CONFIRM_INFO, &mut confirm_key)
            .and_then(|()| hk.expand(PSK_INFO, &mut psk))
            .map_err(|_| PakeError::Malformed)?;
        let confirm = Confirm {
            confirm_key,
            psk: Psk(psk),
            side: self.side,
            nameplate: self.nameplate,
        };
        let mine = confirm.mac(self.side).finalize().into_bytes().into();
        Ok((confirm, CodeFrame::Confirm(mine)))
    }
}

/// The second state: waiting for the peer's key confirmation.
pub struct Confirm {
    confirm_key: [u8; 32],
    psk: Psk,
    side: Side,
    nameplate: u32,
}

impl fmt::Debug for Confirm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Confirm")
            .field("side", &self.side)
            .field("nameplate", &self.nameplate)
            .finish_non_exhaustive()
    }
}

impl Confirm {
    fn mac(&self, side: Side) -> Hmac<Sha256> {
        let mut mac = keyed_mac(&self.confirm_key, CONFIRM_DOMAIN, side);
        mac.update(&self.nameplate.to_be_bytes());
        mac
    }

    /// Checks the peer's confirmation; on success both sides hold the same key.
    pub fn verify(self, confirmation: &[u8; CONFIRM_LEN]) -> Result<Keyed, PakeError> {
        self.mac(self.side.other())
            .verify_slice(confirmation)
            .map_err(|_| PakeError::WrongCode)?;
        Ok(Keyed {
            confirm_key: self.confirm_key,
            psk: self.psk,
            side: self.side,
            nameplate: self.nameplate,
        })
    }
}

/// The third state: the confirmations matched; the two introduce themselves.
pub struct Keyed {
    confirm_key: [u8; 32],
    psk: Psk,
    side: Side,
    nameplate: u32,
}

impl fmt::Debug for Keyed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyed")
            .field("side", &self.side)
            .field("nameplate", &self.nameplate)
            .finish_non_exhaustive()
    }
}

impl Keyed {
    fn mac(&self, side: Side, peer: &PeerInfo) -> Hmac<Sha256> {
        let mut mac = keyed_mac(&self.confirm_key, HELLO_DOMAIN, side);
        mac.update(peer.id.as_bytes());
        mac.update(&[peer.label.len().min(MAX_LABEL_LEN) as u8]);
        mac.update(&peer.label.as_bytes()[..peer.label.len().min(MAX_LABEL_LEN)]);
        mac.update(&self.nameplate.to_be_bytes());
        mac
    }

    /// Our introduction: `me` is this device (a longer label is cut to
    /// [`MAX_LABEL_LEN`] bytes, on a character boundary).
    pub fn hello(&self, me: &PeerInfo) -> CodeFrame {
        let mut label = me.label.clone();
        while label.len() > MAX_LABEL_LEN {
            label.pop();
        }
        let peer = PeerInfo { id: me.id, label };
        let mac = self.mac(self.side, &peer).finalize().into_bytes().into();
        CodeFrame::Hello { peer, mac }
    }

    /// Takes the peer's introduction; returns who it is and the key their
    /// session's handshake must prove.
    pub fn accept(self, hello: &CodeFrame) -> Result<(PeerInfo, Psk), PakeError> {
        let CodeFrame::Hello { peer, mac } = hello else {
            return Err(PakeError::Malformed);
        };
        self.mac(self.side.other(), peer)
            .verify_slice(mac)
            .map_err(|_| PakeError::WrongCode)?;
        Ok((peer.clone(), self.psk))
    }
}

/// HMAC-SHA256 under `key`, started with `domain` and `side`.
fn keyed_mac(key: &[u8; 32], domain: &[u8], side: Side) -> Hmac<Sha256> {
    // A 32-byte key always fits HMAC.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(domain);
    mac.update(side.label());
    mac
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Identity;

    #[test]
    fn words_are_distinct_short_lowercase_ascii() {
        let mut sorted = WORDS.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 256);
        for w in WORDS {
            assert!((3..=8).contains(&w.len()), "{w}");
            assert!(w.bytes().all(|b| b.is_ascii_lowercase()), "{w}");
        }
    }

    #[test]
    fn codes_parse_and_print() {
        let code: Code = "7-amber-falcon".parse().unwrap();
        assert_eq!(code.nameplate(), 7);
        assert_eq!(code.words(), ["amber", "falcon"]);
        assert_eq!(code.to_string(), "7-amber-falcon");
        assert_eq!(" 7-Amber-FALCON\n".parse::<Code>().unwrap(), code);
        assert_eq!(format!("{code:?}"), "Code(7-<redacted>)");
        let big: Code = "999999999-acid-zebra".parse().unwrap();
        assert_eq!(big.nameplate(), 999_999_999);
        for i in 0..=255u8 {
            let c = Code::new(1, [i, 255 - i]).unwrap();
            assert_eq!(c.to_string().parse::<Code>().unwrap(), c);
        }
        assert_eq!(Code::new(0, [0, 0]), None);
    }

    #[test]
    fn malformed_codes_are_typed_errors() {
        use CodeParseError as E;
        let err = |s: &str| s.parse::<Code>().unwrap_err();
        for shape in [
            "",
            "7",
            "7-amber",
            "7-amber-falcon-x",
            "7--amber",
            "7 amber falcon",
        ] {
            assert!(
                matches!(err(shape), E::Shape | E::Nameplate | E::Word(_)),
                "{shape}"
            );
        }
        assert_eq!(err("7-amber"), E::Shape);
        assert_eq!(err("7-amber-falcon-x"), E::Shape);
        assert_eq!(err("0-amber-falcon"), E::Nameplate);
        assert_eq!(err("-1-amber-falcon"), E::Shape);
        assert_eq!(err("+7-amber-falcon"), E::Nameplate);
        assert_eq!(err("x-amber-falcon"), E::Nameplate);
        assert_eq!(err("1234567890-amber-falcon"), E::Nameplate);
        assert_eq!(err("7-amber-falcons"), E::Word("falcons".into()));
        assert_eq!(err("7-ämber-falcon"), E::Word("ämber".into()));
        assert!(
            matches!(err(&format!("7-{}-falcon", "a".repeat(100))), E::Word(w) if w.chars().count() == 17)
        );
    }

    fn info(n: u8, label: &str) -> PeerInfo {
        PeerInfo {
            id: Identity::from_secret_bytes([n; 32]).device_id(),
            label: label.into(),
        }
    }

    fn decode(f: CodeFrame) -> CodeFrame {
        CodeFrame::decode(&f.encode()).unwrap()
    }

    /// Runs both sides to their confirmations' check.
    fn run(a_code: &str, b_code: &str) -> (Result<Keyed, PakeError>, Result<Keyed, PakeError>) {
        let (a, am) = Pake::start(&a_code.parse().unwrap(), Side::Allocator, [5; 32]);
        let (b, bm) = Pake::start(&b_code.parse().unwrap(), Side::Claimer, [6; 32]);
        let (CodeFrame::Pake(am), CodeFrame::Pake(bm)) = (decode(am), decode(bm)) else {
            panic!("pake frames")
        };
        let (a, ac) = a.finish(&bm).unwrap();
        let (b, bc) = b.finish(&am).unwrap();
        let (CodeFrame::Confirm(ac), CodeFrame::Confirm(bc)) = (decode(ac), decode(bc)) else {
            panic!("confirm frames")
        };
        (a.verify(&bc), b.verify(&ac))
    }

    #[test]
    fn same_code_gives_the_same_key_and_the_introductions() {
        let (a, b) = run("3-amber-falcon", "3-amber-falcon");
        let (a, b) = (a.unwrap(), b.unwrap());
        let (alice, bob) = (info(1, "alice"), info(2, "bob ✓"));
        let (a_hello, b_hello) = (decode(a.hello(&alice)), decode(b.hello(&bob)));
        let (who_b, ka) = a.accept(&b_hello).unwrap();
        let (who_a, kb) = b.accept(&a_hello).unwrap();
        assert_eq!((who_a, who_b), (alice, bob));
        assert_eq!(ka, kb);
    }

    #[test]
    fn different_codes_fail_on_both_sides_before_anyone_is_introduced() {
        let (a, b) = run("3-amber-falcon", "3-amber-fox");
        assert_eq!(a.err(), Some(PakeError::WrongCode));
        assert_eq!(b.err(), Some(PakeError::WrongCode));
    }

    #[test]
    fn a_forged_or_reflected_introduction_is_refused() {
        let (a, b) = run("3-amber-falcon", "3-amber-falcon");
        let (a, b) = (a.unwrap(), b.unwrap());
        let alice = info(1, "alice");
        // Our own introduction sent back does not verify.
        let mine = a.hello(&alice);
        let (a2, _) = run("3-amber-falcon", "3-amber-falcon");
        assert_eq!(a2.unwrap().accept(&mine).err(), Some(PakeError::WrongCode));
        // Another device or label under the peer's MAC does not either.
        let CodeFrame::Hello { mac, .. } = b.hello(&info(2, "bob")) else {
            panic!()
        };
        let forged = CodeFrame::Hello {
            peer: info(9, "bob"),
            mac,
        };
        assert_eq!(a.accept(&forged).err(), Some(PakeError::WrongCode));
    }

    #[test]
    fn a_long_label_is_cut_on_a_character_boundary() {
        let (a, _) = run("3-amber-falcon", "3-amber-falcon");
        let long = info(1, &"é".repeat(40));
        let CodeFrame::Hello { peer, .. } = decode(a.unwrap().hello(&long)) else {
            panic!()
        };
        assert_eq!(peer.label, "é".repeat(32));
    }

    #[test]
    fn a_reflected_confirmation_is_refused() {
        let code: Code = "3-amber-falcon".parse().unwrap();
        let (a, _) = Pake::start(&code, Side::Allocator, [5; 32]);
        let (_, bm) = Pake::start(&code, Side::Claimer, [6; 32]);
        let CodeFrame::Pake(bm) = bm else { panic!() };
        let (a, ac) = a.finish(&bm).unwrap();
        let CodeFrame::Confirm(ac) = ac else { panic!() };
        assert_eq!(a.verify(&ac).err(), Some(PakeError::WrongCode));
    }

    #[test]
    fn frames_decode_strictly() {
        assert_eq!(CodeFrame::decode(&[]), Err(PakeError::Malformed));
        assert_eq!(CodeFrame::decode(&[1; 33]), Err(PakeError::Malformed));
        assert_eq!(CodeFrame::decode(&[2; 34]), Err(PakeError::Malformed));
        assert_eq!(CodeFrame::decode(&[3; 33]), Err(PakeError::Malformed));
        assert!(CodeFrame::decode(&[1; 34]).is_ok());
        assert!(CodeFrame::decode(&[2; 33]).is_ok());
        let mut hello = vec![3];
        hello.extend(info(1, "").id.as_bytes());
        hello.push(2);
        hello.extend(b"ok");
        hello.extend([0; 32]);
        assert!(CodeFrame::decode(&hello).is_ok());
        let mut long = hello.clone();
        long.push(0);
        assert_eq!(CodeFrame::decode(&long), Err(PakeError::Malformed));
        let mut control = hello.clone();
        control[34] = b'\n';
        assert_eq!(CodeFrame::decode(&control), Err(PakeError::Malformed));
        let mut too_long = vec![3];
        too_long.extend(info(1, "").id.as_bytes());
        too_long.push(65);
        too_long.extend([b'a'; 65]);
        too_long.extend([0; 32]);
        assert_eq!(CodeFrame::decode(&too_long), Err(PakeError::Malformed));
        let code: Code = "3-amber-falcon".parse().unwrap();
        let (a, _) = Pake::start(&code, Side::Allocator, [5; 32]);
        assert_eq!(a.finish(&[0; 33]).err(), Some(PakeError::Malformed));
    }
}
