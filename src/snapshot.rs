//! The routing snapshot: routes → services → pools → servers, with each
//! service's active pool and weights, as one immutable value behind one
//! [`ArcSwap`] ([`Routing`]).
//!
//! A request loads the snapshot once and routes from it without a lock. The
//! long-lived objects a snapshot points to ([`PoolState`] counters and
//! [`Server`]s with their connection pools) are kept in [`Objects`] and reused
//! by every later snapshot, so a switch, reload or health change never resets
//! in-flight counts or drops idle upstream connections.
//!
//! Building snapshots does no I/O. Only the holder of a routing table's
//! [`Publisher`] (the control plane) replaces its snapshot.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::mpsc;

use crate::config::{Balance, Config, KeySource, PoolName, ServerAddr, ServiceConfig};
use crate::metrics::{Metrics, PoolMetrics};
use crate::route::Router;
use crate::upstream::{Cutter, Timeouts, Upstream};

/// A connection to a server failed while serving a request (passive health).
#[derive(Debug, Clone)]
pub struct ServerFailure {
    /// The service.
    pub service: Arc<str>,
    /// The pool.
    pub pool: PoolName,
    /// The server.
    pub addr: ServerAddr,
    /// What failed.
    pub error: String,
}

/// Most passive failure reports queued for the control plane; more are dropped
/// (one is enough to mark a server down).
const FAILURE_QUEUE: usize = 256;

/// One pool server, shared by every snapshot that lists it.
#[derive(Debug)]
pub struct Server {
    /// Its keep-alive connection pool.
    pub upstream: Upstream,
    inflight: AtomicU64,
    service: Arc<str>,
    pool: PoolName,
    failures: mpsc::Sender<ServerFailure>,
}

impl Server {
    /// Tells the control plane that a connection to this server failed.
    /// Never blocks: when the queue is full the report is dropped.
    pub fn report_failure(&self, error: String) {
        let _ = self.failures.try_send(ServerFailure {
            service: self.service.clone(),
            pool: self.pool,
            addr: self.upstream.addr().clone(),
            error,
        });
    }

    /// Requests in flight on this server.
    pub fn inflight(&self) -> u64 {
        self.inflight.load(Ordering::Relaxed)
    }
}

/// Counters of one pool of one service, shared by every snapshot.
#[derive(Debug)]
pub struct PoolState {
    /// The service name.
    pub service: Arc<str>,
    /// Blue or green.
    pub name: PoolName,
    inflight: AtomicU64,
    next: AtomicUsize,
    /// What is still open on the pool at the end of a drain: upstream
    /// connections and tunnels.
    cutter: Arc<Cutter>,
    /// The pool's metric handles.
    pub metrics: PoolMetrics,
}

impl PoolState {
    /// Where the pool's connection and tunnel tasks register to be cut.
    pub fn cutter(&self) -> &Arc<Cutter> {
        &self.cutter
    }

    /// Closes every upstream connection and tunnel open on this pool (the end
    /// of a drain). Returns how many requests were in flight.
    pub fn cut(&self) -> u64 {
        let inflight = self.inflight();
        self.cutter.cut();
        inflight
    }

    /// Requests (and streams, tunnels) in flight on this pool.
    pub fn inflight(&self) -> u64 {
        self.inflight.load(Ordering::Acquire)
    }

    /// The next round-robin ticket.
    pub(crate) fn ticket(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed)
    }
}

/// A pool as one snapshot sees it: its servers and which of them are healthy.
#[derive(Debug, Clone)]
pub struct PoolView {
    /// The long-lived counters.
    pub state: Arc<PoolState>,
    /// Every server of the pool, in config order.
    pub servers: Vec<Arc<Server>>,
    /// The servers that take traffic.
    pub healthy: Vec<Arc<Server>>,
}

/// A service as one snapshot sees it.
#[derive(Debug)]
pub struct Service {
    /// The name from the config.
    pub name: Arc<str>,
    /// The pool that takes the traffic.
    pub active: PoolName,
    /// Percent (0..=100) of new requests sent to the standby pool.
    pub standby_weight: u8,
    /// The generation at which this service last changed.
    pub generation: u64,
    /// Session key for stickiness.
    pub sticky: Option<KeySource>,
    /// Header naming a pool to preview.
    pub preview: Option<http::HeaderName>,
    /// Server choice within a pool.
    pub balance: Balance,
    /// The pool a request the active pool failed before any byte reached
    /// the client is sent to once (a deploy's old pool, from its switch
    /// to its release); none outside a deploy.
    pub fallback: Option<PoolName>,
    /// Blue and green, indexed by [`PoolName::index`].
    pub pools: [PoolView; 2],
    /// The event an event stream gets at the end of its pool's drain.
    pub drain_sse_event: Option<Arc<bytes::Bytes>>,
}

