//! The TAXII 2.1 gateway (`ewx taxii serve`, a real child process) as a partner's tools
//! meet it: OASIS's `taxii2-client` (PyPI) reads and writes it (`tests/taxii/check.py`),
//! with public STIX 2.1 bundles (`tests/data/stix/`) published over ewx by UA and
//! received by PL's gateway; and it pages a large collection (20 000 objects, 100 000
//! with `EWX_SOAK=1`) with its memory flat.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ewx_client::Client;
use ewx_proto::frame::{ExerciseFilter, StartAt};
use ewx_proto::{Draft, Labels, Level, Payload, Precedence, Topic, TopicPattern};
use ewx_tests::{demo_broker, demo_client, set_mode};

const USER: &str = "misp";
const PASSWORD: &str = "correct-horse-battery";

fn stix_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/stix")
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("taxii")
        .join(name)
}

/// PL's profile (key, roster, broker address) with a gateway configuration.
fn pl_profile(dir: &Path, broker: std::net::SocketAddr, auth: &str) -> PathBuf {
    let p = dir.join("pl-profile");
    std::fs::create_dir_all(&p).unwrap();
    std::fs::copy(dir.join("keys/PL.key"), p.join("node.key")).unwrap();
    set_mode(&p.join("node.key"), 0o600);
    std::fs::copy(dir.join("roster.cbor"), p.join("roster.cbor")).unwrap();
    std::fs::write(p.join("broker"), broker.to_string()).unwrap();
    std::fs::write(p.join("taxii.users"), format!("{USER}:{PASSWORD}\n")).unwrap();
    set_mode(&p.join("taxii.users"), 0o600);
    std::fs::write(
        p.join("taxii.toml"),
        format!("title = 'ewx gateway under test'\n\
         [auth]\nusers_file = 'taxii.users'\n{auth}\
         [[collection]]\nalias = 'threats'\ntitle = 'Threat intelligence (CORE)'\ntopics = 'ew.cti.threats'\nmax_level = 'AMBER'\n\
         [[collection]]\nalias = 'pl-out'\ntitle = 'Published by PL'\ntopics = 'ew.cti.pl'\n\
         [collection.publish]\ntopic = 'ew.cti.pl'\nlevel = 'AMBER'\ncompartments = 'CORE'\nprecedence = 'ROUTINE'\n"),
    )
    .unwrap();
    p
}

/// A gateway child process, killed when dropped (also when a check fails).
struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `ewx taxii serve` for the profile: the child and its base URL.
fn gateway(profile: &Path) -> (Gateway, String) {
    let mut child = Command::new(ewx_tests::ewx_binary())
        .args(["taxii", "serve", "--listen", "127.0.0.1:0", "--profile"])
        .arg(profile)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://") || w.starts_with("https://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .trim_end_matches("/taxii2/")
        .to_string();
    (Gateway(child), url)
}

fn bundle_draft(topic: &str, bundle: String) -> Draft {
    Draft {
        topic: Topic::new(topic).unwrap(),
        precedence: Precedence::Routine,
        labels: Labels::new(Level::Amber, Labels::parse_compartments("CORE").unwrap()),
        payload: Payload::Stix(bundle),
        seq: 0,
        expires_ms: None,
        receipt: false,
        case: None,
    }
}

/// GET a path of the gateway (Basic auth): the HTTP status.
fn status_of(url: &str, path: &str) -> u16 {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-m",
            "10",
            "-w",
            "%{http_code}",
            "-u",
        ])
        .arg(format!("{USER}:{PASSWORD}"))
        .arg(format!("{url}{path}"))
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().parse().unwrap_or(0)
}

