//! TLS (`https://` names) over real loopback sockets, with certificates made at test time.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::io::Write;
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{bound_as, eventually, test_config, SECRET, WAIT};
use grid_core::{
    BoxedTransport, Config, DialFn, DialTarget, Error, HandlerSpec, Manager, RemoteError, TlsConfig,
};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

const ECHO: HandlerSpec = HandlerSpec::named("Tls.echo");

// --- certificates ---------------------------------------------------------------------------

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// A node certificate signed by `ca`, valid for `hosts`: (certificate PEM, private key PEM).
fn leaf(ca: &Ca, hosts: &[&str]) -> (String, String) {
    let mut params =
        CertificateParams::new(hosts.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, hosts[0]);
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// TLS for a node on loopback: a leaf from `signer`, trusting `trusted`.
fn node_tls(signer: &Ca, trusted: &Ca, mutual: bool) -> TlsConfig {
    let (cert, key) = leaf(signer, &["localhost", "127.0.0.1"]);
    if mutual {
        TlsConfig::from_pem_mutual(cert.as_bytes(), key.as_bytes(), trusted.pem.as_bytes())
    } else {
        TlsConfig::from_pem(cert.as_bytes(), key.as_bytes(), trusted.pem.as_bytes())
    }
    .unwrap()
}

// --- nodes ----------------------------------------------------------------------------------

/// Two loopback listeners, kept, and node names of `schemes` pointing at them.
fn bound_pair(schemes: [&str; 2]) -> (Vec<TcpListener>, Vec<String>) {
    schemes.iter().map(|s| bound_as(s)).unzip()
}

async fn start(
    listener: TcpListener,
    name: &str,
    peers: &[String],
    tls: Option<TlsConfig>,
    config: Config,
) -> Result<Manager, Error> {
    let mut b = common::builder(listener, name, peers, config).start_not_ready();
    if let Some(t) = tls {
        b = b.tls(t);
    }
    let m = b.start().await?;
    // Registered before the node takes peers: its handler table travels in the handshake, and
    // nothing is sent on a link until a test calls.
    m.register_unary(ECHO, |_ctx, b| async move { Ok::<_, RemoteError>(b) })?;
    m.set_ready();
    Ok(m)
}

/// Starts two nodes on `listeners`, named `names`, with TLS settings `tls_a` and `tls_b`.
async fn pair(
    (listeners, names): (Vec<TcpListener>, Vec<String>),
    tls_a: TlsConfig,
    tls_b: TlsConfig,
    config: Config,
) -> (Manager, Manager) {
    let mut listeners = listeners.into_iter();
    let (la, lb) = (listeners.next().unwrap(), listeners.next().unwrap());
    let a = start(la, &names[0], &names, Some(tls_a), config.clone())
        .await
        .unwrap();
    let b = start(lb, &names[1], &names, Some(tls_b), config)
        .await
        .unwrap();
    (a, b)
}

async fn echo_both_ways(a: &Manager, b: &Manager) {
    for (from, to) in [(a, b), (b, a)] {
        let conn = from.connection(to.name()).unwrap();
        let payload = Bytes::from(format!("hello from {}", from.name()));
        let resp = tokio::time::timeout(WAIT, conn.request(ECHO.id, payload.clone()))
            .await
            .expect("echo timed out")
            .unwrap();
        assert_eq!(resp, payload);
        // Several TLS records' worth.
        let big = Bytes::from((0..300_000u32).map(|i| i as u8).collect::<Vec<u8>>());
        let resp = tokio::time::timeout(WAIT, conn.request(ECHO.id, big.clone()))
            .await
            .expect("large echo timed out")
            .unwrap();
        assert_eq!(resp, big);
    }
}

/// Neither side of `a`-`b` connects within a second, whichever dials.
async fn assert_never_connected(a: &Manager, b: &Manager) {
    for (m, peer) in [(a, b), (b, a)] {
        let err = m
            .connection(peer.name())
            .unwrap()
            .wait_for_connect(Duration::from_secs(1))
            .await;
        assert!(
            matches!(err, Err(Error::NotConnected { .. })),
            "{} connected to {}: {err:?}",
            m.name(),
            peer.name()
        );
    }
}

// --- captured logs --------------------------------------------------------------------------

/// The log lines of one test: a `tracing` subscriber of its own, installed for the test's
/// thread only ([`Logs::capture`]), so a line from another test can never satisfy a wait.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

/// Log text that a failed wait prints as its lines.
struct Lines(String);

impl std::fmt::Debug for Lines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "\n{}", self.0)
    }
}

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    /// Captures the warnings logged on this thread until the guard drops. Only a
    /// current-thread runtime keeps every task of the test (the managers' included) on it.
    fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        (logs, guard)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Waits (bounded) until a line holds every one of `needles`; fails loudly with the logs.
    async fn wait_for(&self, needles: &[&str]) {
        eventually(&format!("a log line with {needles:?}"), WAIT, || {
            let all = self.text();
            if all
                .lines()
                .any(|line| needles.iter().all(|n| line.contains(n)))
            {
                Ok(())
            } else {
                Err(Lines(all))
            }
        })
        .await;
    }
}

