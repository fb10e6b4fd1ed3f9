//! api: the synchronous HTTP API, for applications that cannot go through Kafka —
//! `POST /v1/classify` (messages → emotion results, in request order), `POST /v1/draft`
//! (messages → emotion result and drafted reply each), `GET /openapi.json`.
//!
//! A request's messages enter the same pipeline as the Kafka records: the same tokenizer
//! threads, the same batcher (so they share batches with Kafka traffic) and the same model
//! sessions, hence the same GPU. Each message carries a oneshot [`Reply`]; the model thread
//! answers on it instead of passing the message on to the post stage, so an API message has no
//! escalation tracking, no Kafka outputs and no offset. Replies are drafted here, on the blocking
//! pool, without a conversation trend (the API is stateless; conversation state belongs to the
//! Kafka path). Request text is never logged.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Instant, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, oneshot};

use crate::config::ApiConfig;
use crate::message::{CustomerMessage, EmotionResult};
use crate::pipeline::post::{emotion_result, now_ms};
use crate::pipeline::{Job, Origin, Outcome};
use crate::reply::{DraftReply, LiveDrafter};
use crate::telemetry::metrics;
use crate::telemetry::trace::MessageTrace;

/// `source_topic` of an API result (its `source_partition` is -1, its `source_offset` the
/// message's index in the request).
pub const SOURCE_TOPIC: &str = "http";

/// The API's state: the pipeline's inlet, the drafter, limits and the key.
pub struct Api {
    /// `None` once closed (shutdown): the pipeline can then drain and stop.
    jobs: RwLock<Option<crossbeam_channel::Sender<Job>>>,
    drafter: LiveDrafter,
    key: Option<String>,
    max_messages: usize,
    max_text_chars: usize,
    max_body_bytes: usize,
    permits: Arc<Semaphore>,
}

impl Api {
    pub fn new(
        cfg: &ApiConfig,
        key: Option<String>,
        jobs: crossbeam_channel::Sender<Job>,
        drafter: LiveDrafter,
    ) -> Arc<Api> {
        Arc::new(Api {
            jobs: RwLock::new(Some(jobs)),
            drafter,
            key,
            max_messages: cfg.api_max_messages,
            max_text_chars: cfg.api_max_text_chars,
            max_body_bytes: cfg.api_max_body_bytes,
            permits: Arc::new(Semaphore::new(cfg.api_max_concurrent_requests)),
        })
    }

    /// Stops taking requests (they get 503) and lets go of the pipeline's inlet, so the
    /// pipeline drains and stops on shutdown. Requests already handed over are answered.
    pub fn close(&self) {
        self.jobs.write().expect("api lock poisoned: bug").take();
    }

    /// Parses, validates and classifies one request's messages, in request order.
    async fn classify(
        &self,
        body: Result<Bytes, BytesRejection>,
    ) -> Result<Vec<(CustomerMessage, EmotionResult)>, ApiError> {
        let msgs = self.parse(body)?;
        let sender = self
            .jobs
            .read()
            .expect("api lock poisoned: bug")
            .clone()
            .ok_or(ApiError::Unavailable("shutting down"))?;
        let topic: Arc<str> = Arc::from(SOURCE_TOPIC);
        let mut jobs = Vec::with_capacity(msgs.len());
        let mut waiting = Vec::with_capacity(msgs.len());
        for (i, msg) in msgs.into_iter().enumerate() {
            let origin = Origin {
                topic: topic.clone(),
                partition: -1,
                offset: i as i64,
                seq: i as u64,
                consumed_at: Instant::now(),
                consumed_wall: SystemTime::now(),
                trace: MessageTrace::default(),
                key: None,
                payload: None,
            };
            let (reply, answer) = oneshot::channel();
            waiting.push((origin.clone(), answer));
            jobs.push(Job {
                origin,
                msg,
                reply: Some(reply),
            });
        }
        // The tokenizer queue is a blocking channel (the Kafka source feeds it from its own
        // thread); a full queue is backpressure, so wait for room off the async runtime.
        let handed_over = tokio::task::spawn_blocking(move || {
            jobs.into_iter().all(|job| sender.send(job).is_ok())
        })
        .await
        .unwrap_or(false);
        if !handed_over {
            return Err(ApiError::Unavailable("the pipeline has stopped"));
        }
        let mut results = Vec::with_capacity(waiting.len());
        for (i, (origin, answer)) in waiting.into_iter().enumerate() {
            match answer.await {
                Ok(Outcome::Scored {
                    msg,
                    scored,
                    language,
                    model_version,
                }) => {
                    let emotion = emotion_result(&msg, &scored, language, &origin, &model_version);
                    results.push((*msg, emotion));
                }
                // The tokenizer refused the text: the caller's input.
                Ok(Outcome::DeadLetter(dl)) if dl.kind == "tokenize_error" => {
                    return Err(ApiError::Invalid(format!("message {i}: {}", dl.reason)));
                }
                Ok(Outcome::DeadLetter(dl)) => {
                    tracing::error!(kind = dl.kind, reason = %dl.reason, "API message failed");
                    return Err(ApiError::Failed(dl.reason));
                }
                // Only an input mapping skips records, and API messages are not mapped.
                Ok(Outcome::Skipped(_)) => {
                    return Err(ApiError::Failed("message skipped: bug".into()));
                }
                // The model thread stopped (a fatal inference failure, or shutdown).
                Err(_) => return Err(ApiError::Unavailable("the model stopped")),
            }
        }
        Ok(results)
    }

