//! TLS 1.3 for QUIC with identities pinned to the roster: every node presents a
//! self-signed certificate over its ed25519 identity key; the broker accepts only keys of
//! active roster nodes, and clients accept only the broker key the roster names. No CA,
//! no passwords. Shared by the broker and the client.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use ed25519_dalek::pkcs8::EncodePrivateKey;
use ewx_proto::keys::SignPublic;
use ewx_proto::{NodeId, NodeKeys, Roster};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::error::{Error, Result};

/// ALPN protocol id.
pub const ALPN: &[u8] = b"ewx/1";
/// ALPN of the replication protocol between the replicas of a cluster (same port, same
/// roster-pinned mutual TLS, its own protocol).
pub const ALPN_RAFT: &[u8] = b"ewx-raft/1";
/// Server name clients put in the handshake (identity comes from the pinned key instead).
pub const SERVER_NAME: &str = "ewx-broker";

/// The roster in force, shared between the TLS verifier and the broker.
#[derive(Debug, Clone)]
pub struct RosterCell(Arc<RwLock<Arc<Roster>>>);

impl RosterCell {
    /// Wrap a verified roster.
    pub fn new(roster: Roster) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(roster))))
    }

    /// The roster now.
    pub fn get(&self) -> Arc<Roster> {
        match self.0.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replace the roster.
    pub fn set(&self, roster: impl Into<Arc<Roster>>) {
        let new = roster.into();
        match self.0.write() {
            Ok(mut g) => *g = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
    }
}

/// Read one DER TLV: (tag, contents, rest).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = match first {
        n if n < 0x80 => (usize::from(n), rest),
        0x81..=0x83 => {
            let k = usize::from(first & 0x7f);
            let (bytes, rest) = (rest.get(..k)?, rest.get(k..)?);
            (
                bytes
                    .iter()
                    .fold(0usize, |acc, b| (acc << 8) | usize::from(*b)),
                rest,
            )
        }
        _ => return None,
    };
    Some((tag, rest.get(..len)?, rest.get(len..)?))
}

/// The ed25519 key in a certificate's SubjectPublicKeyInfo, parsed field by field (never
/// by searching the bytes, which a crafted certificate could fool).
pub fn ed25519_key_of(cert: &[u8]) -> Option<SignPublic> {
    const SPKI_PREFIX: [u8; 12] = [
        0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00, 0, 0,
    ];
    let (0x30, body, []) = tlv(cert)? else {
        return None;
    };
    let (0x30, tbs, _) = tlv(body)? else {
        return None;
    };
    let mut rest = tbs;
    if let (0xa0, _, after) = tlv(rest)? {
        rest = after; // explicit version
    }
    for _ in 0..5 {
        rest = tlv(rest)?.2; // serial, signature algorithm, issuer, validity, subject
    }
    let (0x30, spki, _) = tlv(rest)? else {
        return None;
    };
    if spki.len() != 42 || spki[..10] != SPKI_PREFIX[..10] {
        return None;
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(&spki[10..]);
    Some(SignPublic(key))
}

/// A self-signed certificate over the node's identity key, and that key for rustls.
///
/// # Errors
/// `Transport` if the certificate cannot be made.
pub fn identity(keys: &NodeKeys) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>)> {
    let err = |e: &dyn std::fmt::Display| Error::Transport(format!("identity certificate: {e}"));
    let pkcs8 = keys.signing_key().to_pkcs8_der().map_err(|e| err(&e))?;
    let key_der = PrivatePkcs8KeyDer::from(pkcs8.as_bytes().to_vec());
    let key_pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&key_der, &rcgen::PKCS_ED25519)
        .map_err(|e| err(&e))?;
    let params = rcgen::CertificateParams::new(vec![keys.node.as_str().to_ascii_lowercase()])
        .map_err(|e| err(&e))?;
    let cert = params.self_signed(&key_pair).map_err(|e| err(&e))?;
    Ok((cert.der().clone(), PrivateKeyDer::Pkcs8(key_der)))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn algorithms() -> WebPkiSupportedAlgorithms {
    provider().signature_verification_algorithms
}

/// The handshake-signature half of both verifiers: TLS 1.3 only, ed25519 only, checked
/// against the key in the presented certificate.
macro_rules! handshake_signatures {
    () => {
        fn verify_tls12_signature(
            &self,
            _message: &[u8],
            _cert: &CertificateDer<'_>,
            _dss: &DigitallySignedStruct,
        ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
            Err(rustls::Error::PeerIncompatible(
                rustls::PeerIncompatible::Tls12NotOffered,
            ))
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(message, cert, dss, &self.algs)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            vec![SignatureScheme::ED25519]
        }
    };
}

