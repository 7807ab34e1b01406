//! Several-node mode (`--cluster-dev-json`): wrap throughput and key creation rate on 1, 2, ...
//! nodes sharing one PostgreSQL database, each count of nodes loaded round-robin by the same
//! clients, and one node on SQLite against one node on PostgreSQL, as ratios of the same run.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use crate::Plan;
use crate::error::BenchError;
use crate::load;
use crate::ops::Op;
use crate::setup;

/// One measured configuration: a label and its median wrap and creation rates.
struct Row {
    label: String,
    wrap: f64,
    create: f64,
}

pub async fn run(
    sqlite_dev_json: &Path,
    nodes: &[PathBuf],
    plan: &Plan,
    args: &crate::Args,
) -> Result<(), BenchError> {
    let sqlite = setup::keyfort(sqlite_dev_json).await?;
    let mut pg = Vec::with_capacity(nodes.len());
    for dev_json in nodes {
        pg.push(setup::keyfort(dev_json).await?);
    }
    let clients = args.clients.iter().copied().max().unwrap_or(64);
    println!("Keyfort several-node benchmark");
    println!(
        "  {} node(s) on one PostgreSQL, one node on SQLite; wrap with {clients} clients, key \
         creation with {} clients, spread round-robin over the nodes of each row",
        nodes.len(),
        args.create_clients
    );
    println!(
        "  rounds: {} per row, {:.1} s each after {:.1} s warm-up; median round shown",
        plan.rounds,
        plan.window.as_secs_f64(),
        plan.warmup.as_secs_f64()
    );
    println!(
        "  every node, PostgreSQL and this load generator share the machine's {} core(s)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let mut wrap_ops = Vec::new();
    let mut create_ops = Vec::new();
    for k in pg {
        wrap_ops.push(k.wrap);
        create_ops.push(k.create);
    }
    let mut rows = Vec::new();
    let sqlite_wrap = Arc::new(Op::Http(sqlite.wrap));
    let sqlite_create = Arc::new(Op::Http(sqlite.create));
    rows.push(Row {
        label: "1 node, SQLite".to_owned(),
        wrap: median(plan, clients, &sqlite_wrap).await?,
        create: median(plan, args.create_clients, &sqlite_create).await?,
    });
    // Row n uses the first n nodes; the ops move from one row to the next.
    let mut wrap_iter = wrap_ops.into_iter();
    let mut create_iter = create_ops.into_iter();
    let mut wraps = Vec::new();
    let mut creates = Vec::new();
    for n in 1..=nodes.len() {
        if let (Some(w), Some(c)) = (wrap_iter.next(), create_iter.next()) {
            wraps.push(w);
            creates.push(c);
        }
        let wrap = Arc::new(Op::RoundRobin(
            std::mem::take(&mut wraps),
            AtomicU64::new(0),
        ));
        let create = Arc::new(Op::RoundRobin(
            std::mem::take(&mut creates),
            AtomicU64::new(0),
        ));
        rows.push(Row {
            label: format!("{n} node(s), PostgreSQL"),
            wrap: median(plan, clients, &wrap).await?,
            create: median(plan, args.create_clients, &create).await?,
        });
        // Take the ops back for the next row.
        if let (Ok(Op::RoundRobin(w, _)), Ok(Op::RoundRobin(c, _))) =
            (Arc::try_unwrap(wrap), Arc::try_unwrap(create))
        {
            wraps = w;
            creates = c;
        }
    }

    println!();
    println!(
        "  {:<24} {:>12} {:>10} {:>14} {:>10}",
        "", "wrap/s", "× 1 pg", "creates/s", "× 1 pg"
    );
    let base = rows.get(1).map_or((1.0, 1.0), |r| (r.wrap, r.create));
    for r in &rows {
        println!(
            "  {:<24} {:>12.0} {:>10.2} {:>14.0} {:>10.2}",
            r.label,
            r.wrap,
            ratio(r.wrap, base.0),
            r.create,
            ratio(r.create, base.1)
        );
    }
    if let (Some(s), Some(p)) = (rows.first(), rows.get(1)) {
        println!();
        println!(
            "  one node, PostgreSQL / SQLite: wrap {:.2}, key creation {:.2}",
            ratio(p.wrap, s.wrap),
            ratio(p.create, s.create)
        );
    }
    Ok(())
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

/// The median ops/s of `plan.rounds` rounds; an error if a round had no success.
async fn median(plan: &Plan, clients: usize, op: &Arc<Op>) -> Result<f64, BenchError> {
    let mut rates = Vec::with_capacity(plan.rounds);
    for _ in 0..plan.rounds {
        let round = load::run(Arc::clone(op), clients, plan.warmup, plan.window).await;
        if round.ok == 0 {
            return Err(BenchError::RequestsFailed {
                count: round.error_count(),
            });
        }
        eprintln!("  {clients:>3} clients: {:>9.0}/s", round.ops_per_sec());
        rates.push(round.ops_per_sec());
    }
    rates.sort_by(f64::total_cmp);
    Ok(rates[rates.len() / 2])
}
