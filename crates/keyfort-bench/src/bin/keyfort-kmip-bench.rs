//! `keyfort-kmip-bench`: the KMIP benchmark behind `cargo xtask bench kmip` (KMIP issue,
//! "Benchmark"). Drives two KMIP servers with the same client, side by side in one run:
//! Keyfort (`keyfort server --dev`) and `pykmip-server`, over mutual TLS with one connection per
//! client and many requests per connection, KMIP 1.2:
//!
//! * Create (AES-256) + Get of the new key, and
//! * Encrypt (AES-CBC, PKCS#5 padding, a 64-byte message) with an active key,
//!
//! at each concurrency (default 1 and 16), rounds alternating between the servers, the median
//! round reported with Keyfort's ratio to pykmip-server (goal: at least 50×).

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use keyfort_kmip::message::Struct;
use keyfort_kmip::ttlv::{HEADER_LEN, Item, Limits, Tag, Value, decode, encode, frame_len};
use keyfort_kmip::{Operation, ResultStatus};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

#[path = "../runtime.rs"]
mod runtime;

#[derive(Debug, Parser)]
#[command(
    name = "keyfort-kmip-bench",
    about = "KMIP benchmark: Keyfort vs pykmip-server"
)]
struct Args {
    /// Keyfort's KMIP address.
    #[arg(long)]
    keyfort: SocketAddr,
    /// pykmip-server's address.
    #[arg(long)]
    pykmip: SocketAddr,
    /// CA certificate both servers' certificates chain to (PEM).
    #[arg(long)]
    ca: PathBuf,
    /// Client certificate (PEM), registered with both servers.
    #[arg(long)]
    cert: PathBuf,
    /// Client key (PEM).
    #[arg(long)]
    key: PathBuf,
    /// Concurrent clients (one connection each).
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    clients: Vec<usize>,
    /// Measured seconds per round.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Rounds per target; the median is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Worker threads of the load generator; 1 means a current-thread runtime [default: one
    /// per core, as `keyfort-bench`].
    #[arg(long)]
    client_threads: Option<usize>,
    /// A directory on Keyfort's data file system: the run also times 4 KiB writes flushed with
    /// `fdatasync` there, and prints the bound a durable Create puts on one connection.
    #[arg(long)]
    flush_probe: Option<PathBuf>,
}

/// Median time of a 4 KiB overwrite flushed with `fdatasync` in a file of `dir` (which is
/// removed afterwards).
fn flush_time(dir: &std::path::Path) -> Result<Duration, Error> {
    use std::os::unix::fs::FileExt as _;
    const BLOCKS: u64 = 64;
    let path = dir.join("keyfort-kmip-bench-flush-probe");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)?;
    let block = [0x5a_u8; 4096];
    for i in 0..BLOCKS {
        file.write_all_at(&block, i * 4096)?;
    }
    file.sync_all()?;
    let mut times = Vec::with_capacity(200);
    for i in 0..200 {
        let start = Instant::now();
        file.write_all_at(&block, (i % BLOCKS) * 4096)?;
        file.sync_data()?;
        times.push(start.elapsed());
    }
    drop(file);
    std::fs::remove_file(&path)?;
    times.sort();
    Ok(times[times.len() / 2])
}

type Error = Box<dyn std::error::Error + Send + Sync>;

fn st(tag: Tag, items: Vec<Item>) -> Item {
    Item::new(tag, Value::Structure(items))
}

fn attr(name: &str, value: Value) -> Item {
    st(
        Tag::ATTRIBUTE,
        vec![
            Item::new(Tag::ATTRIBUTE_NAME, Value::TextString(name.into())),
            Item::new(Tag::ATTRIBUTE_VALUE, value),
        ],
    )
}

fn request(op: Operation, payload: Vec<Item>) -> Vec<u8> {
    let header = st(
        Tag::REQUEST_HEADER,
        vec![
            st(
                Tag::PROTOCOL_VERSION,
                vec![
                    Item::new(Tag::PROTOCOL_VERSION_MAJOR, Value::Integer(1)),
                    Item::new(Tag::PROTOCOL_VERSION_MINOR, Value::Integer(2)),
                ],
            ),
            Item::new(Tag::BATCH_COUNT, Value::Integer(1)),
        ],
    );
    let item = st(
        Tag::BATCH_ITEM,
        vec![
            Item::new(Tag::OPERATION, Value::Enumeration(op.0)),
            st(Tag::REQUEST_PAYLOAD, payload),
        ],
    );
    encode(&st(Tag::REQUEST_MESSAGE, vec![header, item]))
}

