//! Structured ceasefire breach reports end to end: a monitor's report arrives at a
//! partner exactly as filed and exports as one CSV row; an incoherent one is refused
//! before it is sealed.
#![allow(clippy::unwrap_used)]

use ewx_proto::frame::StartAt;
use ewx_proto::{Payload, Precedence};
use ewx_tests::cases::breach as report;
use ewx_tests::{TestNet, bulletin, next, subscribe};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breach_report_arrives_as_filed_and_an_incoherent_one_is_refused() {
    let net = TestNet::new();
    let broker = net.start_broker().await;
    let pl = net.client(&broker, "PL").await;
    let us = net.client(&broker, "US").await;
    let mut sub = subscribe(&us, "cf", "ceasefire.>", StartAt::Latest).await;
    let mut d = bulletin(
        "ceasefire.report",
        ewx_proto::Level::Amber,
        "CORE",
        Precedence::Priority,
        "x",
    );
    d.payload = Payload::CeasefireReport(report(2));
    pl.publish(d.clone()).await.unwrap();
    let got = next(&mut sub).await;
    let Some(Payload::CeasefireReport(r)) = got.payload else {
        panic!("{:?}", got.payload)
    };
    assert_eq!(r, report(2));
    assert!(
        r.csv_row()
            .starts_with("1800000000000,1800000600000,48.015000,37.802000,500,")
    );
    d.payload = Payload::CeasefireReport(report(0));
    let e = pl.publish(d).await.unwrap_err();
    assert!(e.to_string().contains("at least one event"), "{e}");
    for c in [pl, us] {
        c.close().await;
    }
    broker.shutdown().await.unwrap();
}
