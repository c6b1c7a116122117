//! Arbitrary bytes into the release, cohort and keys.json parsers and into
//! signature and root-of-trust verification (docs/FUZZING.md).
//!
//! Input: `MANIFEST [0xFF SIGNATURE]`. 0xFF never occurs in UTF-8 or JSON, so
//! the seeds (a real manifest, 0xFF, its real `.minisig`) keep both halves
//! intact under mutation and reach every step of `verify_*`.
#![no_main]

use std::path::{Component as PathComponent, Path};

use libfuzzer_sys::fuzz_target;
use manifest::document::{probe_kind, to_pretty_bytes};
use manifest::{
    Anchor, CohortManifest, CohortName, ComponentName, HardwareId, KeyRing, KeysDocument, Kind,
    ProductName, PublicKey, ReleaseManifest, Timestamp, TrustedKeys,
};

/// The keys that signed fuzz/seeds/manifest_json/* (made with
/// `manifest-builder keygen`, fuzzing only).
const K1: &str = "untrusted comment: minisign public key FE88694028A07B39\nRWQ5e6AoQGmI/t8Ashr1pDYWM3q7cf4BqR2uF59J76wqSuFIO9v40VhI\n";
const K2: &str = "untrusted comment: minisign public key E8AA3FC2465AD2B5\nRWS10lpGwj+q6AKEBP/SSzte8sn2K1t/YnWgs/HAfrzbMzIHp4iCsxCh\n";

/// A name that becomes one path component on the device: `slot/<name>`.
fn one_plain_component(name: &str) {
    assert!(!name.is_empty() && name.len() <= 64, "{name:?}");
    assert!(!name.starts_with('.'), "{name:?}");
    let mut parts = Path::new(name).components();
    assert!(matches!(parts.next(), Some(PathComponent::Normal(n)) if n == name), "{name:?}");
    assert!(parts.next().is_none(), "{name:?}");
}

fn check_release(doc: &ReleaseManifest) {
    doc.validate().expect("a parsed release validates");
    ProductName::new(doc.product.as_str()).expect("product name");
    one_plain_component(doc.product.as_str());
    for h in &doc.compatible {
        HardwareId::new(h.as_str()).expect("hardware id");
        assert!(doc.is_compatible_with(h));
    }
    for c in &doc.components {
        ComponentName::new(c.name.as_str()).expect("component name");
        one_plain_component(c.name.as_str());
        assert_eq!(c.sha256.to_hex().parse::<manifest::Sha256Hex>().unwrap(), c.sha256);
        assert!(c.size > 0);
    }
    assert!(doc.content_eq(doc));
    // What a device and the builder compute from a signed release.
    let _ = doc.total_size();
    let _ = doc.total_unpacked_size();
    // Round trip: what our tools write parses back to the same document, and
    // writing that again gives the same bytes.
    let written = to_pretty_bytes(doc);
    let again = ReleaseManifest::parse(&written).expect("re-serialized release parses");
    assert_eq!(&again, doc);
    assert_eq!(to_pretty_bytes(&again), written);
    assert!(CohortManifest::parse(&written).is_err());
}

fn check_cohort(doc: &CohortManifest) {
    doc.validate().expect("a parsed cohort validates");
    ProductName::new(doc.product.as_str()).expect("product name");
    CohortName::new(doc.cohort.as_str()).expect("cohort name");
    one_plain_component(doc.cohort.as_str());
    assert!(doc.sequence >= 1);
    assert!(doc.expires_at > doc.issued_at);
    assert!(doc.is_expired(doc.expires_at));
    assert!(!doc.is_expired(doc.issued_at));
    assert!(doc.target.size >= 1 && doc.target.size <= manifest::MAX_MANIFEST_BYTES as u64);
    assert!(doc.rollout.percent.basis_points() <= 10_000);
    for t in [doc.issued_at, doc.expires_at] {
        assert_eq!(t.to_string().parse::<Timestamp>().unwrap(), t);
    }
    let written = to_pretty_bytes(doc);
    let again = CohortManifest::parse(&written).expect("re-serialized cohort parses");
    assert_eq!(&again, doc);
    assert_eq!(to_pretty_bytes(&again), written);
    assert!(ReleaseManifest::parse(&written).is_err());
}

