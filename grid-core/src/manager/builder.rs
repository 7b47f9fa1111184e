//! The builder of a [`Manager`]: names, secret or keys, config, listener, dialer, TLS, clock.

use super::*;

#[derive(Debug)]
pub(super) enum Listen {
    FromName,
    Addr(String),
    Bound(std::net::TcpListener),
    None,
}

/// Builds a [`Manager`]. See [`Manager::builder`].
pub struct ManagerBuilder {
    pub(super) local: String,
    pub(super) peers: Vec<String>,
    pub(super) auth: Option<Arc<dyn Authenticator>>,
    pub(super) config: Config,
    pub(super) listen: Listen,
    pub(super) addresses: HashMap<String, String>,
    pub(super) dialer: Option<DialFn>,
    pub(super) tls: Option<TlsConfig>,
    pub(super) clock: Option<ClockFn>,
    pub(super) ready: bool,
    /// Server-side layers around every handler (see [`crate::layer`]).
    pub(super) layer: Option<ServerLayer>,
}

impl fmt::Debug for ManagerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagerBuilder")
            .field("local", &self.local)
            .field("peers", &self.peers)
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

impl ManagerBuilder {
    /// Puts a tower layer around every handler this node will serve: a
    /// [`Layer`](crate::layer::Layer) over [`HandlerService`](crate::layer::HandlerService) (an
    /// auth check on the caller's metadata, a concurrency limit, logging; see [`crate::layer`]).
    /// Called again, the new layer goes outside the ones before.
    pub fn layer(mut self, layer: impl crate::layer::IntoServerLayer) -> ManagerBuilder {
        let new = layer.into_server_layer();
        self.layer = Some(match &self.layer {
            Some(inner) => new.around(inner),
            None => new,
        });
        self
    }

