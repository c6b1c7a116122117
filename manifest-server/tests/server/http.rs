//! Statuses and headers: 200/304/206/416/404/405/412, HEAD, byte-exact ranges.

use reqwest::blocking::Response;
use reqwest::StatusCode;

use crate::common::*;

fn header(res: &Response, name: &str) -> String {
    res.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header in {:?}", res.headers()))
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn manifests_carry_one_etag_per_pair_and_revalidate() {
    let store = Store::new();
    let body = cohort(7);
    store.publish("cohorts/stable.json", &body);
    let server = Server::start(&store);
    let http = client();
    let url = server.url("/cohorts/stable.json");

    let res = http.get(&url).send().unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "content-type"), "application/json");
    assert_eq!(header(&res, "cache-control"), "no-cache");
    assert_eq!(header(&res, "accept-ranges"), "bytes");
    assert_eq!(header(&res, "content-length"), body.len().to_string());
    let etag = header(&res, "etag");
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && etag.len() > 20,
        "{etag}"
    );
    assert_eq!(res.bytes().unwrap(), body);

    // The signature: same ETag, text, and it verifies over the manifest.
    let res = http
        .get(server.url("/cohorts/stable.json.minisig"))
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "etag"), etag);
    assert_eq!(header(&res, "content-type"), "text/plain; charset=utf-8");
    assert_eq!(header(&res, "cache-control"), "no-cache");
    let sig = res.bytes().unwrap();
    store
        .trust()
        .verify_bytes("cohorts/stable.json", &body, &sig)
        .unwrap();

    // The idle poll.
    let res = http.get(&url).header("If-None-Match", &etag).send().unwrap();
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(&res, "etag"), etag);
    assert_eq!(header(&res, "cache-control"), "no-cache");
    assert!(res.bytes().unwrap().is_empty());
    let res = http
        .get(&url)
        .header("If-None-Match", "\"other\"")
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    // If-Match on the signature: the current pair passes, an old one is 412.
    let sig_url = server.url("/cohorts/stable.json.minisig");
    let res = http.get(&sig_url).header("If-Match", &etag).send().unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = http.get(&sig_url).header("If-Match", "\"stale\"").send().unwrap();
    assert_eq!(res.status(), StatusCode::PRECONDITION_FAILED);

    // HEAD: the GET headers, no body.
    let res = http.head(&url).send().unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "content-length"), body.len().to_string());
    assert_eq!(header(&res, "etag"), etag);
    assert!(res.bytes().unwrap().is_empty());

    // Ranges work on manifests too.
    let res = http.get(&url).header("Range", "bytes=2-11").send().unwrap();
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        header(&res, "content-range"),
        format!("bytes 2-11/{}", body.len())
    );
    assert_eq!(res.bytes().unwrap(), body[2..12]);

    // A release manifest is served from the snapshot as well.
    let release = br#"{"schema": 1, "kind": "release", "product": "neopro", "version": "1.3.0",
  "compatible": ["raspberrypi-arm64"], "created_at": "2026-11-21T10:00:00Z",
  "components": [{"name": "app", "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
    "size": 3, "unpacked_size": 3, "format": "tar.gz"}]}"#;
    store.publish("releases/1.3.0.json", release);
    let res = eventually(std::time::Duration::from_secs(10), "release served", || {
        let res = http.get(server.url("/releases/1.3.0.json")).send().unwrap();
        (res.status() == StatusCode::OK).then_some(res)
    });
    assert_eq!(header(&res, "cache-control"), "no-cache");
    assert_eq!(res.bytes().unwrap(), release.as_slice());
}

