//! Signaling text frames from either side: decoding never panics, and whatever
//! decodes re-encodes to a frame that decodes to the same message. The same
//! input also feeds the code-exchange decoders: a code message's body
//! (`CodeFrame`) and a typed-in code's text (`Code`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerpipe_proto::code::{Code, CodeFrame};
use peerpipe_proto::signal::{ClientMessage, ServerMessage, decode_code_body};

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = CodeFrame::decode(data) {
        assert_eq!(CodeFrame::decode(&frame.encode()).ok(), Some(frame));
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(msg) = ClientMessage::decode(text) {
        assert_eq!(ClientMessage::decode(&msg.encode()).ok(), Some(msg));
    }
    if let Ok(msg) = ServerMessage::decode(text) {
        assert_eq!(ServerMessage::decode(&msg.encode()).ok(), Some(msg));
    }
    if let Ok(body) = decode_code_body(text) {
        let _ = CodeFrame::decode(&body);
    }
    if let Ok(code) = text.parse::<Code>() {
        assert_eq!(code.to_string().parse::<Code>().ok(), Some(code));
    }
});
