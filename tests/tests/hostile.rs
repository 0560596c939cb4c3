//! Hostile clients against a real `ewx-broker` process: an attacker speaking raw QUIC and
//! raw frames with keys from the roster (so it gets past TLS and reaches the parsers)
//! tries every malformed input we can think of, while a well-behaved partner keeps
//! publishing FLASH warnings and receiving them. Each attack must get its precise
//! rejection, the partner must lose nothing, and the broker's memory must stay bounded.
//! (Unknown and revoked TLS keys are refused at the handshake: see `broker.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ciborium::Value;
use ewx_client::Client;
use ewx_net::tls::{self, TransportLimits};
use ewx_proto::frame::{RejectReason, Request, Response, decode_frame, encode_frame};
use ewx_proto::{Level, Precedence};
use ewx_tests::*;
use rand::{Rng, RngCore, SeedableRng};

/// An attacker's connection: a real node key, raw streams.
struct Raw {
    _endpoint: quinn::Endpoint,
    conn: quinn::Connection,
}

async fn raw(addr: SocketAddr, node: &str) -> Result<Raw, String> {
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let cfg = tls::client_config(
        &keys(node),
        vec![keys("BROKER").sign_public()],
        TransportLimits::client(),
    )
    .unwrap();
    let conn = endpoint
        .connect_with(cfg, addr, tls::SERVER_NAME)
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    Ok(Raw {
        _endpoint: endpoint,
        conn,
    })
}

impl Raw {
    /// Send `bytes` on a new stream (and finish it if `finish`); the broker's answer.
    async fn send(&self, bytes: &[u8], finish: bool) -> Result<Response, String> {
        let (mut send, mut recv) = self.conn.open_bi().await.map_err(|e| e.to_string())?;
        // the broker may answer and stop reading before all bytes are sent
        if send.write_all(bytes).await.is_ok() && finish {
            let _ = send.finish();
        }
        let answer = tokio::time::timeout(Duration::from_secs(20), recv.read_to_end(1 << 20))
            .await
            .map_err(|_| "no answer in 20 s".to_string())?
            .map_err(|e| e.to_string())?;
        match decode_frame::<Response>(&answer, 1 << 20) {
            Ok(ewx_proto::frame::Decoded::Complete(r, _)) => Ok(r),
            other => Err(format!("answer does not decode: {other:?}")),
        }
    }
}

impl Raw {
    /// Send `bytes` on one stream, finish it, and decode every answer that comes back.
    async fn send_all(&self, bytes: &[u8]) -> Vec<Response> {
        let (mut send, mut recv) = self.conn.open_bi().await.unwrap();
        send.write_all(bytes).await.unwrap();
        send.finish().unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(20), recv.read_to_end(1 << 20))
            .await
            .expect("answers within 20 s")
            .unwrap();
        let mut rest = &answer[..];
        let mut out = Vec::new();
        while !rest.is_empty() {
            match decode_frame::<Response>(rest, 1 << 20) {
                Ok(ewx_proto::frame::Decoded::Complete(r, used)) => {
                    out.push(r);
                    rest = &rest[used..];
                }
                other => panic!("answer does not decode: {other:?}"),
            }
        }
        out
    }
}

fn reason(r: &Result<Response, String>) -> Option<RejectReason> {
    match r {
        Ok(Response::Rejected { reason, .. }) => Some(*reason),
        _ => None,
    }
}

fn publish_frame(envelope: Vec<u8>) -> Vec<u8> {
    encode_frame(&Request::Publish { envelope }, usize::MAX).unwrap()
}

/// A frame around any CBOR value, whatever its size.
fn frame_of(v: &Value) -> Vec<u8> {
    let mut body = Vec::new();
    ciborium::into_writer(v, &mut body).unwrap();
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

fn get<'a>(map: &'a [(Value, Value)], key: &str) -> Option<&'a Value> {
    map.iter()
        .find(|(k, _)| k.as_text() == Some(key))
        .map(|(_, v)| v)
}