/// Accepts a client only if its certificate key belongs to an active roster node.
#[derive(Debug)]
struct RosterClients {
    roster: RosterCell,
    algs: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for RosterClients {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        let key = ed25519_key_of(end_entity).ok_or(rustls::Error::InvalidCertificate(
            rustls::CertificateError::BadEncoding,
        ))?;
        match self.roster.get().node_by_key(&key) {
            Some(n) if !n.revoked => Ok(ClientCertVerified::assertion()),
            Some(n) => {
                tracing::warn!(node = %n.id, "refused TLS client: node is revoked");
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::Revoked,
                ))
            }
            None => {
                tracing::warn!(key_id = %key.key_id(), "refused TLS client: key is not in the roster");
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::UnknownIssuer,
                ))
            }
        }
    }

    handshake_signatures!();
}

/// Accepts the server only if it presents one of the pinned broker keys.
#[derive(Debug)]
struct PinnedBroker {
    keys: Vec<SignPublic>,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedBroker {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match ed25519_key_of(end_entity) {
            Some(k) if self.keys.contains(&k) => Ok(ServerCertVerified::assertion()),
            _ => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            )),
        }
    }

    handshake_signatures!();
}

/// QUIC transport limits shared by both ends.
#[derive(Debug, Clone, Copy)]
pub struct TransportLimits {
    /// Idle timeout.
    pub idle_timeout: Duration,
    /// Concurrent bidirectional streams the peer may open.
    pub max_bidi_streams: u32,
    /// Concurrent unidirectional streams the peer may open.
    pub max_uni_streams: u32,
    /// Per-stream receive window in bytes.
    pub stream_window: u32,
    /// Per-connection receive window in bytes.
    pub connection_window: u32,
}

impl TransportLimits {
    /// What a client uses: it opens request streams, the broker opens delivery streams.
    pub fn client() -> Self {
        Self {
            idle_timeout: Duration::from_secs(30),
            max_bidi_streams: 0,
            max_uni_streams: 256,
            stream_window: 2 << 20,
            connection_window: 64 << 20,
        }
    }
}

fn transport(limits: TransportLimits) -> Result<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    let idle = quinn::IdleTimeout::try_from(limits.idle_timeout)
        .map_err(|e| Error::Transport(format!("idle timeout: {e}")))?;
    t.max_idle_timeout(Some(idle));
    t.keep_alive_interval(Some(limits.idle_timeout / 3));
    t.max_concurrent_bidi_streams(limits.max_bidi_streams.into());
    t.max_concurrent_uni_streams(limits.max_uni_streams.into());
    t.stream_receive_window(limits.stream_window.into());
    t.receive_window(limits.connection_window.into());
    Ok(t)
}