/// keys.json (the root of trust): what parses is self-consistent, round
/// trips, and its roles are usable key sets.
fn check_keys(doc: &KeysDocument) {
    let ring = doc.trust().expect("a parsed keys.json builds its roles");
    assert!(doc.version >= 1 && doc.expires_at > doc.issued_at);
    assert_eq!(ring.version(), doc.version);
    assert!(ring.ops(doc.issued_at).is_ok());
    assert!(ring.release(doc.expires_at).is_err(), "expired at expires_at");
    let written = to_pretty_bytes(doc);
    let again = KeysDocument::parse(&written).expect("re-serialized keys.json parses");
    assert_eq!(&again, doc);
    assert!(ReleaseManifest::parse(&written).is_err() && CohortManifest::parse(&written).is_err());
}

fuzz_target!(|data: &[u8]| {
    let (doc, sig) = match data.iter().position(|&b| b == 0xFF) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };

    let kind = probe_kind(doc).ok();
    let release = ReleaseManifest::parse(doc);
    let cohort = CohortManifest::parse(doc);
    let keys_doc = KeysDocument::parse(doc);
    let kinds = [release.is_ok(), cohort.is_ok(), keys_doc.is_ok()];
    assert!(kinds.iter().filter(|k| **k).count() <= 1, "one document, two kinds");
    if let Ok(k) = &keys_doc {
        assert_eq!(kind, Some(Kind::Keys));
        check_keys(k);
    }
    if let Ok(r) = &release {
        assert_eq!(kind, Some(Kind::Release));
        check_release(r);
    }
    if let Ok(c) = &cohort {
        assert_eq!(kind, Some(Kind::Cohort));
        check_cohort(c);
    }
    // The strict serde layer alone (what `manifest-builder sign` edits):
    // validate() may refuse, but must not panic.
    // The sums are only promised for validated documents (validate() refuses
    // sizes that add up past 2^64).
    if let Ok(r) = serde_json::from_slice::<ReleaseManifest>(doc) {
        if r.validate().is_ok() {
            let _ = r.total_size();
            let _ = r.total_unpacked_size();
        }
    }
    if let Ok(c) = serde_json::from_slice::<CohortManifest>(doc) {
        let _ = c.validate();
    }

    // Verification with fixed trusted keys: never panics, and success means
    // a trusted key signed these exact bytes.
    let keys = TrustedKeys::new(
        [PublicKey::parse(K1).unwrap(), PublicKey::parse(K2).unwrap()],
        1,
    )
    .unwrap();
    if let Ok(signers) = keys.verify_bytes("fuzz.json", doc, sig) {
        assert!(!signers.is_empty());
        assert!(signers.iter().all(|id| keys.key_ids().any(|k| k == id)));
    }
    if let Ok(v) = keys.verify_release("releases/fuzz.json", doc, sig) {
        assert!(release.is_ok());
        assert_eq!(v.size(), doc.len() as u64);
        check_release(&v.into_inner());
    }
    if let Ok(v) = keys.verify_cohort("cohorts/fuzz.json", doc, sig) {
        assert!(cohort.is_ok());
        check_cohort(&v.into_inner());
    }
    // keys.json against the same keys as pinned roots: a document taken
    // from them also verifies under its own roots (what a device re-reads
    // from trust.json), and as its own anchor it is "the same document".
    if let Ok(ring) = KeyRing::verify(Anchor::Pinned(&keys), doc, sig) {
        assert!(keys_doc.is_ok());
        let again = KeyRing::reload(doc, sig).expect("an accepted keys.json reloads");
        assert_eq!(again.sha256(), ring.sha256());
        let same = KeyRing::verify(Anchor::Ring(&ring), doc, sig).expect("the same document again");
        assert_eq!(same.version(), ring.version());
    }
});
