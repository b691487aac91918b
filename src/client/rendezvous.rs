//! Which server a stream goes to: rendezvous (highest-random-weight)
//! hashing of the stream's identity over the configured servers.
//!
//! Every (server, stream) pair gets a weight, the first 64 bits of
//! SHA-256 over the server's name (`host:port` as configured, or the
//! address when `resolve_all` expanded a name) and the stream's identity
//! (the host name sent in INIT and the file's path), each length-prefixed
//! so no two different pairs hash the same bytes. A stream's servers,
//! best first, are the servers by descending weight ([`order`]); ties
//! (astronomically unlikely) go to the server listed first.
//!
//! What this buys, and what the tests prove:
//! - the spread is even: each server is first for about 1/N of the
//!   streams;
//! - removing a server moves only the streams that were on it (each to
//!   its own second choice, so they spread evenly over the rest); adding
//!   one moves only the streams it now wins, about 1/(N+1), all to it;
//! - the order depends on nothing but the names: every client, every
//!   restart, computes the same assignment, with no coordination.
//!
//! Pure: no I/O, no clock. `failover.rs` walks this order when a server
//! fails.

use sha2::{Digest, Sha256};

/// The weight of `server` for the stream (`host`, `path`).
pub fn weight(server: &str, host: &str, path: &[u8]) -> u64 {
    let mut h = Sha256::new();
    for part in [server.as_bytes(), host.as_bytes(), path] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The indices of `servers` in the stream's rendezvous order, best first.
pub fn order<S: AsRef<str>>(servers: &[S], host: &str, path: &[u8]) -> Vec<usize> {
    let mut ranked: Vec<(u64, usize)> = servers
        .iter()
        .enumerate()
        .map(|(i, s)| (weight(s.as_ref(), host, path), i))
        .collect();
    // Highest weight first; equal weights keep the listed order.
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    ranked.into_iter().map(|(_, i)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn first(servers: &[String], path: &str) -> usize {
        order(servers, "web1", path.as_bytes())[0]
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("log{i}:8901")).collect()
    }

    #[test]
    fn the_order_is_a_permutation_and_stable() {
        let servers = names(5);
        let o = order(&servers, "web1", b"/var/log/app.log");
        let mut sorted = o.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, vec![0, 1, 2, 3, 4]);
        assert_eq!(o, order(&servers, "web1", b"/var/log/app.log"));
        // The weight does not depend on where a server is listed.
        let mut reversed = servers.clone();
        reversed.reverse();
        let r = order(&reversed, "web1", b"/var/log/app.log");
        assert_eq!(servers[o[0]], reversed[r[0]]);
        // Length prefixes keep ("ab","c") and ("a","bc") apart.
        assert_ne!(weight("s", "ab", b"c"), weight("s", "a", b"bc"));
    }

    #[test]
    fn three_hundred_files_spread_within_ten_percent() {
        let servers = names(3);
        let mut share = [0usize; 3];
        for i in 0..300 {
            share[first(&servers, &format!("/var/log/app/{i}.log"))] += 1;
        }
        for s in share {
            assert!((90..=110).contains(&s), "{share:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]

        /// Each of N servers gets about 1/N of many streams.
        #[test]
        fn the_spread_is_even(n in 2usize..8, salt in any::<u32>()) {
            let servers = names(n);
            let streams = 1000 * n;
            let mut share = vec![0usize; n];
            for i in 0..streams {
                share[first(&servers, &format!("/{salt}/{i}"))] += 1;
            }
            for s in &share {
                let expected = (streams / n) as f64;
                // 15% is five standard deviations at 1000 per server.
                prop_assert!((*s as f64 - expected).abs() < expected * 0.15, "{:?}", share);
            }
        }

        /// Removing one server moves exactly the streams it had, each to
        /// its second choice; every other stream keeps its server.
        #[test]
        fn removing_a_server_moves_only_its_streams(n in 2usize..8, gone in 0usize..8, salt in any::<u32>()) {
            let gone = gone % n;
            let servers = names(n);
            let rest: Vec<String> = servers.iter().enumerate()
                .filter(|(i, _)| *i != gone).map(|(_, s)| s.clone()).collect();
            let mut moved = 0;
            for i in 0..1000 {
                let path = format!("/{salt}/{i}");
                let before = order(&servers, "web1", path.as_bytes());
                let after = &rest[first(&rest, &path)];
                if before[0] == gone {
                    moved += 1;
                    prop_assert_eq!(after, &servers[before[1]]);
                } else {
                    prop_assert_eq!(after, &servers[before[0]]);
                }
            }
            // About 1/N moved.
            let expected = 1000.0 / n as f64;
            prop_assert!((moved as f64 - expected).abs() < expected * 0.25 + 10.0, "{}", moved);
        }

        /// Adding a server moves only the streams it now wins, to it.
        #[test]
        fn adding_a_server_moves_only_to_it(n in 1usize..8, salt in any::<u32>()) {
            let servers = names(n);
            let mut more = servers.clone();
            more.push("new:8901".into());
            let mut moved = 0;
            for i in 0..1000 {
                let path = format!("/{salt}/{i}");
                let (a, b) = (first(&servers, &path), first(&more, &path));
                if a != b {
                    moved += 1;
                    prop_assert_eq!(b, n);
                }
            }
            let expected = 1000.0 / (n + 1) as f64;
            prop_assert!((moved as f64 - expected).abs() < expected * 0.25 + 10.0, "{}", moved);
        }
    }
}