#[test]
fn artifacts_stream_with_exact_ranges() {
    const LEN: usize = 5 << 20;
    let store = Store::new();
    let data = random_bytes(LEN);
    let name = store.put_artifact(&data);
    let server = Server::start(&store);
    let http = client();
    let url = server.url(&format!("/artifacts/{name}"));
    let etag = format!("\"{name}\"");

    let res = http.get(&url).send().unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "etag"), etag);
    assert_eq!(
        header(&res, "cache-control"),
        "public, max-age=31536000, immutable"
    );
    assert_eq!(header(&res, "content-type"), "application/octet-stream");
    assert_eq!(header(&res, "accept-ranges"), "bytes");
    assert_eq!(header(&res, "content-length"), LEN.to_string());
    assert!(res.bytes().unwrap() == data, "full body differs");

    let res = http.head(&url).send().unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "content-length"), LEN.to_string());
    assert_eq!(header(&res, "etag"), etag);
    assert!(res.bytes().unwrap().is_empty());

    // Start, middle (across chunk boundaries), end, open-ended, suffix.
    let mid = LEN / 2 - 1000;
    for (range, start, end) in [
        ("bytes=0-0".to_string(), 0, 0),
        ("bytes=0-99".to_string(), 0, 99),
        (format!("bytes={mid}-{}", mid + 700_000), mid, mid + 700_000),
        (format!("bytes={}-", LEN - 12345), LEN - 12345, LEN - 1),
        ("bytes=-1000".to_string(), LEN - 1000, LEN - 1),
        (format!("bytes={}-{}", LEN - 10, LEN + 500), LEN - 10, LEN - 1),
    ] {
        let res = http.get(&url).header("Range", &range).send().unwrap();
        assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            header(&res, "content-range"),
            format!("bytes {start}-{end}/{LEN}"),
            "{range}"
        );
        assert_eq!(
            header(&res, "content-length"),
            (end - start + 1).to_string(),
            "{range}"
        );
        assert_eq!(header(&res, "etag"), etag);
        assert!(res.bytes().unwrap() == data[start..=end], "{range}: bytes differ");
    }

    // Unsatisfiable.
    let res = http
        .get(&url)
        .header("Range", format!("bytes={LEN}-"))
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&res, "content-range"), format!("bytes */{LEN}"));

    // If-Range: the current ETag honours the range, anything else is a full 200.
    let res = http
        .get(&url)
        .header("Range", "bytes=100-199")
        .header("If-Range", &etag)
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert!(res.bytes().unwrap() == data[100..200]);
    for stale in ["\"0000\"", "Sat, 21 Nov 2026 10:00:00 GMT"] {
        let res = http
            .get(&url)
            .header("Range", "bytes=100-199")
            .header("If-Range", stale)
            .send()
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "If-Range {stale}");
        assert_eq!(header(&res, "content-length"), LEN.to_string());
        assert!(
            res.bytes().unwrap() == data,
            "If-Range {stale}: full body differs"
        );
    }

    // Several ranges: the whole file.
    let res = http.get(&url).header("Range", "bytes=0-1,5-6").send().unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.bytes().unwrap().len(), LEN);

    // Conditional.
    let res = http.get(&url).header("If-None-Match", &etag).send().unwrap();
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(&res, "etag"), etag);
    assert!(res.bytes().unwrap().is_empty());

    // What was sent is counted.
    let sent = server.metric(&http, "manifest_server_sent_bytes_total");
    assert!(sent >= 3 * LEN as u64, "sent_bytes {sent}");
    assert_eq!(
        server.metric(
            &http,
            "manifest_server_requests_total{class=\"artifact\",status=\"206\"}"
        ),
        7
    );
}

#[test]
fn everything_else_is_404_and_only_get_and_head_are_allowed() {
    let store = Store::new();
    store.publish("cohorts/stable.json", &cohort(1));
    let name = store.put_artifact(b"abc");
    let server = Server::start(&store);
    let http = client();

    let missing = "0".repeat(64);
    for path in [
        "/".to_string(),
        "/index.html".to_string(),
        "/cohorts/beta.json".to_string(),
        "/cohorts/beta.json.minisig".to_string(),
        "/releases/9.9.9.json".to_string(),
        format!("/artifacts/{missing}"),
        format!("/artifacts/{}", name.to_uppercase()),
        format!("/artifacts/{name}/"),
        "/keys/release.pub".to_string(),
        "/healthz/x".to_string(),
    ] {
        let res = http.get(server.url(&path)).send().unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{path}");
        let res = http.head(server.url(&path)).send().unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "HEAD {path}");
    }
    let res = http
        .get(server.url(&format!("/artifacts/{name}")))
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.bytes().unwrap().as_ref(), b"abc");

    let res = http.get(server.url("/healthz")).send().unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.text().unwrap().trim(), "ok");

    let res = http
        .post(server.url("/cohorts/stable.json"))
        .body("x")
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(header(&res, "allow"), "GET, HEAD");
    let res = http
        .delete(server.url(&format!("/artifacts/{name}")))
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);

    // The requests above are all in /metrics, by class and status.
    let metric = |class: &str, status: u16| {
        server.metric(
            &http,
            &format!("manifest_server_requests_total{{class=\"{class}\",status=\"{status}\"}}"),
        )
    };
    assert_eq!(metric("cohort", 404), 2);
    assert_eq!(metric("signature", 404), 2);
    assert_eq!(metric("release", 404), 2);
    // Only well-formed artifact names count as artifacts (the missing one).
    assert_eq!(metric("artifact", 404), 2);
    assert_eq!(metric("artifact", 200), 1);
    assert_eq!(metric("cohort", 405), 1);
    assert_eq!(metric("artifact", 405), 1);
    assert_eq!(server.metric(&http, "manifest_server_snapshot_manifests"), 1);
    assert!(server.metric(&http, "manifest_server_snapshot_last_reload_timestamp_seconds") > 1_700_000_000);
}

