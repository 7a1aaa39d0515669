//! Sign-in throttling: after repeated failed sign-ins for one account name, or from one client
//! address, further attempts are refused for a while (429 with `Retry-After`), without checking the
//! password. Each lock-out is twice as long as the one before, up to an hour, so guessing gets a few
//! tries an hour; a quiet quarter of an hour forgets the failures, and a successful sign-in clears
//! the account's count (not the address's: one valid account must not reset the guessing of others
//! from the same address).
//!
//! The counts live in this process's memory: a restart forgets them, and several daemons behind a
//! load balancer each keep their own. The per-address limit is higher than the per-account one, since
//! an office behind one NAT address, or a reverse proxy, shares one address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures for one account name before it is locked.
pub(super) const ACCOUNT_FAILURES: u32 = 5;
/// Failures from one client address (whatever names were tried) before it is locked.
pub(super) const ADDRESS_FAILURES: u32 = 20;
const FIRST_LOCK: Duration = Duration::from_secs(60);
const LONGEST_LOCK: Duration = Duration::from_secs(3600);
/// Failures older than this are forgotten (and the lock-outs' doubling after a day of quiet).
const FORGET_FAILURES: Duration = Duration::from_secs(15 * 60);
const FORGET_LOCKS: Duration = Duration::from_secs(24 * 3600);
/// Keys remembered at most; past this, the ones not locked are forgotten first.
const MAX_KEYS: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Account(String),
    Address(IpAddr),
}

#[derive(Debug)]
struct Record {
    failures: u32,
    locks: u32,
    last_failure: Instant,
    locked_until: Option<Instant>,
}

/// The failed sign-ins this process has seen.
#[derive(Default)]
pub(super) struct Throttle {
    records: Mutex<HashMap<Key, Record>>,
}

impl Throttle {
    /// `Err(wait)` while the account (by its name key) or the address is locked out.
    pub(super) fn check(&self, account: &str, address: Option<IpAddr>, now: Instant) -> Result<(), Duration> {
        let records = self.lock();
        let wait = keys(account, address)
            .iter()
            .filter_map(|k| records.get(k)?.locked_until)
            .filter(|until| *until > now)
            .map(|until| until - now)
            .max();
        match wait {
            Some(wait) => Err(wait),
            None => Ok(()),
        }
    }

    /// Counts a failed sign-in for the account name and the address.
    pub(super) fn failed(&self, account: &str, address: Option<IpAddr>, now: Instant) {
        let mut records = self.lock();
        if records.len() >= MAX_KEYS {
            records.retain(|_, r| r.locked_until.is_some_and(|u| u > now));
        }
        for key in keys(account, address) {
            let limit = match key {
                Key::Account(_) => ACCOUNT_FAILURES,
                Key::Address(_) => ADDRESS_FAILURES,
            };
            let record =
                records.entry(key).or_insert(Record { failures: 0, locks: 0, last_failure: now, locked_until: None });
            let quiet = now.saturating_duration_since(record.last_failure);
            if quiet > FORGET_LOCKS {
                record.locks = 0;
            }
            if quiet > FORGET_FAILURES {
                record.failures = 0;
            }
            record.failures += 1;
            record.last_failure = now;
            if record.failures >= limit {
                let lock = FIRST_LOCK.saturating_mul(1 << record.locks.min(10)).min(LONGEST_LOCK);
                record.locked_until = Some(now + lock);
                record.locks += 1;
                record.failures = 0;
            }
        }
    }

    /// A successful sign-in: the account's failures are forgotten.
    pub(super) fn succeeded(&self, account: &str) {
        self.lock().remove(&Key::Account(account.to_owned()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Record>> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn keys(account: &str, address: Option<IpAddr>) -> Vec<Key> {
    let mut keys = vec![Key::Account(account.to_owned())];
    keys.extend(address.map(Key::Address));
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOME: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));

    #[test]
    fn an_account_is_locked_after_its_failures_and_longer_each_time() {
        let t = Throttle::default();
        let start = Instant::now();
        for _ in 0..ACCOUNT_FAILURES - 1 {
            t.failed("ada", HOME, start);
        }
        assert!(t.check("ada", HOME, start).is_ok());
        t.failed("ada", HOME, start);
        assert_eq!(t.check("ada", HOME, start), Err(FIRST_LOCK));
        assert!(t.check("bo", None, start).is_ok(), "another account from elsewhere is not locked");
        let later = start + FIRST_LOCK;
        assert!(t.check("ada", HOME, later).is_ok());
        for _ in 0..ACCOUNT_FAILURES {
            t.failed("ada", None, later);
        }
        assert_eq!(t.check("ada", None, later), Err(FIRST_LOCK * 2), "the second lock-out is twice as long");
        t.succeeded("ada");
        assert!(t.check("ada", None, later).is_ok());
    }

    #[test]
    fn an_address_is_locked_after_failures_over_many_names() {
        let t = Throttle::default();
        let now = Instant::now();
        for i in 0..ADDRESS_FAILURES {
            assert!(t.check(&format!("guess{i}"), HOME, now).is_ok());
            t.failed(&format!("guess{i}"), HOME, now);
        }
        assert!(t.check("ada", HOME, now).is_err(), "every name from that address waits");
        assert!(t.check("ada", None, now).is_ok());
    }

    #[test]
    fn old_failures_are_forgotten() {
        let t = Throttle::default();
        let now = Instant::now();
        for _ in 0..ACCOUNT_FAILURES - 1 {
            t.failed("ada", None, now);
        }
        t.failed("ada", None, now + FORGET_FAILURES + Duration::from_secs(1));
        assert!(t.check("ada", None, now + FORGET_FAILURES + Duration::from_secs(1)).is_ok());
    }
}