impl Service {
    /// The view of pool `name`.
    pub fn pool(&self, name: PoolName) -> &PoolView {
        &self.pools[name.index()]
    }
}

/// Per-service values that live outside the config: what switches and weight
/// changes set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceRuntime {
    /// The active pool.
    pub active: PoolName,
    /// Percent of new requests to the standby pool.
    pub standby_weight: u8,
    /// The generation at which the service last changed.
    pub generation: u64,
    /// The pool a failed request is retried on once (see
    /// [`Service::fallback`]).
    pub fallback: Option<PoolName>,
}

/// The whole routing table at one generation.
#[derive(Debug)]
pub struct Snapshot {
    /// Raised by every change.
    pub generation: u64,
    /// Host and path → service index.
    pub router: Router,
    /// Services in config order (sorted by name).
    pub services: Vec<Arc<Service>>,
    /// Upstream timeouts.
    pub timeouts: Timeouts,
    /// `max_body_bytes`.
    pub max_body_bytes: Option<u64>,
    /// The config this snapshot was built from.
    pub config: Arc<Config>,
    /// Where answers given before any pool was chosen (404, 400) are counted.
    pub unrouted: Arc<PoolMetrics>,
    /// The HTTPS listener's certificate and settings (built by the control
    /// plane, which reads the files).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The ACME certificates and the challenges in progress (HTTP-01 is
    /// answered on both listeners).
    pub issued: Arc<crate::tls::Issued>,
}

impl Snapshot {
    /// The service called `name`.
    pub fn service(&self, name: &str) -> Option<&Arc<Service>> {
        self.services.iter().find(|s| &*s.name == name)
    }
}

/// The long-lived pool counters and servers that snapshots point to.
#[derive(Debug)]
pub struct Objects {
    pools: HashMap<(Arc<str>, PoolName), Arc<PoolState>>,
    servers: HashMap<(Arc<str>, PoolName, ServerAddr), Arc<Server>>,
    failures: mpsc::Sender<ServerFailure>,
    metrics: Arc<Metrics>,
    unrouted: Arc<PoolMetrics>,
    issued: Arc<crate::tls::Issued>,
}

impl Objects {
    /// Objects recording into `metrics`, whose servers report connection
    /// failures on the returned channel.
    pub fn new(metrics: Arc<Metrics>) -> (Objects, mpsc::Receiver<ServerFailure>) {
        let (failures, rx) = mpsc::channel(FAILURE_QUEUE);
        let objects = Objects {
            pools: HashMap::new(),
            servers: HashMap::new(),
            failures,
            unrouted: Arc::new(metrics.pool("", "")),
            metrics,
            issued: Arc::default(),
        };
        (objects, rx)
    }

    /// Every snapshot from here on answers ACME challenges from `issued`.
    pub fn set_issued(&mut self, issued: Arc<crate::tls::Issued>) {
        self.issued = issued;
    }

