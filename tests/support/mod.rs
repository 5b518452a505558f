//! Shared pieces of the integration tests: a fake Slack on loopback with Slack's real
//! response shapes, and helpers to start the real server on `127.0.0.1:0`.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub authorization: Option<String>,
    pub body: Value,
    pub at: Instant,
    /// What the fake answered: "ok", "429", or an error code.
    pub answered: String,
}

/// A scripted answer, consumed in order; when none is left the fake answers success.
#[derive(Debug, Clone)]
pub enum Answer {
    /// HTTP 429 with `Retry-After: secs` and Slack's JSON error body.
    RateLimited { secs: u64 },
    /// HTTP 200 with `{"ok": false, "error": code}` (Web API) or HTTP 400 with the code
    /// as plain text (incoming webhooks), as Slack does.
    Error { code: &'static str },
    /// HTTP 500.
    ServerError,
    /// The normal success answer, to script a success before a failure.
    Ok,
    /// HTTP 200 `{"ok": true, "channel", "ts"}` without the `message` Slack sends: the
    /// shape of a Slack-compatible proxy, which the Slack client cannot parse.
    OkWithoutMessage,
}

#[derive(Default)]
struct FakeState {
    script: VecDeque<Answer>,
    requests: Vec<Recorded>,
    next_ts: u64,
}

/// A fake of the Slack Web API (`/api/chat.postMessage`, `/api/chat.update`) and of an
/// incoming webhook (`/hooks/...`).
#[derive(Clone)]
pub struct SlackFake {
    pub addr: SocketAddr,
    state: Arc<Mutex<FakeState>>,
}

impl SlackFake {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(FakeState {
            next_ts: 1_700_000_000_000_100,
            ..FakeState::default()
        }));
        let app = Router::new().fallback(handle).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, state }
    }

    pub fn api_url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    pub fn webhook_url(&self) -> String {
        format!("http://{}/hooks/T0000/B0000/XXXXXXXX", self.addr)
    }

    pub fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.state.lock().unwrap().script.extend(answers);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Waits until `count` requests answered with success arrived, or panics after `limit`.
    pub async fn wait_for_ok(&self, count: usize, limit: Duration) -> Vec<Recorded> {
        let start = Instant::now();
        loop {
            let ok: Vec<Recorded> = self
                .requests()
                .into_iter()
                .filter(|r| r.answered == "ok")
                .collect();
            if ok.len() >= count {
                return ok;
            }
            assert!(
                start.elapsed() < limit,
                "waited {limit:?} for {count} Slack messages; got {:#?}",
                self.requests()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn handle(
    State(state): State<Arc<Mutex<FakeState>>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let webhook = path.starts_with("/hooks/");
    let body: Value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| json!({ "raw": String::from_utf8_lossy(&body) }));
    let mut state = state.lock().unwrap();
    let answer = state.script.pop_front();
    let answered = match &answer {
        None | Some(Answer::Ok) | Some(Answer::OkWithoutMessage) => "ok".to_string(),
        Some(Answer::RateLimited { .. }) => "429".to_string(),
        Some(Answer::Error { code }) => code.to_string(),
        Some(Answer::ServerError) => "500".to_string(),
    };
    state.requests.push(Recorded {
        path: path.clone(),
        authorization: headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body: body.clone(),
        at: Instant::now(),
        answered,
    });
    let json_response = |status: StatusCode, value: Value| {
        (
            status,
            [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
            value.to_string(),
        )
            .into_response()
    };
    match answer {
        Some(Answer::RateLimited { secs }) => (
            StatusCode::TOO_MANY_REQUESTS,
            [
                (header::RETRY_AFTER, secs.to_string()),
                (
                    header::CONTENT_TYPE,
                    "application/json; charset=utf-8".into(),
                ),
            ],
            json!({"ok": false, "error": if webhook { "rate_limited" } else { "ratelimited" }})
                .to_string(),
        )
            .into_response(),
        Some(Answer::Error { code }) if webhook => (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "text/plain")],
            code,
        )
            .into_response(),
        Some(Answer::Error { code }) => {
            json_response(StatusCode::OK, json!({"ok": false, "error": code}))
        }
        Some(Answer::ServerError) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
        Some(Answer::OkWithoutMessage) => {
            state.next_ts += 1;
            let ts = format!(
                "{}.{:06}",
                state.next_ts / 1_000_000,
                state.next_ts % 1_000_000
            );
            let content_type = "application/json; charset=utf-8";
            if webhook {
                (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], "ok").into_response()
            } else {
                json_response(
                    StatusCode::OK,
                    json!({"ok": true, "channel": "C0ALERTS1", "ts": ts}),
                )
            }
        }
        None | Some(Answer::Ok) if webhook => {
            (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], "ok").into_response()
        }
        None | Some(Answer::Ok) => {
            state.next_ts += 1;
            let ts = format!(
                "{}.{:06}",
                state.next_ts / 1_000_000,
                state.next_ts % 1_000_000
            );
            let channel = if path.ends_with("chat.update") {
                body["channel"].clone()
            } else {
                json!("C0ALERTS1")
            };
            let ts = if path.ends_with("chat.update") {
                body["ts"].as_str().unwrap_or_default().to_string()
            } else {
                ts
            };
            let mut message = json!({
                "type": "message", "subtype": "bot_message", "text": body["text"], "ts": ts,
                "bot_id": "B0BACKCHNL", "username": "backchannel",
            });
            if let Some(blocks) = body.get("blocks") {
                message["blocks"] = blocks.clone();
            }
            json_response(
                StatusCode::OK,
                json!({
                    "ok": true, "channel": channel, "ts": ts, "message": message,
                    "text": body["text"],
                }),
            )
        }
    }
}

