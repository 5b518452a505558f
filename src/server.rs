//! `serve`: wires the store, journal, rule runner, outbox workers and HTTP server
//! together, in the order that keeps the invariants: the dedup index is loaded before
//! the first request is accepted, and the evaluator sees the rebuilt windows before any
//! event accepted after start-up.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinSet;

use crate::alerts::AlertBook;
use crate::alerts::runner::Runner;
use crate::clock::Clock;
use crate::config::Config;
use crate::http::{AppState, router};
use crate::rules::Engine;
use crate::sources::intake::Intake;
use crate::store::Store;
use crate::store::journal::{Journal, SeenIndex};

/// A running server.
pub struct Running {
    pub addr: SocketAddr,
    pub store: Store,
    shutdown: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<()>,
    /// Set by the watchdog when a task the pipeline cannot work without (the journal
    /// writer, the evaluator, an outbox worker) has stopped; `serve` then exits.
    failure: watch::Receiver<Option<String>>,
    /// Set when shutdown starts: tasks ending after it are expected, not a failure.
    stopping: Arc<AtomicBool>,
}

impl Running {
    /// Resolves, with the reason, once a task the pipeline needs has stopped. Never
    /// resolves while everything runs.
    pub async fn failed(&self) -> String {
        let mut failure = self.failure.clone();
        loop {
            if let Some(reason) = failure.borrow_and_update().clone() {
                return reason;
            }
            if failure.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Stops accepting requests and waits for in-flight ones.
    pub async fn stop(self) {
        self.stopping.store(true, Ordering::Release);
        let _ = self.shutdown.send(());
        let _ = self.server.await;
    }

    /// Waits until the server stops by itself.
    pub async fn wait(self) {
        let _ = self.server.await;
    }
}

/// Starts everything and listens on `listen` (or the configured address).
pub async fn start(
    config: Config,
    clock: Clock,
    listen: Option<SocketAddr>,
) -> anyhow::Result<Running> {
    crate::http::metrics_handle();
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let store = Store::open(&config.store_path).await?;

    // Tasks that must run as long as the server does; the watchdog reports the first
    // one to stop (a panic, mostly) so the process exits instead of silently not
    // alerting.
    let mut essential = JoinSet::new();
    let mut wakers = HashMap::new();
    let mut deadlines_ms = HashMap::new();
    for contact in &config.contacts {
        let wake = Arc::new(Notify::new());
        wakers.insert(contact.name.clone(), wake.clone());
        deadlines_ms.insert(contact.name.clone(), contact.deadline_ms);
        let name = format!("outbox worker of contact {:?}", contact.name);
        essential.spawn(named(
            name,
            crate::notify::outbox::run(
                store.clone(),
                contact.clone(),
                config.templates.clone(),
                clock.clone(),
                wake,
            ),
        ));
    }

    let mut runner = Runner {
        engine: Engine::new(&config.rules),
        book: AlertBook::new(
            config.routes.clone(),
            config.templates.clone(),
            config.trace_url.clone(),
        ),
        store: store.clone(),
        clock: clock.clone(),
        deadlines_ms,
        wakers,
        retention_ms: config.journal_retention_ms,
        checked_all_at_ms: Default::default(),
    };
    // The HTTP server starts first, so that a restart answers at once: health checks
    // pass, and ingest says 503 (retry) until the dedup index is loaded. The journal
    // starts next, before the windows are rebuilt, so providers are answered (and their
    // events made durable) while a long journal is read back. Batches up to
    // `rebuilt_up_to` are the rebuild's; later ones queue in the engine channel until
    // the evaluator starts, and once it is full, ingest answers 503.
    let rules_ready = Arc::new(AtomicBool::new(false));
    let state = Arc::new(AppState {
        sources: config.sources.clone(),
        journal: OnceLock::new(),
        store: store.clone(),
        clock: clock.clone(),
        max_body_bytes: config.max_body_bytes,
        rules_ready: rules_ready.clone(),
        api_token: config
            .api_token
            .as_deref()
            .map(crate::sources::auth::Auth::bearer),
    });
    let app = router(
        state.clone(),
        config.max_body_bytes,
        Duration::from_millis(config.request_timeout_ms as u64),
    );
    let addr = listen.unwrap_or(config.listen);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, config = %config.path.display(), "listening");

    let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
    let limits = crate::http::serve::ConnectionLimits {
        header_read_timeout: Duration::from_millis(config.header_read_timeout_ms as u64),
        max_connections: config.max_connections,
    };
    let server = tokio::spawn(crate::http::serve::serve(
        listener,
        app,
        limits,
        async move {
            let _ = stopped.await;
        },
    ));
    let (report_failure, failure) = watch::channel(None);
    let stopping = Arc::new(AtomicBool::new(false));
    let running = Running {
        addr,
        store: store.clone(),
        shutdown,
        server,
        failure,
        stopping: stopping.clone(),
    };

    let (engine_tx, engine_rx) = mpsc::channel(64);
    let now_s = clock() / 1000;
    let loaded = async {
        let index = SeenIndex::load(&store, now_s, config.dedup_horizon_ms / 1000).await?;
        let last = store.last_batch_id().await?;
        Ok::<_, crate::store::StoreError>((index, last))
    };
    let (index, rebuilt_up_to) = match loaded.await {
        Ok(loaded) => loaded,
        Err(error) => {
            running.stop().await;
            return Err(anyhow::Error::new(error).context("loading the dedup index"));
        }
    };
    tracing::info!(keys = index.len(), "dedup index loaded");
    let (journal, writer) = Journal::start(
        store.clone(),
        index,
        config.queue_batches,
        config.max_group_events,
        engine_tx,
    );
    // Sources with a task of their own (a mailbox to poll) start once the journal can
    // take what they fetch; like the pipeline's tasks, they must not stop.
    for source in config.sources.values() {
        let intake = Intake::new(source.clone(), journal.clone(), clock.clone());
        if let Some(task) = source.backchannel.background(intake) {
            let name = format!("background task of source {:?}", source.id);
            essential.spawn(named(name, task));
        }
    }
    let _ = state.journal.set(journal);
    essential.spawn(named("journal writer".to_string(), async move {
        // A panic in the writer is the writer's task's; carry it over so it is reported.
        if let Err(error) = writer.await
            && error.is_panic()
        {
            std::panic::resume_unwind(error.into_panic());
        }
    }));
    tokio::spawn(checkpoint_forever(store.clone()));
    tokio::spawn(prune_forever(
        store.clone(),
        clock.clone(),
        config.journal_retention_ms,
        config.dedup_horizon_ms,
    ));

    let replayed = match runner.rebuild(&config.sources, rebuilt_up_to).await {
        Ok(replayed) => replayed,
        Err(error) => {
            running.stop().await;
            let context = "rebuilding rule windows from the journal";
            return Err(anyhow::Error::new(error).context(context));
        }
    };
    tracing::info!(events = replayed, "rule windows rebuilt from the journal");
    essential.spawn(named(
        "rule evaluator".to_string(),
        runner.run(
            engine_rx,
            Duration::from_millis(config.eval_interval_ms as u64),
        ),
    ));
    rules_ready.store(true, Ordering::Release);
    tokio::spawn(watchdog(essential, report_failure, stopping));
    Ok(running)
}

/// Runs `task` and then returns `name`, so the watchdog can say which task stopped.
async fn named(name: String, task: impl Future<Output = ()>) -> String {
    task.await;
    name
}

/// Waits for the first essential task to end (none should while the server runs) and
/// reports it, at ERROR: alerts would otherwise silently stop.
async fn watchdog(
    mut essential: JoinSet<String>,
    report: watch::Sender<Option<String>>,
    stopping: Arc<AtomicBool>,
) {
    let Some(ended) = essential.join_next().await else {
        return;
    };
    if stopping.load(Ordering::Acquire) {
        // Shutting down: the journal writer ends once the last request handle is gone.
        std::future::pending::<()>().await;
    }
    let reason = match ended {
        Ok(name) => format!("{name} stopped"),
        Err(error) if error.is_panic() => {
            let panic = error.into_panic();
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            format!("a pipeline task panicked: {message}")
        }
        Err(error) => format!("a pipeline task was cancelled: {error}"),
    };
    tracing::error!(error = %reason, "the pipeline is broken; shutting down");
    let _ = report.send(Some(reason));
    // The other tasks keep the JoinSet alive until the process exits.
    std::future::pending::<()>().await;
}

/// WAL size (4 KiB frames, so 1 GiB) past which the checkpointer restarts the WAL.
const MAX_WAL_FRAMES: i64 = 262_144;

/// Keeps the WAL short: a passive checkpoint every 200 ms, off the journal's path.
async fn checkpoint_forever(store: Store) {
    let mut ticker = tokio::time::interval(Duration::from_millis(200));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match store.checkpoint().await {
            // A WAL that passive checkpoints never manage to restart (writes without a
            // pause) is restarted the hard way, briefly holding writers back.
            Ok(wal_frames) if wal_frames > MAX_WAL_FRAMES => {
                if let Err(error) = store.restart_wal().await {
                    tracing::warn!(error = %error, wal_frames, "WAL restart failed; will retry");
                }
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(error = %error, "WAL checkpoint failed; will retry"),
        }
    }
}

async fn prune_forever(store: Store, clock: Clock, retention_ms: i64, dedup_horizon_ms: i64) {
    let mut ticker = tokio::time::interval(Duration::from_secs(60));
    loop {
        ticker.tick().await;
        let now = clock();
        match store
            .prune(now - retention_ms, (now - dedup_horizon_ms) / 1000)
            .await
        {
            Ok(0) => {}
            Ok(rows) => tracing::debug!(rows, "aged-out rows pruned"),
            Err(error) => tracing::warn!(error = %error, "pruning failed; will retry"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_essential_task_to_stop_is_reported() {
        let (report, mut failure) = watch::channel(None);
        let mut essential = JoinSet::new();
        essential.spawn(named("rule evaluator".into(), async {
            panic!("period is zero")
        }));
        essential.spawn(named("outbox".into(), std::future::pending()));
        tokio::spawn(watchdog(essential, report, Arc::default()));
        failure.changed().await.unwrap();
        assert_eq!(
            failure.borrow().as_deref(),
            Some("a pipeline task panicked: period is zero")
        );

        let (report, mut failure) = watch::channel(None);
        let mut essential = JoinSet::new();
        essential.spawn(named("journal writer".into(), async {}));
        tokio::spawn(watchdog(essential, report, Arc::default()));
        failure.changed().await.unwrap();
        assert_eq!(failure.borrow().as_deref(), Some("journal writer stopped"));

        // During shutdown a task ending is expected and not reported.
        let (report, failure) = watch::channel(None);
        let mut essential = JoinSet::new();
        essential.spawn(named("journal writer".into(), async {}));
        let watching = tokio::spawn(watchdog(essential, report, Arc::new(AtomicBool::new(true))));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!watching.is_finished());
        assert_eq!(*failure.borrow(), None);
    }
}
