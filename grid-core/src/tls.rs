//! TLS for `https://` names, through rustls (with the `ring` crypto provider).
//!
//! A node whose own name is `https://` serves TLS on its listener (and on sockets handed to
//! [`Manager::accept`](crate::Manager::accept)); a node dials `wss://` to every peer whose name
//! is `https://`, checking the peer's certificate against the host in that name (not against an
//! address given with [`peer_address`](crate::ManagerBuilder::peer_address) or found by a custom
//! [`dialer`](crate::ManagerBuilder::dialer), which only say where to connect). So a cluster may
//! mix `http://` and `https://` nodes: each link is TLS exactly when the accepting node's name is
//! `https://`. Any `https://` name among a manager's local name and peers requires
//! [`ManagerBuilder::tls`](crate::ManagerBuilder::tls).
//!
//! The usual cluster-internal setup is one cluster CA: every node trusts it and holds a
//! certificate signed by it, valid for the host in the node's name. [`TlsConfig::from_pem`]
//! builds that from PEM files; [`TlsConfig::from_pem_mutual`] also makes both ends present and
//! check certificates (mutual TLS). Either way grid's handshake still authenticates both nodes
//! with the cluster secret; TLS adds confidentiality and integrity (which is why per-frame
//! checksums default to off on TLS links). For anything else (other roots, session resumption,
//! ALPN), build the rustls configurations yourself and use [`TlsConfig::new`].

use std::fmt;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::conn::BoxedTransport;
use crate::error::Error;

/// The TLS settings of a [`Manager`](crate::Manager): a rustls server configuration for
/// accepting and a client configuration for dialing. Cheap to clone.
#[derive(Clone)]
pub struct TlsConfig {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field(
                "client_auth",
                &self.client.client_auth_cert_resolver.has_certs(),
            )
            .finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// Uses ready-made rustls configurations: `server` for accepting, `client` for dialing.
    /// The rustls this crate is built with is re-exported as [`crate::rustls`].
    pub fn new(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> TlsConfig {
        TlsConfig { server, client }
    }

    /// Builds both sides from PEM: this node's certificate chain (leaf first) and private key
    /// (PKCS#8, PKCS#1 or SEC1), and the roots a peer's certificate must chain to (the cluster
    /// CA). Peers present no client certificate.
    ///
    /// # Errors
    /// [`Error::Config`] when the PEM holds no certificate or key, or rustls refuses them.
    pub fn from_pem(
        cert_chain_pem: &[u8],
        private_key_pem: &[u8],
        ca_roots_pem: &[u8],
    ) -> Result<TlsConfig, Error> {
        build(cert_chain_pem, private_key_pem, ca_roots_pem, false)
    }

    /// As [`from_pem`](Self::from_pem), and mutual: the dialer presents its certificate too, and
    /// the accepting side refuses a dialer without one that chains to the roots. Every node of
    /// the cluster must then use mutual TLS.
    ///
    /// # Errors
    /// As [`from_pem`](Self::from_pem).
    pub fn from_pem_mutual(
        cert_chain_pem: &[u8],
        private_key_pem: &[u8],
        ca_roots_pem: &[u8],
    ) -> Result<TlsConfig, Error> {
        build(cert_chain_pem, private_key_pem, ca_roots_pem, true)
    }

    /// The configuration used to accept connections.
    pub fn server_config(&self) -> &Arc<ServerConfig> {
        &self.server
    }

    /// The configuration used to dial peers.
    pub fn client_config(&self) -> &Arc<ClientConfig> {
        &self.client
    }

    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.server.clone())
    }

    /// Accepts a TLS connection; with mutual TLS, also hands back the client's certificate, so
    /// the node name the client claims in grid's handshake can be bound to it
    /// ([`PeerCert::names`]).
    pub(crate) async fn accept(
        &self,
        io: BoxedTransport,
    ) -> std::io::Result<(BoxedTransport, Option<PeerCert>)> {
        let stream = self.acceptor().accept(io).await?;
        let cert = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(<[CertificateDer<'_>]>::first)
            .map(|c| PeerCert(c.clone().into_owned()));
        Ok((Box::new(stream), cert))
    }

    pub(crate) fn connector(&self) -> TlsConnector {
        TlsConnector::from(self.client.clone())
    }
}

fn config_err(what: &str, e: impl fmt::Display) -> Error {
    Error::Config(format!("TLS: {what}: {e}"))
}

fn build(
    cert_chain_pem: &[u8],
    private_key_pem: &[u8],
    ca_roots_pem: &[u8],
    mutual: bool,
) -> Result<TlsConfig, Error> {
    let chain = certs(cert_chain_pem, "certificate chain")?;
    let key = PrivateKeyDer::from_pem_slice(private_key_pem)
        .map_err(|e| config_err("cannot read the private key", e))?;
    let mut roots = RootCertStore::empty();
    for ca in certs(ca_roots_pem, "CA roots")? {
        roots
            .add(ca)
            .map_err(|e| config_err("bad CA root certificate", e))?;
    }
    let roots = Arc::new(roots);
    // An explicit provider, not the process-wide default: nothing to install, and no panic when
    // another crate in the build enables a second provider.
    let provider = Arc::new(rustls::crypto::ring::default_provider());

    let client = client_builder(&provider)?.with_root_certificates(roots.clone());
    let client = if mutual {
        client
            .with_client_auth_cert(chain.clone(), key.clone_key())
            .map_err(|e| config_err("bad certificate or key", e))?
    } else {
        client.with_no_client_auth()
    };

    let server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| config_err("protocol versions", e))?;
    let server = if mutual {
        let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(|e| config_err("client verifier", e))?;
        server.with_client_cert_verifier(verifier)
    } else {
        server.with_no_client_auth()
    };
    let server = server
        .with_single_cert(chain, key)
        .map_err(|e| config_err("bad certificate or key", e))?;
    Ok(TlsConfig {
        server: Arc::new(server),
        client: Arc::new(client),
    })
}

