//! The accepting side: the listener loop, the upgrade, the acceptor's handshake, and installing
//! the session on the peer that proved itself.

use super::*;
use crate::handshake::RejectCode;
use crate::tls::PeerCert;

/// Whether a mutual-TLS client certificate is valid for the host in the node `name`.
fn cert_names(cert: &PeerCert, name: &str) -> bool {
    address_of(name).is_ok_and(|host_port| cert.names(name, &host_port))
}

pub(super) async fn accept_loop(inner: Arc<ManagerInner>, listener: TcpListener) {
    loop {
        let (tcp, from) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!(local = %inner.local, "accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = inner.shutdown.cancelled() => return,
        };
        // Refused before any TLS or WebSocket work: the socket is just closed.
        let pending = match inner.gate.enter() {
            Ok(p) => p,
            Err(e) => {
                drop(tcp);
                inner.gate.log_refusal(&inner.local, Some(from), &e);
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let inner = inner.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_socket(inner.clone(), Box::new(tcp), pending).await {
                inner.gate.log_refusal(&inner.local, Some(from), &e);
            }
        });
    }
}

pub(super) async fn serve_socket(
    inner: Arc<ManagerInner>,
    io: BoxedTransport,
    pending: Pending,
) -> Result<(), Error> {
    let route = inner.config.route.clone();
    // The callback's signature is tungstenite's; its large error type is not ours to shrink.
    #[allow(clippy::result_large_err)]
    let check_path = move |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        if req.uri().path() == route {
            Ok(resp)
        } else {
            let mut err =
                ErrorResponse::new(Some(format!("no grid route at {}", req.uri().path())));
            *err.status_mut() = tokio_tungstenite::tungstenite::http::StatusCode::NOT_FOUND;
            Err(err)
        }
    };
    let tls = match &inner.tls {
        Some(t) if is_tls(&inner.local) => Some(t.clone()),
        _ => None,
    };
    let upgrade = async {
        let (io, cert) = match tls {
            Some(tls) => tls
                .accept(io)
                .await
                .map_err(|e| tls_failed("accept failed", &e))?,
            None => (io, None),
        };
        tokio_tungstenite::accept_hdr_async_with_config(io, check_path, Some(handshake_ws_config()))
            .await
            .map(|ws| (ws, cert))
            .map_err(|e| Error::Io(std::io::Error::other(e)))
    };
    // One deadline for the TLS handshake and the upgrade: a peer that connects and stalls in
    // either costs a task for at most this long.
    let (ws, cert) = tokio::time::timeout(inner.config.handshake_timeout, upgrade)
        .await
        .map_err(|_| Error::Io(std::io::ErrorKind::TimedOut.into()))??;
    serve_upgraded(inner, ws, cert, pending).await
}

/// Runs the acceptor's handshake on `ws` (which has handshake-sized limits), then the connection.
/// `pending` is the socket's place among the pending handshakes, given back when the handshake
/// ends.
pub(super) async fn serve_upgraded(
    inner: Arc<ManagerInner>,
    ws: Ws,
    cert: Option<PeerCert>,
    pending: Pending,
) -> Result<(), Error> {
    let (table, announced) = inner.handshake_table();
    let handshake = tokio::time::timeout(
        inner.config.handshake_timeout,
        accept_handshake(&inner, ws, cert, table),
    )
    .await;
    drop(pending);
    let (ws, mut info) = match handshake {
        Ok(r) => r?,
        Err(_) => {
            return Err(Error::Handshake(HandshakeError::Timeout {
                peer: String::new(),
                after_ms: millis(inner.config.handshake_timeout),
            }))
        }
    };
    let Some(pc) = inner.peer(&info.name) else {
        return Err(Error::UnknownPeer(info.name));
    };
    if inner.shutdown.is_cancelled() || inner.is_draining() {
        return Err(Error::Shutdown);
    }
    info!(local = %inner.local, peer = %pc.peer, "accepted connection");
    let session = Session::new(
        pc.peer.clone(),
        Role::Acceptor,
        info.checksum,
        inner.config.clone(),
        pc.stats.clone(),
        pc.events.clone(),
        PeerLimits {
            max_payload: info.max_payload,
            metadata: info.metadata,
            features: info.features,
        },
    );
    session.set_tables(info.handlers.take(), announced);
    if !pc.install(session.clone(), info.instance) {
        return Err(Error::Shutdown);
    }
    // What the handshake record had no room for, and what was registered meanwhile.
    session.announce(&*inner.registry);
    run_session(session.clone(), ws, inner.registry.clone()).await;
    pc.uninstall(&session);
    debug!(local = %inner.local, peer = %pc.peer, reason = ?session.close_reason(), "connection ended");
    Ok(())
}

/// The acceptor's handshake, announcing `table` (this node's handler table, or its first part).
/// `ws` arrives with handshake-sized limits; it is returned with the configured ones once the
/// dialer has proved itself.
pub(super) async fn accept_handshake(
    inner: &ManagerInner,
    mut ws: Ws,
    cert: Option<PeerCert>,
    table: Bytes,
) -> Result<(Ws, PeerInfo), Error> {
    let hs = AcceptorHandshake::new(AcceptorParams {
        local: inner.local.to_string(),
        instance: inner.instance,
        nonce: random_nonce()?,
        checksum: wants_checksum(&inner.config, is_tls(&inner.local)),
        max_payload: inner.config.max_payload as u64,
        max_skew_ms: i64::try_from(inner.config.max_clock_skew.as_millis()).unwrap_or(i64::MAX),
    })
    .announce(table)
    .offer(offered_features(&inner.config))
    .accept_metadata(inner.config.metadata_limits());
    let hello = recv_handshake(&mut ws).await?;
    let known = |name: &str| inner.peers.read().contains_key(name);
    let (welcome, next) = match hs.on_hello(hello, inner.now_ms(), &known, inner.auth.as_ref()) {
        Ok(ok) => ok,
        Err(rej) => return Err(reject(&mut ws, rej).await),
    };
    send_handshake(&mut ws, &welcome).await?;
    let confirm = recv_handshake(&mut ws).await?;
    let (ready, info) = match next.on_confirm(confirm, inner.auth.as_ref()) {
        Ok(ok) => ok,
        Err(rej) => return Err(reject(&mut ws, rej).await),
    };
    // The dialer proved itself; a node that cannot serve it says why, with a code it retries on.
    // With mutual TLS its certificate must also name the node it claims to be.
    let wrong_cert = cert.as_ref().is_some_and(|c| !cert_names(c, &info.name));
    let refusal = if wrong_cert {
        Some((
            RejectCode::BadProof,
            format!(
                "the TLS client certificate is not valid for the host in {}",
                info.name
            ),
        ))
    } else if inner.shutdown.is_cancelled() || inner.is_draining() {
        Some((
            RejectCode::ShuttingDown,
            format!("{} is shutting down", inner.local),
        ))
    } else if !inner.is_ready() {
        Some((
            RejectCode::NotReady,
            format!("{} is not ready yet", inner.local),
        ))
    } else {
        None
    };
    if let Some((code, reason)) = refusal {
        return Err(reject(&mut ws, Rejection::refusal(&info.name, code, reason)).await);
    }
    // The dialer has proved itself and waits for `Ready`: the configured limits from here on.
    let mut ws = with_limits(ws, WsRole::Server, ws_config(&inner.config)).await;
    send_handshake(&mut ws, &ready).await?;
    Ok((ws, info))
}