fn set(map: &mut [(Value, Value)], key: &str, value: Value) {
    let slot = map
        .iter_mut()
        .find(|(k, _)| k.as_text() == Some(key))
        .unwrap();
    slot.1 = value;
}

/// The envelope's wire bytes with its header edited as a CBOR map (the signature then
/// no longer matches, but every check here refuses the header before the signature).
fn edit_header(env: &ewx_proto::Envelope, edit: impl FnOnce(&mut Vec<(Value, Value)>)) -> Vec<u8> {
    let wire: Value = ciborium::from_reader(&env.encode().unwrap()[..]).unwrap();
    let Value::Map(mut fields) = wire else {
        panic!("envelope is a map")
    };
    let Some(Value::Bytes(header)) = get(&fields, "header") else {
        panic!("header bytes")
    };
    let Value::Map(mut h) = ciborium::from_reader(&header[..]).unwrap() else {
        panic!("header is a map")
    };
    edit(&mut h);
    let mut header = Vec::new();
    ciborium::into_writer(&Value::Map(h), &mut header).unwrap();
    set(&mut fields, "header", Value::Bytes(header));
    let mut out = Vec::new();
    ciborium::into_writer(&Value::Map(fields), &mut out).unwrap();
    out
}

/// The well-behaved partner: UA publishes a FLASH warning every 50 ms, PL receives them.
struct Partner {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
    receiver: tokio::task::JoinHandle<(u64, Duration)>,
}

