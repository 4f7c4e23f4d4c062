//! Subscriptions and interest propagation.
//!
//! A [`Subscription`] is a `SELECT` whose collection and `WHERE` clause decide which
//! documents a node wants; `ORDER BY`, `LIMIT`, `OFFSET` and the projection shape only
//! local results and do not narrow sync.
//!
//! A node's *interest* towards a peer is its own subscriptions plus the interests its
//! *other* peers sent it (split horizon), so an intermediary pulls from upstream what its
//! downstream peers ask for. Each propagated query carries its distance in hops from its
//! subscriber and is dropped at [`MAX_INTEREST_HOPS`]: in a mesh with cycles, a query
//! nobody subscribes to any more would otherwise circulate forever; with hop counts it
//! counts up to the limit and dies (as in distance-vector routing).

use std::collections::BTreeMap;

use serde_json::Value;

use super::QueryId;
use super::frame::InterestEntry;
use crate::crdt::DocState;
use crate::ids::{CollectionName, DocId};
use crate::query::{Expr, Params, QueryError, Statement, matches, parse};

/// Queries further than this many hops from their subscriber are not propagated.
pub const MAX_INTEREST_HOPS: u8 = 16;

/// One query of an interest set (see [`InterestEntry`], its wire form).
pub type Interest = InterestEntry;

/// Why a query cannot be a subscription.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SubscriptionError {
    #[error("subscription '{query}': {error}")]
    Query { query: String, error: QueryError },
    #[error("subscription '{0}' is not a SELECT")]
    NotSelect(String),
    #[error("subscription '{0}' has parameters: subscriptions must be bound (write values inline)")]
    Unbound(String),
    #[error("subscription '{query}': {error}")]
    Collection {
        query: String,
        error: crate::ids::IdError,
    },
}

/// A parsed subscription query.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    /// Its id (hash of the text).
    pub id: QueryId,
    /// The text, as subscribed.
    pub text: String,
    /// The collection it reads.
    pub collection: CollectionName,
    /// Its `WHERE` clause.
    pub filter: Option<Expr>,
}

impl Subscription {
    /// Parses a subscription: a `SELECT` without parameters.
    pub fn parse(text: &str) -> Result<Self, SubscriptionError> {
        let text = text.trim();
        let err = |error| SubscriptionError::Query {
            query: text.to_owned(),
            error,
        };
        let Statement::Select(select) = parse(text).map_err(err)? else {
            return Err(SubscriptionError::NotSelect(text.to_owned()));
        };
        if select.filter.as_ref().is_some_and(|f| !f.is_bound()) {
            return Err(SubscriptionError::Unbound(text.to_owned()));
        }
        let select = select.bind(&Params::new()).map_err(err)?;
        let collection = CollectionName::new(&select.collection).map_err(|error| {
            SubscriptionError::Collection {
                query: text.to_owned(),
                error,
            }
        })?;
        Ok(Self {
            id: QueryId::of(text),
            text: text.to_owned(),
            collection,
            filter: select.filter,
        })
    }

    /// Whether a materialised document (with its `_id`) matches.
    pub fn matches_json(&self, doc: &Value) -> bool {
        matches(self.filter.as_ref(), doc)
    }

    /// Whether a stored document matches: it exists and passes the filter.
    pub fn matches(&self, id: &DocId, state: &DocState) -> bool {
        state.to_json(id).is_some_and(|doc| self.matches_json(&doc))
    }
}

/// A node's interests: its own subscriptions and those each peer sent it.
#[derive(Debug, Clone)]
pub struct InterestTable<P> {
    own: Vec<String>,
    peers: BTreeMap<P, Vec<Interest>>,
}

impl<P: Ord + Clone> Default for InterestTable<P> {
    fn default() -> Self {
        Self::new()
    }
}

impl<P: Ord + Clone> InterestTable<P> {
    /// No subscriptions, no peers.
    pub fn new() -> Self {
        Self {
            own: Vec::new(),
            peers: BTreeMap::new(),
        }
    }

    /// Replaces the node's own subscriptions.
    pub fn set_own(&mut self, queries: Vec<String>) {
        self.own = queries;
    }

    /// The node's own subscriptions.
    pub fn own(&self) -> &[String] {
        &self.own
    }

    /// Records the interest a peer sent.
    pub fn set_peer(&mut self, peer: P, interests: Vec<Interest>) {
        self.peers.insert(peer, interests);
    }

    /// Forgets a peer (its session ended).
    pub fn remove_peer(&mut self, peer: &P) {
        self.peers.remove(peer);
    }

    /// The interest to advertise to `peer`: our own queries (0 hops) and those of every
    /// other peer one hop further, keeping the smallest distance per query and dropping
    /// queries at [`MAX_INTEREST_HOPS`]. Sorted by query id.
    pub fn toward(&self, peer: &P) -> Vec<Interest> {
        let mut best: BTreeMap<QueryId, Interest> = BTreeMap::new();
        let mut offer = |query: &str, hops: u8| {
            let entry = best.entry(QueryId::of(query)).or_insert_with(|| Interest {
                query: query.trim().to_owned(),
                hops,
            });
            entry.hops = entry.hops.min(hops);
        };
        for query in &self.own {
            offer(query, 0);
        }
        for (other, interests) in &self.peers {
            if other == peer {
                continue;
            }
            for interest in interests {
                let hops = interest.hops.saturating_add(1);
                if hops < MAX_INTEREST_HOPS {
                    offer(&interest.query, hops);
                }
            }
        }
        best.into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn split_horizon_leaves_out_the_peers_own_interest() {
        let mut table = InterestTable::new();
        table.set_own(vec!["SELECT * FROM cars".to_owned()]);
        table.set_peer(
            "c",
            vec![Interest {
                query: "SELECT * FROM trucks".to_owned(),
                hops: 0,
            }],
        );
        let to_c = table.toward(&"c");
        assert_eq!(to_c.len(), 1);
        assert_eq!(to_c[0].query, "SELECT * FROM cars");
        let to_a = table.toward(&"a");
        assert_eq!(to_a.len(), 2);
        assert!(
            to_a.iter()
                .any(|i| i.query == "SELECT * FROM trucks" && i.hops == 1)
        );
    }

    #[test]
    fn queries_die_at_the_hop_limit() {
        let mut table = InterestTable::new();
        table.set_peer(
            1,
            vec![Interest {
                query: "SELECT * FROM cars".to_owned(),
                hops: MAX_INTEREST_HOPS - 1,
            }],
        );
        assert!(table.toward(&2).is_empty());
    }

    #[test]
    fn subscriptions_are_bound_selects() {
        let s = Subscription::parse(" SELECT * FROM cars WHERE color = 'blue' ").unwrap();
        assert_eq!(s.collection.as_str(), "cars");
        assert!(s.matches_json(&json!({"color": "blue"})));
        assert!(!s.matches_json(&json!({"color": "red"})));
        assert!(matches!(
            Subscription::parse("SELECT * FROM cars WHERE color = :c"),
            Err(SubscriptionError::Unbound(_))
        ));
        assert!(matches!(
            Subscription::parse("DELETE FROM cars"),
            Err(SubscriptionError::NotSelect(_))
        ));
    }
}
