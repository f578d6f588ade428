//! STUN parsing never panics, and a response that parses re-encodes to one that
//! parses to the same address.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerpipe_proto::stun;

fuzz_target!(|data: &[u8]| {
    let _ = stun::parse_binding_request(data);
    let _ = stun::is_stun(data);
    if data.len() >= 20 {
        let mut txid = [0u8; 12];
        txid.copy_from_slice(&data[8..20]);
        if let Ok(addr) = stun::parse_binding_response(data, txid) {
            let again = stun::binding_response(txid, addr);
            assert_eq!(stun::parse_binding_response(&again, txid), Ok(addr));
        }
    }
});