// --- tests ----------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_nodes_call_each_other() {
    let ca = ca("grid test CA");
    let (a, b) = pair(
        bound_pair(["https", "https"]),
        node_tls(&ca, &ca, false),
        node_tls(&ca, &ca, false),
        test_config(),
    )
    .await;
    a.wait_for_peers(WAIT).await.unwrap();
    b.wait_for_peers(WAIT).await.unwrap();
    echo_both_ways(&a, &b).await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_nodes_call_each_other() {
    let ca = ca("grid test CA");
    let (a, b) = pair(
        bound_pair(["https", "https"]),
        node_tls(&ca, &ca, true),
        node_tls(&ca, &ca, true),
        test_config(),
    )
    .await;
    a.wait_for_peers(WAIT).await.unwrap();
    b.wait_for_peers(WAIT).await.unwrap();
    echo_both_ways(&a, &b).await;
    a.shutdown().await;
    b.shutdown().await;
}

/// The certificate is checked against the host in the peer's name (`localhost`), not against
/// the address it is reached at (`127.0.0.1`, which the certificate does not cover).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_name_comes_from_the_peer_name() {
    let ca = ca("grid test CA");
    let (listeners, addrs): (Vec<TcpListener>, Vec<String>) = (0..2)
        .map(|_| {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap().to_string();
            (l, addr)
        })
        .unzip();
    let names: Vec<String> = listeners
        .iter()
        .map(|l| format!("https://localhost:{}", l.local_addr().unwrap().port()))
        .collect();
    let mut nodes = Vec::new();
    for (i, (name, listener)) in names.iter().zip(listeners).enumerate() {
        let (cert, key) = leaf(&ca, &["localhost"]);
        let tls = TlsConfig::from_pem(cert.as_bytes(), key.as_bytes(), ca.pem.as_bytes()).unwrap();
        let other = 1 - i;
        let m = common::builder(listener, name, &names, test_config())
            .peer_address(names[other].clone(), addrs[other].clone())
            .tls(tls)
            .start()
            .await
            .unwrap();
        m.register_unary(ECHO, |_ctx, b| async move { Ok::<_, RemoteError>(b) })
            .unwrap();
        nodes.push(m);
    }
    for m in &nodes {
        m.wait_for_peers(WAIT).await.unwrap();
    }
    echo_both_ways(&nodes[0], &nodes[1]).await;
    for m in &nodes {
        m.shutdown().await;
    }
}

/// TLS runs on top of whatever byte stream a custom dialer returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_runs_over_a_custom_dialer() {
    let ca = ca("grid test CA");
    let (listeners, names) = bound_pair(["https", "https"]);
    let dials = Arc::new(AtomicUsize::new(0));
    let mut nodes = Vec::new();
    for (name, listener) in names.iter().zip(listeners) {
        let counter = dials.clone();
        let dialer: DialFn = Arc::new(move |target: DialTarget| {
            counter.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                let tcp = tokio::net::TcpStream::connect(target.address).await?;
                Ok(Box::new(tcp) as BoxedTransport)
            })
        });
        let m = common::builder(listener, name, &names, test_config())
            .dialer(dialer)
            .tls(node_tls(&ca, &ca, false))
            .start()
            .await
            .unwrap();
        m.register_unary(ECHO, |_ctx, b| async move { Ok::<_, RemoteError>(b) })
            .unwrap();
        nodes.push(m);
    }
    for m in &nodes {
        m.wait_for_peers(WAIT).await.unwrap();
    }
    assert!(dials.load(Ordering::SeqCst) >= 1);
    echo_both_ways(&nodes[0], &nodes[1]).await;
    for m in &nodes {
        m.shutdown().await;
    }
}

/// An `http://` node and an `https://` node: each link follows the accepting node's scheme.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_http_and_https_nodes() {
    let ca = ca("grid test CA");
    let (a, b) = pair(
        bound_pair(["http", "https"]),
        node_tls(&ca, &ca, false),
        node_tls(&ca, &ca, false),
        test_config(),
    )
    .await;
    a.wait_for_peers(WAIT).await.unwrap();
    b.wait_for_peers(WAIT).await.unwrap();
    echo_both_ways(&a, &b).await;
    a.shutdown().await;
    b.shutdown().await;
}

