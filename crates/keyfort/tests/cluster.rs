#![allow(clippy::unwrap_used)]
//! Three real `keyfort server` processes on one PostgreSQL database (DESIGN §4): concurrent
//! writes from every node, cache coherence across nodes, and a node killed under load.
//!
//! Needs `KEYFORT_TEST_PG_URL` (scripts/test.sh starts a throwaway PostgreSQL); every test here
//! fails without it. Each test gets its own database. The nodes run in dev mode and share the
//! dev master key file and the token signing key, as the nodes of one deployment share their
//! unseal method and signing key.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::{Server, Value, json};
use sqlx::Connection;
use tempfile::TempDir;

/// Rules that would slow the tests down (Key Protect's 30 s change guard, 1 h rotation guard).
const NODE_ENV: [(&str, &str); 2] = [
    ("KEYFORT_KMS_CHANGE_GUARD_SECS", "0"),
    ("KEYFORT_KMS_ROTATE_GUARD_SECS", "0"),
];
/// Files every node of the test cluster shares (see the module documentation).
const SHARED_FILES: [&str; 3] = ["dev-master.key", "token-signing.key", "dev.json"];

/// A fresh database on the test server; its URL.
fn fresh_database(tag: &str) -> String {
    let url = std::env::var("KEYFORT_TEST_PG_URL").unwrap_or_else(|_| {
        panic!(
            "KEYFORT_TEST_PG_URL is not set: these tests need a PostgreSQL server \
             (scripts/test.sh starts one; see scripts/pg.sh)"
        )
    });
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let name = format!("kf_cluster_{tag}_{}_{nanos}", std::process::id());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut conn = sqlx::PgConnection::connect(&url)
            .await
            .expect("the PostgreSQL server of KEYFORT_TEST_PG_URL answers");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
    });
    // Same server, the new database: replace the path of the URL.
    let (head, query) = url.split_once('?').unwrap_or((&url, ""));
    let base = head.rsplit_once('/').map_or(head, |(b, _)| b);
    if query.is_empty() {
        format!("{base}/{name}")
    } else {
        format!("{base}/{name}?{query}")
    }
}

struct Cluster {
    dir: TempDir,
    url: String,
    nodes: Vec<Server>,
    instance: String,
}

impl Cluster {
    fn start(tag: &str, n: usize) -> Cluster {
        let url = fresh_database(tag);
        let dir = tempfile::tempdir().unwrap();
        let mut cluster = Cluster {
            dir,
            url,
            nodes: Vec::new(),
            instance: String::new(),
        };
        for i in 0..n {
            cluster.start_node(i);
        }
        cluster.instance = cluster.nodes[0].dev["instance_id"]
            .as_str()
            .unwrap()
            .to_owned();
        cluster
    }

    fn node_dir(&self, i: usize) -> std::path::PathBuf {
        self.dir.path().join(format!("node{i}"))
    }

