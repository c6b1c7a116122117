//! The safety net: manifests edited on disk are served only as verified
//! pairs, and readers racing a writer only ever get pairs that verify.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::common::*;

const REJECTED: &str = "manifest_server_manifests_rejected_total";

fn fetch(http: &reqwest::blocking::Client, server: &Server, path: &str) -> (StatusCode, Vec<u8>) {
    let res = http.get(server.url(path)).send().unwrap();
    (res.status(), res.bytes().unwrap().to_vec())
}

#[test]
fn an_unsigned_edit_is_refused_once_and_a_resigned_one_is_served() {
    let store = Store::new();
    store.publish("cohorts/stable.json", &cohort(1));
    let server = Server::start(&store);
    let http = client();
    assert_eq!(fetch(&http, &server, "/cohorts/stable.json").1, cohort(1));
    assert_eq!(server.metric(&http, REJECTED), 0);

    // Hand-edit without re-signing.
    store.replace("cohorts/stable.json", &cohort(2));
    eventually(Duration::from_secs(10), "the bad edit is counted", || {
        (server.metric(&http, REJECTED) > 0).then_some(())
    });
    // Still the old pair, and it still verifies.
    let (status, body) = fetch(&http, &server, "/cohorts/stable.json");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, cohort(1));
    let sig = fetch(&http, &server, "/cohorts/stable.json.minisig").1;
    store
        .trust()
        .verify_bytes("cohorts/stable.json", &body, &sig)
        .unwrap();
    // Other changes in the store rescan it: the same bad edit is not
    // counted or logged again.
    store.publish("cohorts/beta.json", &cohort(1).replace_stable_with("beta"));
    eventually(Duration::from_secs(10), "beta served", || {
        (fetch(&http, &server, "/cohorts/beta.json").0 == StatusCode::OK).then_some(())
    });
    assert_eq!(server.metric(&http, REJECTED), 1);
    let errors: Vec<String> = server
        .stderr()
        .lines()
        .filter(|l| l.contains("ERROR"))
        .map(str::to_string)
        .collect();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].contains("cohorts/stable.json"), "{}", errors[0]);
    assert!(
        errors[0].contains("does not match the signed bytes"),
        "{}",
        errors[0]
    );

    // Re-sign: the new pair is served within 2 s.
    store.publish("cohorts/stable.json", &cohort(2));
    let published = Instant::now();
    eventually(Duration::from_secs(2), "the re-signed pair is served", || {
        (fetch(&http, &server, "/cohorts/stable.json").1 == cohort(2)).then_some(())
    });
    let served_after = published.elapsed();
    let sig = fetch(&http, &server, "/cohorts/stable.json.minisig").1;
    store
        .trust()
        .verify_bytes("cohorts/stable.json", &cohort(2), &sig)
        .unwrap();
    assert_eq!(server.metric(&http, REJECTED), 1, "served after {served_after:?}");

    // A replayed older pair (validly signed, lower sequence) is refused too.
    store.publish("cohorts/stable.json", &cohort(1));
    eventually(Duration::from_secs(10), "the replay is counted", || {
        (server.metric(&http, REJECTED) == 2).then_some(())
    });
    assert_eq!(fetch(&http, &server, "/cohorts/stable.json").1, cohort(2));

    // Deleted from disk: no longer served.
    std::fs::remove_file(store.root().join("cohorts/beta.json")).unwrap();
    eventually(Duration::from_secs(10), "a deleted manifest is unserved", || {
        (fetch(&http, &server, "/cohorts/beta.json").0 == StatusCode::NOT_FOUND).then_some(())
    });
}

trait ReplaceCohort {
    fn replace_stable_with(self, name: &str) -> Vec<u8>;
}

impl ReplaceCohort for Vec<u8> {
    fn replace_stable_with(self, name: &str) -> Vec<u8> {
        String::from_utf8(self)
            .unwrap()
            .replace("\"stable\"", &format!("\"{name}\""))
            .into_bytes()
    }
}

#[test]
fn a_new_manifest_is_a_404_until_it_verifies() {
    let store = Store::new();
    let server = Server::start(&store);
    let http = client();
    store.replace("cohorts/stable.json", &cohort(3));
    eventually(
        Duration::from_secs(10),
        "the unsigned manifest is refused",
        || (server.metric(&http, REJECTED) == 1).then_some(()),
    );
    assert_eq!(
        fetch(&http, &server, "/cohorts/stable.json").0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        fetch(&http, &server, "/cohorts/stable.json.minisig").0,
        StatusCode::NOT_FOUND
    );
    store.replace("cohorts/stable.json.minisig", &store.sign(&cohort(3)));
    eventually(Duration::from_secs(10), "served once signed", || {
        (fetch(&http, &server, "/cohorts/stable.json").1 == cohort(3)).then_some(())
    });
}

