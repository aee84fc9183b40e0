//! `mast-load`: command-line front end of the load harness. See perf/README.md.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use mast_load::api::{EtcdApi, KvApi, MastApi};
use mast_load::client::{run, RunConfig, RunResult, TargetMode};
use mast_load::cubefs::{CubefsOp, CubefsWorkloadSpec};
use mast_load::http::RequestTemplate;
use mast_load::milvus::{MilvusOp, MilvusWorkloadSpec};
use mast_load::plot;
use mast_load::report::{human_us, render_text, summarize, write_hlog, ItemsSummary};
use mast_load::stats::IntervalStats;
use mast_load::workload::{
    BatchKind, BatchWorkloadSpec, KeyChoice, KvWorkloadSpec, Mix, TemplateWorkloadSpec,
    WorkloadFactory,
};

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum WorkloadArg {
    /// Any request from --method/--path/--header/--body (placeholders allowed).
    Http,
    /// KV writes.
    KvPut,
    /// KV linearizable reads.
    KvGet,
    /// KV reads and writes (--read-ratio).
    KvMixed,
    /// KV compare-and-swap on few keys (contention).
    KvCas,
    /// Timestamps: POST /tso?count=N, 200 {"timestamp":T,"count":N}.
    Tso,
    /// Unique ids: POST /ids?count=N, 200 {"id":FIRST,"count":N}.
    Ids,
    /// Milvus DDL: collections/create then collections/drop of a new name, alternately.
    MilvusCreateDrop,
    /// Milvus DDL: partitions/create of new partitions.
    MilvusPartition,
    /// Milvus: collections/describe of one collection per connection.
    MilvusDescribe,
    /// CubeFS: /admin/createVol of a new small volume (3 data partitions) per request.
    CubefsCreateVol,
    /// CubeFS: /client/partitions of --cubefs-vol.
    CubefsClientPartitions,
    /// CubeFS: /dataPartition/get of --cubefs-vol's partitions in turn.
    CubefsDpGet,
    /// Milvus: collections/has of one collection per connection.
    MilvusHas,
    /// Milvus: collections/list of the database.
    MilvusList,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum ApiArg {
    /// mast: PUT/GET /kv/{key}, If-Match for CAS.
    Mast,
    /// etcd's v3 JSON gateway: POST /v3/kv/put|range|txn, base64 keys and values.
    Etcd,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum TargetModeArg {
    /// Connection i talks to target i % n.
    Spread,
    /// Start at the first target, follow 307/308 leader hints.
    Leader,
}

/// HTTP/1.1 load generator for mast, etcd and nginx: closed or open loop (coordinated omission
/// corrected), HdrHistogram percentiles, JSON, .hlog and PNG output.
#[derive(Debug, Parser)]
#[command(name = "mast-load", version)]
struct Args {
    /// Server address ip:port (repeat for several).
    #[arg(long = "target", required = true)]
    targets: Vec<String>,
    /// How connections pick a target.
    #[arg(long, value_enum, default_value = "spread")]
    target_mode: TargetModeArg,
    /// What to send.
    #[arg(long, value_enum, default_value = "http")]
    workload: WorkloadArg,
    /// KV dialect of the server.
    #[arg(long, value_enum, default_value = "mast")]
    api: ApiArg,
    /// Connections.
    #[arg(short = 'c', long, default_value_t = 64)]
    connections: usize,
    /// Client threads (one monoio runtime each).
    #[arg(short = 't', long, default_value_t = 1)]
    threads: usize,
    /// CPUs to pin client threads to, e.g. "1" or "2,3".
    #[arg(long, value_delimiter = ',')]
    cpus: Vec<usize>,
    /// Requests in flight per connection.
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// Open loop: total requests per second (latency measured from the intended send time).
    /// Without it: closed loop.
    #[arg(long)]
    rate: Option<f64>,
    /// Warm-up before measuring (e.g. 2s, 500ms).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,
    /// Measured time.
    #[arg(short = 'd', long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Stop after this many requests in total.
    #[arg(long)]
    requests: Option<u64>,
    /// Key set size (kv-get, kv-mixed, kv-cas; kv-put and http use distinct keys without it).
    #[arg(long)]
    keys: Option<u64>,
    /// Size of the hot key subset.
    #[arg(long, default_value_t = 0)]
    hot_keys: u64,
    /// Share of requests that go to the hot subset.
    #[arg(long, default_value_t = 0.0)]
    hot_fraction: f64,
    /// Values per request (tso: 1..=262144, ids: 1..=1000000).
    #[arg(long, default_value_t = 1)]
    count: u64,
    /// Share of reads in kv-mixed.
    #[arg(long, default_value_t = 0.9)]
    read_ratio: f64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 64)]
    value_size: usize,
    /// Prefix of every key.
    #[arg(long, default_value = "k")]
    key_prefix: String,
    /// The volume the cubefs-client-partitions and cubefs-dp-get workloads read.
    #[arg(long, default_value = "perf1")]
    cubefs_vol: String,
    /// The cubefs-create-vol workload's /admin/createVol query after the name.
    #[arg(long, default_value = "owner=perf&capacity=10&dpCount=3")]
    cubefs_create_args: String,
    /// Write every key of the key set once before the run (not measured).
    #[arg(long)]
    preload: bool,
    /// Request method (http workload).
    #[arg(long, default_value = "GET")]
    method: String,
    /// Request path (http workload); placeholders {key} {key_b64} {value} {value_b64} {seq} {conn}.
    #[arg(long, default_value = "/")]
    path: String,
    /// Extra header "Name: value" (http workload; repeatable).
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Request body (http workload); placeholders as in --path.
    #[arg(long)]
    body: Option<String>,
    /// Limit on opening a connection.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    connect_timeout: Duration,
    /// Limit on waiting for a response.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    response_timeout: Duration,
    /// Time-series interval (progress line, .hlog, throughput plot).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    interval: Duration,
    /// Largest response accepted, in bytes.
    #[arg(long, default_value_t = 4 << 20)]
    response_bytes_max: usize,
    /// Seed of the random key choices.
    #[arg(long, default_value_t = 0x6d61_7374)]
    seed: u64,
    /// Name shown in reports and plot titles.
    #[arg(long)]
    label: Option<String>,
    /// Write the JSON report here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the HdrHistogram interval log here.
    #[arg(long)]
    hlog: Option<PathBuf>,
    /// Write PNG plots as PREFIX-latency.png and PREFIX-throughput.png.
    #[arg(long)]
    plots: Option<PathBuf>,
    /// TrueType font for plot text (default: the system's DejaVu Sans).
    #[arg(long)]
    font: Option<PathBuf>,
    /// No progress lines.
    #[arg(short = 'q', long)]
    quiet: bool,
}

