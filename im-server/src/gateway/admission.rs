//! Who may open a connection before anyone knows who it is.
//!
//! A connection is *pending* from its accept until its Welcome (or refusal), and holds no
//! session slot while it is: sessions are counted once authenticated. Pending connections have
//! caps of their own, so that idle sockets cannot keep real users out:
//! - per source address (`max_pending_per_ip`): one more is closed at once, which costs the
//!   address that holds the others and no one else;
//! - in all (`max_pending_connections`): one more closes the *oldest* pending connection
//!   instead, so that a client completing its Hello promptly always gets in, however many
//!   silent sockets an attack spread over many addresses holds;
//! - file descriptors: connections of every kind together stay `reserved_fds` under the
//!   process's limit (read at start), so the store, the bus and the accept itself keep the
//!   descriptors they need; at that budget a new connection also closes the oldest pending one,
//!   or is closed itself when every connection is a session.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::{Arc, Mutex},
};

use tokio_util::sync::CancellationToken;

/// Why a connection was closed before its upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// Its address holds `max_pending_per_ip` pending connections already.
    PendingPerIp,
    /// Every descriptor of the budget is an authenticated session.
    Full,
}

impl Refused {
    /// The metric label.
    pub(super) fn label(self) -> &'static str {
        match self {
            Self::PendingPerIp => "pending_per_ip",
            Self::Full => "descriptors",
        }
    }
}

/// The caps, as configured and as the process's descriptor limit allows.
#[derive(Debug, Clone, Copy)]
pub(super) struct Caps {
    pub max_pending: usize,
    pub max_pending_per_ip: usize,
    /// Connections of every kind at most: the descriptor limit less the reserve.
    pub max_connections: usize,
}

#[derive(Debug, Default)]
struct State {
    /// Pending connections by age (admission number): address and eviction signal.
    pending: BTreeMap<u64, (IpAddr, CancellationToken)>,
    per_ip: HashMap<IpAddr, usize>,
    /// Connections past their handshake.
    established: usize,
    next: u64,
}

/// The pending and established connections of one gateway.
#[derive(Debug)]
pub(super) struct Admission {
    caps: Caps,
    state: Mutex<State>,
}

impl Admission {
    pub(super) fn new(caps: Caps) -> Arc<Self> {
        Arc::new(Self {
            caps,
            state: Mutex::default(),
        })
    }

    /// Admits a connection from `ip` as pending, closing the oldest pending one when a cap in
    /// all is reached; refuses it when its address is at its cap or every slot is a session.
    pub(super) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Pending, Refused> {
        let mut state = self.lock();
        if state.per_ip.get(&ip).copied().unwrap_or(0) >= self.caps.max_pending_per_ip {
            return Err(Refused::PendingPerIp);
        }
        let over = |s: &State| {
            s.pending.len() >= self.caps.max_pending
                || s.pending.len() + s.established >= self.caps.max_connections
        };
        if over(&state) {
            // Only a pending connection can make room: the oldest goes.
            let Some((_, (old_ip, evicted))) = state.pending.pop_first() else {
                return Err(Refused::Full);
            };
            evicted.cancel();
            forget(&mut state.per_ip, old_ip);
            metrics::counter!("im_pending_connections_evicted_total").increment(1);
            if over(&state) {
                return Err(Refused::Full);
            }
        }
        let id = state.next;
        state.next += 1;
        let evicted = CancellationToken::new();
        state.pending.insert(id, (ip, evicted.clone()));
        *state.per_ip.entry(ip).or_default() += 1;
        metrics::gauge!("im_pending_connections").set(state.pending.len() as f64);
        Ok(Pending {
            admission: self.clone(),
            id,
            ip,
            evicted,
            established: false,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn forget(per_ip: &mut HashMap<IpAddr, usize>, ip: IpAddr) {
    if let Some(count) = per_ip.get_mut(&ip) {
        *count -= 1;
        if *count == 0 {
            per_ip.remove(&ip);
        }
    }
}

/// A connection's place: pending until [`Pending::establish`], released on drop.
#[derive(Debug)]
pub(super) struct Pending {
    admission: Arc<Admission>,
    id: u64,
    ip: IpAddr,
    /// Cancelled when a newer connection took this one's place.
    pub evicted: CancellationToken,
    established: bool,
}

impl Pending {
    /// The handshake is done: the connection no longer counts as pending (nor can it be
    /// evicted), but still against the descriptor budget.
    pub(super) fn establish(&mut self) {
        if self.established {
            return;
        }
        let mut state = self.admission.lock();
        if state.pending.remove(&self.id).is_some() {
            forget(&mut state.per_ip, self.ip);
        }
        state.established += 1;
        self.established = true;
        metrics::gauge!("im_pending_connections").set(state.pending.len() as f64);
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut state = self.admission.lock();
        if self.established {
            state.established -= 1;
        } else if state.pending.remove(&self.id).is_some() {
            forget(&mut state.per_ip, self.ip);
        }
        metrics::gauge!("im_pending_connections").set(state.pending.len() as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    fn admission(
        max_pending: usize,
        max_pending_per_ip: usize,
        max_connections: usize,
    ) -> Arc<Admission> {
        Admission::new(Caps {
            max_pending,
            max_pending_per_ip,
            max_connections,
        })
    }

    #[test]
    fn an_address_at_its_cap_is_refused_and_others_are_not() {
        let a = admission(100, 2, 100);
        let first = a.admit(A).unwrap();
        let _second = a.admit(A).unwrap();
        assert_eq!(a.admit(A).unwrap_err(), Refused::PendingPerIp);
        assert!(a.admit(B).is_ok());
        drop(first);
        assert!(a.admit(A).is_ok(), "a place freed is free again");
    }

    #[test]
    fn at_the_cap_in_all_the_oldest_pending_connection_makes_room() {
        let a = admission(3, 10, 100);
        let oldest = a.admit(A).unwrap();
        let mut middle = a.admit(B).unwrap();
        middle.establish();
        let young = a.admit(B).unwrap();
        let _newer = a.admit(A).unwrap();
        let _newest = a.admit(B).unwrap();
        assert!(oldest.evicted.is_cancelled(), "the oldest pending one goes");
        assert!(!young.evicted.is_cancelled());
        let _fourth = a.admit(A).unwrap();
        assert!(
            !middle.evicted.is_cancelled(),
            "an established one never does"
        );
        assert!(young.evicted.is_cancelled(), "then the next oldest");
    }

    #[test]
    fn the_descriptor_budget_counts_sessions_and_only_pending_ones_give_way() {
        let a = admission(100, 100, 3);
        let mut sessions: Vec<Pending> = (0..2).map(|_| a.admit(A).unwrap()).collect();
        sessions.iter_mut().for_each(Pending::establish);
        let pending = a.admit(B).unwrap();
        let next = a.admit(B).unwrap();
        assert!(pending.evicted.is_cancelled());
        let mut last = next;
        last.establish();
        assert_eq!(
            a.admit(B).unwrap_err(),
            Refused::Full,
            "every slot is a session"
        );
        drop(sessions.pop());
        assert!(
            a.admit(B).is_ok(),
            "a session that ends frees its descriptor"
        );
    }
}