/// The broker's QUIC server configuration.
///
/// # Errors
/// `Transport` on a TLS setup failure.
pub fn server_config(
    keys: &NodeKeys,
    roster: RosterCell,
    limits: TransportLimits,
) -> Result<quinn::ServerConfig> {
    let (cert, key) = identity(keys)?;
    let verifier = Arc::new(RosterClients {
        roster,
        algs: algorithms(),
    });
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Transport(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![cert], key)
        .map_err(|e| Error::Transport(e.to_string()))?;
    tls.alpn_protocols = vec![ALPN.to_vec(), ALPN_RAFT.to_vec()];
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| Error::Transport(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(Arc::new(transport(limits)?));
    Ok(config)
}

/// A client's QUIC configuration: its own identity, and the broker keys pinned (a
/// cluster's replicas each have their own; any of them is accepted).
///
/// # Errors
/// `Transport` on a TLS setup failure.
pub fn client_config(
    keys: &NodeKeys,
    brokers: Vec<SignPublic>,
    limits: TransportLimits,
) -> Result<quinn::ClientConfig> {
    pinned_config(keys, brokers, limits, ALPN)
}

/// A replica's QUIC configuration for reaching another replica (ALPN [`ALPN_RAFT`]): its
/// own identity, and the peer replica's key pinned.
///
/// # Errors
/// `Transport` on a TLS setup failure.
pub fn replica_config(
    keys: &NodeKeys,
    peer: SignPublic,
    limits: TransportLimits,
) -> Result<quinn::ClientConfig> {
    pinned_config(keys, vec![peer], limits, ALPN_RAFT)
}

fn pinned_config(
    keys: &NodeKeys,
    brokers: Vec<SignPublic>,
    limits: TransportLimits,
    alpn: &[u8],
) -> Result<quinn::ClientConfig> {
    let (cert, key) = identity(keys)?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Transport(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedBroker {
            keys: brokers,
            algs: algorithms(),
        }))
        .with_client_auth_cert(vec![cert], key)
        .map_err(|e| Error::Transport(e.to_string()))?;
    tls.alpn_protocols = vec![alpn.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| Error::Transport(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(Arc::new(transport(limits)?));
    Ok(config)
}

/// The roster node a connection authenticated as.
///
/// # Errors
/// `Transport` if the peer has no certificate, or it is not an active roster node.
pub fn peer_node(conn: &quinn::Connection, roster: &Roster) -> Result<NodeId> {
    let certs = conn
        .peer_identity()
        .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or_else(|| Error::Transport("peer presented no certificate".into()))?;
    let key = certs
        .first()
        .and_then(|c| ed25519_key_of(c))
        .ok_or_else(|| Error::Transport("peer certificate has no ed25519 key".into()))?;
    let node = roster
        .node_by_key(&key)
        .ok_or_else(|| Error::Transport(format!("key {} is not in the roster", key.key_id())))?;
    if node.revoked {
        return Err(Error::Transport(format!("node {} is revoked", node.id)));
    }
    Ok(node.id.clone())
}

/// Socket buffer asked for (the kernel caps it at `net.core.rmem_max`/`wmem_max`).
const SOCKET_BUFFER: usize = 4 << 20;

/// A UDP socket bound to `addr` with large send and receive buffers. With the default
/// 208 KiB a burst of deliveries overflows the receive buffer even on loopback; QUIC takes
/// each drop as congestion and slows down, and a warning waits. Buffer sizes are best
/// effort: a smaller kernel limit only logs.
///
/// # Errors
/// If the socket cannot be created or bound.
pub fn udp_socket(addr: std::net::SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    for (what, r) in [
        ("receive", socket.set_recv_buffer_size(SOCKET_BUFFER)),
        ("send", socket.set_send_buffer_size(SOCKET_BUFFER)),
    ] {
        if let Err(e) = r {
            tracing::debug!("cannot enlarge the UDP {what} buffer: {e}");
        }
    }
    if addr.is_ipv6() {
        // accept IPv4-mapped peers too when bound to [::]
        let _ = socket.set_only_v6(false);
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Random 8-byte connection ids (cryptographically random, so unlinkable), any of which
/// a restarted broker answers with a stateless reset.
struct RandomCids;

impl quinn::ConnectionIdGenerator for RandomCids {
    fn generate_cid(&mut self) -> quinn::ConnectionId {
        let mut id = [0u8; 8];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut id);
        quinn::ConnectionId::new(&id)
    }

    fn cid_len(&self) -> usize {
        8
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// The broker's QUIC endpoint. Its stateless-reset key is derived from the broker's
/// signing key, so a broker restarted after a crash recognises its predecessor's
/// connections and resets them at their first packet: clients reconnect at once instead
/// of waiting out the idle timeout (RFC 9000 §10.3).
///
/// # Errors
/// `Transport` if the address cannot be bound.
pub fn endpoint(
    keys: &NodeKeys,
    server: quinn::ServerConfig,
    listen: std::net::SocketAddr,
) -> Result<quinn::Endpoint> {
    let salt = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"ewx/v1/quic-stateless-reset");
    let reset_key: ring::hmac::Key = salt
        .extract(&keys.signing_key().to_bytes())
        .expand(&[b"reset key"], ring::hmac::HMAC_SHA256)
        .map_err(|_| Error::Transport("cannot derive the stateless-reset key".into()))?
        .into();
    let socket = udp_socket(listen)
        .map_err(|e| Error::Transport(format!("cannot listen on {listen}: {e}")))?;
    let runtime = quinn::default_runtime()
        .ok_or_else(|| Error::Transport("no async runtime for QUIC".into()))?;
    let mut endpoint = quinn::EndpointConfig::new(Arc::new(reset_key));
    // quinn's default connection ids carry a hash under a per-process random key, which
    // a restarted broker cannot check: it would drop its predecessor's packets silently
    // instead of resetting them, and clients would wait out the idle timeout
    endpoint.cid_generator(|| Box::new(RandomCids));
    // after a restart every client's next packet asks for a reset at once; quinn's default
    // of one reset per 20 ms would leave some to time out (a reset is smaller than the
    // packet that incites it, so allowing more cannot amplify)
    endpoint.min_reset_interval(Duration::from_millis(1));
    quinn::Endpoint::new(endpoint, Some(server), socket, runtime)
        .map_err(|e| Error::Transport(format!("cannot listen on {listen}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_read_from_the_certificate_structure() {
        let keys = NodeKeys::from_secrets(NodeId::new("PL").unwrap(), [5; 32], [6; 32]);
        let (cert, _) = identity(&keys).unwrap();
        assert_eq!(ed25519_key_of(&cert), Some(keys.sign_public()));
        // any truncation or trailing garbage is refused, never a panic
        for cut in 0..cert.len() {
            assert_eq!(ed25519_key_of(&cert[..cut]), None, "cut {cut}");
        }
        let mut longer = cert.to_vec();
        longer.push(0);
        assert_eq!(ed25519_key_of(&longer), None);
    }
}
