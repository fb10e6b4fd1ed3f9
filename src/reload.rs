//! reload: changes what a running worker labels and drafts with — the model directory, the reply
//! templates (`--reply-config`) and the escalation thresholds (`--escalation-thresholds`) —
//! without a restart, so the consumer keeps its partitions (no rebalance) and nothing in flight
//! is lost or repeated.
//!
//! Triggered by a change of those files (polled every `--reload-poll-secs`; a change must hold
//! still for one interval, so a copy in progress is not loaded), by SIGHUP, or by
//! `POST /admin/reload` on the metrics port. One reload runs at a time, on this task. Each part
//! whose files changed is loaded and checked beside the live one — the model is verified against
//! its `SHA256SUMS` and `gate.json`, loaded on the running provider and warmed — and only then
//! swapped in (the model between messages: see `model::live`). A part that fails keeps the live
//! one and says so: an error log, `moodstream_reloads_total{outcome="failed"}` and a line in
//! `/readyz`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::config::ModelConfig;
use crate::escalation::{EscalationConfig, Escalator};
use crate::health::Health;
use crate::model::{ActiveProvider, LiveModel, Model, ModelError};
use crate::reply::{LiveDrafter, ReplyDrafter};
use crate::telemetry::metrics;

/// What asked for a reload (logged).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    FileChange,
    Signal,
    Admin,
}

/// What a reload did to one part.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum PartOutcome {
    /// Its files are the ones already live: nothing to do.
    Unchanged,
    /// Swapped in; `version` is the model version for the model part.
    Loaded {
        #[serde(skip_serializing_if = "Option::is_none")]
        version: Option<String>,
    },
    /// The live one stays.
    Failed { reason: String },
}

impl PartOutcome {
    fn label(&self) -> &'static str {
        match self {
            PartOutcome::Unchanged => "unchanged",
            PartOutcome::Loaded { .. } => "loaded",
            PartOutcome::Failed { .. } => "failed",
        }
    }
}

/// The answer to one reload, per part (the JSON body of `POST /admin/reload`).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub trigger: Trigger,
    pub model: PartOutcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replies: Option<PartOutcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thresholds: Option<PartOutcome>,
    /// The model version live after the reload.
    pub model_version: String,
}

impl Report {
    pub fn failed(&self) -> bool {
        [
            Some(&self.model),
            self.replies.as_ref(),
            self.thresholds.as_ref(),
        ]
        .into_iter()
        .flatten()
        .any(|p| matches!(p, PartOutcome::Failed { .. }))
    }
}

type Request = (Trigger, Option<oneshot::Sender<Report>>);

/// Asks the reload task for a reload.
#[derive(Clone)]
pub struct Handle(mpsc::Sender<Request>);

impl Handle {
    /// Reloads and waits for the report; `None` when the worker is shutting down.
    pub async fn reload(&self, trigger: Trigger) -> Option<Report> {
        let (tx, rx) = oneshot::channel();
        self.0.send((trigger, Some(tx))).await.ok()?;
        rx.await.ok()
    }
}

/// The reply templates a reload may swap, and the reply topics that exist (checked at startup).
pub struct Replies {
    pub path: PathBuf,
    pub live: LiveDrafter,
    pub topics: BTreeSet<String>,
}

/// The thresholds a reload may swap: the settings from the flags, and the file over them.
pub struct Thresholds {
    pub base: EscalationConfig,
    pub escalator: Arc<Escalator>,
}

/// Everything a reload may change.
pub struct Reloadable {
    pub model: LiveModel,
    pub model_cfg: ModelConfig,
    pub provider: ActiveProvider,
    pub replies: Option<Replies>,
    pub thresholds: Option<Thresholds>,
    pub health: Arc<Health>,
}