    /// The request's messages, or the 4xx that says what is wrong with it (never echoing text
    /// into logs; the caller gets serde's message, which may quote its own input).
    fn parse(&self, body: Result<Bytes, BytesRejection>) -> Result<Vec<CustomerMessage>, ApiError> {
        let body = body.map_err(|e| match e.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge(format!(
                "the request body exceeds {} bytes",
                self.max_body_bytes
            )),
            _ => ApiError::Malformed(e.body_text()),
        })?;
        let msgs: Vec<ApiMessage> =
            serde_json::from_slice(&body).map_err(|e| match e.classify() {
                serde_json::error::Category::Data => ApiError::Invalid(format!(
                    "expected a JSON array of messages, each with a `text`: {e}"
                )),
                _ => ApiError::Malformed(format!("the body is not JSON: {e}")),
            })?;
        if msgs.is_empty() {
            return Err(ApiError::Invalid("the request holds no messages".into()));
        }
        if msgs.len() > self.max_messages {
            return Err(ApiError::TooLarge(format!(
                "{} messages in one request; at most {} are accepted",
                msgs.len(),
                self.max_messages
            )));
        }
        let now = now_ms();
        msgs.into_iter()
            .enumerate()
            .map(|(i, m)| {
                if m.text.trim().is_empty() {
                    return Err(ApiError::Invalid(format!(
                        "message {i}: `text` must not be empty"
                    )));
                }
                let chars = m.text.chars().count();
                if chars > self.max_text_chars {
                    return Err(ApiError::TooLarge(format!(
                        "message {i}: `text` has {chars} characters; at most {} are accepted",
                        self.max_text_chars
                    )));
                }
                Ok(m.into_message(now))
            })
            .collect()
    }
}