/// The provider payloads in `tests/fixtures/` (origins in its README).
pub fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn sample(path: &str) -> Vec<u8> {
    let full = samples().join(path);
    std::fs::read(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// A server started in this process, on its own temp directory.
pub struct TestServer {
    pub running: backchannel::server::Running,
    pub base: String,
    pub dir: tempfile::TempDir,
    pub client: reqwest_lite::Client,
}

/// Writes `config` (TOML; `{db}` becomes a path in the temp dir) and starts the server.
pub async fn start_server(config: &str, clock: backchannel::clock::Clock) -> TestServer {
    backchannel::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        config.replace("{db}", &dir.path().join("db.sqlite").display().to_string()),
    )
    .unwrap();
    let config = backchannel::config::Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let running = backchannel::server::start(config, clock, Some("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    let base = format!("http://{}", running.addr);
    TestServer {
        running,
        base,
        dir,
        client: reqwest_lite::Client::new(),
    }
}

/// A minimal HTTP/1 client for the tests, over hyper.
pub mod reqwest_lite {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client as HyperClient;
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::TokioExecutor;

    #[derive(Clone)]
    pub struct Client {
        inner: HyperClient<HttpConnector, Full<Bytes>>,
    }

    /// Status, headers and body of an answer.
    pub struct Reply {
        pub status: u16,
        pub headers: axum::http::HeaderMap,
        pub body: Vec<u8>,
    }

    impl Reply {
        pub fn json(&self) -> serde_json::Value {
            serde_json::from_slice(&self.body)
                .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
        }
        pub fn text(&self) -> String {
            String::from_utf8_lossy(&self.body).into_owned()
        }
    }

    impl Client {
        pub fn new() -> Self {
            Self {
                inner: HyperClient::builder(TokioExecutor::new()).build_http(),
            }
        }

        pub async fn post(
            &self,
            url: &str,
            headers: &[(&str, &str)],
            body: impl Into<Bytes>,
        ) -> Reply {
            let mut request =
                axum::http::Request::post(url).header("content-type", "application/json");
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            self.send(request.body(Full::new(body.into())).unwrap())
                .await
        }

        pub async fn get(&self, url: &str) -> Reply {
            self.send(
                axum::http::Request::get(url)
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
            .await
        }

        pub async fn get_with(&self, url: &str, headers: &[(&str, &str)]) -> Reply {
            let mut request = axum::http::Request::get(url);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            self.send(request.body(Full::new(Bytes::new())).unwrap())
                .await
        }

        /// Status of a GET, or `None` when nothing answers yet.
        pub async fn try_get(&self, url: &str) -> Option<u16> {
            let request = axum::http::Request::get(url)
                .body(Full::new(Bytes::new()))
                .unwrap();
            self.inner
                .request(request)
                .await
                .ok()
                .map(|r| r.status().as_u16())
        }

        async fn send(&self, request: axum::http::Request<Full<Bytes>>) -> Reply {
            let response = self
                .inner
                .request(request)
                .await
                .expect("request reaches the server");
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = response
                .into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec();
            Reply {
                status,
                headers,
                body,
            }
        }
    }
}
