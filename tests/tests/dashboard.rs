//! The ops dashboard as a person meets it, in headless Chromium (Debian's `chromium`):
//! logged in with the token through `/login#token=…`, it shows the demo network's
//! partners, a running consultation with its countdown, and updates by itself when a
//! node connects. Screenshots (laptop and phone size) are saved in
//! `target/debug/dashboard/` to be looked at.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use ewx_client::Client;
use ewx_client::cases::default_parties;
use ewx_proto::case::{CaseTag, CaseType};
use ewx_proto::payload::ConsultationRequest;
use ewx_proto::{NodeId, Payload, Roster};
use ewx_tests::cases::{draft, labels};
use ewx_tests::set_mode;
use headless_chrome::protocol::cdp::Emulation;
use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
use headless_chrome::{Browser, LaunchOptions, Tab};

const TOKEN: &str = "dashboard-test-token-0123456789";

/// The demo network's broker with the ops listener behind a token.
async fn demo_broker(dir: &Path) -> (ewx_broker::Broker, Roster) {
    let token = dir.join("ops.token");
    std::fs::write(&token, TOKEN).unwrap();
    set_mode(&token, 0o600);
    ewx_tests::demo_broker(
        dir,
        "[ops]\nlisten = '127.0.0.1:0'\ntoken_file = 'ops.token'\n",
    )
    .await
}

async fn connect(broker: &ewx_broker::Broker, roster: &Roster, node: &str) -> Client {
    ewx_tests::demo_client(broker, roster, node).await
}

/// Debian's Chromium, launched headless (no sandbox: CI runs as root).
fn chromium(width: u32, height: u32) -> Browser {
    let path = PathBuf::from("/usr/bin/chromium");
    assert!(
        path.exists(),
        "the dashboard test needs Debian's chromium: apt-get install -y chromium (.ci/run does)"
    );
    let options = LaunchOptions::default_builder()
        .path(Some(path))
        .sandbox(false)
        .window_size(Some((width, height)))
        .idle_browser_timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    Browser::new(options).unwrap()
}

/// Run a step of the browser (a blocking API) off the runtime.
async fn browse<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// The text of every element matching `selector` (read in the page, at one moment: the
/// page redraws every two seconds).
fn texts(tab: &Tab, selector: &str) -> Vec<String> {
    let js = format!(
        "JSON.stringify([...document.querySelectorAll({})].map(e => e.textContent))",
        serde_json::Value::from(selector)
    );
    let value = tab.evaluate(&js, false).unwrap().value;
    let Some(serde_json::Value::String(json)) = value else {
        panic!("{selector}: {value:?}");
    };
    serde_json::from_str(&json).unwrap()
}

/// Wait (≤ 10 s) for an element; `None` if it never came.
fn appears(tab: &Tab, selector: &str) -> bool {
    tab.wait_for_element_with_custom_timeout(selector, Duration::from_secs(10))
        .is_ok()
}

/// A countdown `[Nd ]HH:MM:SS` in seconds.
fn seconds_left(text: &str) -> u64 {
    let (days, hms) = match text.split_once("d ") {
        Some((d, rest)) => (d.parse::<u64>().unwrap(), rest),
        None => (0, text),
    };
    let parts: Vec<u64> = hms.split(':').map(|p| p.parse().unwrap()).collect();
    assert_eq!(parts.len(), 3, "not a countdown: {text:?}");
    days * 86_400 + parts[0] * 3600 + parts[1] * 60 + parts[2]
}

