//! The dialing side: one supervisor loop per peer this node dials, with jittered exponential
//! backoff, and the dialer's handshake.

use super::*;

pub(super) async fn dial_loop(inner: Arc<ManagerInner>, pc: Arc<PeerConn>) {
    let cfg = inner.config.clone();
    let mut backoff = cfg.reconnect_min;
    let mut last_error = String::new();
    // A node that is not ready dials nobody yet.
    let mut ready = inner.ready.subscribe();
    tokio::select! {
        r = ready.wait_for(|r| *r) => if r.is_err() { return },
        () = inner.shutdown.cancelled() => return,
    }
    loop {
        if inner.shutdown.is_cancelled() || inner.is_draining() {
            return;
        }
        match dial_once(&inner, &pc).await {
            Ok((session, ws, instance)) => {
                backoff = cfg.reconnect_min;
                last_error.clear();
                info!(local = %inner.local, peer = %pc.peer, "connected");
                if !pc.install(session.clone(), instance) {
                    return;
                }
                // What the handshake record had no room for, and what was registered meanwhile.
                session.announce(&*inner.registry);
                // Not raced against shutdown: `Manager::shutdown` finds the installed session,
                // sends its go-away and closes it, which ends `run_session`. (Racing here used
                // to uninstall the session first, so shutdown never closed it and its socket
                // lived on, kept alive by its own pings.)
                run_session(session.clone(), ws, inner.registry.clone()).await;
                pc.uninstall(&session);
                info!(local = %inner.local, peer = %pc.peer, reason = ?session.close_reason(), "disconnected");
            }
            Err(e) => {
                pc.record_dial_failure(&e);
                // Log each distinct failure once, not every retry.
                let msg = e.to_string();
                if msg != last_error {
                    warn!(local = %inner.local, peer = %pc.peer, "cannot connect: {msg}");
                    last_error = msg;
                }
            }
        }
        let jittered = backoff.mul_f64(0.5 + fastrand::f64() * 0.5);
        tokio::select! {
            () = tokio::time::sleep(jittered) => {}
            () = inner.shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(cfg.reconnect_max);
    }
}

pub(super) async fn dial_once(
    inner: &ManagerInner,
    pc: &PeerConn,
) -> Result<(Arc<Session>, Ws, InstanceId), Error> {
    let cfg = &inner.config;
    let address = match inner.addresses.get(pc.peer.as_ref()) {
        Some(a) => a.clone(),
        None => address_of(&pc.peer)?,
    };
    // TLS when the peer's name says https://; its certificate must be valid for the host in that
    // name, wherever `address` points.
    let tls = if is_tls(&pc.peer) {
        let tls = inner.tls.as_ref().ok_or_else(|| needs_tls(&pc.peer))?;
        Some((
            tls.connector(),
            tls::server_name(&pc.peer, &address_of(&pc.peer)?)?,
        ))
    } else {
        None
    };
    let target = DialTarget {
        peer: pc.peer.to_string(),
        address: address.clone(),
    };
    let connect = async {
        let io = match &inner.dialer {
            Some(d) => d(target).await?,
            None => {
                let tcp = TcpStream::connect(address.as_str()).await?;
                tcp.set_nodelay(true)?;
                Box::new(tcp) as BoxedTransport
            }
        };
        match tls {
            Some((connector, name)) => {
                let io = connector
                    .connect(name, io)
                    .await
                    .map_err(|e| tls_failed("handshake failed", &e))?;
                Ok::<_, Error>(Box::new(io) as BoxedTransport)
            }
            None => Ok(io),
        }
    };
    let io = tokio::time::timeout(cfg.dial_timeout, connect)
        .await
        .map_err(|_| Error::Io(std::io::ErrorKind::TimedOut.into()))??;
    let scheme = if is_tls(&pc.peer) { "wss" } else { "ws" };
    let url = format!("{scheme}://{address}{}", cfg.route);
    let (table, announced) = inner.handshake_table();
    let handshake = async {
        // Handshake-sized limits until the acceptor has proved itself in its `Welcome`.
        let (ws, _) = tokio_tungstenite::client_async_with_config(
            url.as_str(),
            io,
            Some(handshake_ws_config()),
        )
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e)))?;
        dial_handshake(inner, &pc.peer, ws, table).await
    };
    let (ws, mut info) = tokio::time::timeout(cfg.handshake_timeout, handshake)
        .await
        .map_err(|_| {
            Error::Handshake(HandshakeError::Timeout {
                peer: pc.peer.to_string(),
                after_ms: millis(cfg.handshake_timeout),
            })
        })??;
    let session = Session::new(
        pc.peer.clone(),
        Role::Dialer,
        info.checksum,
        cfg.clone(),
        pc.stats.clone(),
        pc.events.clone(),
        PeerLimits {
            max_payload: info.max_payload,
            metadata: info.metadata,
            features: info.features,
        },
    );
    session.set_tables(info.handlers.take(), announced);
    Ok((session, ws, info.instance))
}

/// The dialer's handshake, announcing `table` (this node's handler table, or its first part).
/// `ws` arrives with handshake-sized limits; it is returned with the configured ones (set once
/// the acceptor has proved itself).
pub(super) async fn dial_handshake(
    inner: &ManagerInner,
    peer: &str,
    mut ws: Ws,
    table: Bytes,
) -> Result<(Ws, PeerInfo), Error> {
    let (hs, hello) = DialerHandshake::start_offering(
        DialerParams {
            local: inner.local.to_string(),
            remote: peer.to_owned(),
            instance: inner.instance,
            nonce: random_nonce()?,
            now_ms: inner.now_ms(),
            checksum: wants_checksum(&inner.config, is_tls(peer)),
            max_payload: inner.config.max_payload as u64,
            max_skew_ms: i64::try_from(inner.config.max_clock_skew.as_millis()).unwrap_or(i64::MAX),
        },
        offered_features(&inner.config),
    );
    let hs = hs
        .announce(table)
        .accept_metadata(inner.config.metadata_limits());
    send_handshake(&mut ws, &hello).await?;
    let welcome = recv_handshake(&mut ws).await?;
    let (confirm, next) = match hs.on_welcome(welcome, inner.now_ms(), inner.auth.as_ref()) {
        Ok(ok) => ok,
        Err(rej) => return Err(reject(&mut ws, rej).await),
    };
    // The acceptor has proved itself and waits for `Confirm`: the configured limits from here on.
    let mut ws = with_limits(ws, WsRole::Client, ws_config(&inner.config)).await;
    send_handshake(&mut ws, &confirm).await?;
    let ready = recv_handshake(&mut ws).await?;
    let info = next
        .on_ready(ready)
        .map_err(|r| Error::Handshake(r.error))?;
    Ok((ws, info))
}
