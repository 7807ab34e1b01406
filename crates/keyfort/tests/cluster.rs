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
    /// Per node, a config file with its `[cluster]` section (node-to-node channel), if any.
    configs: Vec<Option<std::path::PathBuf>>,
}

impl Cluster {
    fn start(tag: &str, n: usize) -> Cluster {
        Cluster::start_with(tag, n, false)
    }

    /// `peered`: the nodes also talk to each other over the mutual-TLS channel.
    fn start_with(tag: &str, n: usize, peered: bool) -> Cluster {
        let url = fresh_database(tag);
        let dir = tempfile::tempdir().unwrap();
        let configs = if peered {
            peer_configs(dir.path(), n)
        } else {
            vec![None; n]
        };
        let mut cluster = Cluster {
            dir,
            url,
            nodes: Vec::new(),
            instance: String::new(),
            configs,
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
        let mut extra = vec!["--store".to_owned(), self.url.clone()];
        if let Some(config) = &self.configs[i] {
            extra.push("--config".to_owned());
            extra.push(config.to_str().unwrap().to_owned());
        }
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let server = Server::start_with(&data, self.dir.path(), &tag, &NODE_ENV, &extra);
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

/// A cluster CA, a certificate per node (server and client authentication, for 127.0.0.1), free
/// ports, and per node a config file naming the others as peers.
fn peer_configs(dir: &std::path::Path, n: usize) -> Vec<Option<std::path::PathBuf>> {
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let ca_file = dir.join("cluster-ca.pem");
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();
    let ports: Vec<u16> = (0..n)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        })
        .collect();
    (0..n)
        .map(|i| {
            let key = KeyPair::generate().unwrap();
            let mut params =
                CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                    .unwrap();
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let cert = params.signed_by(&key, &issuer).unwrap();
            let cert_file = dir.join(format!("node{i}-cert.pem"));
            let key_file = dir.join(format!("node{i}-key.pem"));
            std::fs::write(&cert_file, cert.pem()).unwrap();
            std::fs::write(&key_file, key.serialize_pem()).unwrap();
            let peers: Vec<String> = (0..n)
                .filter(|&j| j != i)
                .map(|j| format!("\"127.0.0.1:{}\"", ports[j]))
                .collect();
            let config = dir.join(format!("node{i}.toml"));
            std::fs::write(
                &config,
                format!(
                    "[cluster]\nlisten = \"127.0.0.1:{}\"\nca_file = {:?}\ncert_file = {:?}\n\
                     key_file = {:?}\npeers = [{}]\n",
                    ports[i],
                    ca_file,
                    cert_file,
                    key_file,
                    peers.join(", ")
                ),
            )
            .unwrap();
            Some(config)
        })
        .collect()
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

/// The node-to-node channel: a seal on one node seals the others; a node that unseals hands the
/// master key to the others; a node starting without any way to unseal gets it from a peer.
#[test]
fn unseal_and_seal_reach_every_node_over_the_cluster_channel() {
    let mut cluster = Cluster::start_with("peers", 3, true);
    let id = cluster.instance.clone();
    let state = |cluster: &Cluster, node: usize| -> String {
        let c = cluster.client(node);
        let (status, body) = c.call(reqwest::Method::GET, &c.admin(""), None);
        assert_eq!(status, 200, "{body}");
        body["state"].as_str().unwrap().to_owned()
    };
    let wait_state = |cluster: &Cluster, node: usize, want: &str| {
        let started = Instant::now();
        while state(cluster, node) != want {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "node {node} not {want}\n{}",
                cluster.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let (status, key) = cluster.client(0).create_key("k");
    assert_eq!(status, 201, "{key}");
    let key_id = key["id"].as_str().unwrap().to_owned();
    for node in 0..3 {
        assert_eq!(state(&cluster, node), "unsealed");
    }

    // Sealed on node 0: sealed everywhere.
    let c0 = cluster.client(0);
    let (status, body) = c0.call(reqwest::Method::POST, &c0.admin("/seal"), Some(&json!({})));
    assert_eq!(status, 200, "{body}");
    for node in 1..3 {
        wait_state(&cluster, node, "sealed");
        let (status, _) = cluster.client(node).wrap(&key_id, &B64.encode("x"));
        assert_ne!(status, 200);
    }

    // Node 0 unseals again (from its dev key file, at start): every node is unsealed.
    cluster.nodes[0].terminate();
    cluster.start_node(0);
    for node in 0..3 {
        wait_state(&cluster, node, "unsealed");
        let (status, body) = cluster.client(node).wrap(&key_id, &B64.encode("x"));
        assert_eq!(status, 200, "{body}");
    }

    // A node restarted without its key file is unsealed by its peers before it serves.
    cluster.nodes[2].terminate();
    std::fs::remove_file(cluster.node_dir(2).join("dev-master.key")).unwrap();
    cluster.start_node(2);
    assert_eq!(state(&cluster, 2), "unsealed", "{}", cluster.logs());
    let (status, body) = cluster.client(2).wrap(&key_id, &B64.encode("y"));
    assert_eq!(status, 200, "{body}");

    // Without a certificate of the cluster CA, no master key: neither without a client
    // certificate, nor with one from another CA.
    let config = std::fs::read_to_string(cluster.configs[1].as_ref().unwrap()).unwrap();
    let port: u16 = config
        .lines()
        .find_map(|l| l.strip_prefix("listen = \"127.0.0.1:"))
        .and_then(|p| p.trim_end_matches('"').parse().ok())
        .unwrap();
    let ca = cluster.dir.path().join("cluster-ca.pem");
    for with_cert in [false, true] {
        let got = fetch_as_stranger(port, &ca, with_cert, &id);
        assert!(
            got.as_ref().map_or(true, |bytes| bytes.is_empty()),
            "a stranger got an answer: {got:?}"
        );
    }
}

/// Asks a node's peer port for a master key as a stranger: trusting the cluster CA, but with no
/// client certificate, or one of another CA. The bytes answered, if any.
fn fetch_as_stranger(
    port: u16,
    ca_file: &std::path::Path,
    with_cert: bool,
    instance: &str,
) -> Result<Vec<u8>, String> {
    use rustls::pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca_file).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = if with_cert {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["stranger".to_owned()]).unwrap();
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.self_signed(&key).unwrap();
        let key_der =
            rustls::pki_types::PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes())
                .unwrap();
        builder
            .with_client_auth_cert(vec![cert.der().clone()], key_der)
            .unwrap()
    } else {
        builder.with_no_client_auth()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| e.to_string())?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let body = serde_json::to_vec(&json!({"op": "fetch", "instance": instance})).unwrap();
        tls.write_all(&(body.len() as u32).to_be_bytes())
            .await
            .map_err(|e| e.to_string())?;
        tls.write_all(&body).await.map_err(|e| e.to_string())?;
        tls.flush().await.map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        tls.read_to_end(&mut answer)
            .await
            .map_err(|e| e.to_string())?;
        Ok(answer)
    })
}
