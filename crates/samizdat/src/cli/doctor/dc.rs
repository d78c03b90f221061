//! The DC check: a TCP connection, with a deadline, to every address the
//! configuration routes DCs 1–5 and 203 to (built-in table, `--dc`,
//! `--dc-override`, `--ip-preference`; spec §5). Nothing is sent.

use super::{describe, show, Check, Finding, Level};
use crate::serve::config::ServeConfig;
use crate::serve::dc::IpPreference;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The DCs Telegram apps use in production.
const IDS: [i16; 6] = [1, 2, 3, 4, 5, 203];

/// How connecting to one address went: the time it took, or why not.
pub(super) type Outcome = Result<Duration, String>;

/// DC ids that route to the same addresses (with `--dc-override`, all).
pub(super) type Group = (Vec<i16>, Vec<SocketAddr>);

/// Connects to each distinct address once, concurrently.
pub(super) async fn check(c: &ServeConfig, timeout: Duration) -> Vec<Finding> {
    let mut groups: Vec<Group> = Vec::new();
    for id in IDS {
        let addrs = c.dcs.resolve(id);
        match groups.iter_mut().find(|g| g.1 == addrs) {
            Some(g) => g.0.push(id),
            None => groups.push((vec![id], addrs)),
        }
    }
    let mut tasks = HashMap::new();
    for addr in groups.iter().flat_map(|g| g.1.iter()) {
        tasks
            .entry(*addr)
            .or_insert_with(|| tokio::spawn(connect(*addr, timeout)));
    }
    let mut results = HashMap::new();
    for (addr, task) in tasks {
        let outcome = task.await.unwrap_or_else(|_| Err("probe failed".into()));
        results.insert(addr, outcome);
    }
    let overridden = c.dcs.all.is_some() || !c.dcs.by_id.is_empty();
    judge(&groups, &results, c.dcs.preference, overridden)
}

async fn connect(addr: SocketAddr, timeout: Duration) -> Outcome {
    let start = Instant::now();
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => Err(format!("no answer within {}", show(timeout))),
        Ok(Err(e)) => Err(describe(&e)),
        Ok(Ok(_)) => Ok(start.elapsed()),
    }
}

/// One finding per group of DCs, and one for an address family that
/// fails everywhere while the other works.
pub(super) fn judge(
    groups: &[Group],
    results: &HashMap<SocketAddr, Outcome>,
    preference: IpPreference,
    overridden: bool,
) -> Vec<Finding> {
    let works = |a: &SocketAddr| matches!(results.get(a), Some(Ok(_)));
    let any = results.values().any(|r| r.is_ok());
    let family_ok = |v6: bool| results.iter().any(|(a, r)| a.is_ipv6() == v6 && r.is_ok());
    let family_dead =
        |v6: bool| results.keys().any(|a| a.is_ipv6() == v6) && !family_ok(v6) && family_ok(!v6);
    let (v6_dead, v4_dead) = (family_dead(true), family_dead(false));
    let unreachable = if overridden {
        "check --dc-override/--dc: is the address right and the DC up?"
    } else {
        "this server cannot reach Telegram there: check its outbound firewall (TCP 443); \
         if its network blocks Telegram, run samizdat on a server outside the block"
    };
    let mut out = Vec::new();
    for (ids, addrs) in groups {
        let names: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
        let subject = format!("dc {}", names.join(","));
        if addrs.is_empty() {
            out.push(
                Finding::new(Level::Warn, Check::Dc, subject, "no address for it")
                    .fix("add one with --dc ID=ADDR"),
            );
            continue;
        }
        let found = addrs
            .iter()
            .map(|a| match results.get(a) {
                Some(Ok(t)) => format!("{a} in {}", show(*t)),
                Some(Err(e)) => format!("{a}: {e}"),
                None => format!("{a}: not tried"),
            })
            .collect::<Vec<_>>()
            .join(", ");
        let first = addrs[0];
        // A family-wide failure gets its own finding below.
        let family_dead = if first.is_ipv6() { v6_dead } else { v4_dead };
        let finding = if !addrs.iter().any(works) {
            let level = if any { Level::Warn } else { Level::Fail };
            Finding::new(level, Check::Dc, subject, found).fix(unreachable)
        } else if !works(&first) && !family_dead {
            Finding::new(Level::Warn, Check::Dc, subject, found).fix(format!(
                "each connection to this DC waits for {first} to fail first: check the route to it"
            ))
        } else {
            Finding::ok(Check::Dc, subject, found)
        };
        out.push(finding);
    }
    let families = [
        (v6_dead, "IPv6", "IPv4", IpPreference::Ipv4Only, "ipv4-only"),
        (v4_dead, "IPv4", "IPv6", IpPreference::Ipv6Only, "ipv6-only"),
    ];
    for (dead, name, other, only, flag) in families {
        if dead && preference != only {
            out.push(
                Finding::new(
                    Level::Warn,
                    Check::Dc,
                    format!("dc over {name}"),
                    format!("no DC answers over {name}, while {other} works"),
                )
                .fix(format!(
                    "pass --ip-preference {flag}, so that no connection waits for {name}"
                )),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_dead_with_ipv4_fine_suggests_ipv4_only() {
        let groups = vec![
            (vec![1], vec![a("192.0.2.1:443"), a("[2001:db8::1]:443")]),
            (vec![2], vec![a("192.0.2.2:443"), a("[2001:db8::2]:443")]),
        ];
        let mut r = HashMap::new();
        r.insert(a("192.0.2.1:443"), Ok(Duration::from_millis(20)));
        r.insert(a("192.0.2.2:443"), Ok(Duration::from_millis(30)));
        r.insert(a("[2001:db8::1]:443"), Err("network unreachable".into()));
        r.insert(a("[2001:db8::2]:443"), Err("network unreachable".into()));
        let f = judge(&groups, &r, IpPreference::Ipv4, false);
        assert_eq!(f.len(), 3);
        assert!(f[..2].iter().all(|f| f.level == Level::Ok));
        assert_eq!(f[2].level, Level::Warn);
        assert!(f[2]
            .fix
            .as_ref()
            .unwrap()
            .contains("--ip-preference ipv4-only"));
        // Already IPv4 only: nothing to suggest.
        assert_eq!(judge(&groups, &r, IpPreference::Ipv4Only, false).len(), 2);
    }

    #[test]
    fn none_reachable_fails_some_unreachable_warns() {
        let groups = vec![
            (vec![1], vec![a("192.0.2.1:443")]),
            (vec![2], vec![a("192.0.2.2:443")]),
        ];
        let mut r = HashMap::new();
        r.insert(a("192.0.2.1:443"), Err("connection refused".into()));
        r.insert(a("192.0.2.2:443"), Err("connection refused".into()));
        let f = judge(&groups, &r, IpPreference::Ipv4, true);
        assert!(f.iter().all(|f| f.level == Level::Fail));
        assert!(f[0].fix.as_ref().unwrap().contains("--dc-override"));
        r.insert(a("192.0.2.2:443"), Ok(Duration::from_millis(5)));
        let f = judge(&groups, &r, IpPreference::Ipv4, false);
        assert_eq!((f[0].level, f[1].level), (Level::Warn, Level::Ok));
    }
}
