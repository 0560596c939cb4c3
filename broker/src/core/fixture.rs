//! What the broker's unit tests share: the demo Compact network and envelopes sealed by
//! its nodes, as a real publisher would send them.
#![allow(clippy::unwrap_used)]

use ewx_proto::payload::Bulletin;
use ewx_proto::{
    Draft, Envelope, EpochPolicy, Labels, Level, Payload, Precedence, Roster, Sealer, Topic,
};
use ewx_testkit::{Network, keys};

/// A time inside the demo roster's validity.
pub const NOW: u64 = ewx_testkit::ISSUED_MS + 60_000;

/// The demo network's roster.
pub fn roster() -> Roster {
    Network::compact().roster()
}

/// A bulletin sealed and signed by `sender` for the recipients the roster allows.
pub fn sealed(
    roster: &Roster,
    sender: &str,
    topic: &str,
    labels: (Level, &str),
    precedence: Precedence,
    seq: u64,
) -> Envelope {
    let draft = Draft {
        topic: Topic::new(topic).unwrap(),
        precedence,
        labels: Labels::new(labels.0, Labels::parse_compartments(labels.1).unwrap()),
        payload: Payload::Bulletin(Bulletin {
            headline: format!("bulletin {seq}"),
            body: "assessment".into(),
            area: None,
            event_ms: None,
            confidence: None,
        }),
        seq,
        expires_ms: None,
        receipt: true,
        case: None,
    };
    let mut sealer = Sealer::new(keys(sender), EpochPolicy::default());
    sealer
        .seal(roster, draft, NOW, &mut rand::rngs::OsRng)
        .unwrap()
}

/// UA's FLASH early warning on `ew.air`, AMBER, CORE.
pub fn warning(roster: &Roster, seq: u64) -> Envelope {
    sealed(
        roster,
        "UA",
        "ew.air",
        (Level::Amber, "CORE"),
        Precedence::Flash,
        seq,
    )
}