    /// Starts node `i` (again); nodes after the first get the first one's shared files.
    fn start_node(&mut self, i: usize) {
        let data = self.node_dir(i);
        if i > 0 && !data.exists() {
            std::fs::create_dir_all(&data).unwrap();
            std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o700))
                .unwrap();
            for f in SHARED_FILES {
                std::fs::copy(self.node_dir(0).join(f), data.join(f)).unwrap();
            }
        }
        let tag = format!("node{i}-{}", self.nodes.len());
        let server = Server::start_with(
            &data,
            self.dir.path(),
            &tag,
            &NODE_ENV,
            &["--store", &self.url],
        );
        if i < self.nodes.len() {
            self.nodes[i] = server;
        } else {
            self.nodes.push(server);
        }
    }

    fn client(&self, i: usize) -> Client {
        Client::new(&self.nodes[i], &self.instance)
    }

    fn logs(&self) -> String {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| format!("=== node {i}\n{}", n.logs()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// An HTTPS client of one node, as an application behind a load balancer would be.
struct Client {
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
    base: String,
    token: String,
    instance: String,
}

impl Client {
    fn new(server: &Server, instance: &str) -> Client {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let pem = std::fs::read(server.dev["ca_cert"].as_str().unwrap()).unwrap();
        let http = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
            .build()
            .unwrap();
        let base = server.addr();
        let api_key = server.dev["api_key"].as_str().unwrap().to_owned();
        let token: Value = rt.block_on(async {
            http.post(format!("{base}/identity/token"))
                .form(&[
                    ("grant_type", "urn:ibm:params:oauth:grant-type:apikey"),
                    ("apikey", api_key.as_str()),
                ])
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap()
        });
        Client {
            rt,
            http,
            base,
            token: token["access_token"].as_str().unwrap().to_owned(),
            instance: instance.to_owned(),
        }
    }

    /// `(status, body)`; status 0 when the request failed at the transport level.
    fn call(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        self.rt.block_on(async {
            let mut req = self
                .http
                .request(method, format!("{}{path}", self.base))
                .bearer_auth(&self.token)
                .header("bluemix-instance", &self.instance)
                .timeout(Duration::from_secs(30));
            if let Some(body) = body {
                req = req.json(body);
            }
            match req.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let text = resp.text().await.unwrap_or_default();
                    (
                        status,
                        serde_json::from_str(&text).unwrap_or(Value::String(text)),
                    )
                }
                Err(e) => (0, Value::String(e.to_string())),
            }
        })
    }

    fn admin(&self, path: &str) -> String {
        format!("/api/keyfort/v1/instances/{}{path}", self.instance)
    }

    fn create_key(&self, name: &str) -> (u16, Value) {
        self.call(
            reqwest::Method::POST,
            &self.admin("/keys"),
            Some(&json!({ "name": name })),
        )
    }

    fn get_key(&self, id: &str) -> (u16, Value) {
        self.call(
            reqwest::Method::GET,
            &self.admin(&format!("/keys/{id}")),
            None,
        )
    }

    fn versions(&self, id: &str) -> Vec<Value> {
        let (status, body) = self.call(
            reqwest::Method::GET,
            &self.admin(&format!("/keys/{id}/versions")),
            None,
        );
        assert_eq!(status, 200, "{body}");
        body.as_array()
            .or_else(|| body["versions"].as_array())
            .cloned()
            .unwrap_or_else(|| panic!("versions: {body}"))
    }

    fn wrap(&self, id: &str, plaintext: &str) -> (u16, Value) {
        self.call(
            reqwest::Method::POST,
            &self.admin(&format!("/keys/{id}/wrap")),
            Some(&json!({ "plaintext": plaintext })),
        )
    }

    fn unwrap_(&self, id: &str, ciphertext: &Value) -> (u16, Value) {
        self.call(
            reqwest::Method::POST,
            &self.admin(&format!("/keys/{id}/unwrap")),
            Some(&json!({ "ciphertext": ciphertext })),
        )
    }

    fn action(&self, id: &str, action: &str) -> (u16, Value) {
        self.call(
            reqwest::Method::POST,
            &self.admin(&format!("/keys/{id}/actions/{action}")),
            Some(&json!({})),
        )
    }

    /// Key Protect's rotate (`POST /api/v2/keys/{id}/actions/rotate`).
    fn rotate(&self, id: &str) -> (u16, Value) {
        self.call(
            reqwest::Method::POST,
            &format!("/api/v2/keys/{id}/actions/rotate"),
            Some(&json!({})),
        )
    }
}

fn audit_verifies(cluster: &Cluster, node: usize) {
    let verified = cluster.nodes[node].json(&["audit", "verify", "--instance", &cluster.instance]);
    assert_eq!(verified["ok"], true, "{verified}");
}

