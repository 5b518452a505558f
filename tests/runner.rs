//! The evaluator task against a real SQLite store, with the rules' clock set by the
//! test, so firing, repeating and resolving are checked at exact instants. Its ticks run
//! every 10 ms of real time; tokio's paused time cannot drive it, since sqlx's pool
//! waits on its own thread and paused time turns every such wait into a timeout.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use backchannel::alerts::runner::Runner;
use backchannel::alerts::{AlertBook, Notification, Route, Status};
use backchannel::event::Event;
use backchannel::rules::{Engine, Matcher, Rule, RuleKind, Severity};
use backchannel::store::Store;
use backchannel::store::journal::DurableEvents;
use backchannel::templates::Templates;
use tokio::sync::mpsc;

const MINUTE: i64 = 60_000;

fn bounce(domain: &str) -> Event {
    Event {
        source: Arc::from("sg"),
        kind: Cow::Borrowed("sendgrid.bounce"),
        time_ms: 0,
        weight: 1.0,
        value: None,
        limit: None,
        labels: vec![(Cow::Borrowed("domain"), Cow::Owned(domain.to_string()))],
        provider_id: None,
        traceparent: None,
        raw: "{}".into(),
    }
}

struct Harness {
    now: Arc<AtomicI64>,
    checked: Arc<AtomicI64>,
    events: mpsc::Sender<DurableEvents>,
    store: Store,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn start(kind: RuleKind) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.sqlite")).await.unwrap();
        let rule = Arc::new(Rule {
            name: "bounces".into(),
            kind,
            matcher: Matcher {
                kinds: vec!["sendgrid.bounce".into()],
                ..Matcher::default()
            },
            group_by: vec!["domain".into()],
            severity: Severity::Warning,
            summary: String::new(),
            description: String::new(),
            resolve_ratio: 0.8,
        });
        let routes: Arc<[Route]> = Arc::from(vec![Route {
            matchers: vec![],
            contacts: vec!["ops".into()],
            repeat_interval_ms: 30 * MINUTE,
            send_resolved: true,
            continue_matching: false,
        }]);
        let templates = Arc::new(Templates::load(None).unwrap());
        let now = Arc::new(AtomicI64::new(1_700_000_000_000));
        let checked = Arc::new(AtomicI64::new(0));
        let clock_now = now.clone();
        let runner = Runner {
            engine: Engine::new(&[rule]),
            book: AlertBook::new(routes, templates, None),
            store: store.clone(),
            clock: Arc::new(move || clock_now.load(Ordering::SeqCst)),
            deadlines_ms: HashMap::new(),
            wakers: HashMap::new(),
            retention_ms: 24 * 60 * MINUTE,
            checked_all_at_ms: checked.clone(),
        };
        let (events, receiver) = mpsc::channel(8);
        tokio::spawn(runner.run(receiver, Duration::from_millis(10)));
        Self {
            now,
            checked,
            events,
            store,
            _dir: dir,
        }
    }

    fn set_minutes(&self, minutes: i64) {
        self.now
            .store(1_700_000_000_000 + minutes * MINUTE, Ordering::SeqCst);
    }

    /// Queues `count` bounces received at `minutes`, then moves the clock there. The
    /// runner drains queued events before it ticks, so no tick sees the new time
    /// without the events.
    async fn send_at(&self, minutes: i64, domain: &str, count: usize) {
        let received_ms = 1_700_000_000_000 + minutes * MINUTE;
        let events = (0..count).map(|_| bounce(domain)).collect();
        self.events
            .send(DurableEvents {
                received_ms,
                events,
            })
            .await
            .unwrap();
        self.set_minutes(minutes);
    }

    /// Waits until the runner has checked every group at the current instant (queued
    /// events are drained before that check) and returns every notification queued so
    /// far.
    async fn tick(&self) -> Vec<Notification> {
        // A check that read the clock just after it moved may have chosen to tick just
        // before the events came in; the check after it cannot have. So wait for one
        // more, a millisecond later.
        for step in 0..2 {
            let target = self.now.fetch_add(step, Ordering::SeqCst) + step;
            let start = std::time::Instant::now();
            while self.checked.load(Ordering::SeqCst) < target {
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "the runner did not check"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        self.notifications().await
    }

    async fn notifications(&self) -> Vec<Notification> {
        let rows = self.store.pending_notifications("ops").await.unwrap();
        rows.iter()
            .map(|r| serde_json::from_str(r).unwrap())
            .collect()
    }
}

fn summary(n: &[Notification]) -> Vec<(Status, bool, String)> {
    n.iter()
        .map(|n| (n.status, n.repeat, n.labels["domain"].clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threshold_fires_repeats_and_resolves_on_time() {
    let h = Harness::start(RuleKind::Threshold {
        window_ms: 10 * MINUTE,
        min: 5.0,
    })
    .await;
    h.send_at(0, "a.example", 4).await;
    h.send_at(0, "b.example", 1).await;
    assert!(
        h.tick().await.is_empty(),
        "4 bounces are below the threshold"
    );

    h.send_at(1, "a.example", 1).await;
    let fired = h.tick().await;
    assert_eq!(
        summary(&fired),
        [(Status::Firing, false, "a.example".to_string())]
    );
    assert_eq!(fired[0].facts.count, 5.0);

    // Still firing 20 minutes later only if bounces keep coming; they do.
    h.send_at(8, "a.example", 5).await;
    assert_eq!(h.tick().await.len(), 1, "no repeat before repeat_interval");
    h.send_at(31, "a.example", 5).await;
    let repeated = h.tick().await;
    assert_eq!(
        summary(&repeated)[1],
        (Status::Firing, true, "a.example".to_string())
    );

    // The window empties ten minutes after the last bounces: resolved, once.
    h.set_minutes(40);
    assert_eq!(h.tick().await.len(), 2, "5 bounces still in the window");
    h.set_minutes(42);
    let resolved = h.tick().await;
    assert_eq!(
        summary(&resolved)[2],
        (Status::Resolved, false, "a.example".to_string())
    );
    h.set_minutes(50);
    assert_eq!(h.tick().await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_fires_per_group_and_again_after_resolving() {
    let h = Harness::start(RuleKind::Each {
        window_ms: 5 * MINUTE,
    })
    .await;
    h.send_at(0, "a.example", 1).await;
    h.send_at(0, "b.example", 2).await;
    let fired = h.tick().await;
    let mut domains: Vec<String> = fired.iter().map(|n| n.labels["domain"].clone()).collect();
    domains.sort();
    assert_eq!(domains, ["a.example", "b.example"]);

    h.set_minutes(6);
    assert_eq!(
        h.tick()
            .await
            .iter()
            .filter(|n| n.status == Status::Resolved)
            .count(),
        2
    );
    h.send_at(7, "a.example", 1).await;
    let all = h.tick().await;
    assert_eq!(
        summary(&all[4..]),
        [(Status::Firing, false, "a.example".to_string())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jump_needs_its_floor_then_fires_on_new_activity() {
    let h = Harness::start(RuleKind::Jump {
        window_ms: 5 * MINUTE,
        baseline_ms: 60 * MINUTE,
        factor: 2.0,
        min_count: 5.0,
    })
    .await;
    h.send_at(0, "a.example", 4).await;
    assert!(
        h.tick().await.is_empty(),
        "below min_count, even against a zero baseline"
    );
    h.send_at(1, "a.example", 3).await;
    let fired = h.tick().await;
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].facts.measure, "new activity: 7 vs 0");
}
