#![allow(clippy::unwrap_used)]
//! The events of reads go to the audit journal first: a server killed with SIGKILL under a wrap
//! and unwrap load keeps the event of every answered request, and its chain verifies after the
//! restart.

mod common;

use std::time::{Duration, Instant};

use common::{Load, Server};
use serde_json::Value;

#[test]
fn kill_9_under_reads_loses_no_answered_event() {
    let dir = tempfile::tempdir().unwrap();
    let (data, logs) = (dir.path().join("data"), dir.path().join("logs"));
    std::fs::create_dir_all(&logs).unwrap();
    let mut server = Server::start(&data, &logs, "s1", &[]);
    let instance = server.dev["instance_id"].as_str().unwrap().to_owned();
    let key = server.json(&[
        "key",
        "create",
        "--name",
        "journal-root",
        "--instance",
        &instance,
    ]);
    let key_id = key["id"].as_str().unwrap().to_owned();

    let loads: Vec<Load> = (0..3)
        .map(|_| Load::start(&server, &instance, &key_id))
        .collect();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(100));
    }
    server.kill();
    let mut answered = 0;
    for load in loads {
        let (ops, _errors) = load.finish();
        answered += ops;
    }
    assert!(answered > 0, "{}", server.logs());
    // The journal was in use: its directory is next to the database.
    assert!(data.join("keyfort.db-audit").is_dir());

    let server = Server::start(&data, &logs, "s2", &[]);
    let moved = server
        .logs()
        .contains("audit journal events moved into the database");
    eprintln!("{answered} round trips answered before the kill; events moved at restart: {moved}");
    let count = |action: &str| -> u64 {
        let mut seen = 0;
        let mut after = 0;
        loop {
            let page = server.json(&[
                "audit",
                "list",
                "--instance",
                &instance,
                "--action",
                action,
                "--target",
                &key_id,
                "--outcome",
                "success",
                "--after-seq",
                &after.to_string(),
                "--limit",
                "10000",
            ]);
            let events = page["events"].as_array().unwrap();
            if events.is_empty() {
                return seen;
            }
            seen += events.len() as u64;
            after = events.last().unwrap()["seq"].as_i64().unwrap();
        }
    };
    // Each counted round trip is one answered wrap and one answered unwrap.
    let (wraps, unwraps) = (count("key.wrap"), count("key.unwrap"));
    assert!(
        wraps >= answered && unwraps >= answered,
        "{answered} round trips answered, {wraps} wrap and {unwraps} unwrap events\n{}",
        server.logs()
    );
    let verified: Value = server.json(&["audit", "verify", "--instance", &instance]);
    assert_eq!(verified["ok"], true, "{verified}");
}
