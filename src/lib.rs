//! streamedge: an edge node for live shopping streams.
//!
//! Capabilities live in one folder each (`chat/`, `media/`, ...) over a shared `domain/`
//! and `store/`; the transport (`http/`, `ws/`) sits on top and [`server::run`] wires it all
//! into a node. Dependencies point one way (README.md, "Architecture").
#![forbid(unsafe_code)]

pub mod admission;
pub mod auth;
pub mod chat;
pub mod config;
pub mod domain;
pub mod http;
pub mod media;
pub mod moderation;
pub mod periodic;
pub mod persist;
pub mod protocol;
pub mod rtc;
pub mod server;
pub mod sessions;
pub mod store;
pub mod streams;
pub mod telemetry;
pub mod viewers;
pub mod ws;