#[test]
fn the_access_log_has_one_line_per_request() {
    let store = Store::new();
    let body = cohort(1);
    store.publish("cohorts/stable.json", &body);
    let data = random_bytes(300_000);
    let name = store.put_artifact(&data);
    let key = store.key_file();
    let server = Server::start_with(&store.root(), &["--keys", key.to_str().unwrap(), "--access-log"]);
    let http = client();
    assert_eq!(
        http.get(server.url("/cohorts/stable.json"))
            .send()
            .unwrap()
            .status(),
        200
    );
    let res = http
        .get(server.url(&format!("/artifacts/{name}")))
        .send()
        .unwrap();
    assert_eq!(res.bytes().unwrap().len(), data.len());
    assert_eq!(http.get(server.url("/nope")).send().unwrap().status(), 404);
    // Streamed bodies are logged when they end, with the bytes really sent.
    let wanted = [
        format!("GET /cohorts/stable.json 200 {} ", body.len()),
        format!("GET /artifacts/{name} 200 {} ", data.len()),
        "GET /nope 404 10 ".to_string(),
    ];
    eventually(std::time::Duration::from_secs(10), "access log lines", || {
        let log = server.stderr();
        wanted.iter().all(|w| log.contains(w)).then_some(())
    });
    let log = server.stderr();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("manifest_server::access"))
        .collect();
    assert_eq!(lines.len(), 3, "{log}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains("127.0.0.1:") && l.ends_with("ms")),
        "{lines:#?}"
    );
}

/// Manifests are served from memory (`serve_bytes`), not streamed like
/// artifacts: the same range rules, checked on that path.
#[test]
fn manifests_honour_ranges_416_and_if_range() {
    let store = Store::new();
    let body = cohort(7);
    let len = body.len();
    store.publish("cohorts/stable.json", &body);
    let server = Server::start(&store);
    let http = client();
    let url = server.url("/cohorts/stable.json");
    let etag = header(&http.get(&url).send().unwrap(), "etag");

    // A suffix range, with the current ETag as If-Range.
    for if_range in [None, Some(etag.as_str())] {
        let mut req = http.get(&url).header("Range", "bytes=-10");
        if let Some(tag) = if_range {
            req = req.header("If-Range", tag);
        }
        let res = req.send().unwrap();
        assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT, "If-Range {if_range:?}");
        assert_eq!(
            header(&res, "content-range"),
            format!("bytes {}-{}/{len}", len - 10, len - 1)
        );
        assert_eq!(header(&res, "content-length"), "10");
        assert_eq!(header(&res, "etag"), etag);
        assert_eq!(header(&res, "cache-control"), "no-cache");
        assert_eq!(res.bytes().unwrap(), body[len - 10..]);
    }

    // Unsatisfiable: 416 with the length, no body.
    let res = http
        .get(&url)
        .header("Range", format!("bytes={len}-"))
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&res, "content-range"), format!("bytes */{len}"));
    assert_eq!(header(&res, "etag"), etag);
    assert!(res.bytes().unwrap().is_empty());

    // A stale If-Range (another pair's ETag, a weak one, a date): the whole
    // manifest, so a device never splices two versions together.
    for stale in [
        "\"0000\"".to_string(),
        format!("W/{etag}"),
        "Sat, 21 Nov 2026 10:00:00 GMT".to_string(),
    ] {
        let res = http
            .get(&url)
            .header("Range", "bytes=5-9")
            .header("If-Range", &stale)
            .send()
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "If-Range {stale}");
        assert!(res.headers().get("content-range").is_none(), "If-Range {stale}");
        assert_eq!(header(&res, "content-length"), len.to_string());
        assert_eq!(res.bytes().unwrap(), body, "If-Range {stale}");
    }
    // The same on the signature, which shares the pair's ETag.
    let sig_url = server.url("/cohorts/stable.json.minisig");
    let sig = http.get(&sig_url).send().unwrap().bytes().unwrap();
    let res = http
        .get(&sig_url)
        .header("Range", "bytes=0-3")
        .header("If-Range", "\"0000\"")
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.bytes().unwrap(), sig);
    let res = http
        .get(&sig_url)
        .header("Range", "bytes=0-3")
        .header("If-Range", &etag)
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(res.bytes().unwrap(), sig[..4]);
}

/// `--access-log` is its own switch: a quieter RUST_LOG does not drop it.
#[test]
fn the_access_log_is_written_whatever_the_log_level() {
    let store = Store::new();
    store.publish("cohorts/stable.json", &cohort(1));
    let key = store.key_file();
    let server = Server::start_with_env(
        &store.root(),
        &["--keys", key.to_str().unwrap(), "--access-log"],
        &[("RUST_LOG", "warn")],
    );
    let http = client();
    assert_eq!(
        http.get(server.url("/cohorts/stable.json"))
            .send()
            .unwrap()
            .status(),
        200
    );
    assert_eq!(http.get(server.url("/nope")).send().unwrap().status(), 404);
    eventually(std::time::Duration::from_secs(10), "access log lines", || {
        let log = server.stderr();
        (log.contains("GET /cohorts/stable.json 200 ") && log.contains("GET /nope 404 10 ")).then_some(())
    });
    let log = server.stderr();
    let access = log
        .lines()
        .filter(|l| l.contains("manifest_server::access"))
        .count();
    assert_eq!(access, 2, "{log}");
    // The level still holds for everything else.
    assert!(!log.contains("serving on http://"), "{log}");
}
