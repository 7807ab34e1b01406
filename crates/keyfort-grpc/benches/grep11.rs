#![allow(clippy::unwrap_used)]
//! `cargo bench -p keyfort-grpc [-- SECONDS] [NAME]`: Sign (RSA-2048 PSS, ECDSA P-256) and Encrypt
//! (AES-GCM, 4 KiB) in operations per second, through the GREP11 service over TLS with 1 and 16
//! concurrent callers, side by side with the same `keyfort-crypto` primitive called in-process
//! by as many threads, and the ratio gRPC / in-process. Everything runs on this machine
//! (loopback), bounded by time.
//!
//! The ratio compares wall-clock throughput, the figure of an otherwise idle machine. On a busy
//! machine the 16 in-process threads win a larger share of the CPUs than the runtime's few
//! worker threads do, so the run also prints the throughput per CPU-second this process used
//! (`/proc/self/stat`) in each mode and their ratio ("CPU ratio"), which such load does not
//! skew. With NAME, only the operations whose name contains it (for
//! example `P-256`).
//!
//! The run first measures the transport alone: `GetMechanismInfo`, which runs no cryptography,
//! through the same client, TLS connections and service (authentication included). If that
//! makes `F` calls a second and the primitive alone makes `R`, a call that does both costs at
//! least `1/F + 1/R` seconds of the same cores (or of one caller's time), so the ratio cannot
//! pass `F / (F + R)`: the "bound" column.
//!
//! The server side is set up as `keyfort server` runs it: the multi-thread runtime, mimalloc,
//! a log subscriber at the default level, and the accept loop's TLS, HTTP/2 and coalesced
//! writes. The callers share a client's 4 channels (4 TLS connections).

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use keyfort_crypto::{aes, ec, rsa};
use keyfort_grpc::proto;

/// As `keyfort server`: small allocations freed on other threads.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CALLERS: [usize; 2] = [1, 16];

/// One in-process operation.
type LocalOp = Arc<dyn Fn() + Send + Sync>;

/// CPU time (user + system) this process has used, in seconds; Linux `/proc/self/stat`.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    // USER_HZ, 100 on Linux.
    ticks / 100.0
}

/// Operations per second of wall-clock time and per CPU-second of this process.
struct Rate {
    wall: f64,
    cpu: f64,
}