/// Wait (≤ 60 s) until the gateway holds `id` in collection `alias`.
async fn holds(url: &str, alias: &str, id: &str) {
    let path = format!("/api1/collections/{alias}/objects/{id}/");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (u, p) = (url.to_string(), path.clone());
        if tokio::task::spawn_blocking(move || status_of(&u, &p))
            .await
            .unwrap()
            == 200
        {
            return;
        }
        assert!(Instant::now() < deadline, "the gateway never stored {id}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn python(args: &[&str]) -> serde_json::Value {
    let out = Command::new("python3").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "python3 {args:?} failed (pip install taxii2-client; .ci/run does):\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(out.stdout.trim_ascii()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taxii2_client_reads_and_writes_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, roster) = demo_broker(dir.path(), "").await;
    let profile = pl_profile(dir.path(), broker.local_addr(), "");

    // UA publishes the public bundles, and a second version of one object
    let ua = demo_client(&broker, &roster, "UA").await;
    let mut ids = Vec::new();
    let mut types = std::collections::BTreeMap::<String, usize>::new();
    let mut versioned = None;
    let mut files: Vec<_> = std::fs::read_dir(stix_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "{files:?}");
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let b: serde_json::Value = serde_json::from_str(&text).unwrap();
        for o in b["objects"].as_array().unwrap() {
            ids.push(o["id"].as_str().unwrap().to_string());
            *types.entry(o["type"].as_str().unwrap().into()).or_default() += 1;
            if o["type"] == "threat-actor" && versioned.is_none() {
                let mut newer = o.clone();
                newer["modified"] = "2026-11-30T12:00:00.000Z".into();
                newer["description"] = "Seen again in November 2026".into();
                versioned = Some(newer);
            }
        }
        ua.publish(bundle_draft("ew.cti.threats", text))
            .await
            .unwrap();
    }
    let newer = versioned.unwrap();
    let vid = newer["id"].as_str().unwrap().to_string();
    let second = serde_json::json!({"type": "bundle", "id": "bundle--5d0092c5-5f74-4287-9642-33f4c354e56d", "objects": [newer]});
    ua.publish(bundle_draft("ew.cti.threats", second.to_string()))
        .await
        .unwrap();
    // published RED: above the collection's max_level, so it stays out
    let mut red = bundle_draft(
        "ew.cti.threats",
        r#"{"type":"bundle","id":"bundle--1","objects":[{"type":"identity","spec_version":"2.1","id":"identity--9e1a0f3c-1f5e-4d6b-8c51-1f0e6f7c9d11","created":"2026-01-01T00:00:00Z","modified":"2026-01-01T00:00:00Z","name":"red"}]}"#.into(),
    );
    red.labels.level = Level::Red;
    ua.publish(red).await.unwrap();
    // UA listens for what PL's gateway will publish
    let mut from_pl = ua
        .subscribe(
            "pl-cti",
            TopicPattern::new("ew.cti.pl").unwrap(),
            StartAt::Earliest,
            ExerciseFilter::All,
        )
        .await
        .unwrap();

    let (child, url) = gateway(&profile);
    holds(&url, "threats", &vid).await;

    let expected = dir.path().join("expected.json");
    std::fs::write(
        &expected,
        serde_json::json!({"read": "threats", "write": "pl-out", "ids": ids, "versioned": vid, "types": types})
            .to_string(),
    )
    .unwrap();
    let (u, e) = (url.clone(), expected.clone());
    let summary = tokio::task::spawn_blocking(move || {
        python(&[
            script("check.py").to_str().unwrap(),
            &u,
            USER,
            PASSWORD,
            e.to_str().unwrap(),
        ])
    })
    .await
    .unwrap();
    assert_eq!(summary["objects"], ids.len(), "{summary}");
    assert!(summary["pages"].as_u64().unwrap() >= ids.len() as u64 / 4);

    // what taxii2-client POSTed was published by PL over ewx: UA receives it
    let d = tokio::time::timeout(Duration::from_secs(10), from_pl.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(d.envelope.header().sender.as_str(), "PL");
    let Some(Payload::Stix(text)) = d.payload else {
        panic!("not STIX: {:?}", d.payload);
    };
    for id in summary["published"].as_array().unwrap() {
        assert!(text.contains(id.as_str().unwrap()), "{id} not in {text}");
    }
    assert!(!text.contains("indicator--mismatch"));

    // a restart resumes the subscriptions: nothing repeated, nothing lost
    drop(child);
    let (child, url) = gateway(&profile);
    ua.publish(bundle_draft(
        "ew.cti.threats",
        std::fs::read_to_string(&files[0]).unwrap(),
    ))
    .await
    .unwrap();
    let u = url.clone();
    let (threats, pl_out) = tokio::task::spawn_blocking(move || {
        std::thread::sleep(Duration::from_secs(1));
        (
            get_json(&u, "/api1/collections/threats/manifest/?match[version]=all"),
            get_json(&u, "/api1/collections/pl-out/manifest/"),
        )
    })
    .await
    .unwrap();
    drop(child);
    // the same bundle again adds no version; the second version of one object stays
    assert_eq!(
        threats["objects"].as_array().unwrap().len(),
        ids.len() + 1,
        "{threats}"
    );
    assert_eq!(pl_out["objects"].as_array().unwrap().len(), 2, "{pl_out}");
    drop(ua);
    broker.shutdown().await.unwrap();
}

/// GET a path of the gateway (Basic auth) as JSON.
fn get_json(url: &str, path: &str) -> serde_json::Value {
    let out = Command::new("curl")
        .args(["-s", "-m", "10", "-g", "-u"])
        .arg(format!("{USER}:{PASSWORD}"))
        .arg(format!("{url}{path}"))
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Generated indicators: `n` objects in bundles of `per`.
fn indicator_bundles(n: usize, per: usize) -> Vec<String> {
    (0..n)
        .collect::<Vec<_>>()
        .chunks(per)
        .map(|chunk| {
            let objects: Vec<serde_json::Value> = chunk
                .iter()
                .map(|i| {
                    serde_json::json!({
                        "type": "indicator", "spec_version": "2.1",
                        "id": format!("indicator--00000000-0000-4000-8000-{i:012}"),
                        "created": "2026-12-01T00:00:00.000Z", "modified": "2026-12-01T00:00:00.000Z",
                        "pattern": format!("[ipv4-addr:value = '10.{}.{}.{}']", i >> 16 & 255, i >> 8 & 255, i & 255),
                        "pattern_type": "stix", "valid_from": "2026-12-01T00:00:00Z",
                    })
                })
                .collect();
            serde_json::json!({"type": "bundle", "id": "bundle--3a1f0e0c-0000-4000-8000-000000000000", "objects": objects}).to_string()
        })
        .collect()
}

fn rss_kb(pid: u32) -> u64 {
    ewx_tests::rss_kb(pid).0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_collection_pages_fast_with_flat_memory() {
    let n = if ewx_tests::soak() { 100_000 } else { 20_000 };
    let dir = tempfile::tempdir().unwrap();
    let (broker, roster) = demo_broker(dir.path(), "").await;
    let profile = pl_profile(dir.path(), broker.local_addr(), "");
    let ua: Client = demo_client(&broker, &roster, "UA").await;
    for b in indicator_bundles(n, 1000) {
        ua.publish(bundle_draft("ew.cti.threats", b)).await.unwrap();
    }
    let (child, url) = gateway(&profile);
    let last = format!("indicator--00000000-0000-4000-8000-{:012}", n - 1);
    holds(&url, "threats", &last).await;
    let pid = child.0.id();
    let before = rss_kb(pid);
    let (u, done) = (
        url.clone(),
        std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
    );
    let d = done.clone();
    let sampler = tokio::spawn(async move {
        let mut most = 0;
        while !d.load(std::sync::atomic::Ordering::Acquire) {
            most = most.max(rss_kb(pid));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        most
    });
    let paged = tokio::task::spawn_blocking(move || {
        python(&[
            script("page_all.py").to_str().unwrap(),
            &u,
            USER,
            PASSWORD,
            "threats",
            "1000",
        ])
    })
    .await
    .unwrap();
    done.store(true, std::sync::atomic::Ordering::Release);
    let most = sampler.await.unwrap();
    drop(child);
    let seconds = paged["seconds"].as_f64().unwrap();
    let rate = n as f64 / seconds;
    let text = format!(
        "TAXII paging: {n} objects in pages of 1000 to taxii2-client in {seconds:.2} s = {rate:.0} objects/s; gateway RSS {before} kB before, at most {most} kB while paging (+{} kB)\n",
        most.saturating_sub(before)
    );
    print!("{text}");
    ewx_tests::report("taxii_paging", &text);
    assert_eq!(paged["objects"], n, "{paged}");
    assert_eq!(paged["unique"], n, "{paged}");
    // flat: the page cache and one page, not the collection (20 000 objects ≈ 8 MB of JSON)
    assert!(most.saturating_sub(before) < 96 * 1024, "{text}");
    drop(ua);
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_a_bearer_token() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, _) = demo_broker(dir.path(), "").await;
    let token = "taxii-bearer-token-0123456789";
    let profile = pl_profile(
        dir.path(),
        broker.local_addr(),
        "token_file = 'taxii.token'\n[tls]\ncert = 'cert.pem'\nkey = 'key.pem'\n",
    );
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(profile.join("cert.pem"), made.cert.pem()).unwrap();
    std::fs::write(profile.join("key.pem"), made.signing_key.serialize_pem()).unwrap();
    set_mode(&profile.join("key.pem"), 0o600);
    std::fs::write(profile.join("taxii.token"), token).unwrap();
    set_mode(&profile.join("taxii.token"), 0o600);
    let (child, url) = gateway(&profile);
    let port = url.rsplit(':').next().unwrap().to_string();
    assert!(url.starts_with("https://"), "{url}");
    let cert = profile.join("cert.pem");
    let (with, without) = tokio::task::spawn_blocking(move || {
        let get = |auth: Option<&str>| {
            let mut c = Command::new("curl");
            c.args(["-s", "-m", "10", "-w", "\n%{http_code}", "--cacert"])
                .arg(&cert);
            if let Some(t) = auth {
                c.args(["-H", &format!("Authorization: Bearer {t}")]);
            }
            let out = c
                .arg(format!("https://localhost:{port}/taxii2/"))
                .output()
                .unwrap();
            let text = String::from_utf8(out.stdout).unwrap();
            let (body, code) = text.rsplit_once('\n').unwrap();
            (code.to_string(), body.to_string())
        };
        (get(Some(token)), get(None))
    })
    .await
    .unwrap();
    drop(child);
    assert_eq!(with.0, "200", "{with:?}");
    let discovery: serde_json::Value = serde_json::from_str(&with.1).unwrap();
    assert_eq!(discovery["title"], "ewx gateway under test");
    assert!(
        discovery["default"]
            .as_str()
            .unwrap()
            .starts_with("https://localhost:"),
        "{discovery}"
    );
    assert_eq!(without.0, "401", "{without:?}");
    broker.shutdown().await.unwrap();
}
