//! Signaling text frames from either side: decoding never panics, and whatever
//! decodes re-encodes to a frame that decodes to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerpipe_proto::signal::{ClientMessage, ServerMessage};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(msg) = ClientMessage::decode(text) {
        assert_eq!(ClientMessage::decode(&msg.encode()).ok(), Some(msg));
    }
    if let Ok(msg) = ServerMessage::decode(text) {
        assert_eq!(ServerMessage::decode(&msg.encode()).ok(), Some(msg));
    }
});