/// Bytes the caller writes for one small unary call on a fresh two-node cluster.
async fn request_bytes(scheme: &str, checksum: Option<bool>) -> u64 {
    let ca = ca("grid test CA");
    // No pings during the measurement.
    let config = Config {
        ping_interval: Duration::from_secs(60),
        idle_timeout: Duration::from_secs(240),
        checksum,
        ..test_config()
    };
    let (a, b) = pair(
        bound_pair([scheme, scheme]),
        node_tls(&ca, &ca, false),
        node_tls(&ca, &ca, false),
        config,
    )
    .await;
    a.wait_for_peers(WAIT).await.unwrap();
    b.wait_for_peers(WAIT).await.unwrap();
    let conn = a.connection(b.name()).unwrap();
    // Nothing else goes out on the link: both tables travelled in the handshake (`start`), and
    // the first ping is a minute away. The assertion below fails loudly if that changes.
    let before = conn.stats();
    let resp = tokio::time::timeout(WAIT, conn.request(ECHO.id, Bytes::from_static(b"x")))
        .await
        .expect("echo timed out")
        .unwrap();
    assert_eq!(&resp[..], b"x");
    let after = conn.stats();
    assert_eq!(
        after.frames_out - before.frames_out,
        1,
        "one request frame expected: {before:?} -> {after:?}"
    );
    a.shutdown().await;
    b.shutdown().await;
    after.bytes_out - before.bytes_out
}

/// Checksums are off by default on TLS links: the request frame carries no 4-byte CRC trailer,
/// unlike the same frame with checksums forced on, and like the same frame with them forced off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checksums_are_off_on_tls_links() {
    let tls_default = request_bytes("https", None).await;
    let tls_forced_on = request_bytes("https", Some(true)).await;
    let tls_forced_off = request_bytes("https", Some(false)).await;
    let plain_default = request_bytes("http", None).await;
    assert_eq!(tls_forced_on, tls_default + 4, "TLS link sent a checksum");
    assert_eq!(tls_forced_off, tls_default);
    // And on by default on a plain link, so the measurement sees what it claims to.
    assert_eq!(plain_default, tls_default + 4);
}

/// A node whose certificate is signed by another CA never connects, and both sides log why.
///
/// On one thread, so that the test's own subscriber sees every log line of its nodes.
#[tokio::test(flavor = "current_thread")]
async fn a_certificate_from_another_ca_is_refused() {
    let (logs, _guard) = Logs::capture();
    let ca1 = ca("grid test CA");
    let ca2 = ca("some other CA");
    // The intruder trusts nothing but its own CA: whichever side dials rejects the other.
    let (a, b) = pair(
        bound_pair(["https", "https"]),
        node_tls(&ca1, &ca1, false),
        node_tls(&ca2, &ca2, false),
        test_config(),
    )
    .await;
    assert_never_connected(&a, &b).await;
    let calls = a
        .connection(b.name())
        .unwrap()
        .request(ECHO.id, Bytes::from_static(b"x"))
        .await;
    assert!(
        matches!(calls, Err(Error::NotConnected { .. })),
        "{calls:?}"
    );
    // The dialer says the TLS handshake failed on the certificate; the acceptor refused it too.
    logs.wait_for(&["cannot connect", "TLS handshake failed", "UnknownIssuer"])
        .await;
    logs.wait_for(&["incoming connection refused", "TLS accept failed"])
        .await;
    a.shutdown().await;
    b.shutdown().await;
}

/// With mutual TLS the dialer must present a certificate from the cluster CA too: a node that
/// trusts the cluster CA but holds a certificate from another one is refused whichever side
/// dials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_a_client_from_another_ca() {
    let ca1 = ca("grid test CA");
    let ca2 = ca("some other CA");
    let (a, b) = pair(
        bound_pair(["https", "https"]),
        node_tls(&ca1, &ca1, true),
        node_tls(&ca2, &ca1, true),
        test_config(),
    )
    .await;
    assert_never_connected(&a, &b).await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn https_names_without_tls_are_a_config_error() {
    let (l_https, https) = bound_as("https");
    let (l_http, http) = bound_as("http");
    // The local name https://, then a peer's.
    for (listener, local, peer) in [(l_https, &https, &http), (l_http, &http, &https)] {
        let err = start(
            listener,
            local,
            std::slice::from_ref(peer),
            None,
            test_config(),
        )
        .await;
        assert!(
            matches!(&err, Err(Error::Config(m)) if m.contains("https:// names need .tls(")),
            "{local} with peer {peer}: {err:?}"
        );
    }
}

#[tokio::test]
async fn a_bad_host_in_an_https_name_is_a_config_error() {
    let ca = ca("grid test CA");
    let (listener, name) = bound_as("https");
    let err = start(
        listener,
        &name,
        &["https://bad_host!:1".to_owned()],
        Some(node_tls(&ca, &ca, false)),
        test_config(),
    )
    .await;
    assert!(
        matches!(&err, Err(Error::Config(m)) if m.contains("not a valid TLS server name")),
        "{err:?}"
    );
}

