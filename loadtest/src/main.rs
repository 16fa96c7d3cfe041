//! `streamedge-load`: the load generator and benchmark scenarios for streamedge.
//!
//! Scenarios (subcommands) print a live progress line on stderr, a human table on stdout
//! and, with `--json FILE`, a machine-readable report.

mod attack;
mod chat;
mod conn;
mod drain;
mod fanout;
mod http1;
mod idle;
mod media;
mod metrics;
mod persist;
mod proto;
mod reconnect;
mod report;
mod storm;
mod tokens;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "streamedge-load", about = "Load generator for streamedge")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Hold idle WebSocket connections and report the node's RSS per connection.
    Idle(idle::Args),
    /// Open connections as fast as allowed and report the rate and join latency.
    ConnectStorm(storm::Args),
    /// Chat fan-out: viewers on one stream, senders at a rate; latency and ordering.
    ChatFanout(fanout::Args),
    /// Chat resume: viewers drop and reconnect while senders publish; every viewer must
    /// get every message exactly once, in order.
    Reconnect(reconnect::Args),
    /// Drain one node under N viewers (POST /drain or SIGTERM): time from each 1012 close
    /// to the reconnection's welcome, until all are back, failures, other nodes' CPU.
    Drain(drain::Args),
    /// Load the RTC token endpoint with valid access tokens.
    Tokens(tokens::Args),
    /// Chat rows per second written to PostgreSQL and the persistence lag.
    Persist(persist::Args),
    /// WHEP viewers of one WHIP stream: loss per viewer and the node's CPU per viewer.
    Media(media::Args),
    /// Many connections each sending a huge unfinished request head: the node's RSS
    /// before, at its peak during and after.
    HeadFlood(attack::FloodArgs),
    /// Thousands of slow-header connections from one IP while a client from another IP
    /// keeps making requests: what the attacker gets and how long the client waits.
    Slowloris(attack::SlowlorisArgs),
    /// (internal) a worker process of `idle`, driven over stdin/stdout.
    #[command(hide = true)]
    IdleWorker(idle::WorkerArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cli.scenario {
            Scenario::Idle(a) => idle::run(a).await,
            Scenario::ConnectStorm(a) => storm::run(a).await,
            Scenario::Tokens(a) => tokens::run(a).await,
            Scenario::Persist(a) => persist::run(a).await,
            Scenario::Media(a) => media::run(a).await,
            Scenario::ChatFanout(a) => fanout::run(a).await,
            Scenario::Reconnect(a) => reconnect::run(a).await,
            Scenario::Drain(a) => drain::run(a).await,
            Scenario::HeadFlood(a) => attack::flood(a).await,
            Scenario::Slowloris(a) => attack::slowloris(a).await,
            Scenario::IdleWorker(a) => idle::worker(a).await,
        }
    })
}