fn save(name: &str, png: &[u8]) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, png).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_headless_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, roster) = demo_broker(dir.path()).await;
    let ops = broker.ops_addr().unwrap();

    // UA requests consultations (24 h to consult, 72 h to decide); PL listens
    let ua = connect(&broker, &roster, "UA").await;
    let pl = connect(&broker, &roster, "PL").await;
    let _desk = ewx_tests::desk(&pl).await;
    let core = labels("CORE");
    let ua_id = NodeId::new("UA").unwrap();
    let parties = default_parties(&roster, &ua_id, &core, CaseType::Consultation);
    let now = ewx_net::now_ms();
    let request = Payload::ConsultationRequest(ConsultationRequest::new(
        "UA-2026-017".into(),
        "missile strike on Lviv: armed attack".into(),
        now,
        now,
    ));
    let tag = CaseTag::open(CaseType::Consultation, parties.clone());
    let case = ua
        .publish_case(draft("consult.request", core, request, tag))
        .await
        .unwrap()
        .id;

    // without the token, the page asks for it (and shows nothing else)
    let browser = browse(|| chromium(1280, 1000)).await;
    let tab = browser.new_tab().unwrap();
    let t = tab.clone();
    let (url, login_form) = browse(move || {
        t.navigate_to(&format!("http://{ops}/")).unwrap();
        t.wait_until_navigated().unwrap();
        (t.get_url(), appears(&t, "form#login input[type=password]"))
    })
    .await;
    assert!(url.ends_with("/login"), "{url}");
    assert!(login_form);

    // a wrong token is refused; the right one opens the dashboard
    let t = tab.clone();
    let refused = browse(move || {
        t.navigate_to(&format!("http://{ops}/login#token=wrong-token-wrong-token"))
            .unwrap();
        appears(&t, "p.error:not(:empty)").then(|| texts(&t, "p.error"))
    })
    .await;
    assert_eq!(refused, Some(vec!["That is not the token.".to_string()]));
    let t = tab.clone();
    let loaded = browse(move || {
        t.navigate_to(&format!("http://{ops}/login#token={TOKEN}"))
            .unwrap();
        appears(&t, "#partners tr[data-node='UA'].online")
            && appears(&t, "#cases td.countdown:not(:empty)")
    })
    .await;
    assert!(
        loaded,
        "the dashboard did not show UA online and a countdown"
    );

    // every partner of the demo network, UA and PL online, GB not (yet)
    let want: Vec<String> = roster
        .body()
        .nodes
        .iter()
        .filter(|n| n.role != ewx_proto::roster::Role::Broker)
        .map(|n| n.id.to_string())
        .collect();
    let t = tab.clone();
    let (nodes, states) = browse(move || {
        let nodes = texts(&t, "#partners tbody tr td:first-child");
        let states = texts(&t, "#partners tbody tr td.state");
        (nodes, states)
    })
    .await;
    assert_eq!(nodes, want);
    let state = |n: &str| states[want.iter().position(|w| w == n).unwrap()].clone();
    assert_eq!(
        (state("UA"), state("PL"), state("GB")),
        ("online".into(), "online".into(), "offline".into())
    );

    // the case: a consultation by UA, consulting due in 24 h, every party waiting; the
    // countdown runs
    let t = tab.clone();
    let (row, first) = browse(move || {
        let row = texts(&t, &format!("#cases tr[data-case='{case}'] td"));
        let first = texts(&t, "#cases td.countdown");
        (row, first)
    })
    .await;
    assert!(row[0].starts_with("consultation "), "{row:?}");
    assert!(row[2].starts_with("consulted by "), "{row:?}");
    assert!(row[4].starts_with("UA · "), "{row:?}");
    let left = seconds_left(&first[0]);
    assert!((86_300..=86_400).contains(&left), "{first:?}");
    for p in &parties {
        assert!(row[3].contains(p.as_str()), "{p} not waited on: {row:?}");
    }
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let t = tab.clone();
    let later = browse(move || texts(&t, "#cases td.countdown")).await;
    assert!(
        seconds_left(&later[0]) < left,
        "the countdown did not run: {first:?} then {later:?}"
    );

    // GB connects: the page, left open, shows it online and notes the event; a junk
    // publish shows up among the rejections
    let _gb = connect(&broker, &roster, "GB").await;
    let kr = connect(&broker, &roster, "KR").await;
    assert!(kr.publish_envelope(b"junk").await.is_err());
    let t = tab.clone();
    let (online, events, reasons) = browse(move || {
        let online = appears(&t, "#partners tr[data-node='GB'].online");
        let _ = appears(&t, "#reasons li");
        (online, texts(&t, "#events li"), texts(&t, "#reasons li"))
    })
    .await;
    assert!(online, "GB never showed online");
    assert!(
        events.iter().any(|e| e.ends_with(" GB connected")),
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| e.ends_with(" KR connected")),
        "{events:?}"
    );
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(reasons[0].ends_with(" 1"), "{reasons:?}");

    // laptop screenshot, then a phone: nothing wider than the screen
    let t = tab.clone();
    let png = browse(move || {
        t.capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
            .unwrap()
    })
    .await;
    let laptop = save("laptop.png", &png);
    let (phone_png, fits) = browse(move || {
        let phone = chromium(390, 844);
        let tab = phone.new_tab().unwrap();
        tab.call_method(Emulation::SetDeviceMetricsOverride {
            width: 390,
            height: 844,
            device_scale_factor: 1.0,
            mobile: true,
            scale: None,
            screen_width: None,
            screen_height: None,
            position_x: None,
            position_y: None,
            dont_set_visible_size: None,
            screen_orientation: None,
            viewport: None,
            display_feature: None,
            device_posture: None,
        })
        .unwrap();
        tab.navigate_to(&format!("http://{ops}/login#token={TOKEN}"))
            .unwrap();
        assert!(appears(&tab, "#cases td.countdown:not(:empty)"));
        let fits = tab
            .evaluate(
                "document.documentElement.scrollWidth <= window.innerWidth",
                false,
            )
            .unwrap()
            .value;
        let png = tab
            .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
            .unwrap();
        (png, fits)
    })
    .await;
    let phone = save("phone.png", &phone_png);
    println!("screenshots: {} {}", laptop.display(), phone.display());
    assert!(png.len() > 10_000 && phone_png.len() > 10_000);
    assert_eq!(
        fits,
        Some(serde_json::Value::Bool(true)),
        "the page is wider than a phone"
    );
    drop(ua);
    broker.shutdown().await.unwrap();
}
