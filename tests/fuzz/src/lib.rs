//! # ewx-fuzz — the entry points of the `cargo fuzz` targets
//!
//! The targets in `fuzz_targets/` call these, and so does the seed-corpus test in
//! `ewx-tests` (`tests/tests/fuzz_corpus.rs` includes this very file as a module), so the
//! fuzzer and the regression test run exactly the same code, outside `ewx-proto`.
//!
//! Each function feeds untrusted bytes to every decoder and verifier the broker and the
//! client apply to such bytes — frames, envelopes (verify, open), rosters (verify,
//! update), checkpoints, audit entries, Merkle proofs — against one fixed network from
//! `ewx-testkit`. Any panic is a bug: decoders must answer bad input with an error, and
//! the few asserts state invariants (re-encoding loses nothing, honest proofs verify, no
//! other proof does).
//!
//! Envelopes, rosters and checkpoints are also re-signed with the fixed keys, so the
//! checks that come after a signature run on fuzzed content too: that is what a
//! malicious but enrolled sender, council or broker could send.

use std::fmt::Debug;
use std::sync::OnceLock;

use ed25519_dalek::SigningKey;
use serde::{Serialize, de::DeserializeOwned};

use ewx_proto::access::{Grants, check_subscribe};
use ewx_proto::audit::{Chain, Entry, Event};
use ewx_proto::checkpoint::{Checkpoint, Cosignature, SignedCheckpoint};
use ewx_proto::envelope::DEFAULT_MAX_ENVELOPE;
use ewx_proto::frame::{
    DEFAULT_MAX_FRAME, Decoded, FrameStatus, PREFIX, Push, Request, Response, decode_body,
    decode_frame, encode_frame, split_frame,
};
use ewx_proto::merkle::{MerkleTree, leaf_hash, verify_consistency, verify_inclusion};
use ewx_proto::receipt::Receipt;
use ewx_proto::roster::RosterBody;
use ewx_proto::{
    Digest32, Envelope, Kind, Labels, Level, NodeId, NodeKeys, Opener, Payload, Role, Roster,
    SignedRoster, verify_batch,
};
use ewx_testkit::Network;

/// The fixed clock for skew and validity checks.
pub const NOW_MS: u64 = 1_764_000_000_000;
/// Leaves of the fixed audit tree that proofs are checked against.
pub const TREE_LEAVES: u64 = 100;
/// The fixed network's nodes: two liaisons, a sanctions-only partner, a revoked
/// partner, an auditor and the broker.
pub const NODES: [&str; 6] = ["UA", "PL", "JP", "XX", "AUDIT1", "BROKER"];
/// Bytes before the proof hashes in a [`checkpoint`] input read as a proof.
pub const PROOF_HEAD: usize = 17;

/// The fixed network. Every key comes from a public seed: for tests only.
#[derive(Debug)]
pub struct Fixture {
    /// Roster version 1, signed by council members 0 and 1 (2 of 3 needed).
    pub signed: SignedRoster,
    /// The same, verified.
    pub roster: Roster,
    /// The council's keys.
    pub council: Vec<SigningKey>,
    /// Every node's keys, in [`NODES`] order.
    pub nodes: Vec<NodeKeys>,
    /// An audit tree of [`TREE_LEAVES`] leaves ([`tree_leaf`]).
    pub tree: MerkleTree,
    /// A broker-signed checkpoint of the whole tree, for co-signatures to be checked on.
    pub checkpoint: SignedCheckpoint,
}

impl Fixture {
    /// The keys of a fixed node.
    pub fn keys(&self, id: &NodeId) -> Option<&NodeKeys> {
        self.nodes.iter().find(|k| &k.node == id)
    }

    /// The broker's keys.
    pub fn broker(&self) -> &NodeKeys {
        &self.nodes[5]
    }
}

/// The fixed keys of `name` (any valid node id).
///
/// # Panics
/// If `name` is not a valid node id: callers pass constants.
pub fn node_keys(name: &str) -> NodeKeys {
    ewx_testkit::keys(name)
}

/// The fixed council key `i`.
pub fn council_key(i: u8) -> SigningKey {
    ewx_testkit::council_key(usize::from(i))
}

/// The data of leaf `i` of the fixed audit tree.
pub fn tree_leaf(i: u64) -> Vec<u8> {
    [b"leaf ".as_slice(), &i.to_be_bytes()].concat()
}

/// The fixed network at `version` (the corpus generator signs later versions).
pub fn network(version: u64) -> Network {
    use ewx_testkit::grants::{broader, unrestricted};
    let roles = [
        (Role::Liaison, unrestricted()),
        (Role::Liaison, unrestricted()),
        (Role::Partner, broader()),
        (Role::Partner, unrestricted()),
        (Role::Auditor, Grants::none()),
        (Role::Broker, Grants::none()),
    ];
    NODES
        .iter()
        .zip(roles)
        .fold(Network::new("ewx-fuzz"), |n, (name, (role, grants))| {
            n.node(name, role, grants)
        })
        .revoke(&["XX"])
        .version(version)
        .issued(NOW_MS - 1000)
}