/// Starts the reload task, its SIGHUP listener and (with `poll`) its file watcher. The task
/// ends when every [`Handle`] and the watchers are gone (they end with the runtime).
pub fn spawn(reloadable: Reloadable, poll: Option<Duration>) -> std::io::Result<Handle> {
    let (tx, mut rx) = mpsc::channel::<Request>(4);
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let signals = tx.clone();
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            if signals.send((Trigger::Signal, None)).await.is_err() {
                return;
            }
        }
    });
    let mut state = State::new(reloadable);
    if let Some(interval) = poll.filter(|d| !d.is_zero()) {
        let watched = state.watched();
        let changes = tx.clone();
        tokio::spawn(watch(watched, interval, changes));
    }
    tokio::spawn(async move {
        while let Some((trigger, answer)) = rx.recv().await {
            let (returned, report) = tokio::task::spawn_blocking(move || {
                let report = state.reload(trigger);
                (state, report)
            })
            .await
            .expect("the reload task does not panic: bug");
            state = returned;
            if let Some(answer) = answer {
                let _ = answer.send(report);
            }
        }
    });
    Ok(Handle(tx))
}

/// Polls the fingerprints of the watched files; a change that has held still for one interval
/// asks for a reload (the reload itself decides which parts changed).
async fn watch(watched: Vec<Watched>, interval: Duration, reloads: mpsc::Sender<Request>) {
    let mut seen: Vec<Fingerprint> = watched.iter().map(Watched::fingerprint).collect();
    let mut pending = false;
    loop {
        tokio::time::sleep(interval).await;
        let now: Vec<Fingerprint> = watched.iter().map(Watched::fingerprint).collect();
        if now != seen {
            seen = now;
            pending = true; // changed: wait until it holds still
        } else if pending {
            pending = false;
            if reloads.send((Trigger::FileChange, None)).await.is_err() {
                return;
            }
        }
    }
}

/// A watched path: the model directory (every file in it, through symlinks) or a config file.
#[derive(Debug, Clone)]
enum Watched {
    Dir(PathBuf),
    File(PathBuf),
}

/// Where a path points and the length and modification time of what is there; `None` parts
/// for what is missing.
type Fingerprint = Vec<(PathBuf, Option<(u64, SystemTime)>)>;

impl Watched {
    fn fingerprint(&self) -> Fingerprint {
        let stat = |p: &Path| {
            let real = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
            let meta = std::fs::metadata(&real).ok();
            let facts = meta.and_then(|m| Some((m.len(), m.modified().ok()?)));
            (real, facts)
        };
        match self {
            Watched::File(path) => vec![stat(path)],
            Watched::Dir(dir) => {
                let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
                    .map(|rd| rd.filter_map(|e| Some(e.ok()?.path())).collect())
                    .unwrap_or_default();
                entries.sort();
                std::iter::once(stat(dir))
                    .chain(entries.iter().map(|p| stat(p)))
                    .collect()
            }
        }
    }
}

/// One reloadable part's files and the fingerprint of what is live.
struct Part {
    watched: Watched,
    live: Fingerprint,
}

impl Part {
    fn new(watched: Watched) -> Part {
        Part {
            live: watched.fingerprint(),
            watched,
        }
    }

    /// The files' fingerprint now, when it is not the live one's.
    fn changed(&self) -> Option<Fingerprint> {
        Some(self.watched.fingerprint()).filter(|now| *now != self.live)
    }
}

/// The reload task's state: what is live and the fingerprints it was loaded from. Only a
/// successful load updates a fingerprint, so SIGHUP retries a part that failed.
struct State {
    r: Reloadable,
    model: Part,
    replies: Option<Part>,
    thresholds: Option<Part>,
}

impl State {
    fn new(r: Reloadable) -> State {
        let model = Part::new(Watched::Dir(r.model_cfg.model_dir.clone()));
        let replies = r
            .replies
            .as_ref()
            .map(|p| Part::new(Watched::File(p.path.clone())));
        let thresholds = r
            .thresholds
            .as_ref()
            .and_then(|t| t.base.thresholds_file.clone())
            .map(|p| Part::new(Watched::File(p)));
        State {
            r,
            model,
            replies,
            thresholds,
        }
    }

