//! The stream WebSocket's protocol (subprotocol `streamedge.v1`, JSON text frames) and the
//! messages nodes exchange on a stream's channel — pure types and functions, no I/O:
//! [`client`] parses what a client sends, [`server`] builds every frame the node sends,
//! [`channel`] tells the kinds of inter-node messages apart. Documented in
//! `docs/protocol.md`.

pub mod channel;
pub mod client;
pub mod server;

pub use client::{parse_client, ClientFrame, FrameError};
pub use server::ServerFrame;

pub const SUBPROTOCOL: &str = "streamedge.v1";