fn client_builder(
    provider: &Arc<CryptoProvider>,
) -> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>, Error> {
    ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| config_err("protocol versions", e))
}

fn certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| config_err(&format!("cannot read the {what}"), e))?;
    if certs.is_empty() {
        return Err(Error::Config(format!(
            "TLS: no certificate in the {what} PEM"
        )));
    }
    Ok(certs)
}

/// The end-entity certificate a mutual-TLS client presented.
#[derive(Debug, Clone)]
pub(crate) struct PeerCert(CertificateDer<'static>);

impl PeerCert {
    /// True when the certificate is valid for the host in `peer`'s `https://host:port` name:
    /// a member with a certificate for its own host cannot claim another member's name.
    pub(crate) fn names(&self, peer: &str, host_port: &str) -> bool {
        let Ok(name) = server_name(peer, host_port) else {
            return false;
        };
        webpki::EndEntityCert::try_from(&self.0)
            .and_then(|ee| ee.verify_is_valid_for_subject_name(&name))
            .is_ok()
    }
}

/// The name a peer's certificate must be valid for: the host of its `https://host:port` name
/// (`host:port` as returned by the manager's name parsing; IPv6 hosts in brackets).
pub(crate) fn server_name(peer: &str, host_port: &str) -> Result<ServerName<'static>, Error> {
    let host = host_port
        .rsplit_once(':')
        .map_or(host_port, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    ServerName::try_from(host.to_owned()).map_err(|e| {
        Error::Config(format!(
            "{peer}: {host:?} is not a valid TLS server name: {e}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_come_from_the_host() {
        assert_eq!(
            server_name("p", "node1:9000").ok(),
            ServerName::try_from("node1").ok()
        );
        assert!(matches!(
            server_name("p", "127.0.0.1:9000"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(
            server_name("p", "[::1]:9000"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(
            server_name("p", "bad host:1"),
            Err(Error::Config(_))
        ));
    }

    #[test]
    fn bad_pem_is_a_config_error() {
        assert!(matches!(
            TlsConfig::from_pem(b"", b"", b""),
            Err(Error::Config(_))
        ));
        assert!(matches!(
            TlsConfig::from_pem(b"not pem", b"not pem", b"not pem"),
            Err(Error::Config(_))
        ));
    }
}