/// A message as the API takes it: our `CustomerMessage` contract with only `text` required.
#[derive(Debug, Deserialize)]
struct ApiMessage {
    #[serde(default)]
    message_id: String,
    #[serde(default)]
    conversation_id: String,
    #[serde(default)]
    customer_id: String,
    #[serde(default)]
    tenant_id: Option<String>,
    #[serde(default)]
    channel: Option<String>,
    text: String,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    language: Option<String>,
    #[serde(default)]
    sent_at: Option<i64>,
    #[serde(default)]
    customer_name: Option<String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

impl ApiMessage {
    fn into_message(self, now_ms: i64) -> CustomerMessage {
        CustomerMessage {
            message_id: self.message_id,
            conversation_id: self.conversation_id,
            customer_id: self.customer_id,
            tenant_id: self.tenant_id,
            channel: self.channel.unwrap_or_else(|| "chat".into()),
            text: self.text,
            subject: self.subject,
            language: self.language,
            sent_at: self.sent_at.unwrap_or(now_ms),
            customer_name: self.customer_name,
            metadata: self.metadata,
        }
    }
}

/// One `/v1/draft` answer.
#[derive(Debug, Serialize)]
struct Drafted {
    emotion: EmotionResult,
    reply: DraftReply,
}

/// Why a request failed; each maps to a status and a JSON body `{"error", "error_type"}`.
#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error("{0}")]
    Malformed(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("too many concurrent requests")]
    Overloaded,
    #[error("{0}")]
    Unavailable(&'static str),
    #[error("{0}")]
    Failed(String),
}

impl ApiError {
    fn status_and_type(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Malformed(_) => (StatusCode::BAD_REQUEST, "malformed"),
            ApiError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation"),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Overloaded => (StatusCode::TOO_MANY_REQUESTS, "overloaded"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Failed(_) => (StatusCode::INTERNAL_SERVER_ERROR, "model"),
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: String,
    error_type: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, error_type) = self.status_and_type();
        let mut response = json(
            status,
            &ErrorBody {
                error: self.to_string(),
                error_type,
            },
        );
        if matches!(self, ApiError::Unauthorized) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

fn json(status: StatusCode, value: &impl Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        Err(e) => ApiError::Failed(format!("encoding the response: {e}")).into_response(),
    }
}

/// The API's routes: `/v1/*` behind the bearer token (when set), `/openapi.json` open.
pub fn router(api: Arc<Api>) -> Router {
    let v1 = Router::new()
        .route("/v1/classify", post(classify))
        .route("/v1/draft", post(draft))
        .route_layer(middleware::from_fn_with_state(api.clone(), authorize));
    Router::new()
        .merge(v1)
        .route(
            "/openapi.json",
            get(|| async { json(StatusCode::OK, &openapi()) }),
        )
        .route_layer(middleware::from_fn(observe))
        .layer(DefaultBodyLimit::max(api.max_body_bytes))
        .with_state(api)
}

pub async fn serve(listener: tokio::net::TcpListener, api: Arc<Api>) -> std::io::Result<()> {
    axum::serve(listener, router(api)).await
}

async fn classify(State(api): State<Arc<Api>>, body: Result<Bytes, BytesRejection>) -> Response {
    let Ok(_permit) = api.permits.clone().try_acquire_owned() else {
        return ApiError::Overloaded.into_response();
    };
    match api.classify(body).await {
        Ok(results) => {
            let emotions: Vec<&EmotionResult> = results.iter().map(|(_, e)| e).collect();
            json(StatusCode::OK, &emotions)
        }
        Err(e) => e.into_response(),
    }
}

async fn draft(State(api): State<Arc<Api>>, body: Result<Bytes, BytesRejection>) -> Response {
    let Ok(_permit) = api.permits.clone().try_acquire_owned() else {
        return ApiError::Overloaded.into_response();
    };
    let results = match api.classify(body).await {
        Ok(results) => results,
        Err(e) => return e.into_response(),
    };
    // Drafting costs tens of µs a message: off the async runtime.
    let drafter = api.drafter.load_full();
    let drafted = tokio::task::spawn_blocking(move || {
        let now = now_ms();
        results
            .into_iter()
            .map(|(msg, emotion)| Drafted {
                reply: drafter.draft(&msg, &emotion, None, now),
                emotion,
            })
            .collect::<Vec<_>>()
    })
    .await;
    match drafted {
        Ok(drafted) => json(StatusCode::OK, &drafted),
        Err(e) => ApiError::Failed(format!("drafting failed: {e}")).into_response(),
    }
}

async fn authorize(State(api): State<Arc<Api>>, req: Request, next: Next) -> Response {
    if let Some(key) = &api.key {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| constant_time_eq(g.trim().as_bytes(), key.as_bytes())) {
            return ApiError::Unauthorized.into_response();
        }
    }
    next.run(req).await
}

/// Compares without an early exit, so the time taken does not tell how much of a guessed key
/// was right (the key's length is not secret).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Counts every answered request by route and status, and times it by route (a route layer:
/// only the API's own routes reach it, so the label set stays small).
async fn observe(req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let start = Instant::now();
    let response = next.run(req).await;
    let m = metrics();
    m.api_request_seconds
        .with_label_values(&[path.as_str()])
        .observe(start.elapsed().as_secs_f64());
    m.api_requests
        .with_label_values(&[path.as_str(), response.status().as_str()])
        .inc();
    response
}