/// The fixed roster body at `version`.
pub fn roster_body(version: u64) -> RosterBody {
    network(version).body()
}

/// The fixed network, built once.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let council: Vec<SigningKey> = (0..3).map(council_key).collect();
        let signed = network(1).signed();
        let roster = signed.verify().expect("the fixed roster verifies");
        let mut tree = MerkleTree::new();
        for i in 0..TREE_LEAVES {
            tree.push(leaf_hash(&tree_leaf(i)));
        }
        let nodes: Vec<NodeKeys> = NODES.iter().map(|n| node_keys(n)).collect();
        let body = Checkpoint {
            size: TREE_LEAVES,
            root: tree.root(),
            prev: Digest32::default(),
            time_ms: NOW_MS,
        };
        let checkpoint = SignedCheckpoint::sign(&body, &nodes[5]).expect("encodes");
        Fixture {
            signed,
            roster,
            council,
            nodes,
            tree,
            checkpoint,
        }
    })
}

/// Bytes as they arrive on a stream: length-prefixed frames one after another, each body
/// read as a [`Request`], [`Response`] and [`Push`]; the whole input is also read as a
/// body already split off its prefix (as the broker's stream reader hands it over).
pub fn frame(data: &[u8]) {
    let mut rest = data;
    loop {
        match split_frame(rest, DEFAULT_MAX_FRAME) {
            Ok(FrameStatus::Complete { body, consumed }) => {
                assert_eq!(consumed, PREFIX + body.len());
                frame_body(body);
                rest = &rest[consumed..];
            }
            Ok(FrameStatus::Incomplete { needed }) => {
                assert!(needed > 0 && needed <= PREFIX + DEFAULT_MAX_FRAME);
                break;
            }
            Err(_) => break,
        }
    }
    let _ = decode_frame::<Request>(data, DEFAULT_MAX_FRAME);
    frame_body(data);
}

fn frame_body(body: &[u8]) {
    if let Some(req) = decoded::<Request>(body) {
        on_request(&req);
    }
    if let Some(resp) = decoded::<Response>(body) {
        on_response(&resp);
    }
    if let Some(push) = decoded::<Push>(body) {
        on_push(&push);
    }
}

/// Decode a frame body; anything that decodes must survive a re-encode unchanged.
fn decoded<T: Serialize + DeserializeOwned + PartialEq + Debug>(body: &[u8]) -> Option<T> {
    let msg = decode_body::<T>(body, DEFAULT_MAX_FRAME).ok()?;
    let again = encode_frame(&msg, usize::MAX).expect("a decoded message encodes");
    match decode_frame::<T>(&again, usize::MAX) {
        Ok(Decoded::Complete(back, used)) => {
            assert_eq!(back, msg, "re-encoded message differs");
            assert_eq!(used, again.len());
        }
        other => panic!("re-encoded message does not decode: {other:?}"),
    }
    Some(msg)
}

/// What the broker does with the parts of a request that carry signed bytes.
fn on_request(req: &Request) {
    let fx = fixture();
    match req {
        Request::Publish { envelope: e } => envelope(e),
        Request::UpdateRoster { roster: r } => roster(r),
        Request::Receipt(r) => receipt(r),
        Request::Subscribe {
            pattern, filter, ..
        } => {
            for n in &fx.roster.body().nodes {
                let _ = check_subscribe(&n.id, &n.grants, pattern);
            }
            let _ = filter.admits(true);
        }
        Request::Cosign { cosignature, .. } => cosignatures(&fx.checkpoint, cosignature),
        _ => {}
    }
}

/// What the client and the auditor do with a response.
fn on_response(resp: &Response) {
    match resp {
        Response::Welcome {
            roster: Some(r), ..
        } => roster(r),
        Response::AuditEntries { entries, .. } => {
            let mut chain = Chain::new();
            for e in entries {
                audit_entry(e);
                if chain.push(e).is_err() {
                    break;
                }
            }
        }
        Response::Bytes { bytes: Some(b) } => {
            envelope(b);
            roster(b);
        }
        Response::Checkpoints { checkpoints } => {
            for c in checkpoints {
                signed_checkpoint(c);
            }
        }
        Response::Proof { hashes } => {
            let fx = fixture();
            let (n, root) = (TREE_LEAVES, fx.tree.root());
            let leaf = leaf_hash(&tree_leaf(3));
            let _ = verify_inclusion(&leaf, 3, n, hashes, &root);
            let old = fx.tree.root_at(37).expect("37 leaves exist");
            let _ = verify_consistency(37, n, &old, &root, hashes);
        }
        _ => {}
    }
}