    fn watched(&self) -> Vec<Watched> {
        [
            Some(&self.model),
            self.replies.as_ref(),
            self.thresholds.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(|p| p.watched.clone())
        .collect()
    }

    fn reload(&mut self, trigger: Trigger) -> Report {
        tracing::info!(?trigger, "reload requested");
        let report = Report {
            trigger,
            model: self.reload_model(),
            replies: self.reload_replies(),
            thresholds: self.reload_thresholds(),
            model_version: self.r.model.current().version.to_string(),
        };
        let mut failures = Vec::new();
        for (part, shown, outcome) in [
            ("model", "model", Some(&report.model)),
            ("replies", "reply templates", report.replies.as_ref()),
            (
                "thresholds",
                "escalation thresholds",
                report.thresholds.as_ref(),
            ),
        ] {
            let Some(outcome) = outcome else { continue };
            metrics()
                .reloads
                .with_label_values(&[part, outcome.label()])
                .inc();
            if let PartOutcome::Failed { reason } = outcome {
                tracing::error!(part, %reason, "reload failed; the previous one stays live");
                failures.push(format!("{shown}: {reason}"));
            }
        }
        if failures.is_empty() {
            let live = self.r.model.current();
            self.r.health.set_model(&live.version, live.id);
        } else {
            self.r.health.set_reload_error(failures.join("; "));
        }
        report
    }

    fn reload_model(&mut self) -> PartOutcome {
        let Some(now) = self.model.changed() else {
            return PartOutcome::Unchanged;
        };
        let started = std::time::Instant::now();
        let before = self.r.model.current();
        let loaded = load_checked(&self.r.model_cfg, self.r.provider)
            .and_then(|model| self.r.model.install(model));
        match loaded {
            Ok(live) => {
                self.model.live = now;
                let info = &metrics().model_info;
                info.with_label_values(&[&before.version, "live"]).set(0);
                info.with_label_values(&[&live.version, "live"]).set(1);
                tracing::info!(
                    from = %before.version,
                    to = %live.version,
                    generation = live.id,
                    seconds = started.elapsed().as_secs_f64(),
                    "model reloaded: messages tokenized from now on use it"
                );
                PartOutcome::Loaded {
                    version: Some(live.version.to_string()),
                }
            }
            Err(e) => PartOutcome::Failed {
                reason: e.to_string(),
            },
        }
    }

    fn reload_replies(&mut self) -> Option<PartOutcome> {
        let (replies, part) = (self.r.replies.as_ref()?, self.replies.as_mut()?);
        let Some(now) = part.changed() else {
            return Some(PartOutcome::Unchanged);
        };
        let drafter = match ReplyDrafter::from_file(&replies.path) {
            Ok(drafter) => drafter,
            Err(e) => {
                return Some(PartOutcome::Failed {
                    reason: e.to_string(),
                });
            }
        };
        let new: Vec<&str> = drafter
            .topics()
            .into_iter()
            .filter(|t| !replies.topics.contains(*t))
            .collect();
        if !new.is_empty() {
            return Some(PartOutcome::Failed {
                reason: format!(
                    "new reply topics {new:?}: topics are checked and registered at startup, so \
                     adding one needs a restart"
                ),
            });
        }
        replies.live.store(Arc::new(drafter));
        part.live = now;
        tracing::info!("reply templates reloaded");
        Some(PartOutcome::Loaded { version: None })
    }

    fn reload_thresholds(&mut self) -> Option<PartOutcome> {
        let (t, part) = (self.r.thresholds.as_ref()?, self.thresholds.as_mut()?);
        let Some(now) = part.changed() else {
            return Some(PartOutcome::Unchanged);
        };
        Some(match t.base.with_thresholds_file() {
            Ok(cfg) => {
                t.escalator.set_config(cfg);
                part.live = now;
                tracing::info!("escalation thresholds reloaded");
                PartOutcome::Loaded { version: None }
            }
            Err(e) => PartOutcome::Failed {
                reason: e.to_string(),
            },
        })
    }
}

/// Loads `cfg.model_dir` as a reload (or the shadow candidate) does: checked by [`verify_dir`],
/// on `provider`, warmed up.
pub fn load_checked(cfg: &ModelConfig, provider: ActiveProvider) -> Result<Model, ModelError> {
    verify_dir(&cfg.model_dir)?;
    let mut model = Model::load_on(cfg, provider)?;
    model.warm_up()?;
    Ok(model)
}

/// Checks a model directory before it is loaded: every file `SHA256SUMS` lists has that
/// checksum (a directory still being copied fails here, not halfway through a load), and a
/// `gate.json` from `models/train/run.sh --feedback` did not refuse the model.
pub fn verify_dir(dir: &Path) -> Result<(), ModelError> {
    let gate = dir.join("gate.json");
    if gate.is_file() {
        let text = std::fs::read_to_string(&gate)
            .map_err(|e| ModelError::Files(format!("cannot read {}: {e}", gate.display())))?;
        let report: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| ModelError::Files(format!("invalid {}: {e}", gate.display())))?;
        if report.get("passed") != Some(&serde_json::Value::Bool(true)) {
            let reasons = report
                .get("reasons")
                .and_then(|r| r.as_array())
                .map(|r| {
                    r.iter()
                        .filter_map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join("; ")
                })
                .unwrap_or_default();
            return Err(ModelError::Files(format!(
                "{}: the evaluation gate refused this model ({reasons})",
                gate.display()
            )));
        }
    }
    let sums = dir.join("SHA256SUMS");
    if !sums.is_file() {
        return Ok(());
    }
    let text = std::fs::read_to_string(&sums)
        .map_err(|e| ModelError::Files(format!("cannot read {}: {e}", sums.display())))?;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (want, name) = line
            .split_once(char::is_whitespace)
            .map(|(h, n)| (h, n.trim_start().trim_start_matches('*')))
            .ok_or_else(|| ModelError::Files(format!("{}: bad line", sums.display())))?;
        let path = dir.join(name);
        let got = sha256_hex(&path)
            .map_err(|e| ModelError::Files(format!("cannot read {}: {e}", path.display())))?;
        if !got.eq_ignore_ascii_case(want) {
            return Err(ModelError::Files(format!(
                "{} does not match SHA256SUMS (incomplete copy?)",
                path.display()
            )));
        }
    }
    Ok(())
}

