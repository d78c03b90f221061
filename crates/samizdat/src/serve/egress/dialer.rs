//! [`DirectDialer`]: connects to a checked address itself, so a name whose
//! answer changes between check and connect (DNS rebinding) cannot win.

use super::*;
/// Connects straight to the destination, within an [`EgressPolicy`] and
/// the host's [`Egress`] rules. One per session.
pub struct DirectDialer {
    /// Which addresses are allowed.
    pub policy: EgressPolicy,
    /// Longest wait for one address to accept the connection.
    pub connect_timeout: Duration,
    /// Longest wait for a name to resolve, a free lookup slot included.
    pub resolve_timeout: Duration,
    /// Where `Destination::Telegram` streams go (the server's DC routing);
    /// without one they are refused.
    pub telegram: Option<Arc<dyn Dialer>>,
    /// Whether log lines may name destinations (`--log-destinations`);
    /// otherwise they are the users' browsing history and stay out.
    pub log_destinations: bool,
    egress: Arc<Egress>,
    session_lookups: Semaphore,
    user_lookups: Arc<Semaphore>,
}

impl DirectDialer {
    /// A dialer with `policy`, 10 s timeouts, no Telegram route and an
    /// [`Egress`] of its own that knows no listening ports.
    pub fn new(policy: EgressPolicy) -> DirectDialer {
        DirectDialer::for_user(policy, &Egress::new(Vec::new()), "")
    }

    /// A dialer for one session of `user` on the server's `egress`.
    pub fn for_user(policy: EgressPolicy, egress: &Arc<Egress>, user: &str) -> DirectDialer {
        DirectDialer {
            policy,
            connect_timeout: Duration::from_secs(10),
            resolve_timeout: Duration::from_secs(10),
            telegram: None,
            log_destinations: false,
            user_lookups: egress.user_slots(user),
            egress: egress.clone(),
            session_lookups: Semaphore::new(SESSION_LOOKUPS),
        }
    }

    /// Resolves `name` within a free slot of the session and of the user.
    async fn resolve(&self, name: &str) -> Result<Vec<IpAddr>, OpenError> {
        let _session = self
            .session_lookups
            .acquire()
            .await
            .map_err(|_| OpenError::General("closed".into()))?;
        let _user = self
            .user_lookups
            .acquire()
            .await
            .map_err(|_| OpenError::General("closed".into()))?;
        self.egress
            .resolver
            .lookup(name)
            .await
            .map_err(|e| match e {
                LookupError::TimedOut => OpenError::TimedOut,
                LookupError::NotFound | LookupError::BadName | LookupError::Failed => {
                    OpenError::NameNotResolved
                }
            })
    }

