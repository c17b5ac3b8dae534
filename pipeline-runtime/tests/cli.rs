//! The built binary end to end: `generate`, then `run`, then `report`, checking the files
//! and numbers a user sees.

use std::process::Command;

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pipeline-runtime"))
}

fn run_ok(cmd: &mut Command) -> std::process::Output {
    let output = cmd.output().expect("binary starts");
    assert!(
        output.status.success(),
        "{:?} failed: {}",
        cmd,
        String::from_utf8_lossy(&output.stderr)
    );
    // stderr is a pipe here, not a terminal: no progress line may be drawn.
    assert!(
        !output.stderr.contains(&b'\r'),
        "{:?} drew progress off a terminal: {}",
        cmd,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[test]
fn generate_run_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("events.csv");
    let out = dir.path().join("lake");
    let events = 40_000u64;

    run_ok(
        binary()
            .args([
                "generate",
                "--events",
                &events.to_string(),
                "--seed",
                "9",
                "--output",
            ])
            .arg(&csv),
    );
    let first = std::fs::read(&csv).unwrap();
    let again = dir.path().join("again.csv");
    run_ok(
        binary()
            .args([
                "generate",
                "--events",
                &events.to_string(),
                "--seed",
                "9",
                "--output",
            ])
            .arg(&again),
    );
    assert_eq!(
        first,
        std::fs::read(&again).unwrap(),
        "same seed, same bytes"
    );
    assert_eq!(
        first.iter().filter(|&&b| b == b'\n').count() as u64,
        events + 1
    );

    let output = run_ok(
        binary()
            .arg("run")
            .arg("--input")
            .arg(&csv)
            .arg("--out")
            .arg(&out),
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.contains("Customer report"), "{stdout}");

    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["events_accepted"], events);
    assert_eq!(summary["events_rejected"], 0);
    let profiles = summary["profiles"].as_u64().unwrap();
    // About 2.2 events per user.
    assert!(
        (events / 3..events / 2).contains(&profiles),
        "{profiles} profiles"
    );
    assert_eq!(summary["report"]["customers"], profiles);
    assert!(out.join("profiles/part-00000.parquet").exists());
    assert!(out.join("events/dt=2019-10-01/part-00000.parquet").exists());
    assert!(out.join("events/dt=2019-11-30/part-00000.parquet").exists());
    assert_eq!(std::fs::read(out.join("rejected.jsonl")).unwrap().len(), 0);

    let report = run_ok(binary().arg("report").arg("--from").arg(&out));
    assert_eq!(
        String::from_utf8(report.stdout).unwrap(),
        stdout,
        "report from the lake equals run's"
    );

    let page = dir.path().join("report.html");
    let with_page = run_ok(
        binary()
            .arg("report")
            .arg("--from")
            .arg(&out)
            .arg("--html")
            .arg(&page),
    );
    assert_eq!(
        String::from_utf8(with_page.stdout).unwrap(),
        stdout,
        "--html still prints the report"
    );
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    let customers = format!(r#"data-figure="customers">{profiles}</div>"#);
    assert!(html.contains(&customers), "{customers}");
}

#[test]
fn bad_rows_are_counted_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("bad.csv");
    let out = dir.path().join("lake");
    run_ok(
        binary()
            .args([
                "generate",
                "--events",
                "10000",
                "--seed",
                "2",
                "--bad-rows-per-million",
                "50000",
                "--output",
            ])
            .arg(&csv),
    );
    run_ok(
        binary()
            .arg("run")
            .arg("--quiet")
            .arg("--input")
            .arg(&csv)
            .arg("--out")
            .arg(&out),
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    let accepted = summary["events_accepted"].as_u64().unwrap();
    let rejected = summary["events_rejected"].as_u64().unwrap();
    assert_eq!(accepted + rejected, 10_000);
    let lines = std::fs::read_to_string(out.join("rejected.jsonl")).unwrap();
    assert_eq!(lines.lines().count() as u64, rejected);
    assert!(rejected > 300, "{rejected}");
}

#[test]
fn a_missing_input_fails_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let output = binary()
        .args(["run", "--input", "/nonexistent/x.csv", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/x.csv"));
}
