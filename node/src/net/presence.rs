//! Presence: what every node learns of the mesh's shape.
//!
//! Each node announces its direct links (`Links`: the peer's node id, the link kind,
//! round-trip time and bytes) with a version (the announcing node's wall clock in
//! milliseconds, so a restarted node's announcement supersedes its old one). Sessions
//! carry announcements to every peer; a node that receives one newer than what it holds
//! for that origin keeps it and passes it on (flooding with versions: an announcement
//! crosses each link at most once per version, so cycles end). [`Topology`] holds the
//! latest announcement per origin and draws the graph seen from one node with hop
//! counts (breadth-first); nodes no longer reachable are simply not drawn, and
//! announcements unrefreshed for [`Topology::EXPIRY_MS`] are forgotten.

use std::collections::{BTreeMap, VecDeque};

use trellis_common::sync::frame::{LinkInfo, Links};

/// A node of the drawn mesh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshNode {
    /// Its node id.
    pub node_id: Vec<u8>,
    /// Hops from the node the graph is drawn from (0: itself).
    pub hops: u32,
    /// Its links, as it announced them.
    pub links: Vec<LinkInfo>,
}

/// The latest announcement of every origin heard of.
#[derive(Debug, Default)]
pub struct Topology {
    /// Per origin: the announcement and when it was received (ms).
    known: BTreeMap<Vec<u8>, (Links, u64)>,
}

impl Topology {
    /// Announcements older than this (by receipt) are forgotten: nodes re-announce
    /// every few seconds while they run.
    pub const EXPIRY_MS: u64 = 120_000;

    /// An empty topology.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps `links` if it is newer than what is held for its origin. Returns whether
    /// it was (then it should be passed on to the peers).
    pub fn update(&mut self, links: Links, now_ms: u64) -> bool {
        match self.known.get(&links.origin) {
            Some((held, _)) if held.version >= links.version => false,
            _ => {
                self.known.insert(links.origin.clone(), (links, now_ms));
                true
            }
        }
    }

    /// Every announcement held (to send to a peer that just connected).
    pub fn all(&self) -> impl Iterator<Item = &Links> {
        self.known.values().map(|(links, _)| links)
    }

    /// Forgets announcements received more than [`Topology::EXPIRY_MS`] before `now_ms`.
    pub fn expire(&mut self, now_ms: u64) {
        self.known
            .retain(|_, (_, received)| now_ms.saturating_sub(*received) <= Self::EXPIRY_MS);
    }

    /// The mesh seen from `origin`: every node reachable from it over announced links,
    /// nearest first, with hop counts. A link counts when either end announced it (the
    /// other end's announcement may not have arrived yet).
    pub fn graph(&self, origin: &[u8]) -> Vec<MeshNode> {
        let mut neighbours: BTreeMap<&[u8], Vec<&[u8]>> = BTreeMap::new();
        for (node, (links, _)) in &self.known {
            for link in &links.links {
                neighbours.entry(node).or_default().push(&link.peer);
                neighbours.entry(&link.peer).or_default().push(node);
            }
        }
        let mut hops: BTreeMap<&[u8], u32> = BTreeMap::new();
        let mut queue = VecDeque::from([origin]);
        hops.insert(origin, 0);
        while let Some(node) = queue.pop_front() {
            let next = hops[node] + 1;
            for peer in neighbours.get(node).into_iter().flatten() {
                if !hops.contains_key(peer) {
                    hops.insert(peer, next);
                    queue.push_back(peer);
                }
            }
        }
        let mut nodes: Vec<MeshNode> = hops
            .into_iter()
            .map(|(node, hops)| MeshNode {
                node_id: node.to_vec(),
                hops,
                links: self
                    .known
                    .get(node)
                    .map(|(links, _)| links.links.clone())
                    .unwrap_or_default(),
            })
            .collect();
        nodes.sort_by(|a, b| (a.hops, &a.node_id).cmp(&(b.hops, &b.node_id)));
        nodes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(peer: u8) -> LinkInfo {
        LinkInfo {
            peer: vec![peer],
            kind: "tcp".to_owned(),
            rtt_ms: 1,
            bytes_in: 0,
            bytes_out: 0,
        }
    }

    fn links(origin: u8, version: u64, peers: &[u8]) -> Links {
        Links {
            origin: vec![origin],
            version,
            links: peers.iter().map(|p| link(*p)).collect(),
        }
    }

    #[test]
    fn only_newer_announcements_are_kept_and_passed_on() {
        let mut topology = Topology::new();
        assert!(topology.update(links(1, 10, &[2]), 0));
        assert!(
            !topology.update(links(1, 10, &[2]), 0),
            "the same version again"
        );
        assert!(!topology.update(links(1, 9, &[3]), 0), "an older one");
        assert!(topology.update(links(1, 11, &[3]), 0));
        assert_eq!(topology.all().count(), 1);
    }

    #[test]
    fn a_line_is_drawn_with_hop_counts_and_gone_nodes_vanish() {
        let mut topology = Topology::new();
        // 1 - 2 - 3 - 4, announced by 2 and 3 only (1 and 4 not heard from yet).
        topology.update(links(2, 1, &[1, 3]), 0);
        topology.update(links(3, 1, &[2, 4]), 0);
        let graph = topology.graph(&[1]);
        let hops: Vec<(u8, u32)> = graph.iter().map(|n| (n.node_id[0], n.hops)).collect();
        assert_eq!(hops, vec![(1, 0), (2, 1), (3, 2), (4, 3)]);
        assert_eq!(graph[1].links.len(), 2);
        // 3 loses its link to 4, and 4 never announced: 4 is gone.
        topology.update(links(3, 2, &[2]), 0);
        assert_eq!(topology.graph(&[1]).len(), 3);
        // Unrefreshed announcements expire.
        topology.expire(Topology::EXPIRY_MS + 1);
        assert_eq!(topology.graph(&[1]).len(), 1);
    }
}