/// The SHA-256 of a file, as `sha256sum` prints it.
fn sha256_hex(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    Ok(ctx
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).expect("write");
        }
        dir
    }

    #[test]
    fn verify_dir_checks_sums_and_the_gate() {
        // sha256("abc")
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let ok = dir_with(&[("a.txt", "abc"), ("SHA256SUMS", &format!("{abc}  a.txt\n"))]);
        assert!(verify_dir(ok.path()).is_ok());

        let torn = dir_with(&[("a.txt", "ab"), ("SHA256SUMS", &format!("{abc}  a.txt\n"))]);
        let err = verify_dir(torn.path()).expect_err("a changed file is refused");
        assert!(
            err.to_string().contains("does not match SHA256SUMS"),
            "{err}"
        );

        let missing = dir_with(&[("SHA256SUMS", &format!("{abc}  a.txt\n"))]);
        assert!(verify_dir(missing.path()).is_err());

        let refused = dir_with(&[(
            "gate.json",
            r#"{"passed": false, "reasons": ["zh macro-F1 fell by 0.05"]}"#,
        )]);
        let err = verify_dir(refused.path()).expect_err("a refused candidate is not loaded");
        assert!(err.to_string().contains("zh macro-F1 fell"), "{err}");

        let passed = dir_with(&[("gate.json", r#"{"passed": true, "reasons": []}"#)]);
        assert!(verify_dir(passed.path()).is_ok());
    }

    #[test]
    fn a_directory_fingerprint_follows_symlinks_and_sees_new_files() {
        let root = tempfile::tempdir().expect("temp dir");
        for v in ["v1", "v2"] {
            std::fs::create_dir(root.path().join(v)).expect("mkdir");
            std::fs::write(root.path().join(v).join("labels.json"), v).expect("write");
        }
        let link = root.path().join("current");
        std::os::unix::fs::symlink(root.path().join("v1"), &link).expect("symlink");
        let watched = Watched::Dir(link.clone());
        let first = watched.fingerprint();
        assert_eq!(first, watched.fingerprint(), "stable while nothing changes");
        std::fs::remove_file(&link).expect("unlink");
        std::os::unix::fs::symlink(root.path().join("v2"), &link).expect("symlink");
        assert_ne!(
            first,
            watched.fingerprint(),
            "a switched symlink is a change"
        );
        let second = watched.fingerprint();
        std::fs::write(root.path().join("v2").join("gate.json"), "{}").expect("write");
        assert_ne!(second, watched.fingerprint(), "a new file is a change");
    }
}
