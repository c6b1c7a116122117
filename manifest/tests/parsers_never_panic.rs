//! Parsers face bytes from the network and from hand-edited files: whatever
//! they are fed, they return an error or a value, never panic.

use manifest::document::to_pretty_bytes;
use manifest::{minisign, CohortManifest, PublicKey, ReleaseManifest, SecretKey, TrustedKeys};
use proptest::prelude::*;

const COHORT: &str = r#"{"schema": 1, "kind": "cohort", "product": "neopro", "cohort": "stable", "sequence": 42,
"issued_at": "2026-11-21T10:00:00Z", "expires_at": "2026-12-21T10:00:00Z",
"target": {"version": "1.3.0", "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "size": 812},
"rollout": {"percent": 10}, "allow_downgrade": false}"#;

/// Every optional part present (health checks of each type, hooks), so
/// mutations reach each nested grammar.
const RELEASE: &str = r#"{"schema": 1, "kind": "release", "product": "neopro", "version": "1.3.0-rc.1+b7",
"compatible": ["raspberrypi-arm64", "raspberrypi-armv7"], "created_at": "2026-11-21T10:00:00Z",
"components": [
{"name": "app", "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "size": 48211, "unpacked_size": 190112, "format": "tar.gz"},
{"name": "config", "sha256": "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed", "size": 812, "unpacked_size": 4096, "format": "tar.gz"}],
"health": {"checks": [{"type": "http", "url": "http://127.0.0.1:8080/health", "status": 204},
{"type": "unit", "unit": "app.service"}, {"type": "command", "argv": ["app/bin/selftest", "-q"], "timeout_secs": 30}],
"min_window_secs": 120},
"hooks": {"post_stage": "app/bin/post-stage"}}"#;

const SIG_BLOCK: &str = "untrusted comment: signature from minisign secret key\nRURk0MQrH0QeiVemORKPmY1BqdbCuvL3rn7U5bTMfpVKBEmTXAQfGvJ1yUqpqlP+z7ein1udbMfkBhPSYgB4vDKKHoljBnBDWgI=\ntrusted comment: timestamp:1795265837\tfile:f.txt\thashed\nGTq0s7sg9RWb+fw9EwIr1XmCCNJMAX5jbkbsc8minsvQS1Y4J/WkMkj+XLoNCMZ3DSwHCdOTBPbexCDZ7zPHAQ==\n";

/// Mutate a valid document: flip, insert or delete bytes at random places, so
/// the fuzzing reaches deep into the JSON grammar rather than failing at byte 0.
fn mutated(base: &'static str) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 0..8).prop_map(move |edits| {
        let mut bytes = base.as_bytes().to_vec();
        for (at, byte, op) in edits {
            let i = at % (bytes.len() + 1);
            match op {
                0 if i < bytes.len() => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                _ if i < bytes.len() => {
                    bytes.remove(i);
                }
                _ => {}
            }
        }
        bytes
    })
}

/// The mutation base must be valid, or the mutations test only the error path.
#[test]
fn the_release_base_is_valid() {
    let doc = ReleaseManifest::parse(RELEASE.as_bytes()).unwrap();
    assert_eq!(doc.components.len(), 2);
    assert!(doc.health.is_some() && doc.hooks.is_some());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn manifest_parsers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = CohortManifest::parse(&bytes);
        let _ = ReleaseManifest::parse(&bytes);
    }

    #[test]
    fn mutated_cohorts_never_panic(bytes in mutated(COHORT)) {
        let _ = CohortManifest::parse(&bytes);
        let _ = ReleaseManifest::parse(&bytes);
    }

    #[test]
    fn mutated_releases_never_panic(bytes in mutated(RELEASE)) {
        let _ = CohortManifest::parse(&bytes);
        if let Ok(doc) = ReleaseManifest::parse(&bytes) {
            // What parses also survives being written back (what the
            // builder does with a release it re-reads).
            let again = ReleaseManifest::parse(&to_pretty_bytes(&doc));
            prop_assert_eq!(again.ok(), Some(doc));
        }
    }

    #[test]
    fn minisign_parsers_never_panic(text in "\\PC{0,400}") {
        let _ = minisign::parse_signatures(&text);
        let _ = PublicKey::parse(&text);
        let _ = SecretKey::parse(&text);
    }

    #[test]
    fn mutated_signatures_never_panic_and_never_verify(bytes in mutated(SIG_BLOCK)) {
        let key = PublicKey::parse("RWRk0MQrH0QeiQUOmkdqecqIDmumbQf4OuyYhgCDOIozmrP76gLgIjxa").unwrap();
        let trust = TrustedKeys::new([key], 1).unwrap();
        if let Ok(signers) = trust.verify_bytes("f.txt", b"hello\n", &bytes) {
            // Only a mutation that leaves the signed parts intact may pass
            // (e.g. an edit inside the untrusted comment).
            prop_assert_eq!(signers.len(), 1);
            let blocks = minisign::parse_signatures(std::str::from_utf8(&bytes).unwrap()).unwrap();
            let original = minisign::parse_signatures(SIG_BLOCK).unwrap();
            prop_assert!(blocks.iter().any(|b| b.signature == original[0].signature
                && b.trusted_comment == original[0].trusted_comment));
        }
        let _ = trust.verify_bytes("f.txt", &bytes, SIG_BLOCK.as_bytes());
    }
}
