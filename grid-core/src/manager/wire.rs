//! Helpers of the socket before a session: addresses, WebSocket limits, handshake messages.

use super::*;

/// `host:port` from a name like `http://host:port` or `https://host:port`.
pub(super) fn address_of(name: &str) -> Result<String, Error> {
    let Some(rest) = name
        .strip_prefix("http://")
        .or_else(|| name.strip_prefix("https://"))
    else {
        return Err(Error::Config(format!(
            "{name}: a node name must look like http://host:port or https://host:port"
        )));
    };
    let host_port = rest.split('/').next().unwrap_or_default();
    if host_port.is_empty() || !host_port.contains(':') {
        return Err(Error::Config(format!(
            "{name}: a node name must include host and port"
        )));
    }
    Ok(host_port.to_owned())
}

/// True for an `https://` name: its node accepts TLS only.
pub(super) fn is_tls(name: &str) -> bool {
    name.starts_with("https://")
}

pub(super) fn needs_tls(name: &str) -> Error {
    Error::Config(format!(
        "{name}: https:// names need .tls(...) on the ManagerBuilder"
    ))
}

pub(super) fn tls_failed(what: &str, e: &std::io::Error) -> Error {
    Error::Io(std::io::Error::new(e.kind(), format!("TLS {what}: {e}")))
}

pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The wall clock the handshake reads (see [`ManagerBuilder::clock`]).
pub type ClockFn = Arc<dyn Fn() -> SystemTime + Send + Sync>;

pub(super) fn millis_since_epoch(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The WebSocket read buffer of an authenticated link.
const READ_BUFFER: usize = 16 << 10;

pub(crate) fn ws_config(config: &Config) -> WebSocketConfig {
    let limits = config.limits();
    // tungstenite's default 128 KiB read buffer is zero-filled on the first read, so it is
    // resident for every idle connection. 16 KiB keeps an idle link cheap; a larger buffer
    // gained nothing measurable on streams (BENCHMARKS.md, issue 11: 32 KiB against 16 KiB),
    // because a big batch is read in several calls either way and the reader hands whole
    // messages on; 8 KiB began to cost stream throughput.
    WebSocketConfig::default()
        .max_message_size(Some(limits.max_batch))
        .max_frame_size(Some(limits.max_batch))
        .read_buffer_size(READ_BUFFER)
}

/// Whether this side asks for frame checksums on a link; `tls_link` is true when the accepting
/// node's name is `https://` (TLS already protects integrity).
pub(super) fn wants_checksum(config: &Config, tls_link: bool) -> bool {
    config.checksum.unwrap_or(!tls_link)
}

pub(super) async fn send_handshake(ws: &mut Ws, frame: &Frame) -> Result<(), Error> {
    ws.send(Message::Binary(encode_batch(
        std::slice::from_ref(frame),
        false,
    )))
    .await
    .map_err(|e| Error::Io(std::io::Error::other(e)))
}

pub(super) async fn recv_handshake(ws: &mut Ws) -> Result<Frame, Error> {
    loop {
        let msg = ws
            .next()
            .await
            .ok_or_else(|| Error::Io(std::io::ErrorKind::UnexpectedEof.into()))?
            .map_err(|e| Error::Io(std::io::Error::other(e)))?;
        match msg {
            Message::Binary(b) => {
                let mut frames = decode_batch(b, &HANDSHAKE_LIMITS)
                    .map_err(|e| Error::Protocol(format!("handshake: {e}")))?;
                if frames.len() != 1 {
                    return Err(Error::Protocol(format!(
                        "handshake: {} frames in one message",
                        frames.len()
                    )));
                }
                return frames
                    .pop()
                    .ok_or_else(|| Error::Protocol("handshake: empty message".into()));
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            Message::Text(_) | Message::Close(_) => {
                return Err(Error::Protocol("handshake: socket closed".into()))
            }
        }
    }
}

pub(super) async fn reject(ws: &mut Ws, rejection: Rejection) -> Error {
    if let Some(frame) = rejection.frame {
        let _ = send_handshake(ws, &frame).await;
        let _ = ws.close(None).await;
    }
    Error::Handshake(rejection.error)
}

/// Checks a peer's name: an address can be read from it, and an `https://` peer has TLS set up
/// with a certificate name that fits.
pub(super) fn check_peer_name(name: &str, tls: Option<&TlsConfig>) -> Result<(), Error> {
    address_of(name)?;
    if is_tls(name) {
        if tls.is_none() {
            return Err(needs_tls(name));
        }
        // Its certificate is checked against the host in its name: refuse a bad one now.
        tls::server_name(name, &address_of(name)?)?;
    }
    Ok(())
}

/// The optional protocol features this node offers a peer, by its configuration.
pub(super) fn offered_features(config: &Config) -> Features {
    let chunks = if config.chunk_size > 0 {
        Features::CHUNKS
    } else {
        Features::NONE
    };
    let lz4 = if config.compress_threshold > 0 {
        Features::LZ4
    } else {
        Features::NONE
    };
    // Packed stream messages cost nothing to offer: no setting turns them off.
    chunks.union(lz4).union(Features::ITEMS)
}