    /// Adds peers by name (URL-like, e.g. `http://10.0.0.2:9000`). The local name is skipped, so
    /// every node can be given the same full list.
    pub fn peers<I, S>(mut self, peers: I) -> ManagerBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.peers.extend(peers.into_iter().map(Into::into));
        self
    }

    /// Authenticates handshakes with an HMAC over a shared cluster secret (the default scheme).
    pub fn secret(mut self, secret: impl AsRef<[u8]>) -> ManagerBuilder {
        self.auth = Some(Arc::new(HmacAuth::new(secret)));
        self
    }

    /// Authenticates handshakes with a custom scheme.
    pub fn authenticator(mut self, auth: Arc<dyn Authenticator>) -> ManagerBuilder {
        self.auth = Some(auth);
        self
    }

    /// Replaces the whole configuration.
    pub fn config(mut self, config: Config) -> ManagerBuilder {
        self.config = config;
        self
    }

    /// Binds the embedded listener to `addr` (e.g. `127.0.0.1:0`) instead of the address in the
    /// local name.
    pub fn listen(mut self, addr: impl Into<String>) -> ManagerBuilder {
        self.listen = Listen::Addr(addr.into());
        self
    }

    /// Reads the wall clock from `clock` instead of the system's, for the handshake's clock
    /// check (tests give a node a skewed clock this way; see `Config::max_clock_skew`).
    pub fn clock(mut self, clock: ClockFn) -> ManagerBuilder {
        self.clock = Some(clock);
        self
    }

    /// Starts the node *not ready*: its listener refuses peers (with a `NotReady` handshake
    /// rejection they retry after) and it dials nobody, until [`Manager::set_ready`] — so no
    /// call can arrive before the application has registered its handlers (MinIO's
    /// `BlockConnect`).
    pub fn start_not_ready(mut self) -> ManagerBuilder {
        self.ready = false;
        self
    }

    /// Serves on a listener the caller already bound (tests bind port 0, read the address for
    /// the node's name, and keep the socket: no port is released and rebound).
    pub fn listener(mut self, listener: std::net::TcpListener) -> ManagerBuilder {
        self.listen = Listen::Bound(listener);
        self
    }

    /// Binds no listener: incoming sockets are handed over with [`Manager::accept`] or
    /// [`Manager::accept_websocket`].
    pub fn no_listener(mut self) -> ManagerBuilder {
        self.listen = Listen::None;
        self
    }

    /// Reaches `peer` at `address` (`host:port`) instead of the address in its name.
    pub fn peer_address(
        mut self,
        peer: impl Into<String>,
        address: impl Into<String>,
    ) -> ManagerBuilder {
        self.addresses.insert(peer.into(), address.into());
        self
    }

    /// Dials peers through `dialer` instead of plain TCP. For a peer with an `https://` name,
    /// TLS still runs on top of the byte stream the dialer returns.
    pub fn dialer(mut self, dialer: DialFn) -> ManagerBuilder {
        self.dialer = Some(dialer);
        self
    }

    /// Sets the TLS configuration, required when the local name or any peer's is `https://`.
    /// The listener serves TLS when the local name is `https://`; peers whose names are
    /// `https://` are dialed over TLS, whatever the local name. See [`TlsConfig`].
    pub fn tls(mut self, tls: TlsConfig) -> ManagerBuilder {
        self.tls = Some(tls);
        self
    }

    /// Validates the configuration, binds the listener and starts dialing.
    ///
    /// # Errors
    /// [`Error::Config`] for bad names or settings (an `https://` name without
    /// [`tls`](Self::tls)), [`Error::Io`] when the listener cannot bind.
    ///
    /// # Cancel safety
    /// Cancel safe: nothing is started until the listener is bound.
    pub async fn start(self) -> Result<Manager, Error> {
        let auth = self
            .auth
            .ok_or_else(|| Error::Config("no secret or authenticator given".into()))?;
        address_of(&self.local)?;
        if is_tls(&self.local) && self.tls.is_none() {
            return Err(needs_tls(&self.local));
        }
        let gate = Gate::new(&self.config)?;
        let local: Arc<str> = self.local.clone().into();
        let config = Arc::new(self.config);
        let mut peers = HashMap::new();
        let events = tokio::sync::broadcast::channel(crate::conn::events::CAPACITY).0;
        for p in self.peers {
            if p == self.local {
                continue;
            }
            check_peer_name(&p, self.tls.as_ref())?;
            let pc = Arc::new(PeerConn::new(
                local.clone(),
                p.clone().into(),
                config.clone(),
                events.clone(),
            ));
            peers.insert(p, pc);
        }
        let listener = match self.listen {
            Listen::None => None,
            Listen::FromName => Some(TcpListener::bind(address_of(&self.local)?).await?),
            Listen::Addr(ref a) => Some(TcpListener::bind(a.as_str()).await?),
            Listen::Bound(l) => {
                l.set_nonblocking(true)?;
                Some(TcpListener::from_std(l)?)
            }
        };
        let inner = Arc::new(ManagerInner {
            local,
            config,
            peers: parking_lot::RwLock::new(peers),
            dialers: Mutex::new(HashMap::new()),
            ready: tokio::sync::watch::channel(self.ready).0,
            // A node that starts not ready registers before it takes any peer: its handler
            // table is complete (see `crate::table`).
            registry: Arc::new(Registry::new(!self.ready).with_layer(self.layer)),
            auth,
            instance: random_instance()?,
            local_addr: listener.as_ref().and_then(|l| l.local_addr().ok()),
            shutdown: CancellationToken::new(),
            addresses: self.addresses,
            dialer: self.dialer,
            tls: self.tls,
            gate,
            tasks: Mutex::new(Vec::new()),
            events,
            clock: self.clock,
            draining: std::sync::atomic::AtomicBool::new(false),
        });
        let mut tasks = Vec::new();
        if let Some(l) = listener {
            tasks.push(tokio::spawn(accept_loop(inner.clone(), l)));
        }
        // A node that starts not ready dials from `set_ready` on (which starts every dial loop):
        // starting them here too would give a peer two loops, whose two sessions replace each
        // other.
        if self.ready {
            for pc in inner.peer_list() {
                inner.start_dialing(&pc);
            }
        }
        inner.tasks.lock().extend(tasks);
        Ok(Manager { inner })
    }
}