    /// The addresses to try for `dest`, allowed ones only, in order.
    async fn addresses(&self, name: &str, port: u16) -> Result<Vec<SocketAddr>, OpenError> {
        let literal = name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .unwrap_or(name);
        let resolved: Vec<SocketAddr> = match literal.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => {
                if name.is_empty() || name.len() > 255 {
                    return Err(OpenError::NameNotResolved);
                }
                // Refused whatever the name resolves to: no lookup.
                if self.policy.deny_ports.contains(&port) {
                    tracing::debug!(reason = %Refusal::DeniedPort, "egress refused");
                    return Err(OpenError::NotAllowed);
                }
                // The deadline covers the wait for a slot; dropping the
                // lookup cancels it.
                match tokio::time::timeout(self.resolve_timeout, self.resolve(name)).await {
                    Err(_) => return Err(OpenError::TimedOut),
                    Ok(Err(e)) => return Err(e),
                    Ok(Ok(ips)) => ips
                        .into_iter()
                        .map(|ip| SocketAddr::new(ip, port))
                        .collect(),
                }
            }
        };
        if resolved.is_empty() {
            return Err(OpenError::NameNotResolved);
        }
        let mut refusal = None;
        let allowed: Vec<SocketAddr> = resolved
            .into_iter()
            .filter(|a| match self.egress.check(&self.policy, *a) {
                Ok(()) => true,
                Err(r) => {
                    refusal = Some(r);
                    false
                }
            })
            .map(|a| SocketAddr::new(a.ip().to_canonical(), a.port()))
            .collect();
        if allowed.is_empty() {
            if let Some(r) = refusal {
                tracing::debug!(reason = %r, "egress refused");
            }
            return Err(OpenError::NotAllowed);
        }
        Ok(interleave(allowed))
    }

    /// Connects to the first address that accepts, within the timeout each.
    async fn connect(&self, addrs: &[SocketAddr]) -> Result<TcpStream, OpenError> {
        let mut last = OpenError::General("no address to connect to".into());
        for &addr in addrs {
            // Checked again right before the connect: nothing else decides.
            if self.egress.check(&self.policy, addr).is_err() {
                last = OpenError::NotAllowed;
                continue;
            }
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => return Ok(stream),
                Ok(Err(e)) => last = OpenError::from(e),
                Err(_) => last = OpenError::TimedOut,
            }
            if self.log_destinations {
                tracing::debug!(%addr, error = %last, "egress connect failed");
            } else {
                tracing::debug!(error = %last, "egress connect failed");
            }
        }
        Err(last)
    }

    async fn open_direct(&self, dest: Destination, first: Vec<u8>) -> Result<BoxIo, OpenError> {
        let logged = self.log_destinations.then_some(&dest);
        let addrs = match &dest {
            // Routed by `open`; never dialled directly.
            Destination::Telegram { .. } => return Err(OpenError::NotAllowed),
            Destination::Addr(addr) => {
                if let Err(reason) = self.egress.check(&self.policy, *addr) {
                    match logged {
                        Some(dest) => tracing::debug!(%dest, %reason, "egress refused"),
                        None => tracing::debug!(%reason, "egress refused"),
                    }
                    return Err(OpenError::NotAllowed);
                }
                vec![SocketAddr::new(addr.ip().to_canonical(), addr.port())]
            }
            Destination::Host { name, port } => {
                self.addresses(name, *port)
                    .await
                    .inspect_err(|e| match logged {
                        Some(dest) => {
                            tracing::debug!(%dest, error = %e, "egress refused or unresolved")
                        }
                        None => tracing::debug!(error = %e, "egress refused or unresolved"),
                    })?
            }
        };
        let mut stream = self.connect(&addrs).await?;
        let _ = stream.set_nodelay(true);
        if !first.is_empty() {
            stream.write_all(&first).await.map_err(OpenError::from)?;
        }
        match logged {
            Some(dest) => tracing::debug!(%dest, "egress connected"),
            None => tracing::debug!("egress connected"),
        }
        Ok(Box::new(stream))
    }
}

/// Alternates families, starting with the family of the first address
/// (the resolver's preference), as Happy Eyeballs orders its attempts.
pub(super) fn interleave(addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let first_v6 = addrs.first().is_some_and(|a| a.is_ipv6());
    let (mut a, mut b): (Vec<_>, Vec<_>) = addrs.into_iter().partition(|x| x.is_ipv6() == first_v6);
    let mut out = Vec::with_capacity(a.len() + b.len());
    a.reverse();
    b.reverse();
    loop {
        match (a.pop(), b.pop()) {
            (None, None) => return out,
            (x, y) => out.extend(x.into_iter().chain(y)),
        }
    }
}

impl Dialer for DirectDialer {
    fn open(&self, dest: Destination, first: Vec<u8>) -> OpenFuture<'_> {
        Box::pin(async move {
            match dest {
                Destination::Telegram { .. } => match &self.telegram {
                    Some(t) => t.open(dest, first).await,
                    None => Err(OpenError::NotAllowed),
                },
                other => self.open_direct(other, first).await,
            }
        })
    }
}
