//! The operations listener as Prometheus and a load balancer meet it, read with `curl`:
//! `/metrics` in OpenMetrics text with publishes by result and reject reason and the
//! levels of the log, `/healthz`, `/readyz`; a bearer token required when set; a listener
//! on a public address without a token refused at start, and a token file others can
//! read refused.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use ewx_broker::Config;
use ewx_proto::{Level, Precedence};
use ewx_tests::*;

const TOKEN: &str = "s3cret-token-for-the-ops-test";

/// A FLASH air warning (AMBER, CORE) published by `c`.
async fn flash(c: &ewx_client::Client, headline: &str) {
    c.publish(bulletin(
        "ew.air",
        Level::Amber,
        "CORE",
        Precedence::Flash,
        headline,
    ))
    .await
    .unwrap();
}

/// `curl` a path: (HTTP status, body).
fn curl(addr: std::net::SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let mut c = Command::new("curl");
    c.args(["-s", "-m", "10", "-w", "\n%{http_code}"]);
    if let Some(t) = token {
        c.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = c
        .arg(format!("http://{addr}{path}"))
        .output()
        .expect("curl");
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), body.to_string())
}

fn ops_config(net: &TestNet, ops: &str) -> Result<Config, ewx_broker::Error> {
    let text = format!(
        "listen = '127.0.0.1:0'\ndata_dir = 'data'\nkey = 'broker.key'\nroster = 'roster.cbor'\n[checkpoint]\nevery_entries = 50\ninterval_ms = 200\n[ops]\n{ops}\n"
    );
    Config::from_toml(&text, net.dir.path())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_with_a_bearer_token() {
    let net = TestNet::new();
    let token = net.dir.path().join("ops.token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    set_mode(&token, 0o600);
    let config = ops_config(&net, "listen = '127.0.0.1:0'\ntoken_file = 'ops.token'").unwrap();
    let broker = ewx_broker::Broker::start(config).await.unwrap();
    let ops = broker.ops_addr().unwrap();

    let pl = net.client(&broker, "PL").await;
    let mut sub = desk(&pl).await;
    let ua = net.client(&broker, "UA").await;
    flash(&ua, "m0").await;
    sub.next().await.unwrap().unwrap();
    // bytes that are no envelope: a rejection, counted by its reason
    let xx = net.client(&broker, "XX").await;
    let Err(ewx_client::Error::Rejected { reason, .. }) = xx.publish_envelope(b"junk").await else {
        panic!("junk was not rejected");
    };

    // a checkpoint is signed within the interval (200 ms here)
    for _ in 0..100 {
        if !broker.store().checkpoints_from(0, 1).unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let metrics = tokio::task::spawn_blocking(move || {
        let unauthorized = curl(ops, "/metrics", None);
        let wrong = curl(ops, "/metrics", Some("not-the-token-at-all"));
        let ok = curl(ops, "/metrics", Some(TOKEN));
        let health = curl(ops, "/healthz", Some(TOKEN));
        let ready = curl(ops, "/readyz", Some(TOKEN));
        (unauthorized, wrong, ok, health, ready)
    })
    .await
    .unwrap();
    let (unauthorized, wrong, (code, text), health, ready) = metrics;
    assert_eq!(unauthorized.0, 401, "{unauthorized:?}");
    assert_eq!(wrong.0, 401, "{wrong:?}");
    assert_eq!(code, 200, "{text}");
    for want in [
        "ewx_publishes_total{result=\"accepted\",reason=\"none\"} 1",
        &format!("ewx_publishes_total{{result=\"rejected\",reason=\"{reason:?}\"}} 1"),
        &format!("ewx_rejections_total{{reason=\"{reason:?}\"}} 1"),
        "ewx_connections{node=\"UA\"} 1",
        "ewx_connections{node=\"XX\"} 1",
        "ewx_log_next_index 1",
        "ewx_roster_version 1",
        "# TYPE ewx_audit_entries gauge",
        "# TYPE ewx_commit_messages histogram",
        "# TYPE ewx_fsync_seconds histogram",
        "ewx_commit_seconds_count",
        "ewx_deliveries_total 1",
        "ewx_checkpoint_witness_cosignatures 0",
        "# TYPE ewx_checkpoint_entries gauge",
        "ewx_lanes{node=\"PL\"} 4",
        "ewx_lanes_owed_messages{node=\"PL\"} 0",
        "# EOF",
    ] {
        let want: &str = want;
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    // no topic or payload in any label
    assert!(!text.contains("ew.air"), "{text}");
    // every metric the Grafana dashboard charts is one the broker exports (a replica's
    // own two only on a cluster)
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../broker/deploy/grafana-dashboard.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect();
    assert!(exprs.len() >= 10, "{exprs:?}");
    for expr in &exprs {
        for name in expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("ewx_") && !w.starts_with("ewx_replica_"))
        {
            assert!(
                text.contains(name),
                "the dashboard charts {name}, which /metrics does not have"
            );
        }
    }
    assert_eq!(health, (200, "ok\n".into()));
    assert_eq!(ready, (200, "ready\n".into()));
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_listener_needs_an_owner_only_token() {
    let net = TestNet::new();
    // any address but loopback, without a token: the configuration is refused
    let e = ops_config(&net, "listen = '0.0.0.0:0'").unwrap_err();
    assert!(e.to_string().contains("token_file"), "{e}");
    // a token others can read is refused at start
    let token = net.dir.path().join("ops.token");
    std::fs::write(&token, TOKEN).unwrap();
    set_mode(&token, 0o644);
    let config = ops_config(&net, "listen = '0.0.0.0:0'\ntoken_file = 'ops.token'").unwrap();
    let e = ewx_broker::Broker::start(config).await.unwrap_err();
    assert!(e.to_string().contains("chmod 600"), "{e}");
    // loopback without a token: open to local tools
    let config = ops_config(&net, "listen = '127.0.0.1:0'").unwrap();
    let broker = ewx_broker::Broker::start(config).await.unwrap();
    let ops = broker.ops_addr().unwrap();
    let (ok, rebound) = tokio::task::spawn_blocking(move || {
        (
            curl(ops, "/healthz", None),
            // a web page whose name was rebound to 127.0.0.1 asks with its own Host
            curl_with(ops, "/api/overview", &["-H", "Host: rebind.example:80"]),
        )
    })
    .await
    .unwrap();
    assert_eq!(ok.0, 200);
    assert_eq!(rebound.0, 403, "{rebound:?}");
    broker.shutdown().await.unwrap();
}

/// The value of a metric line `name` in OpenMetrics text.
fn value(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cases_and_overdue_deadlines_are_counted() {
    use ewx_proto::case::{CaseTag, CaseType};
    use ewx_proto::payload::{ConsultationRequest, Payload};
    use ewx_tests::cases::{deadlines, draft, labels};
    const H: u64 = 3_600_000;
    let net = TestNet::new();
    let clock = ewx_net::Clock::simulated();
    let mut config = ops_config(&net, "listen = '127.0.0.1:0'").unwrap();
    config.clock = clock.clone();
    let broker = ewx_broker::Broker::start(config).await.unwrap();
    let ops = broker.ops_addr().unwrap();
    let ua = net.client_with_clock(&broker, "UA", &clock).await;
    let request = Payload::ConsultationRequest(ConsultationRequest::new(
        "UA-2026-009".into(),
        "armed attack".into(),
        clock.now_ms(),
        clock.now_ms(),
    ));
    let open = CaseTag::open(CaseType::Consultation, vec![id("PL"), id("US")]);
    ua.publish_case(draft("consult.request", labels("CORE"), request, open))
        .await
        .unwrap();
    let scrape = move || async move {
        tokio::task::spawn_blocking(move || curl(ops, "/metrics", None))
            .await
            .unwrap()
            .1
    };
    let text = scrape().await;
    assert_eq!(
        value(&text, "ewx_cases{status=\"open\"}"),
        Some(1),
        "{text}"
    );
    assert_eq!(
        value(&text, "ewx_case_deadlines_overdue"),
        Some(0),
        "{text}"
    );
    // a day later nobody has answered: the 24 h deadline passed with parties missing
    clock.advance(25 * H);
    deadlines(&broker, 1).await;
    let text = scrape().await;
    assert_eq!(
        value(&text, "ewx_cases{status=\"open\"}"),
        Some(1),
        "{text}"
    );
    assert!(
        value(&text, "ewx_case_deadlines_overdue").unwrap_or(0) >= 1,
        "{text}"
    );
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_node_and_the_connection() {
    use std::io::BufRead;
    let net = TestNet::new();
    let config = BrokerProcess::write_config(net.dir.path(), "127.0.0.1:0".parse().unwrap(), "");
    let mut child = Command::new(broker_binary())
        .arg("--config")
        .arg(&config)
        .args(["--log-format", "json"])
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let line_with = async |rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>, needle: &str| {
        loop {
            let line = tokio::time::timeout(std::time::Duration::from_secs(20), rx.recv())
                .await
                .expect("no such log line within 20 s")
                .expect("the broker exited");
            if line.contains(needle) {
                return serde_json::from_str::<serde_json::Value>(&line).unwrap();
            }
        }
    };
    let listening = line_with(&mut rx, "listening on 127.0.0.1").await;
    let message = listening["fields"]["message"].as_str().unwrap();
    let addr: std::net::SocketAddr = message.rsplit(' ').next().unwrap().parse().unwrap();
    let ua = ewx_client::Client::connect(addr, keys("UA"), net.roster.clone())
        .await
        .unwrap();
    let connected = line_with(&mut rx, "\"connected\"").await;
    let span = &connected["span"];
    assert_eq!(span["node"], "UA", "{connected}");
    assert!(span["conn"].is_u64(), "{connected}");
    assert!(span["remote"].is_string(), "{connected}");
    drop(ua);
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_certificate_of_the_operators() {
    let net = TestNet::new();
    let dir = net.dir.path();
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(dir.join("ops-cert.pem"), made.cert.pem()).unwrap();
    std::fs::write(dir.join("ops-key.pem"), made.signing_key.serialize_pem()).unwrap();
    std::fs::write(dir.join("ops.token"), TOKEN).unwrap();
    set_mode(&dir.join("ops.token"), 0o600);
    let ops = "listen = '127.0.0.1:0'\ntoken_file = 'ops.token'\ntls_cert = 'ops-cert.pem'\ntls_key = 'ops-key.pem'";
    // a key others can read is refused at start
    set_mode(&dir.join("ops-key.pem"), 0o644);
    let e = ewx_broker::Broker::start(ops_config(&net, ops).unwrap())
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("ops.tls_key") && e.to_string().contains("chmod 600"),
        "{e}"
    );
    set_mode(&dir.join("ops-key.pem"), 0o600);
    // half a TLS configuration is refused when read
    let half = ops_config(&net, "listen = '127.0.0.1:0'\ntls_cert = 'ops-cert.pem'").unwrap_err();
    assert!(half.to_string().contains("go together"), "{half}");

    let broker = ewx_broker::Broker::start(ops_config(&net, ops).unwrap())
        .await
        .unwrap();
    let port = broker.ops_addr().unwrap().port();
    let cert = dir.join("ops-cert.pem");
    let (https, plain) = tokio::task::spawn_blocking(move || {
        let https = Command::new("curl")
            .args(["-s", "-m", "10", "-w", "\n%{http_code}", "--cacert"])
            .arg(&cert)
            .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
            .arg(format!("https://localhost:{port}/metrics"))
            .output()
            .unwrap();
        // plain HTTP to the HTTPS port gets no HTTP answer
        let plain = Command::new("curl")
            .args(["-s", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg(format!("http://127.0.0.1:{port}/healthz"))
            .output()
            .unwrap();
        (https, plain)
    })
    .await
    .unwrap();
    let text = String::from_utf8(https.stdout).unwrap();
    assert!(text.ends_with("\n200"), "{text}");
    assert!(text.contains("ewx_roster_version 1"), "{text}");
    assert_eq!(String::from_utf8_lossy(&plain.stdout), "000");
    broker.shutdown().await.unwrap();
}

/// `curl` with `args`: (HTTP status, response headers, body).
fn curl_with(addr: std::net::SocketAddr, path: &str, args: &[&str]) -> (u16, String, String) {
    let out = Command::new("curl")
        .args(["-s", "-m", "10", "-D", "-", "-w", "\n%{http_code}"])
        .args(args)
        .arg(format!("http://{addr}{path}"))
        .output()
        .expect("curl");
    let text = String::from_utf8(out.stdout).unwrap();
    let (all, code) = text.rsplit_once('\n').unwrap();
    let (head, body) = all.split_once("\r\n\r\n").unwrap_or((all, ""));
    (
        code.trim().parse().unwrap(),
        head.to_lowercase(),
        body.to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_behind_the_token_and_its_sessions() {
    let net = TestNet::new();
    let token = net.dir.path().join("ops.token");
    std::fs::write(&token, TOKEN).unwrap();
    set_mode(&token, 0o600);
    let config = ops_config(&net, "listen = '127.0.0.1:0'\ntoken_file = 'ops.token'").unwrap();
    let broker = ewx_broker::Broker::start(config).await.unwrap();
    let ops = broker.ops_addr().unwrap();
    let ua = net.client(&broker, "UA").await;
    flash(&ua, "drones over Sumy").await;

    let bearer = format!("Authorization: Bearer {TOKEN}");
    let seen = tokio::task::spawn_blocking(move || {
        let jar = tempfile::NamedTempFile::new().unwrap();
        let jar = jar.path().to_str().unwrap().to_string();
        let cookies = ["-b", jar.as_str(), "-c", jar.as_str()];
        let no_token = curl_with(ops, "/api/overview", &[]);
        let page = curl_with(ops, "/", &["-H", "Accept: text/html"]);
        let login = curl_with(ops, "/login", &[]);
        let asset = curl_with(ops, "/static/dashboard.js", &[]);
        let wrong = curl_with(
            ops,
            "/login",
            &[&cookies[..], &["-d", "token=not-it"]].concat(),
        );
        let right = curl_with(
            ops,
            "/login",
            &[&cookies[..], &["-d", &format!("token={TOKEN}")]].concat(),
        );
        let session = std::fs::read_to_string(&jar)
            .unwrap()
            .lines()
            .find(|l| l.contains(&format!("ewx_ops_{}", ops.port())))
            .map(|l| l.rsplit('\t').next().unwrap().to_string())
            .unwrap();
        let by_cookie = curl_with(ops, "/api/overview", &cookies);
        let by_bearer = curl_with(ops, "/api/overview", &["-H", &bearer]);
        let logout = curl_with(ops, "/logout", &[&cookies[..], &["-X", "POST"]].concat());
        // the old session, sent again after the logout (the jar forgot it)
        let old = format!("Cookie: ewx_ops_{}={session}", ops.port());
        let after = curl_with(ops, "/api/overview", &["-H", &old]);
        (
            no_token, page, login, asset, wrong, right, by_cookie, by_bearer, logout, after,
        )
    })
    .await
    .unwrap();
    let (no_token, page, login, asset, wrong, right, by_cookie, by_bearer, logout, after) = seen;
    assert_eq!(no_token.0, 401, "{no_token:?}");
    // a browser is sent to the login form; the form and the page's code need no token
    assert_eq!(page.0, 303);
    assert!(page.1.contains("location: /login"), "{}", page.1);
    assert_eq!(login.0, 200);
    assert!(login.2.contains("name=\"token\""), "{}", login.2);
    assert_eq!(asset.0, 200);
    assert!(
        asset.1.contains("content-type: text/javascript"),
        "{}",
        asset.1
    );
    assert_eq!(wrong.0, 401);
    assert!(!wrong.1.contains("set-cookie"), "{}", wrong.1);
    assert_eq!(right.0, 303);
    assert!(
        right
            .1
            .contains(&format!("set-cookie: ewx_ops_{}=", ops.port()))
            && right.1.contains("httponly")
            && right.1.contains("samesite=lax"),
        "{}",
        right.1
    );
    for (what, r) in [("cookie", &by_cookie), ("bearer", &by_bearer)] {
        assert_eq!(r.0, 200, "{what}: {r:?}");
        assert!(
            r.1.contains("content-security-policy: default-src 'none'"),
            "{}",
            r.1
        );
        let o: serde_json::Value = serde_json::from_str(&r.2).unwrap();
        let ua = o["partners"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["node"] == "UA")
            .unwrap();
        assert_eq!(ua["connections"], 1, "{what}: {ua}");
        assert_eq!(o["traffic"]["now"]["accepted"], 1, "{what}: {o}");
        assert_eq!(o["broker"]["log_entries"], 1, "{what}: {o}");
        assert!(o["broker"]["not_ready"].is_null(), "{what}: {o}");
        // metadata only: no topic, no contents
        assert!(!r.2.contains("ew.air") && !r.2.contains("Sumy"), "{}", r.2);
    }
    assert_eq!(logout.0, 303);
    assert_eq!(after.0, 401, "the session outlived its logout");
    broker.shutdown().await.unwrap();
}
