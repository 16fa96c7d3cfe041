//! The state every handler shares: configuration, the shared-state backend, the services
//! built on it, the WebSocket registry and the node's draining flag.

use std::ops::Deref;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::auth::jwks::JwksCache;
use crate::auth::{Verifier, VerifierSettings};
use crate::config::Config;
use crate::store::SharedState;
use crate::streams::StreamService;
use crate::ws::Registry;
use ipnet::IpNet;

/// Cheap to clone; one per node.
#[derive(Clone)]
pub struct AppState(Arc<AppInner>);

pub struct AppInner {
    pub config: Arc<Config>,
    pub store: Arc<dyn SharedState>,
    pub registry: Arc<Registry>,
    pub auth: Verifier,
    pub streams: Arc<StreamService>,
    pub sessions: Arc<crate::sessions::SessionService>,
    pub viewers: Arc<crate::viewers::ViewerService>,
    pub hubs: crate::ws::hub::Hubs,
    pub chat: Arc<crate::chat::ChatService>,
    pub moderation: Arc<crate::moderation::ModerationService>,
    /// `None` when no Agora credentials are configured.
    pub rtc: Option<crate::rtc::RtcIssuer>,
    /// `None` when persistence is off.
    pub persist: Option<Arc<crate::persist::Persistence>>,
    /// `None` unless `media.enabled`.
    pub media: Option<Arc<crate::media::MediaService>>,
    pub trusted_proxies: Vec<IpNet>,
    /// Per-client-IP connection limits of the API listener (`[admission]`).
    pub ip_limits: Arc<crate::admission::IpLimits>,
    /// The per-user stream WebSocket cap, across the cluster.
    pub user_connections: Arc<crate::admission::UserConnections>,
    /// Route rate limits applied by this node alone while the shared state fails.
    pub local_limits: super::rate_limit::LocalLimiter,
    pub node_id: String,
    /// Cancelled when the node starts draining: readiness is false from then on.
    pub draining: CancellationToken,
    /// Cancelled `server.drain_delay` later: no new connections, WebSockets being closed.
    pub closing: CancellationToken,
    /// Cancelled by `POST /drain` on the admin listener (the same sequence as SIGTERM).
    pub drain_requested: CancellationToken,
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// The token verifier the configuration describes.
pub fn verifier(config: &Config) -> Verifier {
    let a = &config.auth;
    let jwks = non_empty(&a.jwks_url)
        .map(|url| Arc::new(JwksCache::new(url, a.jwks_timeout, a.jwks_min_refresh)));
    let secret = (!a.jwt_secret.is_empty()).then(|| a.jwt_secret.expose().as_bytes());
    Verifier::new(
        secret,
        jwks,
        VerifierSettings {
            audience: non_empty(&a.audience),
            issuer: non_empty(&a.issuer),
            leeway: a.leeway,
            role_claim: a.role_claim.clone(),
            allow_anonymous: a.allow_anonymous_viewers,
        },
    )
}

impl AppState {
    pub fn new(config: Arc<Config>, store: Arc<dyn SharedState>, node_id: String) -> Self {
        Self::with_persistence(config, store, node_id, None)
    }

    pub fn with_persistence(
        config: Arc<Config>,
        store: Arc<dyn SharedState>,
        node_id: String,
        persist: Option<Arc<crate::persist::Persistence>>,
    ) -> Self {
        let registry = Registry::new(config.ws.max_connections);
        let trusted_proxies = config
            .server
            .trusted_proxies
            .iter()
            .filter_map(|p| crate::config::parse_net(p))
            .collect();
        let streams = Arc::new(StreamService::with_persistence(
            store.clone(),
            persist.clone(),
            config.chat.clone(),
        ));
        let viewers = Arc::new(crate::viewers::ViewerService::new(
            store.clone(),
            config.viewers.clone(),
            config.session.summary_ttl,
        ));
        let sessions = Arc::new(crate::sessions::SessionService::new(
            store.clone(),
            streams.clone(),
            viewers.clone(),
            config.session.clone(),
            persist.clone(),
        ));
        let moderation = Arc::new(crate::moderation::ModerationService::new(
            store.clone(),
            streams.clone(),
            persist.clone(),
        ));
        let chat = Arc::new(crate::chat::ChatService::new(
            store.clone(),
            streams.clone(),
            moderation.clone(),
            config.chat.clone(),
            persist.clone(),
        ));
        let hubs = crate::ws::hub::Hubs::new(crate::ws::hub::HubDeps {
            store: store.clone(),
            registry: registry.clone(),
            chat: chat.clone(),
            streams: streams.clone(),
            viewers: viewers.clone(),
            push_interval: config.viewers.push_interval,
        });
        let ip_limits = crate::admission::IpLimits::new(&config.admission);
        let user_connections = crate::admission::UserConnections::new(
            store.clone(),
            config.admission.user_websockets,
            config.viewers.ttl,
            &node_id,
        );
        Self(Arc::new(AppInner {
            auth: verifier(&config),
            sessions,
            viewers,
            hubs,
            chat,
            moderation,
            streams,
            rtc: crate::rtc::RtcIssuer::from_config(&config),
            persist,
            media: config.media.enabled.then(|| {
                Arc::new(crate::media::MediaService::new(
                    config.media.clone(),
                    store.clone(),
                    node_id.clone(),
                ))
            }),
            config,
            store,
            registry,
            trusted_proxies,
            local_limits: Default::default(),
            ip_limits,
            user_connections,
            node_id,
            draining: CancellationToken::new(),
            closing: CancellationToken::new(),
            drain_requested: CancellationToken::new(),
        }))
    }

    pub fn is_draining(&self) -> bool {
        self.draining.is_cancelled()
    }

    /// Ready to take traffic: not draining and the shared state answers.
    pub fn is_ready(&self) -> bool {
        !self.is_draining() && self.store.is_healthy()
    }
}

impl Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}
