//! The messages around a code's transfer, as the CLI's `send` and `receive`
//! speak them: the sender names its collection ([`ANNOUNCE`] and the hash,
//! or [`ANNOUNCE_TEXT`] for a short text, after [`PREPARING`] while it still
//! hashes); the receiver ends with
//! [`DONE`] once everything is verified and in place, or either side with
//! [`FAILED`] and a reason ([`DECLINED`], [`ENDED`], or what went wrong).

use bytes::Bytes;
use peerpipe_share::hash::Hash;
use wasm_bindgen::JsValue;

use crate::conn::{ConnRef, turn, until};
use crate::js;
use crate::task;

/// First byte of the message in which a sender names its collection.
const ANNOUNCE: u8 = 1;
/// First byte of the message in which a sender names a one-file collection
/// that is a text (`send --text`), shown rather than saved.
const ANNOUNCE_TEXT: u8 = 3;
/// The largest text a sender may offer.
pub(super) const MAX_TEXT: u64 = 64 * 1024;
/// The sender is still hashing: the names follow when it is done.
const PREPARING: &[u8] = &[2];
/// The receiver has every file, verified.
const DONE: &[u8] = b"peerpipe-share-done";
/// The start of the message either side sends when it gives up.
const FAILED: &[u8] = b"peerpipe-share-failed: ";
/// The reason given when the user declined the files.
pub(crate) const DECLINED: &str = "declined";
/// The reason given for a problem of the receiver's own (its sink failed, it
/// cancelled): what and where stays its own.
pub(crate) const ENDED: &str = "the receiver ended the transfer";

/// What a message from the sender before the hash says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Said {
    /// The collection's hash, and whether it is a text.
    Named(Hash, bool),
    /// Still hashing.
    Preparing,
    /// It gave up, for this reason.
    Failed(String),
    /// Anything else: not a sender of files.
    Other,
}

/// Reads one message from the sender.
pub(crate) fn parse(message: &[u8]) -> Said {
    if let Some(reason) = message.strip_prefix(FAILED) {
        return Said::Failed(String::from_utf8_lossy(reason).into_owned());
    }
    if message == PREPARING {
        return Said::Preparing;
    }
    match message.split_first() {
        Some((&kind @ (ANNOUNCE | ANNOUNCE_TEXT), rest)) => match <[u8; 32]>::try_from(rest) {
            Ok(bytes) => Said::Named(Hash::from_bytes(bytes), kind == ANNOUNCE_TEXT),
            Err(_) => Said::Other,
        },
        _ => Said::Other,
    }
}

/// The message that ends a receive that failed, for this reason.
pub(crate) fn failed(reason: &str) -> Bytes {
    let mut m = FAILED.to_vec();
    m.extend_from_slice(reason.as_bytes());
    m.into()
}

/// The message in which a sender names its collection `hash` (of files,
/// not a text).
pub(crate) fn named(hash: &Hash) -> Bytes {
    let mut m = vec![ANNOUNCE];
    m.extend_from_slice(hash.as_bytes());
    m.into()
}

/// The message that tells an early receiver to wait for the hashing.
pub(crate) fn preparing() -> Bytes {
    Bytes::from_static(PREPARING)
}

/// The message that ends a receive that has everything.
pub(crate) fn done() -> Bytes {
    Bytes::from_static(DONE)
}

/// What the sender is told when the receive ends with the error `code`:
/// nothing when it was the sender that stopped or the connection that went;
/// the page's own problems only as "ended".
pub(super) fn reason_for_sender(code: &str, message: &str) -> Option<String> {
    match code {
        "Declined" => Some(DECLINED.to_owned()),
        "SenderStopped" | "PeerClosed" | "PeerDisconnected" | "Local" | "Stopped" | "Integrity"
        | "Handshake" => None,
        "Corrupt" | "Collection" | "TooLarge" | "Protocol" | "NotSending" | "NotFound"
        | "NotHeld" | "Reset" | "TimedOut" => Some(message.to_owned()),
        _ => Some(ENDED.to_owned()),
    }
}

/// Waits for the sender to name its collection (and whether it is a text):
/// within `ms`, or for as long as it says it is still hashing (its
/// connection's time-outs bound that).
pub(super) async fn announced(conn: &ConnRef, ms: f64) -> Result<(Hash, bool), JsValue> {
    let mut preparing = false;
    // At most a few messages come before the name: the first PREPARING is
    // honoured once, anything else ends the wait.
    for _ in 0..2 {
        let next = until(conn, |c| c.poll_message());
        let message = if preparing {
            next.await
        } else {
            task::timeout(ms, next)
                .await
                .ok_or_else(|| js::error("TimedOut", "the sender did not name its files in time"))?
        }?;
        turn(conn);
        match parse(&message) {
            Said::Named(hash, text) => return Ok((hash, text)),
            Said::Preparing if !preparing => preparing = true,
            Said::Failed(why) => {
                return Err(js::error(
                    "SenderStopped",
                    &format!("the sender stopped: {why}"),
                ));
            }
            Said::Preparing | Said::Other => break,
        }
    }
    Err(js::error(
        "NotSending",
        "the device behind this code is not sending files (unexpected message)",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_as_the_cli_writes_them() {
        let hash = Hash::of(b"tree");
        let mut named = vec![ANNOUNCE];
        named.extend_from_slice(hash.as_bytes());
        assert_eq!(parse(&named), Said::Named(hash, false));
        named[0] = ANNOUNCE_TEXT;
        assert_eq!(parse(&named), Said::Named(hash, true));
        named[0] = 4;
        assert_eq!(parse(&named), Said::Other);
        assert_eq!(parse(&named[..32]), Said::Other, "a cut hash");
        assert_eq!(parse(&[2]), Said::Preparing);
        assert_eq!(
            parse(b"peerpipe-share-failed: disk on fire"),
            Said::Failed("disk on fire".into())
        );
        assert_eq!(parse(b""), Said::Other);
        assert_eq!(parse(b"hello"), Said::Other);
        assert_eq!(&failed(DECLINED)[..], b"peerpipe-share-failed: declined");
        assert_eq!(&done()[..], b"peerpipe-share-done");
        assert_eq!(parse(&super::named(&hash)), Said::Named(hash, false));
        assert_eq!(parse(&preparing()), Said::Preparing);
    }

    #[test]
    fn the_sender_hears_only_what_is_its_business() {
        assert_eq!(
            reason_for_sender("Declined", "x").as_deref(),
            Some(DECLINED)
        );
        assert_eq!(
            reason_for_sender("Sink", "writing /home/me/x failed").as_deref(),
            Some(ENDED)
        );
        assert_eq!(
            reason_for_sender("Corrupt", "a group failed verification").as_deref(),
            Some("a group failed verification")
        );
        assert_eq!(reason_for_sender("SenderStopped", "x"), None);
        assert_eq!(reason_for_sender("PeerClosed", "x"), None);
    }
}