#[test]
fn bad_pem_is_a_config_error() {
    let ca = ca("grid test CA");
    let (cert, key) = leaf(&ca, &["localhost"]);
    for (c, k, r) in [
        ("", key.as_str(), ca.pem.as_str()),
        (cert.as_str(), "", ca.pem.as_str()),
        (cert.as_str(), key.as_str(), ""),
        (cert.as_str(), cert.as_str(), ca.pem.as_str()),
    ] {
        let err = TlsConfig::from_pem(c.as_bytes(), k.as_bytes(), r.as_bytes());
        assert!(matches!(err, Err(Error::Config(_))), "{err:?}");
    }
    // A key that does not match the certificate.
    let (_, other_key) = leaf(&ca, &["localhost"]);
    let err = TlsConfig::from_pem(cert.as_bytes(), other_key.as_bytes(), ca.pem.as_bytes());
    assert!(matches!(err, Err(Error::Config(_))), "{err:?}");
}

/// With mutual TLS, the certificate a dialer presents must be valid for the host in the node
/// name it claims: a member whose certificate names its own host (and who holds the cluster
/// secret) cannot take another member's name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_binds_the_certificate_to_the_claimed_node_name() {
    let ca = ca("grid test CA");
    let mutual = |host: &str| {
        let (cert, key) = leaf(&ca, &[host]);
        TlsConfig::from_pem_mutual(cert.as_bytes(), key.as_bytes(), ca.pem.as_bytes()).unwrap()
    };
    // Names are identities on distinct hosts; every node is reached on loopback, at a listener
    // bound here and kept. `a` dials `b` by the dial rule.
    let bind = || std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (mut la, mut lb) = (bind(), bind());
    let name = |host: &str, l: &std::net::TcpListener| {
        format!("https://{host}:{}", l.local_addr().unwrap().port())
    };
    while grid_core::dialer_of(&name("a.test", &la), &name("b.test", &lb)) != name("a.test", &la) {
        (la, lb) = (bind(), bind());
    }
    let (a, b) = (name("a.test", &la), name("b.test", &lb));
    let addr = |l: &std::net::TcpListener| l.local_addr().unwrap().to_string();
    let (addr_a, addr_b) = (addr(&la), addr(&lb));
    let node = |me: &str, l: std::net::TcpListener, tls: TlsConfig| {
        Manager::builder(me)
            .peers([a.clone(), b.clone()])
            .peer_address(&a, addr_a.clone())
            .peer_address(&b, addr_b.clone())
            .secret(SECRET)
            .config(test_config())
            .tls(tls)
            .listener(l)
            .start()
    };
    let ma = node(&a, la, mutual("a.test")).await.unwrap();
    let mb = node(&b, lb, mutual("b.test")).await.unwrap();
    mb.register_unary(ECHO, |_ctx, p| async move { Ok::<_, RemoteError>(p) })
        .unwrap();
    let a_to_b = ma.connection(&b).unwrap();
    a_to_b.wait_for_connect(WAIT).await.unwrap();
    // And b's side: it installs the link a moment after a sees it up (after sending its last
    // handshake message), so `connects` below must not be read before.
    mb.connection(&a)
        .unwrap()
        .wait_for_connect(WAIT)
        .await
        .unwrap();

    // c: a real member's certificate (for c.test) and the cluster secret, claiming a's name.
    let impostor = Manager::builder(a.as_str())
        .peers([b.clone()])
        .peer_address(&b, addr_b.clone())
        .secret(SECRET)
        .config(test_config())
        .tls(mutual("c.test"))
        .no_listener()
        .start()
        .await
        .unwrap();
    let to_b = impostor.connection(&b).unwrap();
    let failure = eventually("the impostor dials", WAIT, || {
        to_b.last_dial_failure().ok_or(to_b.state())
    })
    .await;
    match failure {
        grid_core::DialFailure::Handshake(grid_core::HandshakeError::Rejected {
            code,
            reason,
            ..
        }) => {
            assert_eq!(code, grid_core::RejectCode::BadProof);
            assert!(reason.contains("certificate"), "{reason}");
        }
        other => panic!("expected a rejection of the certificate, got {other:?}"),
    }
    impostor.shutdown().await;
    // The real a was never replaced.
    assert_eq!(mb.connection(&a).unwrap().stats().connects, 1);
    let echoed = a_to_b
        .call(ECHO.id, Bytes::from_static(b"me"), Default::default())
        .await
        .unwrap();
    assert_eq!(echoed, Bytes::from_static(b"me"));
    ma.shutdown().await;
    mb.shutdown().await;
}