#[test]
fn readers_racing_a_writer_only_get_pairs_that_verify() {
    race(true, Duration::ZERO);
}

/// Without --keys nothing is verified, yet a reader must still get a pair
/// that was written together. The writer is slow between its two renames,
/// so rescans often find a new manifest next to the old signature.
#[test]
fn without_keys_readers_racing_a_slow_writer_only_get_pairs_that_verify() {
    race(false, Duration::from_millis(5));
}

/// Readers fetch manifest + signature (If-Match) while a writer publishes
/// `WRITES` pairs, `gap` between each pair's two renames; every pair a
/// reader received must verify with the key the writer signed with.
fn race(verifying: bool, gap: Duration) {
    const WRITES: u64 = 200;
    const READERS: usize = 8;
    let store = Arc::new(Store::new());
    store.publish("cohorts/stable.json", &cohort(1));
    let server = if verifying {
        Server::start(&store)
    } else {
        Server::start_with(&store.root(), &[])
    };
    let base = server.url("/cohorts/stable.json");
    let done = Arc::new(AtomicBool::new(false));
    let pairs = Arc::new(Mutex::new(Vec::<(Vec<u8>, Vec<u8>)>::new()));
    let refetches = Arc::new(std::sync::atomic::AtomicU64::new(0));

    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let (base, done, pairs, refetches) =
                (base.clone(), done.clone(), pairs.clone(), refetches.clone());
            std::thread::spawn(move || {
                let http = client();
                let mut seen = Vec::new();
                while !done.load(Ordering::SeqCst) {
                    let res = http.get(&base).send().unwrap();
                    assert_eq!(res.status(), StatusCode::OK);
                    let etag = res.headers()["etag"].clone();
                    let manifest = res.bytes().unwrap().to_vec();
                    let res = http
                        .get(format!("{base}.minisig"))
                        .header("If-Match", etag.clone())
                        .send()
                        .unwrap();
                    match res.status() {
                        StatusCode::OK => {
                            assert_eq!(res.headers()["etag"], etag);
                            seen.push((manifest, res.bytes().unwrap().to_vec()));
                        }
                        // The pair moved on between the two requests: refetch.
                        StatusCode::PRECONDITION_FAILED => {
                            refetches.fetch_add(1, Ordering::Relaxed);
                        }
                        other => panic!("signature request answered {other}"),
                    }
                }
                pairs.lock().unwrap().extend(seen);
            })
        })
        .collect();

    let started = Instant::now();
    for seq in 2..=WRITES + 1 {
        store.publish_slowly("cohorts/stable.json", &cohort(seq), gap);
        // Spread the writes over a few debounce periods so readers see the
        // pair change many times, not just the first and the last.
        std::thread::sleep(Duration::from_millis(10));
    }
    let http = client();
    eventually(Duration::from_secs(10), "the last pair is served", || {
        (fetch(&http, &server, "/cohorts/stable.json").1 == cohort(WRITES + 1)).then_some(())
    });
    done.store(true, Ordering::SeqCst);
    for reader in readers {
        reader.join().expect("a reader failed");
    }
    assert!(started.elapsed() < Duration::from_secs(120));

    let pairs = pairs.lock().unwrap();
    let trust = store.trust();
    let mut sequences = BTreeSet::new();
    for (manifest, sig) in pairs.iter() {
        trust
            .verify_bytes("cohorts/stable.json", manifest, sig)
            .unwrap_or_else(|e| {
                panic!(
                    "a reader received a pair that does not verify (sequence {}): {e}",
                    sequence_of(manifest)
                )
            });
        sequences.insert(sequence_of(manifest));
    }
    assert!(pairs.len() > 100, "only {} pairs read", pairs.len());
    assert!(
        sequences.len() >= 3,
        "readers saw sequences {sequences:?}: the race was not exercised"
    );
    // Every state the writer left was consistent: nothing was refused.
    assert_eq!(server.metric(&http, REJECTED), 0, "{}", server.stderr());
    eprintln!(
        "{} pairs, {} distinct sequences, {} refetches after 412",
        pairs.len(),
        sequences.len(),
        refetches.load(Ordering::Relaxed)
    );
}