fn create() -> Vec<u8> {
    request(
        Operation::CREATE,
        vec![
            Item::new(Tag::OBJECT_TYPE, Value::Enumeration(2)),
            st(
                Tag::TEMPLATE_ATTRIBUTE,
                vec![
                    attr("Cryptographic Algorithm", Value::Enumeration(3)),
                    attr("Cryptographic Length", Value::Integer(256)),
                    attr("Cryptographic Usage Mask", Value::Integer(0x0C)),
                ],
            ),
        ],
    )
}

fn with_uid(op: Operation, uid: &str, mut rest: Vec<Item>) -> Vec<u8> {
    let mut payload = vec![Item::new(
        Tag::UNIQUE_IDENTIFIER,
        Value::TextString(uid.into()),
    )];
    payload.append(&mut rest);
    request(op, payload)
}

fn encrypt(uid: &str) -> Vec<u8> {
    with_uid(
        Operation::ENCRYPT,
        uid,
        vec![
            st(
                Tag::CRYPTOGRAPHIC_PARAMETERS,
                vec![
                    Item::new(Tag::BLOCK_CIPHER_MODE, Value::Enumeration(1)),
                    Item::new(Tag::PADDING_METHOD, Value::Enumeration(3)),
                    Item::new(Tag::CRYPTOGRAPHIC_ALGORITHM, Value::Enumeration(3)),
                ],
            ),
            Item::new(Tag::DATA, Value::ByteString(vec![0x61; 64])),
            Item::new(Tag::IV_COUNTER_NONCE, Value::ByteString(vec![0x07; 16])),
        ],
    )
}

struct Conn(TlsStream<TcpStream>);

impl Conn {
    async fn open(addr: SocketAddr, tls: &Arc<rustls::ClientConfig>) -> Result<Conn, Error> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let stream = TlsConnector::from(tls.clone())
            .connect(ServerName::try_from("localhost")?, tcp)
            .await?;
        Ok(Conn(stream))
    }

    /// One request; the successful response payload's Unique Identifier, if any.
    async fn call(&mut self, bytes: &[u8]) -> Result<Option<String>, Error> {
        self.0.write_all(bytes).await?;
        let mut header = [0u8; HEADER_LEN];
        self.0.read_exact(&mut header).await?;
        let len = frame_len(&header).ok_or("bad response frame")?;
        let mut buf = vec![0u8; len];
        buf[..HEADER_LEN].copy_from_slice(&header);
        self.0.read_exact(&mut buf[HEADER_LEN..]).await?;
        let msg = decode(&buf, &Limits::default())?;
        let msg = Struct::of(&msg).map_err(|e| e.message)?;
        let item = msg
            .child(Tag::BATCH_ITEM)
            .map_err(|e| e.message)?
            .ok_or("no batch item")?;
        let status = item
            .enumeration(Tag::RESULT_STATUS)
            .map_err(|e| e.message)?;
        if status != ResultStatus::SUCCESS.0 {
            let message = item
                .opt_text(Tag::RESULT_MESSAGE)
                .ok()
                .flatten()
                .unwrap_or("");
            return Err(format!("operation failed: {message}").into());
        }
        let payload = item.child(Tag::RESPONSE_PAYLOAD).map_err(|e| e.message)?;
        Ok(payload
            .and_then(|p| p.opt_text(Tag::UNIQUE_IDENTIFIER).ok().flatten())
            .map(str::to_owned))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    CreateGet,
    Encrypt,
}

