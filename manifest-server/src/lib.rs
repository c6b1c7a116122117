//! `manifest-server`: serves an update store (DESIGN: The store,
//! manifest-server) to a fleet of polling devices, cheaply and safely.
//!
//! Steps, in order: resolve the flags into a checked `Config` (`config`);
//! bind the listening socket, so a taken port fails before anything else
//! starts; start watching `cohorts/` and `releases/` and load the manifest
//! snapshot (`watch`, `snapshot`), verifying every pair when keys are given;
//! with `--reports-db`, open the reports database and start its threads
//! (`reports`); only then accept requests (`http`, `files`), counting them
//! (`metrics`), until the shutdown future resolves, after which in-flight
//! requests get `SHUTDOWN_GRACE` to finish.
//!
//! Modules:
//! - `config`: flags -> `Config`, store and key checks.
//! - `snapshot`: manifests and signatures held in memory as verified pairs.
//! - `watch`: inotify + debounce driving snapshot reloads.
//! - `files`: path rules, validators, ranges, artifact streaming.
//! - `http`: the single request handler and its responses.
//! - `metrics`: lock-free counters, Prometheus text.
//! - `reports`: device reports into SQLite (`POST /v1/reports`), optional.
//! - `fleet`: the fleet summary (`GET /v1/fleet`) and its HTML page (`GET /`).
//! - `logging`: journal or stderr.

pub mod config;
pub mod files;
pub mod fleet;
pub mod generate;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod reports;
pub mod snapshot;
pub mod watch;

use std::future::{Future, IntoFuture as _};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt as _;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{Args, Config, ConfigError};

use crate::metrics::Metrics;
use crate::snapshot::{Loader, SharedSnapshot, SETTLE};
use crate::watch::{StoreWatcher, WatchError};

/// How long requests still running at shutdown (a large download) may go on.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: SocketAddr, reason: String },
    #[error(transparent)]
    Watch(#[from] WatchError),
    #[error(transparent)]
    Reports(#[from] reports::store::StoreError),
    #[error("serving failed: {0}")]
    Serve(#[source] io::Error),
}

impl Error {
    /// The documented exit status (see `--help`): 2 for what the operator
    /// must fix in the arguments, store or keys, 3 for the address, 1 for
    /// anything that went wrong while running.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) | Error::Reports(_) => 2,
            Error::Listen { .. } => 3,
            Error::Watch(_) | Error::Serve(_) => 1,
        }
    }
}

/// A server bound to its address with its snapshot loaded, ready to serve.
pub struct Server {
    listener: TcpListener,
    addr: SocketAddr,
    state: http::AppState,
    watcher: StoreWatcher,
}

impl Server {
    pub async fn bind(config: Config) -> Result<Self, Error> {
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| listen_error(config.listen, &e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| listen_error(config.listen, &e))?;
        if let Err(e) = enable_keepalive(&listener) {
            log::warn!("cannot enable TCP keepalive on {addr}: {e}; dead connections will linger");
        }
        if config.trust.is_none() {
            log::warn!(
                "no --keys given: manifests are served WITHOUT verifying their signatures; \
                 a broken or unsigned manifest will reach devices"
            );
        }
        // Every file is opened below this descriptor, never through a link
        // (`files::StoreRoot`).
        let root = files::StoreRoot::open(&config.store).map_err(|source| ConfigError::StoreUnreadable {
            path: config.store.clone(),
            source,
        })?;
        let verifying = config.trust.is_some();
        let metrics = Arc::new(Metrics::default());
        let snapshot = SharedSnapshot::default();
        let loader = Loader::new(
            root.clone(),
            config.trust,
            snapshot.clone(),
            metrics.clone(),
            SETTLE,
        );
        // The first load reads and verifies files: keep it off the runtime.
        let store = config.store.clone();
        let watcher = tokio::task::spawn_blocking(move || StoreWatcher::start(loader, &store))
            .await
            .expect("the initial load does not panic")?;
        let reports = match config.reports {
            None => None,
            Some(rc) => {
                let metrics = metrics.clone();
                // SQLite opens and migrates synchronously.
                Some(
                    tokio::task::spawn_blocking(move || reports::Reports::open(rc, metrics))
                        .await
                        .expect("opening the reports database does not panic")?,
                )
            }
        };
        let state = http::AppState::new(root, snapshot, metrics, config.access_log, verifying, reports);
        Ok(Self {
            listener,
            addr,
            state,
            watcher,
        })
    }

    /// The address actually bound (resolves port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serve until `shutdown` resolves, then stop accepting, let running
    /// requests finish for up to `SHUTDOWN_GRACE`, and return.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), Error> {
        let token = CancellationToken::new();
        let trigger = token.clone();
        tokio::spawn(async move {
            shutdown.await;
            trigger.cancel();
        });
        // Small responses (304s) must leave at once, not wait for Nagle.
        let listener = self.listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let access_log = self.state.access_log();
        let app = axum::handler::Handler::with_state(http::handle, self.state);
        let stop = token.clone().cancelled_owned();
        // The peer address is only needed for the access log.
        let server = if access_log {
            let app = app.into_make_service_with_connect_info::<SocketAddr>();
            axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .into_future()
        } else {
            axum::serve(listener, app.into_make_service())
                .with_graceful_shutdown(stop)
                .into_future()
        };
        log::info!("serving on http://{}", self.addr);
        tokio::select! {
            res = server => res.map_err(Error::Serve)?,
            () = async {
                token.cancelled().await;
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } => log::warn!(
                "requests still running {}s after the shutdown signal; stopping anyway",
                SHUTDOWN_GRACE.as_secs()
            ),
        }
        drop(self.watcher);
        log::info!("stopped");
        Ok(())
    }
}

/// Devices on flaky links vanish without closing their connections; with
/// nothing to send, the server would keep those sockets (and their file
/// descriptors) forever. TCP keepalive lets the kernel find them: probes
/// after 60 s idle, every 10 s, 6 tries, so a dead peer is dropped within
/// about two minutes at no cost per request. Set on the listening socket,
/// accepted connections inherit it (Linux).
fn enable_keepalive(listener: &TcpListener) -> io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let fd = listener.as_raw_fd();
    let set = |level, name, value: libc::c_int| {
        // SAFETY: setsockopt on a socket we own, with a pointer to a live
        // c_int and its exact size.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1)?;
    set(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 60)?;
    set(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 10)?;
    set(libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 6)
}

fn listen_error(addr: SocketAddr, e: &io::Error) -> Error {
    let reason = match e.kind() {
        io::ErrorKind::AddrInUse => "address already in use".to_string(),
        io::ErrorKind::AddrNotAvailable => "address not available on this machine".to_string(),
        io::ErrorKind::PermissionDenied => {
            "permission denied (ports below 1024 need CAP_NET_BIND_SERVICE)".to_string()
        }
        _ => e.to_string(),
    };
    Error::Listen { addr, reason }
}

/// Bind, load and serve until `shutdown`; `on_listening` gets the bound
/// address once requests are being accepted.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_listening: impl FnOnce(SocketAddr),
) -> Result<(), Error> {
    let server = Server::bind(config).await?;
    on_listening(server.local_addr());
    server.serve(shutdown).await
}