    /// The metrics everything records into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    fn pool(&mut self, service: &Arc<str>, name: PoolName) -> Arc<PoolState> {
        let metrics = &self.metrics;
        self.pools
            .entry((service.clone(), name))
            .or_insert_with(|| {
                Arc::new(PoolState {
                    service: service.clone(),
                    name,
                    inflight: AtomicU64::new(0),
                    next: AtomicUsize::new(0),
                    cutter: Arc::default(),
                    metrics: metrics.pool(service, name.as_str()),
                })
            })
            .clone()
    }

    fn server(&mut self, service: &Arc<str>, pool: PoolName, addr: &ServerAddr) -> Arc<Server> {
        let cutter = self.pool(service, pool).cutter.clone();
        let failures = self.failures.clone();
        self.servers
            .entry((service.clone(), pool, addr.clone()))
            .or_insert_with(|| {
                Arc::new(Server {
                    upstream: Upstream::new(addr.clone(), cutter),
                    inflight: AtomicU64::new(0),
                    service: service.clone(),
                    pool,
                    failures,
                })
            })
            .clone()
    }

    /// The long-lived state of pool `name` of `service`, if it exists.
    pub fn pool_state(&self, service: &str, name: PoolName) -> Option<&Arc<PoolState>> {
        self.pools
            .iter()
            .find(|((s, p), _)| &**s == service && *p == name)
            .map(|(_, state)| state)
    }

    /// Forgets objects no longer in `config` (their idle connections close;
    /// requests still running keep their own references).
    fn retain(&mut self, config: &Config) {
        let wanted = |svc: &str, pool: PoolName, addr: Option<&ServerAddr>| {
            config
                .services
                .iter()
                .any(|s| s.name == svc && addr.is_none_or(|a| s.pool(pool).servers.contains(a)))
        };
        self.servers.retain(|(svc, pool, addr), server| {
            let keep = wanted(svc, *pool, Some(addr));
            if !keep {
                server.upstream.clear_idle();
            }
            keep
        });
        self.pools.retain(|(svc, pool), _| wanted(svc, *pool, None));
    }

    /// Every server currently known, with its service and pool.
    pub fn servers(&self) -> impl Iterator<Item = (&str, PoolName, &Arc<Server>)> {
        self.servers
            .iter()
            .map(|((s, p, _), server)| (&**s, *p, server))
    }

    /// Builds a snapshot of `config` at `generation`.
    ///
    /// `runtime` gives each service's active pool and weight; `healthy` says
    /// whether a server takes traffic.
    pub fn build(
        &mut self,
        config: Arc<Config>,
        generation: u64,
        tls: Option<Arc<rustls::ServerConfig>>,
        runtime: &dyn Fn(&ServiceConfig) -> ServiceRuntime,
        healthy: &dyn Fn(&str, PoolName, &Server) -> bool,
    ) -> Snapshot {
        self.retain(&config);
        let services: Vec<Arc<Service>> = config
            .services
            .iter()
            .map(|sc| Arc::new(self.build_service(sc, runtime(sc), healthy)))
            .collect();
        let router = Router::new(&config.routes, |name| {
            services.iter().position(|s| &*s.name == name)
        });
        let limits = &config.server.limits;
        Snapshot {
            generation,
            router,
            services,
            timeouts: Timeouts {
                connect: limits.connect_timeout,
                response: limits.response_timeout,
            },
            max_body_bytes: limits.max_body_bytes,
            unrouted: self.unrouted.clone(),
            tls,
            issued: self.issued.clone(),
            config,
        }
    }

    fn build_service(
        &mut self,
        sc: &ServiceConfig,
        rt: ServiceRuntime,
        healthy: &dyn Fn(&str, PoolName, &Server) -> bool,
    ) -> Service {
        let name: Arc<str> = sc.name.as_str().into();
        let pools = PoolName::ALL.map(|pool| {
            let servers: Vec<Arc<Server>> = sc
                .pool(pool)
                .servers
                .iter()
                .map(|addr| self.server(&name, pool, addr))
                .collect();
            let healthy = servers
                .iter()
                .filter(|s| healthy(&name, pool, s))
                .cloned()
                .collect();
            PoolView {
                state: self.pool(&name, pool),
                servers,
                healthy,
            }
        });
        Service {
            name,
            active: rt.active,
            standby_weight: rt.standby_weight,
            generation: rt.generation,
            sticky: sc.sticky.clone(),
            preview: sc.preview.clone(),
            balance: sc.balance,
            fallback: rt.fallback,
            pools,
            drain_sse_event: sc
                .drain_sse_event
                .as_ref()
                .map(|e| Arc::new(bytes::Bytes::copy_from_slice(e.as_bytes()))),
        }
    }
}

/// The current snapshot. Anyone may `load` it; only the holder of its
/// [`Publisher`] can replace it.
#[derive(Debug)]
pub struct Routing {
    current: ArcSwap<Snapshot>,
}

/// The one handle that publishes snapshots into a [`Routing`]. It is made
/// with the routing and cannot be cloned, so whoever made the routing (the
/// control plane) is its only writer.
#[derive(Debug)]
pub struct Publisher {
    routing: Arc<Routing>,
}

impl Publisher {
    /// Publishes `snapshot`: every request that loads after this returns sees it.
    pub fn store(&self, snapshot: Snapshot) {
        self.routing.current.store(Arc::new(snapshot));
    }
}

impl Routing {
    /// A routing table starting at `snapshot`, and its only publisher.
    pub fn new(snapshot: Snapshot) -> (Arc<Routing>, Publisher) {
        let routing = Arc::new(Routing {
            current: ArcSwap::from_pointee(snapshot),
        });
        let publisher = Publisher {
            routing: routing.clone(),
        };
        (routing, publisher)
    }

    /// The current snapshot (lock-free).
    pub fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// The current snapshot as an owned `Arc`.
    pub fn load_full(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }
}

/// Counts one request in flight on its pool and server until dropped.
#[derive(Debug)]
pub struct InflightGuard {
    pool: Arc<PoolState>,
    server: Arc<Server>,
}

impl InflightGuard {
    /// Counts a request on `pool` / `server`.
    pub fn new(pool: Arc<PoolState>, server: Arc<Server>) -> InflightGuard {
        pool.inflight.fetch_add(1, Ordering::AcqRel);
        server.inflight.fetch_add(1, Ordering::Relaxed);
        InflightGuard { pool, server }
    }

    /// The server the request went to.
    pub fn server(&self) -> &Arc<Server> {
        &self.server
    }

    /// The pool the request went to.
    pub fn pool(&self) -> &Arc<PoolState> {
        &self.pool
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.pool.inflight.fetch_sub(1, Ordering::AcqRel);
        self.server.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}
