//! A journal that falls behind answers 503 with `Retry-After` at once instead of
//! buffering: the rule engine is held still so the writer backs up, and the test checks
//! which requests were refused, which were kept, and that the kept ones all arrive.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use backchannel::http::{AppState, router};
use backchannel::store::Store;
use backchannel::store::journal::{Journal, SeenIndex};
use tokio::sync::mpsc;

fn batch(n: usize) -> String {
    format!(
        r#"[{{"email":"u{n}@example.com","event":"delivered","sg_event_id":"ev-{n}",
              "timestamp":1700000000}}]"#
    )
}

async fn stored_batches(store: &Store) -> usize {
    store
        .batches_since(0, 0, 1000, i64::MAX)
        .await
        .unwrap()
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_answers_503_with_retry_after_and_keeps_what_it_accepted() {
    backchannel::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("config.toml");
    let db = dir.path().join("db.sqlite");
    std::fs::write(
        &config_path,
        format!(
            "[store]\npath = \"{}\"\n[sources.sendgrid]\ntype = \"sendgrid\"\n\
             [contacts.log]\ntype = \"log\"\n[[routes]]\ncontacts = [\"log\"]\n",
            db.display()
        ),
    )
    .unwrap();
    let config = backchannel::config::Config::load(&config_path).unwrap();
    let store = Store::open(&db).await.unwrap();

    // The engine's channel holds one batch and nobody reads it until the end: the
    // writer blocks handing over the second, the queue takes one more, and the rest
    // must be refused.
    let (engine_tx, mut engine_rx) = mpsc::channel(1);
    let index = SeenIndex::load(&store, 1_700_000_000, 3600).await.unwrap();
    let (journal, _writer) = Journal::start(store.clone(), index, 1, 1000, engine_tx);
    let state = Arc::new(AppState {
        sources: config.sources.clone(),
        journal: journal.into(),
        store: store.clone(),
        clock: backchannel::clock::fixed(1_700_000_000_000),
        max_body_bytes: 1 << 20,
        rules_ready: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        api_token: None,
    });
    let app = router(state, 1 << 20, Duration::from_secs(30));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/ingest/sendgrid", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let client = support::reqwest_lite::Client::new();

    let first = client.post(&url, &[], batch(1)).await;
    assert_eq!(first.status, 200, "{}", first.text());

    // The second is committed, then its writer waits on the engine.
    let second = tokio::spawn({
        let (client, url) = (client.clone(), url.clone());
        async move { client.post(&url, &[], batch(2)).await }
    });
    let start = Instant::now();
    while stored_batches(&store).await < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "second batch not written"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let mut pending = Vec::new();
    for n in 3..8 {
        let (client, url) = (client.clone(), url.clone());
        pending.push(tokio::spawn(async move {
            client.post(&url, &[], batch(n)).await
        }));
    }
    // Four of the five are refused at once; the one that found room in the queue waits.
    let mut refused = 0;
    let mut waiting = Vec::new();
    for request in pending {
        let finished = tokio::time::timeout(Duration::from_millis(500), async {
            while !request.is_finished() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        if finished.is_err() {
            waiting.push(request);
            continue;
        }
        let reply = request.await.unwrap();
        assert_eq!(reply.status, 503, "{}", reply.text());
        assert_eq!(reply.headers["retry-after"], "1");
        assert!(
            reply.text().contains("journal is behind"),
            "{}",
            reply.text()
        );
        refused += 1;
    }
    assert_eq!((refused, waiting.len()), (4, 1));
    assert!(
        !second.is_finished(),
        "second answered before the engine took it"
    );

    // Once the engine reads again, everything that was not refused is answered 200 and
    // reaches it, in order; nothing refused was stored.
    let mut delivered = Vec::new();
    for _ in 0..3 {
        let durable = tokio::time::timeout(Duration::from_secs(10), engine_rx.recv())
            .await
            .expect("engine receives the accepted batches")
            .unwrap();
        delivered.push(durable.events.len());
    }
    assert_eq!(delivered, vec![1, 1, 1]);
    assert_eq!(second.await.unwrap().status, 200);
    assert_eq!(waiting.pop().unwrap().await.unwrap().status, 200);
    assert_eq!(stored_batches(&store).await, 3);

    let again = client.post(&url, &[], batch(9)).await;
    assert_eq!(again.status, 200, "{}", again.text());
}

/// Reading the journal back (the rebuild after a restart) pages by body bytes as well as
/// by rows, and a batch larger than the budget still comes back, alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_pages_are_bounded_by_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db.sqlite")).await.unwrap();
    let (engine_tx, mut engine_rx) = mpsc::channel(16);
    let index = SeenIndex::load(&store, 1_700_000_000, 3600).await.unwrap();
    let (journal, _writer) = Journal::start(store.clone(), index, 16, 1000, engine_tx);
    let source = backchannel::sources::Source::new(
        "sendgrid",
        backchannel::sources::sendgrid::SendGrid {
            verification_key: None,
            max_skew_secs: 600,
        },
    );
    for n in 0..4 {
        let body = batch(n);
        let parsed = source.parse(body.as_bytes(), 1_700_000_000_000).unwrap();
        let answer = journal
            .submit(
                source.id.clone(),
                1_700_000_000_000,
                body.into(),
                parsed.events,
            )
            .unwrap();
        answer.await.unwrap().unwrap();
        engine_rx.recv().await.unwrap();
    }
    let size = batch(0).len() as i64;
    let ids = |batches: Vec<backchannel::store::journal::StoredBatch>| -> Vec<i64> {
        batches.iter().map(|b| b.id).collect()
    };
    let all = store.batches_since(0, 0, 100, i64::MAX).await.unwrap();
    assert_eq!(ids(all), [1, 2, 3, 4]);
    let two = store.batches_since(0, 0, 100, 2 * size + 1).await.unwrap();
    assert_eq!(ids(two), [1, 2]);
    let next = store.batches_since(0, 2, 100, 2 * size + 1).await.unwrap();
    assert_eq!(ids(next), [3, 4]);
    let oversized = store.batches_since(0, 0, 100, 1).await.unwrap();
    assert_eq!(ids(oversized), [1]);
    let rows = store.batches_since(0, 0, 3, i64::MAX).await.unwrap();
    assert_eq!(ids(rows), [1, 2, 3]);
}
