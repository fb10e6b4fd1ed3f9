//! A tiny in-process Confluent Schema Registry on 127.0.0.1:0, for the unit and fault tests:
//! serves `GET /schemas/ids/{id}` and `POST /subjects/{subject}/versions`, can be switched
//! down (503) and up, and counts requests. Not part of the pipeline.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct State {
    down: bool,
    schemas: HashMap<u32, String>,
    subjects: HashMap<String, u32>,
    requests: Vec<String>,
    authorizations: Vec<Option<String>>,
}

/// A running fake registry; it stops serving when the process ends.
#[derive(Clone)]
pub struct FakeRegistry {
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl FakeRegistry {
    /// Starts serving `schemas` (id → Avro schema text).
    pub fn start(schemas: &[(u32, &str)]) -> FakeRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a local port");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let state = Arc::new(Mutex::new(State {
            schemas: schemas.iter().map(|(id, s)| (*id, s.to_string())).collect(),
            ..State::default()
        }));
        let shared = state.clone();
        std::thread::Builder::new()
            .name("fake-registry".into())
            .spawn(move || {
                for stream in listener.incoming().flatten() {
                    let state = shared.clone();
                    std::thread::spawn(move || serve(stream, &state));
                }
            })
            .expect("spawning the fake registry");
        FakeRegistry { url, state }
    }

    /// Down: every request gets 503.
    pub fn set_down(&self, down: bool) {
        self.state.lock().expect("fake registry").down = down;
    }

    /// Request lines served so far (`GET /schemas/ids/7`, ...).
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().expect("fake registry").requests.clone()
    }

    /// The `Authorization` header of each request.
    pub fn authorizations(&self) -> Vec<Option<String>> {
        self.state
            .lock()
            .expect("fake registry")
            .authorizations
            .clone()
    }
}

fn serve(stream: TcpStream, state: &Mutex<State>) {
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let request = line
        .trim()
        .rsplit_once(' ')
        .map_or("", |(r, _)| r)
        .to_string();
    let (mut length, mut authorization) = (0usize, None);
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.trim().split_once(':') {
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap_or(0),
                "authorization" => authorization = Some(value.trim().to_string()),
                _ => {}
            }
        }
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    let (status, body) = {
        let mut s = state.lock().expect("fake registry");
        s.requests.push(request.clone());
        s.authorizations.push(authorization);
        respond(&mut s, &request, &body)
    };
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        _ => "Service Unavailable",
    };
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn respond(s: &mut State, request: &str, body: &[u8]) -> (u16, String) {
    if s.down {
        return (503, r#"{"error_code":50003,"message":"down"}"#.into());
    }
    if let Some(id) = request.strip_prefix("GET /schemas/ids/") {
        return match id.parse().ok().and_then(|id: u32| s.schemas.get(&id)) {
            Some(schema) => (200, serde_json::json!({ "schema": schema }).to_string()),
            None => (
                404,
                r#"{"error_code":40403,"message":"Schema not found"}"#.into(),
            ),
        };
    }
    if let Some(path) = request.strip_prefix("POST /subjects/")
        && let Some(subject) = path.strip_suffix("/versions")
    {
        let schema = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["schema"].as_str().map(str::to_string))
            .unwrap_or_default();
        let next = 1000 + s.subjects.len() as u32;
        let id = *s.subjects.entry(subject.to_string()).or_insert(next);
        s.schemas.insert(id, schema);
        return (200, serde_json::json!({ "id": id }).to_string());
    }
    (
        404,
        r#"{"error_code":404,"message":"no such route"}"#.into(),
    )
}
