//! schema: Avro schemas and their ids. Ids come from a Confluent Schema Registry (looked up
//! once, cached) or, without one, from `schemas/registry.json`. Also the Avro encoding of
//! outputs, shared by the sink and the tests.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apache_avro::Schema;
use serde::Serialize;

#[derive(Debug, Clone, thiserror::Error)]
pub enum SchemaError {
    #[error("cannot read schema file {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("invalid schema {name}: {reason}")]
    Parse { name: String, reason: String },
    #[error("unknown schema id {0}")]
    UnknownId(u32),
    #[error("schema registry request failed: {0}")]
    Registry(String),
    #[error("no schema registered locally for {0}")]
    NotRegistered(String),
    #[error("cannot encode as Avro: {0}")]
    Encode(String),
}

/// The Avro schemas of moodstream's own contracts, compiled in (the files in `schemas/` are
/// the published copies).
pub mod contracts {
    pub const CUSTOMER_MESSAGE: &str = include_str!("../schemas/customer_message.avsc");
    pub const EMOTION_RESULT: &str = include_str!("../schemas/emotion_result.avsc");
    pub const DRAFT_REPLY: &str = include_str!("../schemas/draft_reply.avsc");
    pub const ESCALATION_EVENT: &str = include_str!("../schemas/escalation_event.avsc");
}

/// Parses one of the compiled-in [`contracts`].
pub fn contract(text: &str) -> Schema {
    Schema::parse_str(text).expect("compiled-in schema is valid: covered by tests")
}