/// The OpenAPI 3.0 document of the API.
pub fn openapi() -> serde_json::Value {
    let errors = serde_json::json!({
        "400": {"description": "The body is not JSON", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
        "401": {"description": "Missing or wrong bearer token (when the server requires one)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
        "413": {"description": "Body, message count or a text over its limit", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
        "422": {"description": "Not an array of messages, no messages, a message without `text` or with an empty one, a field of the wrong type", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
        "429": {"description": "Too many concurrent requests", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
        "503": {"description": "Shutting down, or the model stopped", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    });
    let request = serde_json::json!({
        "required": true,
        "content": {"application/json": {"schema": {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/Message"}}}}
    });
    let mut classify_responses = errors.clone();
    classify_responses["200"] = serde_json::json!({
        "description": "One emotion result per message, in request order",
        "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/EmotionResult"}}}}
    });
    let mut draft_responses = errors;
    draft_responses["200"] = serde_json::json!({
        "description": "One emotion result and drafted reply per message, in request order",
        "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/Drafted"}}}}
    });
    let string = serde_json::json!({"type": "string"});
    let nullable_string = serde_json::json!({"type": "string", "nullable": true});
    serde_json::json!({
        "openapi": "3.0.3",
        "info": {
            "title": "moodstream",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Emotion classification and reply drafting for customer-service messages, through the same batcher and model as the Kafka worker."
        },
        "paths": {
            "/v1/classify": {"post": {
                "operationId": "classify",
                "summary": "Classify the emotion of each message",
                "requestBody": request,
                "responses": classify_responses,
                "security": [{"bearer": []}, {}]
            }},
            "/v1/draft": {"post": {
                "operationId": "draft",
                "summary": "Classify each message and draft a reply to it",
                "requestBody": request,
                "responses": draft_responses,
                "security": [{"bearer": []}, {}]
            }}
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Message": {
                    "type": "object",
                    "description": "A customer message (the Kafka contract, schemas/customer_message.avsc); only `text` is required.",
                    "required": ["text"],
                    "properties": {
                        "text": string, "message_id": string, "conversation_id": string,
                        "customer_id": string, "tenant_id": nullable_string,
                        "channel": {"type": "string", "default": "chat", "description": "chat, email, sms, voice, social, ..."},
                        "subject": nullable_string, "language": nullable_string,
                        "sent_at": {"type": "integer", "format": "int64", "description": "ms since the Unix epoch; default now"},
                        "customer_name": nullable_string,
                        "metadata": {"type": "object", "additionalProperties": {"type": "string"}}
                    }
                },
                "EmotionResult": {
                    "type": "object",
                    "description": "As published on the emotions topic (schemas/emotion_result.avsc); source_topic is \"http\", source_partition -1, source_offset the message's index in the request.",
                    "properties": {
                        "message_id": string, "conversation_id": string, "customer_id": string,
                        "tenant_id": nullable_string, "channel": string,
                        "primary_emotion": {"type": "string", "enum": ["anger", "frustration", "disappointment", "anxiety", "confusion", "gratitude", "satisfaction", "neutral"]},
                        "labels": {"type": "array", "items": {"type": "string"}},
                        "scores": {"type": "object", "additionalProperties": {"type": "number"}},
                        "confidence": {"type": "number"}, "valence": {"type": "number"},
                        "negativity": {"type": "number"}, "model_version": string,
                        "processed_at": {"type": "integer", "format": "int64"},
                        "source_topic": string, "source_partition": {"type": "integer"},
                        "source_offset": {"type": "integer"}, "language": string
                    }
                },
                "Drafted": {
                    "type": "object",
                    "properties": {
                        "emotion": {"$ref": "#/components/schemas/EmotionResult"},
                        "reply": {"$ref": "#/components/schemas/DraftReply"}
                    }
                },
                "DraftReply": {
                    "type": "object",
                    "description": "As published on the replies topics, drafted without a conversation trend.",
                    "properties": {
                        "message_id": string, "conversation_id": string, "channel": string,
                        "language": string, "emotion": string, "strategy": string,
                        "intent": string, "subject": nullable_string, "body": nullable_string,
                        "segments": {"type": "array", "items": {"type": "string"}, "nullable": true},
                        "template_id": string, "requires_review": {"type": "boolean"},
                        "created_at": {"type": "integer", "format": "int64"}
                    }
                },
                "Error": {
                    "type": "object",
                    "required": ["error", "error_type"],
                    "properties": {
                        "error": string,
                        "error_type": {"type": "string", "enum": ["malformed", "validation", "too_large", "unauthorized", "overloaded", "unavailable", "model"]}
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_keys_in_full() {
        assert!(constant_time_eq(b"s3cret-key", b"s3cret-key"));
        assert!(!constant_time_eq(b"s3cret-key", b"s3cret-kez"));
        assert!(!constant_time_eq(b"s3cret-key", b"s3cret"));
        assert!(!constant_time_eq(b"", b"x"));
    }

    #[test]
    fn openapi_lists_both_routes_and_requires_only_text() {
        let doc = openapi();
        assert!(doc["paths"]["/v1/classify"]["post"].is_object());
        assert!(doc["paths"]["/v1/draft"]["post"].is_object());
        assert_eq!(
            doc["components"]["schemas"]["Message"]["required"],
            serde_json::json!(["text"])
        );
    }

    #[test]
    fn a_message_needs_only_text() {
        let m: ApiMessage = serde_json::from_str(r#"{"text": "hi"}"#).unwrap();
        let msg = m.into_message(42);
        assert_eq!((msg.channel.as_str(), msg.sent_at), ("chat", 42));
        assert!(serde_json::from_str::<ApiMessage>(r#"{"message_id": "x"}"#).is_err());
    }
}