/// Longest duration accepted on the command line.
const DURATION_MAX: Duration = Duration::from_secs(24 * 3600);

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1e3,
        "us" | "µs" => n / 1e6,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("bad duration unit in {s:?} (use us, ms, s, m, h)")),
    };
    let d = Duration::try_from_secs_f64(secs).map_err(|e| format!("bad duration {s:?}: {e}"))?;
    if d > DURATION_MAX {
        return Err(format!("duration {s:?} above 24h"));
    }
    Ok(d)
}

fn resolve(targets: &[String]) -> Result<Vec<SocketAddr>, String> {
    let mut out = Vec::new();
    for t in targets {
        let t = t.trim_start_matches("http://").trim_end_matches('/');
        let addr = t
            .to_socket_addrs()
            .map_err(|e| format!("target {t:?}: {e}"))?
            .next()
            .ok_or_else(|| format!("target {t:?} resolves to nothing"))?;
        out.push(addr);
    }
    Ok(out)
}

/// The workload, the key count to preload (if any), and the batch spec of tso / ids.
type Built = (
    Arc<dyn WorkloadFactory>,
    Option<u64>,
    Option<BatchWorkloadSpec>,
);

fn build_workload(args: &Args) -> Result<Built, String> {
    let milvus = match args.workload {
        WorkloadArg::MilvusCreateDrop => Some(MilvusOp::CreateDropPairs),
        WorkloadArg::MilvusPartition => Some(MilvusOp::CreatePartition),
        WorkloadArg::MilvusDescribe => Some(MilvusOp::Describe),
        WorkloadArg::MilvusHas => Some(MilvusOp::Has),
        WorkloadArg::MilvusList => Some(MilvusOp::List),
        _ => None,
    };
    if let Some(op) = milvus {
        let spec = MilvusWorkloadSpec {
            op,
            db: "default".into(),
            prefix: format!("{}{}", args.key_prefix, args.seed),
        };
        return Ok((Arc::new(spec), None, None));
    }
    let cubefs = match args.workload {
        WorkloadArg::CubefsCreateVol => Some(CubefsOp::CreateVol),
        WorkloadArg::CubefsClientPartitions => Some(CubefsOp::ClientPartitions),
        WorkloadArg::CubefsDpGet => Some(CubefsOp::DpGet),
        _ => None,
    };
    if let Some(op) = cubefs {
        let spec = CubefsWorkloadSpec {
            op,
            vol: args.cubefs_vol.clone(),
            prefix: format!("{}{}", args.key_prefix, args.seed),
            create_args: args.cubefs_create_args.clone(),
        };
        return Ok((Arc::new(spec), None, None));
    }
    if let WorkloadArg::Tso | WorkloadArg::Ids = args.workload {
        let spec = BatchWorkloadSpec {
            kind: if args.workload == WorkloadArg::Tso {
                BatchKind::Tso
            } else {
                BatchKind::Ids
            },
            count: args.count,
            // Each request leaves after the previous reply: batches must increase.
            check_order: args.pipeline <= 1,
        };
        spec.validate()?;
        return Ok((Arc::new(spec), None, Some(spec)));
    }
    let keys = match args.keys {
        None => KeyChoice::Distinct,
        Some(keys) => KeyChoice::Set {
            keys,
            hot_keys: args.hot_keys,
            hot_fraction: args.hot_fraction,
        },
    };
    if args.workload == WorkloadArg::Http {
        let template = RequestTemplate::new(
            &args.method,
            &args.path,
            &args.headers,
            args.body.as_deref(),
        )
        .map_err(|e| e.to_string())?;
        if args.value_size > mast_load::workload::VALUE_BYTES_MAX {
            return Err("value size too large".into());
        }
        let spec = TemplateWorkloadSpec {
            template,
            keys,
            value_bytes: args.value_size,
            key_prefix: args.key_prefix.clone(),
            seed: args.seed,
        };
        return Ok((Arc::new(spec), None, None));
    }
    let api: Arc<dyn KvApi> = match args.api {
        ApiArg::Mast => Arc::new(MastApi),
        ApiArg::Etcd => Arc::new(EtcdApi),
    };
    let mix = match args.workload {
        WorkloadArg::KvPut => Mix::Put,
        WorkloadArg::KvGet => Mix::Get,
        WorkloadArg::KvMixed => Mix::Mixed {
            read_ratio: args.read_ratio,
        },
        WorkloadArg::KvCas => Mix::Cas,
        WorkloadArg::Http
        | WorkloadArg::Tso
        | WorkloadArg::Ids
        | WorkloadArg::MilvusCreateDrop
        | WorkloadArg::MilvusPartition
        | WorkloadArg::MilvusDescribe
        | WorkloadArg::CubefsCreateVol
        | WorkloadArg::CubefsClientPartitions
        | WorkloadArg::CubefsDpGet
        | WorkloadArg::MilvusHas
        | WorkloadArg::MilvusList => {
            unreachable!("handled above")
        }
    };
    let keys = match (args.workload, keys) {
        // Reads of distinct never-written keys measure nothing useful: default to a set.
        (WorkloadArg::KvGet | WorkloadArg::KvMixed, KeyChoice::Distinct) => KeyChoice::Set {
            keys: 10_000,
            hot_keys: args.hot_keys.min(10_000),
            hot_fraction: args.hot_fraction,
        },
        (WorkloadArg::KvCas, KeyChoice::Distinct) => KeyChoice::Set {
            keys: 8,
            hot_keys: 0,
            hot_fraction: 0.0,
        },
        (_, k) => k,
    };
    let preload = match (args.preload, keys) {
        (true, KeyChoice::Set { keys, .. }) => Some(keys),
        (true, KeyChoice::Distinct) => return Err("--preload needs --keys".into()),
        (false, _) => None,
    };
    let spec = KvWorkloadSpec {
        api,
        mix,
        keys,
        value_bytes: args.value_size,
        key_prefix: args.key_prefix.clone(),
        seed: args.seed,
    };
    spec.validate()?;
    Ok((Arc::new(spec), preload, None))
}