/// Operations per second of `clients` connections for `duration`.
async fn round(
    addr: SocketAddr,
    tls: &Arc<rustls::ClientConfig>,
    op: Op,
    clients: usize,
    duration: Duration,
    key: &str,
) -> Result<f64, Error> {
    let mut conns = Vec::new();
    for _ in 0..clients {
        conns.push(Conn::open(addr, tls).await?);
    }
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for mut conn in conns {
        let key = key.to_owned();
        tasks.push(tokio::spawn(async move {
            let encrypt = encrypt(&key);
            let create = create();
            let mut n = 0u64;
            while Instant::now() < deadline {
                match op {
                    Op::CreateGet => {
                        let uid = conn.call(&create).await?.ok_or("no identifier")?;
                        conn.call(&with_uid(Operation::GET, &uid, vec![])).await?;
                    }
                    Op::Encrypt => {
                        conn.call(&encrypt).await?;
                    }
                }
                n += 1;
            }
            Ok::<u64, Error>(n)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

fn tls_config(args: &Args) -> Result<Arc<rustls::ClientConfig>, Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&args.ca)? {
        roots.add(c?)?;
    }
    let chain = CertificateDer::pem_file_iter(&args.cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(&args.key)?;
    Ok(Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)?,
    ))
}

async fn active_key(addr: SocketAddr, tls: &Arc<rustls::ClientConfig>) -> Result<String, Error> {
    let mut conn = Conn::open(addr, tls).await?;
    let uid = conn.call(&create()).await?.ok_or("no identifier")?;
    conn.call(&with_uid(Operation::ACTIVATE, &uid, vec![]))
        .await?;
    conn.call(&encrypt(&uid)).await?;
    Ok(uid)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

async fn run(args: Args) -> Result<(), Error> {
    let tls = tls_config(&args)?;
    let duration = Duration::from_secs_f64(args.duration.max(0.2));
    let targets = [("keyfort", args.keyfort), ("pykmip-server", args.pykmip)];
    let mut keys = Vec::new();
    for (_, addr) in targets {
        keys.push(active_key(addr, &tls).await?);
    }
    println!(
        "KMIP 1.2 over mutual TLS, one connection per client, load generator on {} thread(s); \
         median of {} rounds of {:.1} s",
        runtime::threads(args.client_threads),
        args.rounds,
        args.duration
    );
    println!(
        "{:<16} {:>7} {:>14} {:>16} {:>8}",
        "operation", "clients", "keyfort ops/s", "pykmip ops/s", "ratio"
    );
    // (operation, clients) -> (keyfort, pykmip-server) ops/s.
    let mut rates = Vec::new();
    for (op, name) in [(Op::CreateGet, "create+get"), (Op::Encrypt, "encrypt")] {
        for &clients in &args.clients {
            let mut results = [Vec::new(), Vec::new()];
            for _ in 0..args.rounds.max(1) {
                for (i, (_, addr)) in targets.iter().enumerate() {
                    results[i].push(round(*addr, &tls, op, clients, duration, &keys[i]).await?);
                }
            }
            let [k, p] = results.map(median);
            let ratio = if p > 0.0 { k / p } else { f64::INFINITY };
            println!("{name:<16} {clients:>7} {k:>14.1} {p:>16.1} {ratio:>7.1}x");
            rates.push(((op, clients), (k, p)));
        }
    }
    println!("goal: keyfort at least 50x pykmip-server");
    if let Some(dir) = &args.flush_probe {
        let flush = flush_time(dir)?;
        let rate = |op: Op| {
            rates
                .iter()
                .find(|((o, c), _)| *o == op && *c == 1)
                .map(|(_, r)| *r)
        };
        println!(
            "a 4 KiB write flushed with fdatasync in {}: {:.0} us (median of 200)",
            dir.display(),
            flush.as_secs_f64() * 1e6
        );
        // Every Create is answered once its commit is flushed; one connection's Create+Get is
        // then at least that flush plus two request round trips, none shorter than an Encrypt's.
        if let (Some((encrypt, _)), Some((_, pykmip))) = (rate(Op::Encrypt), rate(Op::CreateGet))
            && encrypt > 0.0
            && pykmip > 0.0
        {
            let bound = 1.0 / (flush.as_secs_f64() + 2.0 / encrypt);
            println!(
                "so one connection's durable create+get is at most {bound:.0}/s here \
                 (one flush and two Encrypt round trips) = {:.1}x pykmip-server",
                bound / pykmip
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match runtime::build(runtime::threads(args.client_threads)) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keyfort-kmip-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keyfort-kmip-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
