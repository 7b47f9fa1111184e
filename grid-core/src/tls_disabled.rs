//! TLS is not built in: this crate was compiled without its `tls` feature (on by default), so
//! it links no TLS stack and [`TlsConfig`] cannot be constructed.
//!
//! A manager whose local name or any peer's is `https://` needs a [`TlsConfig`], so such names
//! are refused at [`ManagerBuilder::start`](crate::ManagerBuilder::start); `http://` names work
//! as usual. Enable the `tls` feature of `grid` (or `grid-core`) for `https://` names.

use std::convert::Infallible;
use std::fmt;

use crate::conn::BoxedTransport;
use crate::error::Error;

/// The TLS settings of a [`Manager`](crate::Manager). Built without the `tls` feature, no value of
/// this type exists: its constructors return [`Error::Config`] saying so.
#[derive(Clone)]
pub struct TlsConfig {
    never: Infallible,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, _f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.never {}
    }
}

fn disabled() -> Error {
    Error::Config("TLS: grid was built without its `tls` feature".into())
}

impl TlsConfig {
    /// With the `tls` feature: builds both sides from PEM. Without it, always fails.
    ///
    /// # Errors
    /// Always [`Error::Config`]: the `tls` feature is off.
    pub fn from_pem(
        _cert_chain_pem: &[u8],
        _private_key_pem: &[u8],
        _ca_roots_pem: &[u8],
    ) -> Result<TlsConfig, Error> {
        Err(disabled())
    }

    /// With the `tls` feature: mutual TLS from PEM. Without it, always fails.
    ///
    /// # Errors
    /// Always [`Error::Config`]: the `tls` feature is off.
    pub fn from_pem_mutual(
        _cert_chain_pem: &[u8],
        _private_key_pem: &[u8],
        _ca_roots_pem: &[u8],
    ) -> Result<TlsConfig, Error> {
        Err(disabled())
    }

    pub(crate) fn connector(&self) -> Never {
        match self.never {}
    }

    pub(crate) async fn accept(
        &self,
        _io: BoxedTransport,
    ) -> std::io::Result<(BoxedTransport, Option<PeerCert>)> {
        match self.never {}
    }
}

/// Stands where the real module has a mutual-TLS client's certificate; none exists.
#[derive(Debug, Clone)]
pub(crate) struct PeerCert(Infallible);

impl PeerCert {
    pub(crate) fn names(&self, _peer: &str, _host_port: &str) -> bool {
        match self.0 {}
    }
}

/// Stands where the real module has rustls's acceptor, connector and server name; none exists.
pub(crate) struct Never(Infallible);

impl Never {
    pub(crate) async fn connect(
        &self,
        _name: Never,
        _io: BoxedTransport,
    ) -> std::io::Result<BoxedTransport> {
        match self.0 {}
    }
}

/// Without TLS no peer is dialed over TLS: `https://` names are refused before this is asked.
pub(crate) fn server_name(peer: &str, _host_port: &str) -> Result<Never, Error> {
    Err(Error::Config(format!(
        "{peer}: an https:// name needs TLS, and grid was built without its `tls` feature"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_the_feature_tls_configs_are_refused_saying_why() {
        for r in [
            TlsConfig::from_pem(b"", b"", b""),
            TlsConfig::from_pem_mutual(b"", b"", b""),
        ] {
            match r {
                Err(Error::Config(msg)) => assert!(msg.contains("`tls` feature"), "{msg}"),
                Err(other) => panic!("expected a config error, got {other}"),
                Ok(never) => match never.never {},
            }
        }
        assert!(server_name("https://a:1", "a:1").is_err());
    }
}