async fn partner(net: &TestNet, addr: SocketAddr) -> Partner {
    let ua = Client::connect(addr, keys("UA"), net.roster.clone())
        .await
        .unwrap();
    let pl = Client::connect(addr, keys("PL"), net.roster.clone())
        .await
        .unwrap();
    let mut sub = subscribe(&pl, "watch", "ew.watch", ewx_proto::frame::StartAt::Latest).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (s, f, st) = (sent.clone(), failed.clone(), stop.clone());
    let task = tokio::spawn(async move {
        while !st.load(Ordering::Relaxed) {
            let t = now_us();
            let d = bulletin(
                "ew.watch",
                Level::Amber,
                "CORE",
                Precedence::Flash,
                &t.to_string(),
            );
            match ua.publish(d).await {
                Ok(_) => s.fetch_add(1, Ordering::Relaxed),
                Err(e) => {
                    eprintln!("partner publish failed: {e}");
                    f.fetch_add(1, Ordering::Relaxed)
                }
            };
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ua.close().await;
    });
    let (sent2, st2) = (sent.clone(), stop.clone());
    let receiver = tokio::spawn(async move {
        let (mut got, mut worst) = (0u64, Duration::ZERO);
        let mut last = Instant::now();
        while !(st2.load(Ordering::Relaxed) && got >= sent2.load(Ordering::Relaxed))
            && last.elapsed() < Duration::from_secs(30)
        {
            let Ok(d) = tokio::time::timeout(Duration::from_millis(100), sub.next()).await else {
                continue;
            };
            let Some(Ok(d)) = d else { break };
            last = Instant::now();
            let t: u64 = headline(&d.payload).parse().unwrap();
            worst = worst.max(Duration::from_micros(now_us().saturating_sub(t)));
            got += 1;
        }
        drop(pl);
        (got, worst)
    });
    Partner {
        stop,
        sent,
        failed,
        task,
        receiver,
    }
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_get_precise_rejections_and_a_partner_is_unaffected() {
    let net = TestNet::new();
    let broker = BrokerProcess::start(
        net.dir.path(),
        "127.0.0.1:0".parse().unwrap(),
        "[limits]\nmax_connections_per_node = 8\n",
    );
    let addr = broker.addr;
    let partner = partner(&net, addr).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let attacker = raw(addr, "US").await.unwrap();
    let (_, rss_start) = rss_kb(broker.pid());

    // random bytes on 200 streams
    let mut refused = 0;
    for _ in 0..200 {
        let mut junk = vec![0u8; rng.gen_range(1..4096)];
        rng.fill_bytes(&mut junk);
        let r = attacker.send(&junk, true).await;
        assert!(
            matches!(
                reason(&r),
                Some(RejectReason::Malformed | RejectReason::TooLarge)
            ),
            "random bytes: {r:?}"
        );
        refused += 1;
    }

    // a truncated frame: the prefix promises 1000 bytes, 10 come
    let mut truncated = 1000u32.to_be_bytes().to_vec();
    truncated.extend_from_slice(&[0xa1; 10]);
    let r = attacker.send(&truncated, true).await;
    assert_eq!(reason(&r), Some(RejectReason::Malformed), "{r:?}");

    // a 4 GiB length prefix is refused from the prefix alone
    let r = attacker.send(&[0xff, 0xff, 0xff, 0xff, 0, 0], false).await;
    assert_eq!(reason(&r), Some(RejectReason::TooLarge), "{r:?}");

    // 100 000 levels of nested CBOR arrays: refused, no stack overflow
    let mut nested = (100_000u32).to_be_bytes().to_vec();
    nested.extend(std::iter::repeat_n(0x81u8, 100_000));
    let r = attacker.send(&nested, true).await;
    assert_eq!(reason(&r), Some(RejectReason::Malformed), "{r:?}");

    // a valid envelope from US to tamper with, as US would sign it
    let us = Client::connect(addr, keys("US"), net.roster.clone())
        .await
        .unwrap();
    let env = us
        .seal(bulletin(
            "ew.air",
            Level::Amber,
            "CORE",
            Precedence::Routine,
            "x",
        ))
        .await
        .unwrap();

    // a non-canonical header (its fields in reverse order), properly signed
    let mut header = Vec::new();
    ciborium::into_writer(env.header(), &mut header).unwrap();
    let Value::Map(mut fields) = ciborium::from_reader(&header[..]).unwrap() else {
        panic!("header is a map")
    };
    fields.reverse();
    let mut header = Vec::new();
    ciborium::into_writer(&Value::Map(fields), &mut header).unwrap();
    let noncanonical =
        ewx_proto::Envelope::sign(header, env.ciphertext().to_vec(), &keys("US")).unwrap();
    let r = attacker
        .send(&publish_frame(noncanonical.encode().unwrap()), true)
        .await;
    assert_eq!(reason(&r), Some(RejectReason::Malformed), "{r:?}");
    assert!(format!("{r:?}").contains("canonical"), "{r:?}");

    // invalid UTF-8 in the topic (same length, so only the text bytes change)
    let mut wire = env.encode().unwrap();
    let at = wire
        .windows(6)
        .position(|w| w == b"ew.air")
        .expect("topic in the envelope");
    wire[at + 3..at + 6].copy_from_slice(&[0xff, 0xfe, 0xfd]);
    let r = attacker.send(&publish_frame(wire), true).await;
    assert_eq!(reason(&r), Some(RejectReason::Malformed), "{r:?}");

    // topic names of 100 KiB (in an envelope) and 1 MiB (in a subscription)
    let long_topic = edit_header(&env, |h| {
        set(h, "topic", Value::Text("a".repeat(100 << 10)))
    });
    let r = attacker.send(&publish_frame(long_topic), true).await;
    assert_eq!(reason(&r), Some(RejectReason::Malformed), "{r:?}");
    let mut sub = Value::Map(vec![(
        Value::Text("Subscribe".into()),
        Value::Map(vec![
            (Value::Text("name".into()), Value::Text("x".into())),
            (
                Value::Text("pattern".into()),
                Value::Text("a".repeat(1 << 20)),
            ),
            (Value::Text("from".into()), Value::Text("Latest".into())),
            (Value::Text("filter".into()), Value::Text("All".into())),
        ]),
    )]);
    let r = attacker.send(&frame_of(&sub), true).await;
    // over the frame limit, or within it and refused as a topic over 255 bytes
    assert!(
        matches!(reason(&r), Some(RejectReason::TooLarge))
            || format!("{r:?}").contains("longer than 255 bytes"),
        "{r:?}"
    );
    if let Value::Map(m) = &mut sub {
        if let Value::Map(fields) = &mut m[0].1 {
            fields[1].1 = Value::Text("a".repeat(64 << 10));
        }
    }
    let r = attacker.send(&frame_of(&sub), true).await;
    assert_eq!(reason(&r), Some(RejectReason::Malformed), "{r:?}");

    // 10 000 recipients
    let many = edit_header(&env, |h| {
        let Some(Value::Array(list)) = get(h, "recipients") else {
            panic!("recipients")
        };
        let one = list[0].clone();
        set(h, "recipients", Value::Array(vec![one; 10_000]));
    });
    let r = attacker.send(&publish_frame(many), true).await;
    assert_eq!(reason(&r), Some(RejectReason::TooLarge), "{r:?}");

    // replay of a captured valid envelope: its original index, nothing stored twice;
    // and the same envelope sent by another node
    let bytes = env.encode().unwrap();
    let first = us.publish_envelope(&bytes).await.unwrap();
    let r = attacker.send(&publish_frame(bytes.clone()), true).await;
    assert!(
        matches!(&r, Ok(Response::PublishAck { log_index, .. }) if *log_index == first.log_index),
        "{r:?}"
    );
    let other = raw(addr, "XX").await.unwrap();
    let r = other.send(&publish_frame(bytes), true).await;
    assert_eq!(reason(&r), Some(RejectReason::WrongSender), "{r:?}");

    // slowloris: thousands of streams that send one byte and then nothing
    let mut held = Vec::new();
    let slow_started = Instant::now();
    let mut opened = 0;
    let mut conns = Vec::new();
    for _ in 0..4 {
        let c = raw(addr, "XX").await.unwrap();
        for _ in 0..1000 {
            match tokio::time::timeout(Duration::from_millis(50), c.conn.open_bi()).await {
                Ok(Ok((mut s, r))) => {
                    let _ = s.write_all(&[0]).await;
                    held.push((s, r));
                    opened += 1;
                }
                _ => break, // the broker's stream limit holds further streams back
            }
        }
        conns.push(c);
    }
    let (rss_slow, _) = rss_kb(broker.pid());

    // connection flood past the per-node cap (8)
    let mut admitted = Vec::new();
    let mut refused_conns = 0;
    for _ in 0..40 {
        match raw(addr, "KR").await {
            Ok(c) => {
                // TLS 1.3: a refused client learns it at its first request
                match c
                    .send(
                        &encode_frame(&Request::Hello { roster_version: 1 }, usize::MAX).unwrap(),
                        true,
                    )
                    .await
                {
                    Ok(Response::Welcome { .. }) => admitted.push(c),
                    _ => refused_conns += 1,
                }
            }
            Err(_) => refused_conns += 1,
        }
    }
    assert!(
        admitted.len() <= 8,
        "{} connections of one node admitted",
        admitted.len()
    );
    assert!(refused_conns >= 32, "only {refused_conns} refused");

    // the broker still answers, and cuts every slow stream at the frame deadline
    let r = attacker.send(&[0, 0, 0, 1, 0xff], true).await;
    assert_eq!(reason(&r), Some(RejectReason::Malformed), "{r:?}");
    tokio::time::sleep(ewx_net::wire::FRAME_DEADLINE + Duration::from_secs(1)).await;
    let mut cut = 0;
    for (_, recv) in &mut held {
        // an answer (the refusal) or a reset: either way the broker let go of it
        if let Ok(r) = tokio::time::timeout(Duration::from_secs(1), recv.read_to_end(1 << 16)).await
        {
            let _ = r;
            cut += 1;
        }
    }
    assert_eq!(
        cut,
        held.len(),
        "slow streams still open after the frame deadline"
    );
    drop(held);
    drop(conns);
    drop(admitted);

    // the partner never noticed
    tokio::time::sleep(Duration::from_millis(500)).await;
    partner.stop.store(true, Ordering::Relaxed);
    partner.task.await.unwrap();
    let (got, worst) = partner.receiver.await.unwrap();
    let sent = partner.sent.load(Ordering::Relaxed);
    assert_eq!(
        partner.failed.load(Ordering::Relaxed),
        0,
        "partner publishes failed"
    );
    assert_eq!(got, sent, "partner sent {sent}, received {got}");
    let (rss_end, rss_peak) = rss_kb(broker.pid());
    assert!(
        rss_peak < 200 * 1024,
        "broker peak RSS {} MiB under attack",
        rss_peak / 1024
    );
    report(
        "hostile",
        &format!(
            "hostile clients: {refused} random-byte streams, truncated, 4 GiB prefix, 100k-deep CBOR, \
             non-canonical header, invalid UTF-8, 1 MiB topic, 10 000 recipients, replay, wrong sender: \
             all refused precisely; {opened} slowloris streams held (stream cap), {refused_conns}/40 \
             flood connections refused; partner sent {sent} FLASH, received {got}, worst {:.1} ms; \
             broker RSS {} -> {} MiB (peak {} MiB, {} MiB during slowloris) in {:.1} s",
            worst.as_secs_f64() * 1000.0,
            rss_start / 1024,
            rss_end / 1024,
            rss_peak / 1024,
            rss_slow / 1024,
            slow_started.elapsed().as_secs_f64(),
        ),
    );
    us.close().await;
}

/// A publish pipe as the broker sees it: several requests back to back on one stream are
/// answered in the order they came, a refusal in its own place; a frame that does not
/// decode is refused and ends the stream (nothing after it is read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_back_to_back_on_one_stream_are_answered_in_order() {
    let net = TestNet::new();
    let broker = BrokerProcess::start(net.dir.path(), "127.0.0.1:0".parse().unwrap(), "");
    let us = Client::connect(broker.addr, keys("US"), net.roster.clone())
        .await
        .unwrap();
    let seal = |text: &'static str| {
        us.seal(bulletin(
            "ew.air",
            Level::Amber,
            "CORE",
            Precedence::Routine,
            text,
        ))
    };
    let (a, b, c) = (
        seal("a").await.unwrap(),
        seal("b").await.unwrap(),
        seal("c").await.unwrap(),
    );
    let attacker = raw(broker.addr, "US").await.unwrap();
    let mut frames = Vec::new();
    for env in [&a, &a, &b] {
        frames.extend(publish_frame(env.encode().unwrap()));
    }
    frames.extend(encode_frame(&Request::Hello { roster_version: 0 }, usize::MAX).unwrap());
    let answers = attacker.send_all(&frames).await;
    assert_eq!(answers.len(), 4, "{answers:?}");
    // the two copies of `a` are handled concurrently: stored once, both answered with
    // its index, each in its own place
    let acked = |r: &Response, env: &ewx_proto::Envelope| match r {
        Response::PublishAck { id, log_index } if *id == env.header().id => Some(*log_index),
        _ => None,
    };
    assert!(
        acked(&answers[0], &a).is_some() && acked(&answers[0], &a) == acked(&answers[1], &a),
        "the same envelope twice: {answers:?}"
    );
    assert!(acked(&answers[2], &b).is_some(), "{:?}", answers[2]);
    assert!(
        matches!(answers[3], Response::Welcome { .. }),
        "{:?}",
        answers[3]
    );

    // a publish, a frame that is not a request (refused, the stream goes on), a hello, a
    // frame too large to read (refused, the stream ends), and a hello never read
    let hello = encode_frame(&Request::Hello { roster_version: 0 }, usize::MAX).unwrap();
    let mut frames = publish_frame(c.encode().unwrap());
    frames.extend(frame_of(&Value::Text("not a request".into())));
    frames.extend(&hello);
    frames.extend([0xff, 0xff, 0xff, 0xff]);
    frames.extend(&hello);
    let answers = attacker.send_all(&frames).await;
    let kinds: Vec<_> = answers
        .iter()
        .map(|r| match r {
            Response::Rejected { reason, .. } => format!("{reason:?}"),
            Response::PublishAck { .. } => "ack".into(),
            Response::Welcome { .. } => "welcome".into(),
            _ => "other".into(),
        })
        .collect();
    assert_eq!(kinds, ["ack", "Malformed", "welcome", "TooLarge"]);
    assert!(acked(&answers[0], &c).is_some(), "{:?}", answers[0]);
}