fn preload(args: &Args, cfg: &RunConfig, keys: u64) -> Result<(), String> {
    let api: Arc<dyn KvApi> = match args.api {
        ApiArg::Mast => Arc::new(MastApi),
        ApiArg::Etcd => Arc::new(EtcdApi),
    };
    let spec = KvWorkloadSpec {
        api,
        mix: Mix::Preload { keys },
        keys: KeyChoice::Distinct,
        value_bytes: args.value_size,
        key_prefix: args.key_prefix.clone(),
        seed: args.seed,
    };
    let pcfg = RunConfig {
        rate: None,
        warmup: Duration::ZERO,
        duration: Duration::from_secs(600),
        requests_max: None,
        ..cfg.clone()
    };
    let r = run(&pcfg, Arc::new(spec), &mut |_| {}).map_err(|e| e.to_string())?;
    let ok = r.total.ops_of(mast_load::stats::OpKind::Put).ok;
    if !args.quiet {
        eprintln!(
            "preload: {ok} of {keys} keys written in {:.1}s ({} errors)",
            r.elapsed.as_secs_f64(),
            r.total.error_total()
        );
    }
    if ok < keys {
        return Err(format!("preload wrote only {ok} of {keys} keys"));
    }
    Ok(())
}

fn progress(iv: &IntervalStats, batch: Option<&BatchWorkloadSpec>) {
    let phase = if iv.warmup { " (warm-up)" } else { "" };
    let items = match batch {
        Some(b) => {
            let secs = iv.length.as_secs_f64().max(1e-9);
            let ok = iv.recorder.ops_of(b.kind.op_kind()).ok;
            format!("  {:>12.0} {}/s", b.items(ok) as f64 / secs, b.kind.unit())
        }
        None => String::new(),
    };
    eprintln!(
        "[{:>6.1}s] {:>10.0} ops/s{items}  p50 {:>8}  p99 {:>8}  max {:>8}  errors {}{phase}",
        (iv.start + iv.length).as_secs_f64(),
        iv.rate(),
        human_us(iv.recorder.latency.value_at_percentile(50.0) as f64 / 1000.0),
        human_us(iv.recorder.latency.value_at_percentile(99.0) as f64 / 1000.0),
        human_us(iv.recorder.latency.max() as f64 / 1000.0),
        iv.recorder.error_total(),
    );
}