/// Runs `op` on `threads` OS threads for `secs`.
fn in_process(threads: usize, secs: f64, op: LocalOp) -> Rate {
    let cpu = cpu_seconds();
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (stop, count, op) = (stop.clone(), count.clone(), op.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    op();
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    rate(count.load(Ordering::Relaxed), start, cpu)
}

fn rate(count: u64, start: Instant, cpu: f64) -> Rate {
    Rate {
        wall: count as f64 / start.elapsed().as_secs_f64(),
        cpu: count as f64 / (cpu_seconds() - cpu).max(0.01),
    }
}

#[derive(Clone)]
enum Call {
    Sign(Option<proto::Mechanism>, Vec<u8>),
    Encrypt(Vec<u8>),
    /// `GetMechanismInfo`: the transport and the service without cryptography.
    Info,
}

/// Runs `callers` concurrent gRPC callers (over 4 TLS connections) for `secs`.
async fn over_grpc(clients: &[Client], callers: usize, secs: f64, call: Call) -> Rate {
    let cpu = cpu_seconds();
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|i| {
            let mut c = clients[i % clients.len()].clone();
            let (stop, count, call) = (stop.clone(), count.clone(), call.clone());
            tokio::spawn(async move {
                let data = vec![0x5a; 4096];
                while !stop.load(Ordering::Relaxed) {
                    match &call {
                        Call::Sign(m, key) => {
                            c.sign_single(proto::SignSingleRequest {
                                mech: m.clone(),
                                priv_key: kb(key),
                                data: b"benchmark message".to_vec(),
                                ..Default::default()
                            })
                            .await
                            .unwrap();
                        }
                        Call::Encrypt(key) => {
                            c.encrypt_single(proto::EncryptSingleRequest {
                                mech: mech_b(0x1087, &[1; 12]),
                                key: kb(key),
                                plain: data.clone(),
                                ..Default::default()
                            })
                            .await
                            .unwrap();
                        }
                        Call::Info => {
                            // CKM_ECDSA.
                            c.get_mechanism_info(proto::GetMechanismInfoRequest { mech: 0x1041 })
                                .await
                                .unwrap();
                        }
                    }
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    rate(count.load(Ordering::Relaxed), start, cpu)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let secs: f64 = args.iter().find_map(|a| a.parse().ok()).unwrap_or(3.0);
    // `cargo bench` passes `--bench`; anything else that is not a number selects operations.
    let only: Vec<&String> = args
        .iter()
        .filter(|a| !a.starts_with("--") && a.parse::<f64>().is_err())
        .collect();
    // The binary's default log filter: h2's and hyper's trace spans cost nothing then.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let server = Server::start().await;
        let mut clients = Vec::new();
        for _ in 0..4 {
            clients.push(server.client().await);
        }
        let c = &mut clients[0];
        let rsa_blob = c
            .generate_key_pair(proto::GenerateKeyPairRequest {
                mech: mech(0x0),
                pub_key_template: template(&[(0x121, int(2048))]),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .priv_key_bytes;
        let p256 = [0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
        let ec_blob = c
            .generate_key_pair(proto::GenerateKeyPairRequest {
                mech: mech(0x1040),
                pub_key_template: template(&[(0x180, b(&p256))]),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .priv_key_bytes;
        let aes_blob = c
            .generate_key(proto::GenerateKeyRequest {
                mech: mech(0x1080),
                template: template(&[(0x161, int(32))]),
            })
            .await
            .unwrap()
            .into_inner()
            .key_bytes;

        let rsa_key = Arc::new(rsa::PrivateKey::generate(rsa::KeySize::Rsa2048).unwrap());
        let ec_key = Arc::new(ec::SigningKey::generate(ec::Curve::P256).unwrap());
        let aes_key = Arc::new(vec![7u8; 32]);
        let local: [(&str, LocalOp, Call); 3] = [
            (
                "Sign RSA-2048 PSS SHA-256",
                Arc::new(move || {
                    rsa_key
                        .sign(
                            rsa::SignatureScheme::Pss(rsa::Hash::Sha256),
                            b"benchmark message",
                        )
                        .unwrap();
                }),
                Call::Sign(pss(0x43, 0x250, 2, 32), rsa_blob),
            ),
            (
                "Sign ECDSA P-256 SHA-256",
                Arc::new(move || {
                    ec_key
                        .sign(
                            keyfort_crypto::digest::Algorithm::Sha256,
                            ec::SignatureFormat::Fixed,
                            b"benchmark message",
                        )
                        .unwrap();
                }),
                Call::Sign(mech(0x1044), ec_blob),
            ),
            (
                "Encrypt AES-256-GCM 4 KiB",
                Arc::new(move || {
                    aes::gcm_encrypt(&aes_key, &[1; 12], &[], &[0x5a; 4096]).unwrap();
                }),
                Call::Encrypt(aes_blob),
            ),
        ];
        let mut floor = Vec::new();
        for callers in CALLERS {
            floor.push(over_grpc(&clients, callers, secs, Call::Info).await.wall);
        }
        println!(
            "transport alone (GetMechanismInfo): {}",
            CALLERS
                .iter()
                .zip(&floor)
                .map(|(c, f)| format!("{f:.0} calls/s with {c} caller(s)"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!(
            "{:<28} {:>7} {:>11} {:>14} {:>6} {:>6}  {:>11} {:>14} {:>9}",
            "operation",
            "callers",
            "gRPC ops/s",
            "in-proc ops/s",
            "ratio",
            "bound",
            "gRPC /CPU-s",
            "in-proc /CPU-s",
            "CPU ratio"
        );
        for (name, op, call) in local {
            if !only.is_empty() && !only.iter().any(|o| name.contains(o.as_str())) {
                continue;
            }
            for (callers, floor) in CALLERS.into_iter().zip(&floor) {
                let grpc = over_grpc(&clients, callers, secs, call.clone()).await;
                let op = op.clone();
                let inproc = tokio::task::spawn_blocking(move || in_process(callers, secs, op))
                    .await
                    .unwrap();
                println!(
                    "{name:<28} {callers:>7} {:>11.0} {:>14.0} {:>6.2} {:>6.2}  {:>11.0} {:>14.0} {:>9.2}",
                    grpc.wall,
                    inproc.wall,
                    grpc.wall / inproc.wall,
                    floor / (floor + inproc.wall),
                    grpc.cpu,
                    inproc.cpu,
                    grpc.cpu / inproc.cpu
                );
            }
        }
    });
}