/// Reads and parses `dir/name`.
pub fn load_schema(dir: &Path, name: &str) -> Result<Schema, SchemaError> {
    let path = dir.join(name);
    let text = std::fs::read_to_string(&path).map_err(|e| SchemaError::Read {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    Schema::parse_str(&text).map_err(|e| SchemaError::Parse {
        name: name.to_string(),
        reason: e.to_string(),
    })
}

/// Encodes `value` as an Avro datum of `schema`, in the Confluent wire format with `id`.
pub fn encode_avro<T: Serialize>(
    schema: &Schema,
    id: u32,
    value: &T,
) -> Result<Vec<u8>, SchemaError> {
    let value = apache_avro::to_value(value)
        .and_then(|v| v.resolve(schema))
        .map_err(|e| SchemaError::Encode(e.to_string()))?;
    let datum = apache_avro::writer::datum::GenericDatumWriter::builder(schema)
        .build()
        .and_then(|w| w.write_value_to_vec(value))
        .map_err(|e| SchemaError::Encode(e.to_string()))?;
    Ok(crate::decode::wire_format(id, &datum))
}

/// Where schema ids resolve.
pub enum SchemaRegistry {
    /// `schemas/registry.json`: id → file name.
    Local {
        by_id: HashMap<u32, Arc<Schema>>,
        by_file: HashMap<String, u32>,
    },
    /// A Confluent-compatible Schema Registry.
    Remote {
        url: String,
        agent: ureq::Agent,
        by_id: Mutex<HashMap<u32, Arc<Schema>>>,
        by_subject: Mutex<HashMap<String, u32>>,
    },
}

impl SchemaRegistry {
    /// No schema ids at all (JSON-only use, such as `classify`).
    pub fn none() -> SchemaRegistry {
        SchemaRegistry::Local {
            by_id: HashMap::new(),
            by_file: HashMap::new(),
        }
    }

    pub fn local(dir: &Path) -> Result<SchemaRegistry, SchemaError> {
        let path = dir.join("registry.json");
        let text = std::fs::read_to_string(&path).map_err(|e| SchemaError::Read {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let entries: HashMap<String, String> =
            serde_json::from_str::<HashMap<String, serde_json::Value>>(&text)
                .map_err(|e| SchemaError::Parse {
                    name: "registry.json".into(),
                    reason: e.to_string(),
                })?
                .into_iter()
                .filter_map(|(k, v)| Some((k, v.as_str()?.to_string())))
                .collect();
        let mut by_id = HashMap::new();
        let mut by_file = HashMap::new();
        for (id, file) in entries {
            let Ok(id) = id.parse::<u32>() else { continue };
            by_id.insert(id, Arc::new(load_schema(dir, &file)?));
            by_file.insert(file, id);
        }
        Ok(SchemaRegistry::Local { by_id, by_file })
    }

    pub fn remote(url: &str) -> SchemaRegistry {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(10))
            .build();
        SchemaRegistry::Remote {
            url: url.trim_end_matches('/').to_string(),
            agent,
            by_id: Mutex::default(),
            by_subject: Mutex::default(),
        }
    }

    /// The writer schema for `id`. Blocking (HTTP on a cache miss): call off the async runtime.
    pub fn schema_by_id(&self, id: u32) -> Result<Arc<Schema>, SchemaError> {
        match self {
            SchemaRegistry::Local { by_id, .. } => {
                by_id.get(&id).cloned().ok_or(SchemaError::UnknownId(id))
            }
            SchemaRegistry::Remote {
                url, agent, by_id, ..
            } => {
                if let Some(s) = by_id.lock().expect("registry cache poisoned: bug").get(&id) {
                    return Ok(s.clone());
                }
                #[derive(serde::Deserialize)]
                struct Body {
                    schema: String,
                }
                let body: Body = match agent.get(&format!("{url}/schemas/ids/{id}")).call() {
                    Ok(resp) => resp
                        .into_json()
                        .map_err(|e| SchemaError::Registry(e.to_string()))?,
                    Err(ureq::Error::Status(404, _)) => return Err(SchemaError::UnknownId(id)),
                    Err(e) => return Err(SchemaError::Registry(e.to_string())),
                };
                let schema =
                    Arc::new(
                        Schema::parse_str(&body.schema).map_err(|e| SchemaError::Parse {
                            name: format!("registry id {id}"),
                            reason: e.to_string(),
                        })?,
                    );
                by_id
                    .lock()
                    .expect("registry cache poisoned: bug")
                    .insert(id, schema.clone());
                Ok(schema)
            }
        }
    }

    /// The id under which outputs of `schema` (file `file`) are written to `topic`: registered as
    /// subject `<topic>-value` with a remote registry. Blocking on a cache miss.
    pub fn id_for(&self, topic: &str, file: &str, schema: &Schema) -> Result<u32, SchemaError> {
        match self {
            SchemaRegistry::Local { by_file, .. } => by_file
                .get(file)
                .copied()
                .ok_or_else(|| SchemaError::NotRegistered(file.into())),
            SchemaRegistry::Remote {
                url,
                agent,
                by_subject,
                ..
            } => {
                let subject = format!("{topic}-value");
                if let Some(id) = by_subject
                    .lock()
                    .expect("registry cache poisoned: bug")
                    .get(&subject)
                {
                    return Ok(*id);
                }
                #[derive(serde::Deserialize)]
                struct Body {
                    id: u32,
                }
                let body: Body = agent
                    .post(&format!("{url}/subjects/{subject}/versions"))
                    .set("Content-Type", "application/vnd.schemaregistry.v1+json")
                    .send_json(serde_json::json!({ "schema": schema.canonical_form() }))
                    .map_err(|e| SchemaError::Registry(e.to_string()))?
                    .into_json()
                    .map_err(|e| SchemaError::Registry(e.to_string()))?;
                by_subject
                    .lock()
                    .expect("registry cache poisoned: bug")
                    .insert(subject, body.id);
                Ok(body.id)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiled_in_contracts_parse_and_match_the_published_files() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
        for (text, file) in [
            (contracts::CUSTOMER_MESSAGE, "customer_message.avsc"),
            (contracts::EMOTION_RESULT, "emotion_result.avsc"),
            (contracts::DRAFT_REPLY, "draft_reply.avsc"),
            (contracts::ESCALATION_EVENT, "escalation_event.avsc"),
        ] {
            assert_eq!(
                contract(text),
                load_schema(&dir, file).expect("file parses")
            );
        }
    }

    #[test]
    fn local_registry_maps_ids_to_files_both_ways() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
        let reg = SchemaRegistry::local(&dir).expect("registry.json");
        let schema = contract(contracts::EMOTION_RESULT);
        assert_eq!(
            reg.id_for("emotions", "emotion_result.avsc", &schema)
                .unwrap(),
            2
        );
        assert_eq!(*reg.schema_by_id(2).unwrap(), schema);
        assert!(matches!(
            reg.schema_by_id(77),
            Err(SchemaError::UnknownId(77))
        ));
    }
}
