//! Arbitrary text into the minisign parsers (public key, secret key,
//! signature files) with round trips of whatever parses (docs/FUZZING.md).
#![no_main]

use libfuzzer_sys::fuzz_target;
use manifest::minisign::{parse_signatures, signatures_to_text, PublicKey, SecretKey};

/// A fixed key to verify fuzzed signature blocks with (fuzzing only).
const K1: &str = "untrusted comment: minisign public key FE88694028A07B39\nRWQ5e6AoQGmI/t8Ashr1pDYWM3q7cf4BqR2uF59J76wqSuFIO9v40VhI\n";

fuzz_target!(|data: &[u8]| {
    // Real inputs are UTF-8 (verify_bytes refuses anything else); lossy
    // decoding still lets byte-level mutations through.
    let text = String::from_utf8_lossy(data);
    let text: &str = &text;
    let fixed = PublicKey::parse(K1).unwrap();

    if let Ok(blocks) = parse_signatures(text) {
        assert!(!blocks.is_empty());
        let written = signatures_to_text(&blocks);
        let again = parse_signatures(&written).expect("written signatures parse");
        assert_eq!(again, blocks);
        assert_eq!(signatures_to_text(&again), written);
        for b in &blocks {
            assert_eq!(parse_signatures(&b.to_text()).unwrap(), vec![b.clone()]);
            let _ = fixed.verify(data, b);
            let _ = fixed.verify(b"hello\n", b);
        }
    }

    if let Ok(pk) = PublicKey::parse(text) {
        let file = pk.to_file_text();
        assert_eq!(PublicKey::parse(&file).expect("written key parses"), pk);
        assert_eq!(PublicKey::parse(&pk.to_base64()).expect("bare base64 parses"), pk);
        assert_eq!(PublicKey::parse(&file).unwrap().to_file_text(), file);
        if let Ok(blocks) = parse_signatures(text) {
            for b in &blocks {
                let _ = pk.verify(data, b);
            }
        }
    }

    if let Ok(sk) = SecretKey::parse(text) {
        let file = sk.to_file_text();
        let again = SecretKey::parse(&file).expect("written secret key parses");
        assert_eq!(again.id, sk.id);
        assert_eq!(again.public_key(), sk.public_key());
        assert_eq!(again.to_file_text(), file);
        // A parsed key signs, and its public half verifies that signature.
        let block = sk.sign(data, "fuzz").unwrap();
        sk.public_key().verify(data, &block).expect("own signature verifies");
        let parsed = parse_signatures(&block.to_text()).unwrap();
        assert_eq!(parsed, vec![block]);
        sk.public_key().verify(data, &parsed[0]).unwrap();
        let pk_text = sk.public_key().to_file_text();
        assert_eq!(PublicKey::parse(&pk_text).unwrap(), sk.public_key());
    }
});