/// What the client does with a push.
fn on_push(push: &Push) {
    match push {
        Push::Delivery { envelope: e, .. } => envelope(e),
        Push::Receipt(r) => receipt(r),
        Push::Roster { roster: r } => roster(r),
        // a reminder is only shown: nothing in it is trusted
        Push::Reminder(_) => {}
    }
}

fn receipt(r: &Receipt) {
    let _ = r.verify(&fixture().roster);
}

fn cosignatures(signed: &SignedCheckpoint, c: &Cosignature) {
    let mut cp = signed.clone();
    cp.cosignatures.push(c.clone());
    let _ = cp.verify_cosignatures(&fixture().roster);
}

/// Envelope wire bytes: decode, the broker's checks, and opening by every fixed node —
/// as sent, and re-signed by the sender's fixed key. The bytes (and the ciphertext) are
/// also read as a decrypted payload of every kind.
pub fn envelope(data: &[u8]) {
    payloads(data);
    let Ok(env) = Envelope::decode(data, DEFAULT_MAX_ENVELOPE) else {
        return;
    };
    let again = env.encode().expect("a decoded envelope encodes");
    assert_eq!(
        Envelope::decode(&again, usize::MAX).ok().as_ref(),
        Some(&env),
        "re-encoded envelope differs"
    );
    let fx = fixture();
    let h = env.header();
    let _ = h.check_skew(NOW_MS, 60_000);
    let _ = h.check_recipients(&fx.roster);
    let _ = verify_batch(&[(&env, &fx.roster)]);
    case_fold(h);
    open_all(&env);
    payloads(env.ciphertext());
    let Some(sender) = fx.keys(&h.sender) else {
        return;
    };
    let resigned = Envelope::sign(
        env.header_bytes().to_vec(),
        env.ciphertext().to_vec(),
        sender,
    );
    if let Ok(resigned) = resigned {
        let _ = verify_batch(&[(&resigned, &fx.roster), (&env, &fx.roster)]);
        open_all(&resigned);
    }
}

/// A header's case tag through the fold, as an opening and as a reply to itself.
fn case_fold(h: &ewx_proto::Header) {
    let Some(tag) = &h.case else { return };
    let _ = ewx_proto::case::check_recipients(h);
    let mut book = ewx_proto::case::CaseBook::new();
    let msg = ewx_proto::case::CaseMessage {
        id: h.id,
        sender: &h.sender,
        kind: h.kind,
        labels: &h.labels,
        tag,
        log_index: 1,
        log_ms: NOW_MS,
    };
    let _ = book.apply(&msg, &fixture().roster);
    let _ = book.apply(&msg, &fixture().roster);
    let _ = book.due(u64::MAX);
}

fn open_all(env: &Envelope) {
    let fx = fixture();
    if env.verify(&fx.roster).is_err() {
        return;
    }
    let opener = Opener::default();
    for me in &fx.nodes {
        let _ = opener.open(env, &fx.roster, me);
    }
}

fn payloads(data: &[u8]) {
    for kind in Kind::ALL {
        if let Ok(p) = Payload::decode(data, kind) {
            let again = p.encode().expect("a decoded payload encodes");
            assert_eq!(Payload::decode(&again, kind).ok(), Some(p));
            break;
        }
    }
}

/// Signed roster wire bytes: decode, verify on their own and as an update of the fixed
/// roster, and again re-signed by the fixed council.
pub fn roster(data: &[u8]) {
    let Ok(signed) = SignedRoster::decode(data) else {
        return;
    };
    let again = signed.encode().expect("a decoded roster encodes");
    assert_eq!(SignedRoster::decode(&again).ok().as_ref(), Some(&signed));
    let fx = fixture();
    if let Ok(r) = signed.verify() {
        use_roster(&r);
    }
    if let Ok(r) = signed.verify_update(&fx.roster) {
        use_roster(&r);
    }
    let Ok(body) = signed.body() else {
        return;
    };
    let _ = body.validate();
    let mut resigned = SignedRoster {
        body: signed.body,
        signatures: Vec::new(),
    };
    resigned.sign(&fx.council[0]);
    resigned.sign(&fx.council[2]);
    if let Ok(r) = resigned.verify_update(&fx.roster) {
        use_roster(&r);
        let _ = fx.signed.verify_update(&r);
    }
}

/// The lookups the broker and client make on a verified roster.
fn use_roster(r: &Roster) {
    let _ = r.council_id();
    let _ = r.check_valid_at(NOW_MS);
    let _ = r.hash();
    for n in &r.body().nodes {
        let _ = r.active(&n.id);
        let _ = r.node_by_key(&n.sign);
    }
    let labels = Labels::new(Level::Amber, []);
    let _ = r.recipients(&labels).count();
}