/// Creates, rotations and wraps from every node at once: every acknowledged create is there
/// exactly once, every acknowledged rotation made exactly one version, every acknowledged wrap
/// unwraps on every node, and the audit chain is whole.
#[test]
fn concurrent_creates_rotations_and_wraps_across_nodes() {
    let cluster = Cluster::start("writes", 3);
    let root = {
        let (status, key) = cluster.client(0).create_key("shared-root");
        assert_eq!(status, 201, "{key}");
        key["id"].as_str().unwrap().to_owned()
    };
    const THREADS_PER_NODE: usize = 3;
    const ROUNDS: usize = 8;

    let created = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let rotations = Arc::new(Mutex::new(0_usize));
    let wrapped = Arc::new(Mutex::new(Vec::<(String, Value)>::new()));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    std::thread::scope(|s| {
        for node in 0..cluster.nodes.len() {
            for t in 0..THREADS_PER_NODE {
                let (cluster, root) = (&cluster, &root);
                let (created, rotations, wrapped, failures) = (
                    created.clone(),
                    rotations.clone(),
                    wrapped.clone(),
                    failures.clone(),
                );
                s.spawn(move || {
                    let client = cluster.client(node);
                    for r in 0..ROUNDS {
                        let name = format!("n{node}-t{t}-r{r}");
                        match client.create_key(&name) {
                            (201, key) => created
                                .lock()
                                .unwrap()
                                .push((name, key["id"].as_str().unwrap().to_owned())),
                            (status, body) => failures
                                .lock()
                                .unwrap()
                                .push(format!("create {status}: {body}")),
                        }
                        match client.rotate(root) {
                            (204, _) => *rotations.lock().unwrap() += 1,
                            // Two rotations of one key at once: the later one is refused.
                            (409, _) => {}
                            (status, body) => failures
                                .lock()
                                .unwrap()
                                .push(format!("rotate {status}: {body}")),
                        }
                        let plaintext = B64.encode(format!("{node}/{t}/{r}"));
                        match client.wrap(root, &plaintext) {
                            (200, body) => wrapped
                                .lock()
                                .unwrap()
                                .push((plaintext, body["ciphertext"].clone())),
                            (status, body) => failures
                                .lock()
                                .unwrap()
                                .push(format!("wrap {status}: {body}")),
                        }
                    }
                });
            }
        }
    });
    let failures = failures.lock().unwrap();
    assert!(failures.is_empty(), "{failures:?}\n{}", cluster.logs());

    let created = created.lock().unwrap();
    let total = cluster.nodes.len() * THREADS_PER_NODE * ROUNDS;
    assert_eq!(created.len(), total);
    let ids: BTreeSet<&str> = created.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(ids.len(), total, "every create got its own key");
    // Each node sees every key, once, with its name.
    for node in 0..cluster.nodes.len() {
        let client = cluster.client(node);
        let (status, listing) = client.call(
            reqwest::Method::GET,
            &client.admin("/keys?limit=5000"),
            None,
        );
        assert_eq!(status, 200, "{listing}");
        assert_eq!(listing["total"], json!(total + 1), "{listing}");
        let names: BTreeMap<&str, &str> = listing["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| (k["id"].as_str().unwrap(), k["name"].as_str().unwrap()))
            .collect();
        for (name, id) in created.iter() {
            assert_eq!(names.get(id.as_str()), Some(&name.as_str()));
        }
    }

    // Exactly one version per acknowledged rotation, numbered without gaps.
    let rotations = *rotations.lock().unwrap();
    assert!(rotations > 0, "no rotation succeeded");
    let versions = cluster.client(1).versions(&root);
    assert_eq!(versions.len(), rotations + 1, "{versions:?}");
    let seqs: Vec<i64> = versions
        .iter()
        .map(|v| v["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=rotations as i64 + 1).collect::<Vec<_>>());

    // Every acknowledged wrap unwraps on every node.
    let wrapped = wrapped.lock().unwrap();
    assert_eq!(wrapped.len(), total);
    for node in 0..cluster.nodes.len() {
        let client = cluster.client(node);
        for (plaintext, ciphertext) in wrapped.iter().step_by(5) {
            let (status, body) = client.unwrap_(&root, ciphertext);
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["plaintext"], json!(plaintext));
        }
    }
    audit_verifies(&cluster, 2);
}

/// A key disabled through one node is refused by the others within a second, although they had
/// just used (and cached) it.
#[test]
fn disable_on_one_node_is_refused_on_the_others_within_a_second() {
    let cluster = Cluster::start("disable", 3);
    let a = cluster.client(0);
    let (status, key) = a.create_key("to-disable");
    assert_eq!(status, 201, "{key}");
    let id = key["id"].as_str().unwrap();
    let others = [cluster.client(1), cluster.client(2)];
    let plaintext = B64.encode("secret");
    for _ in 0..3 {
        for c in &others {
            let (status, body) = c.wrap(id, &plaintext);
            assert_eq!(status, 200, "{body}");
        }
    }
    for round in 0..3 {
        let (status, body) = a.action(id, "disable");
        assert_eq!(status, 200, "round {round}: {body}");
        let disabled_at = Instant::now();
        for c in &others {
            loop {
                let (status, _) = c.wrap(id, &plaintext);
                if status != 200 {
                    assert_eq!(status, 409, "refused as not usable");
                    break;
                }
                assert!(
                    disabled_at.elapsed() < Duration::from_secs(1),
                    "still usable on another node after 1 s\n{}",
                    cluster.logs()
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let (status, body) = a.action(id, "enable");
        assert_eq!(status, 200, "{body}");
        let enabled_at = Instant::now();
        for c in &others {
            while c.wrap(id, &plaintext).0 != 200 {
                assert!(enabled_at.elapsed() < Duration::from_secs(1));
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// A node killed with SIGKILL while it acknowledges creates and wraps: every acknowledged key is
/// there, every acknowledged ciphertext unwraps on the surviving nodes, the audit chain is whole,
/// and the node comes back.
#[test]
fn kill_9_of_a_node_under_load_loses_no_acknowledged_operation() {
    let mut cluster = Cluster::start("kill", 3);
    let root = {
        let (status, key) = cluster.client(0).create_key("root");
        assert_eq!(status, 201, "{key}");
        key["id"].as_str().unwrap().to_owned()
    };
    let acked_keys = Arc::new(Mutex::new(Vec::<String>::new()));
    let acked_wraps = Arc::new(Mutex::new(Vec::<(String, Value)>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for t in 0..4 {
        let client = cluster.client(1);
        let (acked_keys, acked_wraps, stop, root) = (
            acked_keys.clone(),
            acked_wraps.clone(),
            stop.clone(),
            root.clone(),
        );
        workers.push(std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                if let (201, key) = client.create_key(&format!("load-{t}-{n}")) {
                    acked_keys
                        .lock()
                        .unwrap()
                        .push(key["id"].as_str().unwrap().to_owned());
                }
                let plaintext = B64.encode(format!("{t}-{n}"));
                if let (200, body) = client.wrap(&root, &plaintext) {
                    acked_wraps
                        .lock()
                        .unwrap()
                        .push((plaintext, body["ciphertext"].clone()));
                }
            }
        }));
    }
    // Let it run, then crash the node in the middle of its work.
    let started = Instant::now();
    while acked_keys.lock().unwrap().len() < 40 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    cluster.nodes[1].kill();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }

    let acked_keys = acked_keys.lock().unwrap().clone();
    let acked_wraps = acked_wraps.lock().unwrap().clone();
    assert!(acked_keys.len() >= 40 && !acked_wraps.is_empty());
    for node in [0, 2] {
        let client = cluster.client(node);
        for id in &acked_keys {
            let (status, body) = client.get_key(id);
            assert_eq!(status, 200, "acknowledged key {id} lost: {body}");
        }
        for (plaintext, ciphertext) in &acked_wraps {
            let (status, body) = client.unwrap_(&root, ciphertext);
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["plaintext"], json!(plaintext));
        }
    }
    audit_verifies(&cluster, 0);

    // The killed node starts again on the same database and serves what the others wrote.
    cluster.start_node(1);
    let client = cluster.client(1);
    let (status, body) = client.get_key(&acked_keys[0]);
    assert_eq!(status, 200, "{body}");
}