fn write_outputs(
    args: &Args,
    label: &str,
    cfg: &RunConfig,
    workload: &str,
    batch: Option<&BatchWorkloadSpec>,
    result: &RunResult,
) -> Result<(), String> {
    let mut summary = summarize(cfg, workload, result);
    summary.items =
        batch.map(|b| ItemsSummary::of(result, b.kind.op_kind(), b.kind.unit(), b.count));
    print!("{}", render_text(&summary));
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&summary).map_err(|e| e.to_string())?;
        std::fs::write(path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if let Some(path) = &args.hlog {
        let file = File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut w = BufWriter::new(file);
        let comment = format!("mast-load {label}: {workload}");
        write_hlog(result, &comment, &mut w)
            .and_then(|_| w.flush())
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if let Some(prefix) = &args.plots {
        let font = plot::load_font(args.font.as_deref());
        if font.is_none() {
            eprintln!("note: no font found (install fonts-dejavu-core or pass --font): plots have no text");
        }
        let with_text = font.is_some();
        let mut lat = prefix.clone().into_os_string();
        lat.push("-latency.png");
        let mut thr = prefix.clone().into_os_string();
        thr.push("-throughput.png");
        plot::plot_percentiles(
            result,
            &format!("{label}: latency by percentile"),
            lat.as_ref(),
            with_text,
        )
        .map_err(|e| e.to_string())?;
        plot::plot_throughput(
            result,
            &format!("{label}: throughput"),
            thr.as_ref(),
            with_text,
        )
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn main_inner() -> Result<(), String> {
    let args = Args::parse();
    let targets = resolve(&args.targets)?;
    let (factory, preload_keys, batch) = build_workload(&args)?;
    let cfg = RunConfig {
        targets,
        target_mode: match args.target_mode {
            TargetModeArg::Spread => TargetMode::Spread,
            TargetModeArg::Leader => TargetMode::Leader,
        },
        connections: args.connections,
        threads: args.threads,
        cpus: args.cpus.clone(),
        pipeline: args.pipeline,
        rate: args.rate,
        warmup: args.warmup,
        duration: args.duration,
        requests_max: args.requests,
        connect_timeout: args.connect_timeout,
        response_timeout: args.response_timeout,
        interval: args.interval,
        response_bytes_max: args.response_bytes_max,
        seed: args.seed,
    };
    cfg.validate().map_err(|e| e.to_string())?;
    if let Some(keys) = preload_keys {
        preload(&args, &cfg, keys)?;
    }
    let workload = factory.describe();
    let label = args.label.clone().unwrap_or_else(|| args.targets.join(","));
    let quiet = args.quiet;
    let result = run(&cfg, factory, &mut |iv| {
        if !quiet {
            progress(iv, batch.as_ref())
        }
    })
    .map_err(|e| e.to_string())?;
    write_outputs(&args, &label, &cfg, &workload, batch.as_ref(), &result)
}

fn main() -> ExitCode {
    match main_inner() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mast-load: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("100h").is_err());
    }

    fn args(extra: &[&str]) -> Args {
        let mut argv = vec!["mast-load", "--target", "127.0.0.1:1"];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv).unwrap()
    }

    #[test]
    fn batch_workloads_from_flags() {
        let (factory, preload, batch) =
            build_workload(&args(&["--workload", "tso", "--count", "1000"])).unwrap();
        assert_eq!(preload, None);
        let batch = batch.unwrap();
        assert_eq!(
            (batch.kind, batch.count, batch.check_order),
            (BatchKind::Tso, 1000, true)
        );
        assert!(factory.describe().contains("/tso?count=1000"));
        let (_, _, batch) =
            build_workload(&args(&["--workload", "ids", "--pipeline", "4"])).unwrap();
        let batch = batch.unwrap();
        assert_eq!(
            (batch.kind, batch.count, batch.check_order),
            (BatchKind::Ids, 1, false)
        );
        assert!(build_workload(&args(&["--workload", "tso", "--count", "0"])).is_err());
        assert!(build_workload(&args(&["--workload", "tso", "--count", "262145"])).is_err());
        assert!(build_workload(&args(&["--workload", "ids", "--count", "1000000"])).is_ok());
        let (_, _, batch) = build_workload(&args(&["--workload", "kv-put"])).unwrap();
        assert!(batch.is_none());
    }
}