/// Audit data: a signed checkpoint, an audit entry, and a Merkle proof read from the
/// layout of [`proof_input`]; the same bytes are tried as all three.
pub fn checkpoint(data: &[u8]) {
    signed_checkpoint(data);
    audit_entry(data);
    proof(data);
}

fn signed_checkpoint(data: &[u8]) {
    let Ok(cp) = SignedCheckpoint::decode(data) else {
        return;
    };
    let again = cp.encode().expect("a decoded checkpoint encodes");
    assert_eq!(SignedCheckpoint::decode(&again).ok().as_ref(), Some(&cp));
    let fx = fixture();
    let broker = fx.broker();
    let _ = cp.verify(&broker.sign_public());
    let _ = cp.verify_cosignatures(&fx.roster);
    let _ = cp.body_hash();
    let Ok(body) = cp.checkpoint() else {
        return;
    };
    // what the broker could sign: it must verify and give back the same checkpoint
    let mut resigned = SignedCheckpoint::sign(&body, broker).expect("a checkpoint encodes");
    assert_eq!(resigned.verify(&broker.sign_public()).ok(), Some(body));
    resigned.cosignatures = cp.cosignatures.clone();
    resigned.cosignatures.push(resigned.cosign(&fx.nodes[2]));
    let _ = resigned.verify_cosignatures(&fx.roster);
}

fn audit_entry(data: &[u8]) {
    let Ok(entry) = Entry::decode(data) else {
        return;
    };
    let again = entry.encode().expect("a decoded entry encodes");
    assert_eq!(Entry::decode(&again).ok().as_ref(), Some(&entry));
    let _ = Chain::new().push(data);
    if let Event::Receipt(r) = &entry.event {
        receipt(r);
    }
}

/// A proof input for [`checkpoint`]: `kind` (bit 0: consistency rather than inclusion;
/// bit 1: take `a` and `b` as they are instead of modulo the fixed tree's size + 1), `a`
/// (leaf index or old size) and `b` (tree size or new size) as u64 big-endian, then the
/// proof's hashes.
pub fn proof_input(kind: u8, a: u64, b: u64, hashes: &[Digest32]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&a.to_be_bytes());
    out.extend_from_slice(&b.to_be_bytes());
    for h in hashes {
        out.extend_from_slice(&h.0);
    }
    out
}

fn proof(data: &[u8]) {
    let Some((head, rest)) = data.split_first_chunk::<PROOF_HEAD>() else {
        return;
    };
    let word = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&head[i..i + 8]);
        u64::from_be_bytes(b)
    };
    let (mut a, mut b) = (word(1), word(9));
    if head[0] & 2 == 0 {
        (a, b) = (a % (TREE_LEAVES + 1), b % (TREE_LEAVES + 1));
    }
    let hashes: Vec<Digest32> = rest
        .chunks_exact(32)
        .filter_map(|c| c.try_into().ok().map(Digest32))
        .collect();
    if head[0] & 1 == 0 {
        inclusion(a, b, &hashes);
    } else {
        consistency(a, b, &hashes);
    }
}

/// The fixed tree's root at `size`, or for a size beyond it the first hash given.
fn root_at(size: u64, hashes: &[Digest32]) -> Digest32 {
    let fx = fixture();
    match fx.tree.root_at(size) {
        Ok(root) => root,
        Err(_) => hashes.first().copied().unwrap_or_default(),
    }
}

fn inclusion(index: u64, size: u64, hashes: &[Digest32]) {
    let tree = &fixture().tree;
    let leaf = leaf_hash(&tree_leaf(index));
    let root = root_at(size, hashes);
    let verdict = verify_inclusion(&leaf, index, size, hashes, &root);
    if size > TREE_LEAVES {
        return;
    }
    match tree.inclusion_proof(index, size) {
        Ok(honest) => {
            verify_inclusion(&leaf, index, size, &honest, &root)
                .expect("an honest inclusion proof verifies");
            if verdict.is_ok() {
                assert_eq!(hashes, &honest[..], "a second inclusion proof verified");
            }
        }
        Err(_) => assert!(verdict.is_err() && index >= size),
    }
}

fn consistency(old: u64, new: u64, hashes: &[Digest32]) {
    let tree = &fixture().tree;
    let (old_root, new_root) = (root_at(old, hashes), root_at(new, hashes));
    let verdict = verify_consistency(old, new, &old_root, &new_root, hashes);
    if new > TREE_LEAVES {
        return;
    }
    match tree.consistency_proof(old, new) {
        Ok(honest) => {
            verify_consistency(old, new, &old_root, &new_root, &honest)
                .expect("an honest consistency proof verifies");
            if verdict.is_ok() {
                assert_eq!(hashes, &honest[..], "a second consistency proof verified");
            }
        }
        Err(_) => assert!(verdict.is_err() && old > new),
    }
}
