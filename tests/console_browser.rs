//! The agent console in a real headless browser (Debian's `chromium`, driven over the Chrome
//! DevTools Protocol on `--remote-debugging-pipe`), against the real broker with the worker
//! running: the page shows a conversation the test produced, with labels and draft, a surge
//! appears, and Accept and a label correction produce the expected feedback events on the topic.
//! Also the console's HTTP rules (authentication, tenant scope, cross-site refusal) against the
//! real binary. Screenshots go to `$CARGO_TARGET_TMPDIR/console-screenshots/`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use moodstream::message::CustomerMessage;
use serde_json::{Value, json};

/// Headless Chromium driven over CDP on fds 3 (commands in) and 4 (replies out).
struct Browser {
    child: Child,
    to: std::io::PipeWriter,
    from: BufReader<std::io::PipeReader>,
    next: u64,
    session: Option<String>,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn launch() -> Browser {
        let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("chromium is missing: scripts/test.sh installs it (Debian package chromium)");
        let (cmd_read, cmd_write) = std::io::pipe().expect("pipe");
        let (out_read, out_write) = std::io::pipe().expect("pipe");
        let (a, b) = (cmd_read.as_raw_fd(), out_write.as_raw_fd());
        let profile = tempfile::tempdir().expect("profile dir");
        let mut cmd = Command::new(chromium);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            "--remote-debugging-pipe",
            "--window-size=1440,900",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        // SAFETY: only async-signal-safe calls (fcntl, dup2) between fork and exec. The pipe
        // ends are first moved above 10 so that placing one on 3 cannot clobber the other.
        unsafe {
            cmd.pre_exec(move || {
                let a2 = libc::fcntl(a, libc::F_DUPFD, 10);
                let b2 = libc::fcntl(b, libc::F_DUPFD, 10);
                if a2 < 0 || b2 < 0 || libc::dup2(a2, 3) < 0 || libc::dup2(b2, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn chromium");
        drop((cmd_read, out_write));
        Browser {
            child,
            to: cmd_write,
            from: BufReader::new(out_read),
            next: 0,
            session: None,
            _profile: profile,
        }
    }

    /// Sends one command (to the attached page once there is one) and returns its result.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = &self.session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.to.write_all(&bytes).expect("write to chromium");
        loop {
            let mut buf = Vec::new();
            self.from
                .read_until(0, &mut buf)
                .expect("read from chromium");
            assert!(!buf.is_empty(), "chromium closed the pipe");
            buf.pop();
            let reply: Value = serde_json::from_slice(&buf).expect("CDP JSON");
            if reply["id"] == json!(id) {
                if let Some(err) = reply.get("error") {
                    panic!("CDP {method} failed: {err}");
                }
                return reply["result"].clone();
            }
        }
    }

    fn open(&mut self, url: &str) {
        let target = self.call("Target.createTarget", json!({ "url": "about:blank" }));
        let attached = self.call(
            "Target.attachToTarget",
            json!({ "targetId": target["targetId"], "flatten": true }),
        );
        self.session = Some(attached["sessionId"].as_str().unwrap().to_string());
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": 1440, "height": 900, "deviceScaleFactor": 1, "mobile": false }),
        );
        self.call("Page.enable", json!({}));
        self.call("Page.navigate", json!({ "url": url }));
    }

    fn eval(&mut self, js: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({ "expression": js, "awaitPromise": true, "returnByValue": true }),
        );
        if let Some(ex) = r.get("exceptionDetails") {
            panic!("page script failed: {ex}");
        }
        r["result"]["value"].clone()
    }

    /// Waits in the page until `condition` (a JS expression) is truthy and returns its value;
    /// panics after a generous safety net.
    fn wait_for(&mut self, what: &str, condition: &str) -> Value {
        let js = format!(
            "new Promise((resolve) => {{ const t0 = Date.now(); (function poll() {{ let v = null; \
             try {{ v = ({condition}); }} catch (e) {{}} \
             if (v) return resolve(v); if (Date.now() - t0 > 120000) return resolve(null); \
             setTimeout(poll, 100); }})(); }})"
        );
        let v = self.eval(&js);
        assert!(!v.is_null(), "the page never showed {what}");
        v
    }

    fn screenshot(&mut self, name: &str) -> PathBuf {
        let shot = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        let png = base64_decode(shot["data"].as_str().expect("screenshot data"));
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, &c)| {
            acc | (u32::from(val(c)) << (18 - 6 * i))
        });
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

fn js_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn browser_shows_the_conversation_draft_and_surge_and_actions_become_feedback_events() {
    let topics = TestTopics::create("console", 1, 3).await;
    let feedback = unique("console-feedback");
    create_topics(&[(&feedback, 1)]).await;
    let worker = Worker::start(&unique("console-worker"), &topics, &[]);
    worker.wait_ready(Duration::from_secs(120));
    let console = Console::start(&topics, &feedback, &["--agent-id", "agent-007"]);

    // The demo's stream, tagged so no other run's escalation state is shared.
    let tag = unique("cb");
    let mut msgs: Vec<CustomerMessage> = moodstream::demo::demo_stream(7, 60);
    for m in &mut msgs {
        moodstream::demo::tag(m, &tag);
    }
    produce_json(&topics.inputs[0], &msgs).await;
    let angry = format!("{tag}-conv-angry");
    let tenant = format!("{tag}-acme");

    let mut b = tokio::task::spawn_blocking({
        let url = console.url.clone();
        let angry = angry.clone();
        move || {
            let mut b = Browser::launch();
            b.open(&format!("{url}/"));
            let li = format!(
                "document.querySelector('li[data-conversation={}]')",
                js_str(&angry)
            );
            b.wait_for(
                "the angry conversation, escalated",
                &format!("{li} && {li}.querySelector('.badge')"),
            );
            // Escalated conversations come first.
            let first = b.eval("document.querySelector('#queue li .badge') !== null");
            assert_eq!(
                first,
                json!(true),
                "the queue does not start with an escalated conversation"
            );
            b.eval(&format!("{li}.click()"));
            b.wait_for(
                "its messages with labels and the draft",
                "document.querySelectorAll('#conversation .msg .chip').length >= 4 \
                 && document.querySelector('#conversation .draft textarea').value.length > 0",
            );
            b.wait_for(
                "a surge marker on a chart",
                "document.querySelector('.surge-marker')",
            );
            b.screenshot("console-1-conversation.png");
            b
        }
    })
    .await
    .expect("browser task");

    let latest =
        b.eval("[...document.querySelectorAll('#conversation .msg')].pop().dataset.message");
    let latest = latest.as_str().expect("latest message id").to_string();
    let primary = b.eval(
        "[...document.querySelectorAll('#conversation .msg')].pop().querySelector('.chip').dataset.label",
    );
    let corrected = if primary == json!("frustration") {
        "anger"
    } else {
        "frustration"
    };
    b.eval(&format!(
        "document.querySelector('.relabel-select').value = {}; \
         document.querySelector('button[data-action=relabel]').click()",
        js_str(corrected)
    ));
    b.wait_for(
        "the relabel confirmation",
        "document.querySelector('#sent').textContent.includes('relabel sent')",
    );
    b.wait_for(
        "the corrected label chip",
        "document.querySelector('#conversation .chip.corrected')",
    );
    b.eval("document.querySelector('button[data-action=accept]').click()");
    b.wait_for(
        "the accept confirmation",
        "document.querySelector('#sent').textContent.includes('accept sent')",
    );
    let still_queued = b.eval(&format!(
        "document.querySelector('li[data-conversation={}]') !== null",
        js_str(&angry)
    ));
    assert_eq!(
        still_queued,
        json!(false),
        "an accepted conversation stays in the queue"
    );
    b.screenshot("console-2-after-actions.png");

    let events: Vec<Value> = read_all(&[&feedback], 2, Duration::from_secs(60))
        .iter()
        .map(|r| serde_json::from_slice(&r.value).expect("feedback JSON"))
        .collect();
    assert_eq!(events.len(), 2, "{events:?}");
    let relabel = events
        .iter()
        .find(|e| e["action"] == "relabel")
        .expect("relabel event");
    let accept = events
        .iter()
        .find(|e| e["action"] == "accept")
        .expect("accept event");
    for e in [relabel, accept] {
        assert_eq!(e["message_id"], json!(latest));
        assert_eq!(e["conversation_id"], json!(angry));
        assert_eq!(e["tenant_id"], json!(tenant));
        assert_eq!(
            e["agent_id"],
            json!("agent-007"),
            "agent id comes from the console's identity"
        );
        assert!(e["model_version"].as_str().is_some_and(|v| !v.is_empty()));
        assert_eq!(e["predicted_label"], primary);
        uuid::Uuid::parse_str(e["event_id"].as_str().unwrap()).expect("event id is a UUID");
    }
    assert_ne!(relabel["event_id"], accept["event_id"]);
    assert_eq!(relabel["corrected_label"], json!(corrected));
    assert_eq!(accept["corrected_label"], Value::Null);
    assert_eq!(accept["edited_text"], Value::Null);
    assert!(accept["draft_id"].is_string() && accept["template_id"].is_string());
    drop(b);
    drop(console);
    worker.terminate();
}

fn emotion(tag: &str, tenant: &str, conv: &str, msg: &str) -> moodstream::message::EmotionResult {
    moodstream::message::EmotionResult {
        message_id: format!("{tag}-{msg}"),
        conversation_id: format!("{tag}-{conv}"),
        customer_id: format!("{tag}-cust"),
        tenant_id: Some(format!("{tag}-{tenant}")),
        channel: "chat".into(),
        primary_emotion: "anger".into(),
        labels: vec!["anger".into()],
        scores: [("anger".to_string(), 0.9f32)].into_iter().collect(),
        confidence: 0.9,
        valence: -0.9,
        negativity: 0.9,
        model_version: "test-model".into(),
        processed_at: 1_700_000_000_000,
        source_topic: "in".into(),
        source_partition: 0,
        source_offset: 0,
        language: "en".into(),
    }
}

fn draft(tag: &str, conv: &str, msg: &str) -> moodstream::reply::DraftReply {
    moodstream::reply::DraftReply {
        message_id: format!("{tag}-{msg}"),
        conversation_id: format!("{tag}-{conv}"),
        channel: "chat".into(),
        language: "en".into(),
        emotion: "anger".into(),
        strategy: "de_escalate".into(),
        intent: "refund".into(),
        subject: None,
        body: Some("Sorry about that.".into()),
        segments: None,
        template_id: "default/en/chat/de_escalate/refund".into(),
        requires_review: true,
        created_at: 1_700_000_000_001,
        model_version: None,
    }
}

fn owned(headers: &[(&str, &str)]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// (status, body, `Set-Cookie`) of one request; no redirects followed.
fn http_full(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String, Option<String>) {
    let (method, url, headers, body) = (
        reqwest::Method::from_bytes(method.as_bytes()).expect("HTTP method"),
        url.to_string(),
        owned(headers),
        body.map(str::to_string),
    );
    off_runtime(move || {
        let client = reqwest::blocking::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("HTTP client");
        let mut req = client.request(method.clone(), &url);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let res = req.send().unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = res.status().as_u16();
        let cookie = res
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        (status, res.text().unwrap_or_default(), cookie)
    })
}

/// (status, body) of one request; no redirects followed.
fn http(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&str>) -> (u16, String) {
    let (status, body, _) = http_full(method, url, headers, body);
    (status, body)
}

/// The first event of `/events` (the snapshot) as seen with `headers`.
fn snapshot(url: &str, headers: &[(&str, &str)]) -> Value {
    let (url, headers) = (format!("{url}/events"), owned(headers));
    off_runtime(move || {
        let mut req = reqwest::blocking::Client::new().get(&url);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let res = req
            .send()
            .and_then(|r| r.error_for_status())
            .expect("events stream");
        let mut lines = BufReader::new(res).lines();
        let mut event = String::new();
        for line in lines.by_ref() {
            let line = line.expect("SSE line");
            if let Some(e) = line.strip_prefix("event: ") {
                event = e.to_string();
            }
            if let Some(data) = line.strip_prefix("data: ") {
                assert_eq!(event, "snapshot", "the stream starts with a snapshot");
                return serde_json::from_str(data).expect("snapshot JSON");
            }
        }
        panic!("the stream ended without a snapshot");
    })
}

fn conversation_ids(snap: &Value) -> Vec<String> {
    snap["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["conversation_id"].as_str().unwrap().to_string())
        .collect()
}

/// Polls the snapshot until `want` shows up (safety-net bound, no timing asserted).
fn snapshot_with(url: &str, headers: &[(&str, &str)], want: &str) -> Value {
    for _ in 0..600 {
        let snap = snapshot(url, headers);
        if conversation_ids(&snap).iter().any(|c| c == want) {
            return snap;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{want} never reached the console");
}

#[tokio::test(flavor = "multi_thread")]
async fn console_requires_a_token_scopes_by_tenant_and_refuses_cross_site_feedback() {
    let topics = TestTopics::create("console-auth", 1, 1).await;
    let feedback = unique("console-auth-feedback");
    create_topics(&[(&feedback, 1)]).await;
    let tag = unique("ca");
    let records: Vec<RawRecord> = [("a", "conv-a", "m-a"), ("b", "conv-b", "m-b")]
        .iter()
        .map(|(t, c, m)| {
            let e = emotion(&tag, t, c, m);
            (
                e.conversation_id.clone(),
                serde_json::to_vec(&e).unwrap(),
                vec![],
            )
        })
        .collect();
    produce_raw(&topics.emotions, &records).await;
    let drafts: Vec<RawRecord> = [("conv-a", "m-a"), ("conv-b", "m-b")]
        .iter()
        .map(|(c, m)| {
            let d = draft(&tag, c, m);
            (
                d.conversation_id.clone(),
                serde_json::to_vec(&d).unwrap(),
                vec![],
            )
        })
        .collect();
    produce_raw(&topics.reply_topic("chat"), &drafts).await;

    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    let (alice, bob) = ("alice-token-0123456789", "bob-token-0123456789ab");
    std::fs::write(
        &tokens,
        format!("{alice} alice {tag}-a\n{bob} bob {tag}-b\n"),
    )
    .unwrap();
    let console = Console::start(
        &topics,
        &feedback,
        &["--tokens-file", tokens.to_str().unwrap()],
    );
    let url = console.url.clone();
    let (conv_a, conv_b) = (format!("{tag}-conv-a"), format!("{tag}-conv-b"));
    let alice_bearer = format!("Bearer {alice}");
    let bob_bearer = format!("Bearer {bob}");
    let alice_cookie = format!("moodstream_console={alice}");

    // Without a token: nothing.
    assert_eq!(http("GET", &format!("{url}/events"), &[], None).0, 401);
    assert_eq!(http("GET", &format!("{url}/"), &[], None).0, 303);
    assert_eq!(
        http(
            "GET",
            &format!("{url}/events"),
            &[("Authorization", "Bearer wrong-token-wrong-token")],
            None
        )
        .0,
        401
    );

    // Each agent sees its own tenant only (bob's view proves conv-b was consumed).
    let bobs = snapshot_with(&url, &[("Authorization", &bob_bearer)], &conv_b);
    assert!(!conversation_ids(&bobs).contains(&conv_a));
    let alices = snapshot_with(&url, &[("Authorization", &alice_bearer)], &conv_a);
    assert!(
        !conversation_ids(&alices).contains(&conv_b),
        "alice sees another tenant"
    );

    // Sign-in sets an HttpOnly SameSite=Strict cookie.
    let (status, _, cookie) = http_full(
        "POST",
        &format!("{url}/login"),
        &[
            ("Origin", &url),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        Some(&format!("token={alice}")),
    );
    assert_eq!(status, 303);
    let cookie = cookie.expect("cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );

    let body = |msg: &str, action: &str| {
        json!({ "event_id": uuid::Uuid::new_v4().to_string(), "message_id": format!("{tag}-{msg}"), "action": action })
            .to_string()
    };
    let api = format!("{url}/api/feedback");
    let json_ct = ("Content-Type", "application/json");
    // Cross-site with the cookie: refused, whether the browser says so by Origin or Sec-Fetch-Site.
    let evil = http(
        "POST",
        &api,
        &[
            json_ct,
            ("Cookie", &alice_cookie),
            ("Origin", "https://evil.example"),
        ],
        Some(&body("m-a", "accept")),
    );
    assert_eq!(evil.0, 403, "{evil:?}");
    let cross = http(
        "POST",
        &api,
        &[
            json_ct,
            ("Cookie", &alice_cookie),
            ("Sec-Fetch-Site", "cross-site"),
        ],
        Some(&body("m-a", "accept")),
    );
    assert_eq!(cross.0, 403);
    let bare = http(
        "POST",
        &api,
        &[json_ct, ("Cookie", &alice_cookie)],
        Some(&body("m-a", "accept")),
    );
    assert_eq!(bare.0, 403, "a cookie without Origin cannot be verified");
    // Another tenant's message looks like no message at all.
    let other = http(
        "POST",
        &api,
        &[json_ct, ("Authorization", &alice_bearer)],
        Some(&body("m-b", "accept")),
    );
    assert_eq!(other.0, 404);
    // The page cannot choose the agent id.
    let mut forged: Value = serde_json::from_str(&body("m-a", "accept")).unwrap();
    forged["agent_id"] = json!("bob");
    let forged = http(
        "POST",
        &api,
        &[json_ct, ("Authorization", &alice_bearer)],
        Some(&forged.to_string()),
    );
    assert_eq!(forged.0, 400);
    // Same-origin from the page: delivered, as alice.
    let ok = http(
        "POST",
        &api,
        &[
            json_ct,
            ("Cookie", &alice_cookie),
            ("Origin", &url),
            ("Sec-Fetch-Site", "same-origin"),
        ],
        Some(&body("m-a", "accept")),
    );
    assert_eq!(ok.0, 200, "{ok:?}");

    let events = read_all(&[&feedback], 1, Duration::from_secs(60));
    assert_eq!(
        events.len(),
        1,
        "only the same-origin request produced an event"
    );
    let ev: Value = serde_json::from_slice(&events[0].value).unwrap();
    assert_eq!(ev["agent_id"], json!("alice"));
    assert_eq!(ev["tenant_id"], json!(format!("{tag}-a")));
    assert_eq!(ev["message_id"], json!(format!("{tag}-m-a")));
    assert_eq!(ev["model_version"], json!("test-model"));
    assert_eq!(
        ev["template_id"],
        json!("default/en/chat/de_escalate/refund")
    );
    assert_eq!(
        ev["draft_id"],
        json!(moodstream::console::state::draft_id(&draft(
            &tag, "conv-a", "m-a"
        )))
    );
    drop(console);
}

#[test]
fn console_refuses_to_listen_beyond_localhost_without_authentication() {
    let bin = std::env::var("MOODSTREAM_TEST_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_moodstream").to_string());
    let out = Command::new(bin)
        .current_dir(repo())
        .args(["console", "--brokers", &brokers(), "--bind", "0.0.0.0:0"])
        .output()
        .expect("run console");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--tokens-file or --auth-proxy"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_feedback_send_that_fails_is_shown_to_the_agent_with_its_http_error() {
    let topics = TestTopics::create("console-fail", 1, 1).await;
    // Never created, and the local broker does not auto-create topics: every send fails.
    let feedback = unique("console-missing-feedback");
    let tag = unique("cf");
    let e = emotion(&tag, "a", "conv-a", "m-a");
    produce_raw(
        &topics.emotions,
        &[(
            e.conversation_id.clone(),
            serde_json::to_vec(&e).unwrap(),
            vec![],
        )],
    )
    .await;
    let d = draft(&tag, "conv-a", "m-a");
    produce_raw(
        &topics.reply_topic("chat"),
        &[(
            d.conversation_id.clone(),
            serde_json::to_vec(&d).unwrap(),
            vec![],
        )],
    )
    .await;
    let console = Console::start(&topics, &feedback, &["--feedback-timeout-ms", "3000"]);
    let url = console.url.clone();
    let conv = format!("{tag}-conv-a");
    tokio::task::spawn_blocking(move || {
        let mut b = Browser::launch();
        b.open(&format!("{url}/"));
        let li = format!("document.querySelector('li[data-conversation={}]')", js_str(&conv));
        b.wait_for("the conversation", &li);
        b.eval(&format!("{li}.click()"));
        b.wait_for("the draft", "document.querySelector('button[data-action=accept]')");
        b.eval("document.querySelector('button[data-action=accept]').click()");
        let shown = b.wait_for(
            "the send failure",
            "!document.querySelector('#error').hidden && document.querySelector('#error').textContent",
        );
        let shown = shown.as_str().unwrap().to_string();
        b.screenshot("console-3-send-failed.png");
        assert!(shown.contains("HTTP 502") && shown.contains("not delivered"), "{shown}");
        let still_queued = b.eval(&format!("{li} !== null"));
        assert_eq!(still_queued, json!(true), "a failed accept must leave the conversation open");
    })
    .await
    .expect("browser task");
}
