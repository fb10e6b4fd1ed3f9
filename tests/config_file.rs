//! The config file in the real binary: the environment beats it and flags beat both. (The
//! file's own parsing and its place under the flags are unit-tested in `src/config.rs`; the
//! environment needs a child process, since tests must not change their own.)

use std::path::Path;
use std::process::Command;

/// `moodstream run --config FILE ARGS` with `MOODSTREAM_SESSION_TIMEOUT_MS` set to `env`: the
/// file's drain timeout is above every session timeout used here, so validation fails at once,
/// before anything connects, and its message quotes the session timeout that won.
fn run_stderr(file: &Path, env: Option<&str>, args: &[&str]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_moodstream"));
    cmd.arg("run").arg("--config").arg(file).args(args);
    cmd.env_remove("MOODSTREAM_DRAIN_TIMEOUT_MS")
        .env_remove("MOODSTREAM_SESSION_TIMEOUT_MS")
        .env_remove("MOODSTREAM_CONFIG");
    if let Some(value) = env {
        cmd.env("MOODSTREAM_SESSION_TIMEOUT_MS", value);
    }
    let out = cmd.output().expect("the moodstream binary runs");
    assert!(!out.status.success(), "validation must fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn environment_beats_the_config_file_and_flags_beat_both() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("moodstream.env");
    std::fs::write(
        &file,
        "MOODSTREAM_DRAIN_TIMEOUT_MS=40000\nMOODSTREAM_SESSION_TIMEOUT_MS=30000\n",
    )
    .expect("write config file");

    let from_file = run_stderr(&file, None, &[]);
    assert!(
        from_file.contains("drain timeout (40000 ms) must be below the session timeout (30000 ms)"),
        "{from_file}"
    );
    let from_env = run_stderr(&file, Some("35000"), &[]);
    assert!(
        from_env.contains("session timeout (35000 ms)"),
        "{from_env}"
    );
    let from_flag = run_stderr(&file, Some("35000"), &["--session-timeout-ms", "36000"]);
    assert!(
        from_flag.contains("session timeout (36000 ms)"),
        "{from_flag}"
    );
}

#[test]
fn unknown_config_file_setting_is_a_startup_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("moodstream.env");
    std::fs::write(&file, "MOODSTREAM_SESION_TIMEOUT_MS=30000\n").expect("write config file");
    let stderr = run_stderr(&file, None, &[]);
    assert!(
        stderr.contains("unknown setting `MOODSTREAM_SESION_TIMEOUT_MS`"),
        "{stderr}"
    );
}
