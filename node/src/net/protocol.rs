//! The sync protocol's libp2p behaviour: one long-lived `/trellis/sync/1` stream per
//! connection, opened by the connection's dialer and handed to the event loop with the
//! connection it belongs to.
//!
//! Why not `libp2p-stream`: it picks a random connection when a peer has several and
//! does not say which one a stream runs on, while the session layer needs one link per
//! connection (each with its kind and its ping round-trip time) to choose between them.
//! Pinning a stream to its connection takes this small behaviour.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::task::{Context, Poll};

use libp2p::core::transport::PortUse;
use libp2p::core::upgrade::ReadyUpgrade;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::handler::{
    ConnectionEvent, DialUpgradeError, FullyNegotiatedInbound, FullyNegotiatedOutbound,
};
use libp2p::swarm::{
    ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, FromSwarm,
    NetworkBehaviour, StreamUpgradeError, SubstreamProtocol, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use libp2p::{PeerId, Stream, StreamProtocol};

use super::link::LinkKind;

/// The sync protocol's id.
pub const SYNC_PROTOCOL: StreamProtocol = StreamProtocol::new("/trellis/sync/1");

/// What the behaviour reports.
#[derive(Debug)]
pub enum SyncStreamEvent {
    /// A sync stream is open on a connection.
    Opened {
        /// The peer.
        peer: PeerId,
        /// The connection it runs on.
        connection: ConnectionId,
        /// What carries the connection.
        kind: LinkKind,
        /// The peer's address on that connection.
        remote: Multiaddr,
        /// The stream.
        stream: Stream,
    },
    /// Opening the sync stream on a connection failed (the peer does not speak it).
    Failed {
        /// The peer.
        peer: PeerId,
        /// The connection.
        connection: ConnectionId,
        /// Why.
        error: String,
    },
}

/// The link kind of a connection, from its address.
pub fn kind_of(addr: &Multiaddr) -> LinkKind {
    if addr
        .iter()
        .any(|p| matches!(p, Protocol::QuicV1 | Protocol::Quic))
    {
        LinkKind::Quic
    } else {
        LinkKind::Tcp
    }
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct SyncBehaviour {
    events: VecDeque<SyncStreamEvent>,
}

impl NetworkBehaviour for SyncBehaviour {
    type ConnectionHandler = SyncHandler;
    type ToSwarm = SyncStreamEvent;

    fn handle_established_inbound_connection(
        &mut self,
        _connection: ConnectionId,
        _peer: PeerId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(SyncHandler::new(false, remote.clone()))
    }

    fn handle_established_outbound_connection(
        &mut self,
        _connection: ConnectionId,
        _peer: PeerId,
        addr: &Multiaddr,
        _role: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(SyncHandler::new(true, addr.clone()))
    }

    fn on_swarm_event(&mut self, _event: FromSwarm<'_>) {}

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        self.events.push_back(match event {
            HandlerEvent::Opened {
                kind,
                remote,
                stream,
            } => SyncStreamEvent::Opened {
                peer,
                connection,
                kind,
                remote,
                stream,
            },
            HandlerEvent::Failed(error) => SyncStreamEvent::Failed {
                peer,
                connection,
                error,
            },
        });
    }

    fn poll(
        &mut self,
        _cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        match self.events.pop_front() {
            Some(event) => Poll::Ready(ToSwarm::GenerateEvent(event)),
            None => Poll::Pending,
        }
    }
}

/// What a connection's handler tells the behaviour.
#[derive(Debug)]
pub enum HandlerEvent {
    /// The sync stream of this connection is open.
    Opened {
        /// What carries the connection.
        kind: LinkKind,
        /// The peer's address.
        remote: Multiaddr,
        /// The stream.
        stream: Stream,
    },
    /// Opening it failed.
    Failed(String),
}

/// The per-connection half: the dialer opens the sync stream once; the listener accepts it.
#[derive(Debug)]
pub struct SyncHandler {
    open: bool,
    remote: Multiaddr,
    events: VecDeque<HandlerEvent>,
}

impl SyncHandler {
    fn new(dialer: bool, remote: Multiaddr) -> Self {
        Self {
            open: dialer,
            remote,
            events: VecDeque::new(),
        }
    }

    fn opened(&mut self, stream: Stream) {
        self.events.push_back(HandlerEvent::Opened {
            kind: kind_of(&self.remote),
            remote: self.remote.clone(),
            stream,
        });
    }
}

impl ConnectionHandler for SyncHandler {
    type FromBehaviour = Infallible;
    type ToBehaviour = HandlerEvent;
    type InboundProtocol = ReadyUpgrade<StreamProtocol>;
    type OutboundProtocol = ReadyUpgrade<StreamProtocol>;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol> {
        SubstreamProtocol::new(ReadyUpgrade::new(SYNC_PROTOCOL), ())
    }

    fn poll(
        &mut self,
        _cx: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, (), Self::ToBehaviour>> {
        if let Some(event) = self.events.pop_front() {
            return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(event));
        }
        if self.open {
            self.open = false;
            return Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                protocol: SubstreamProtocol::new(ReadyUpgrade::new(SYNC_PROTOCOL), ()),
            });
        }
        Poll::Pending
    }

    fn on_behaviour_event(&mut self, event: Self::FromBehaviour) {
        match event {}
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<'_, Self::InboundProtocol, Self::OutboundProtocol>,
    ) {
        match event {
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
                protocol: stream,
                ..
            })
            | ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol: stream,
                ..
            }) => self.opened(stream),
            ConnectionEvent::DialUpgradeError(DialUpgradeError { error, .. }) => {
                let error = match error {
                    StreamUpgradeError::Timeout => "timed out".to_owned(),
                    StreamUpgradeError::NegotiationFailed => {
                        format!("the peer does not speak {SYNC_PROTOCOL}")
                    }
                    StreamUpgradeError::Io(error) => error.to_string(),
                    StreamUpgradeError::Apply(never) => match never {},
                };
                self.events.push_back(HandlerEvent::Failed(error));
            }
            _ => {}
        }
    }
}
