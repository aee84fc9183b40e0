//! `mast ctl`: the operator's command-line client, in etcdctl's habits.
//!
//! `mast ctl [--endpoints A,B,C] [--token-file F] [-o table|json] COMMAND`; tables by default,
//! `-o json` for scripts; exit 0 on success, 1 with the server's message on stderr when the
//! server refuses, 2 for a usage error. Requests go to the first endpoint that answers; a
//! 503 (no leader yet) or an unreachable member moves on to the next, in rounds, until
//! `--timeout-ms`. Writes through any member reach the leader (the server forwards them);
//! `leader transfer` is sent to the member leading shard 0, found through `/status`.

pub mod backup;
pub mod client;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::Value;

use client::{encode_path, encode_query, Client, Reply};

/// Flags of `mast ctl`.
#[derive(Debug, Args)]
pub struct CtlArgs {
    /// Members' HTTP addresses, comma-separated; tried in order.
    #[arg(long, env = "MAST_ENDPOINTS", default_value = "127.0.0.1:17010")]
    pub endpoints: String,
    /// File with the bearer token: its first non-comment line's first word (so the server's
    /// own `TOKEN ROLE` file works).
    #[arg(long, env = "MAST_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// How long one command may retry (503, unreachable members), in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Every endpoint's view: node, shards, leaders, terms, indexes.
    Status,
    /// The membership.
    #[command(subcommand)]
    Members(MembersCmd),
    /// Leadership.
    #[command(subcommand)]
    Leader(LeaderCmd),
    /// The key-value API.
    #[command(subcommand)]
    Kv(KvCmd),
    /// Writes a consistent backup of every shard to a file (see `mast restore`).
    Backup {
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum MembersCmd {
    /// Lists members (id, addresses, voter or learner).
    List,
    /// Adds a member as a learner on every shard (promoted once caught up).
    Add {
        #[arg(long)]
        id: u64,
        #[arg(long)]
        peer_addr: String,
        #[arg(long)]
        http_addr: String,
    },
    /// Removes a member from every shard.
    Remove { id: u64 },
}

#[derive(Debug, Subcommand)]
pub enum LeaderCmd {
    /// Hands leadership of every shard to node N.
    Transfer {
        #[arg(long)]
        to: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum KvCmd {
    /// Prints a key's value (linearizable read).
    Get { key: String },
    /// Writes a key.
    Put { key: String, value: String },
    /// Deletes a key.
    Del { key: String },
    /// Lists keys (with their revisions) under a prefix.
    List {
        #[arg(long, default_value = "")]
        prefix: String,
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
}

/// A command's failure: the message for stderr and the exit code.
struct Failure(String, i32);

fn refused(r: &Reply) -> Failure {
    Failure(format!("{} answered {}", r.from, r.message()), 1)
}

fn unreachable(e: String) -> Failure {
    Failure(e, 1)
}

/// Runs `mast ctl`; returns the process exit code.
pub fn run(args: CtlArgs) -> i32 {
    match run_inner(args) {
        Ok(()) => 0,
        Err(Failure(msg, code)) => {
            eprintln!("mast ctl: {msg}");
            code
        }
    }
}

/// The bearer token in `path`: the first word of its first non-comment line.
pub fn read_token(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .find(|l| !l.is_empty())
        .and_then(|l| l.split_whitespace().next())
        .map(str::to_string)
        .ok_or_else(|| format!("{}: no token in it", path.display()))
}

fn run_inner(args: CtlArgs) -> Result<(), Failure> {
    let endpoints: Vec<String> = args
        .endpoints
        .split(',')
        .map(|s| s.trim().trim_start_matches("http://").trim_end_matches('/'))
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if endpoints.is_empty() {
        return Err(Failure("--endpoints names no member".into(), 2));
    }
    let token = match &args.token_file {
        Some(p) => Some(read_token(p).map_err(|e| Failure(e, 2))?),
        None => None,
    };
    let client = Client {
        endpoints,
        token,
        deadline: Duration::from_millis(args.timeout_ms),
        io_timeout: Duration::from_millis(args.timeout_ms.clamp(100, 30_000)),
    };
    let json = args.output == Output::Json;
    match args.command {
        CtlCommand::Status => status(&client, json),
        CtlCommand::Members(MembersCmd::List) => {
            let v = get_json(&client, "/members")?;
            if json {
                return print_json(&v);
            }
            let mut rows = vec![row(&["ID", "PEER ADDR", "HTTP ADDR", "VOTER"])];
            for m in v["members"].as_array().into_iter().flatten() {
                rows.push(vec![
                    m["id"].to_string(),
                    str_of(&m["peer_addr"]),
                    str_of(&m["http_addr"]),
                    m["voter"].to_string(),
                ]);
            }
            println!("cluster {} ({} shards)", v["cluster_id"], v["shards"]);
            print_table(&rows);
            Ok(())
        }
        CtlCommand::Members(MembersCmd::Add {
            id,
            peer_addr,
            http_addr,
        }) => {
            let body =
                serde_json::json!({"id": id, "peer_addr": peer_addr, "http_addr": http_addr});
            let r = ok(client.call("POST", "/members", body.to_string().as_bytes()))?;
            done(json, &r, &format!("member {id} added as a learner"))
        }
        CtlCommand::Members(MembersCmd::Remove { id }) => {
            let r = ok(client.call("DELETE", &format!("/members/{id}"), b""))?;
            done(json, &r, &format!("member {id} removed"))
        }
        CtlCommand::Leader(LeaderCmd::Transfer { to }) => transfer(&client, to, json),
        CtlCommand::Kv(cmd) => kv(&client, cmd, json),
        CtlCommand::Backup { out } => {
            let b = backup::fetch(&client, &out).map_err(unreachable)?;
            let applied: Vec<u64> = b.shards.iter().map(|p| p.applied).collect();
            let size = std::fs::metadata(&out).map_or(0, |m| m.len());
            if json {
                return print_json(&serde_json::json!({
                    "file": out.display().to_string(),
                    "bytes": size,
                    "cluster_id": b.cluster_id,
                    "shards_applied": applied,
                    "crc32": b.crc,
                }));
            }
            println!(
                "backup of cluster {} ({} shards at indexes {applied:?}, {size} bytes) written to {}",
                b.cluster_id,
                applied.len(),
                out.display()
            );
            Ok(())
        }
    }
}

/// Sends and insists on a 2xx.
fn ok(r: Result<Reply, String>) -> Result<Reply, Failure> {
    let r = r.map_err(unreachable)?;
    if (200..300).contains(&r.status) {
        Ok(r)
    } else {
        Err(refused(&r))
    }
}

fn get_json(client: &Client, target: &str) -> Result<Value, Failure> {
    let r = ok(client.call("GET", target, b""))?;
    serde_json::from_slice(&r.body).map_err(|e| {
        Failure(
            format!("{} answered {target} with bad JSON: {e}", r.from),
            1,
        )
    })
}

fn done(json: bool, r: &Reply, human: &str) -> Result<(), Failure> {
    if json {
        let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        print_json(&v)
    } else {
        println!("{human}");
        Ok(())
    }
}

fn status(client: &Client, json: bool) -> Result<(), Failure> {
    let mut all = Vec::new();
    let mut rows = vec![row(&[
        "ENDPOINT", "NODE", "SHARD", "LEADER", "ROLE", "TERM", "COMMIT", "APPLIED", "VOTERS",
    ])];
    let mut failures = Vec::new();
    for ep in &client.endpoints {
        let v = match client.call_one(ep, "GET", "/status", b"") {
            Ok(r) if r.status == 200 => match serde_json::from_slice::<Value>(&r.body) {
                Ok(v) => v,
                Err(e) => {
                    failures.push(format!("{ep}: bad JSON: {e}"));
                    continue;
                }
            },
            Ok(r) => {
                failures.push(format!("{ep} answered {}", r.message()));
                continue;
            }
            Err(e) => {
                failures.push(format!("{ep}: {e}"));
                continue;
            }
        };
        for s in v["shards"].as_array().into_iter().flatten() {
            let raft = &s["raft"];
            rows.push(vec![
                ep.clone(),
                v["node_id"].to_string(),
                s["shard"].to_string(),
                raft["leader"].to_string(),
                str_of(&raft["role"]),
                raft["term"].to_string(),
                raft["commit"].to_string(),
                raft["applied"].to_string(),
                raft["voters"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|x| x.to_string())
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default(),
            ]);
        }
        all.push(serde_json::json!({"endpoint": ep, "status": v}));
    }
    if json {
        print_json(&Value::Array(all))?;
    } else {
        print_table(&rows);
    }
    for f in &failures {
        eprintln!("mast ctl: {f}");
    }
    if failures.len() == client.endpoints.len() {
        return Err(Failure("no endpoint answered /status".into(), 1));
    }
    Ok(())
}

/// Finds the member leading shard 0 (through any endpoint's `/status` and `/members`) and
/// asks it to hand every shard it leads to `to`.
fn transfer(client: &Client, to: u64, json: bool) -> Result<(), Failure> {
    let deadline = std::time::Instant::now() + client.deadline;
    loop {
        let status = get_json(client, "/status")?;
        let leader = status["shards"][0]["raft"]["leader"].as_u64().unwrap_or(0);
        let members = get_json(client, "/members")?;
        let addr = members["members"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["id"].as_u64() == Some(leader))
            .and_then(|m| m["http_addr"].as_str().map(str::to_string));
        if let (true, Some(addr)) = (leader != 0, addr) {
            if leader == to {
                if json {
                    return print_json(&serde_json::json!({"leader": to, "changed": false}));
                }
                println!("node {to} already leads shard 0");
                return Ok(());
            }
            let r = ok(client
                .call_one(&addr, "POST", &format!("/leader/transfer?to={to}"), b"")
                .map_err(|e| format!("{addr}: {e}")))?;
            let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            if json {
                return print_json(&v);
            }
            let mut rows = vec![row(&["SHARD", "RESULT"])];
            for s in v.as_array().into_iter().flatten() {
                rows.push(vec![s["shard"].to_string(), str_of(&s["result"])]);
            }
            println!("asked node {leader} ({addr}) to hand leadership to node {to}");
            print_table(&rows);
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(Failure("shard 0 has no leader".into(), 1));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn kv(client: &Client, cmd: KvCmd, json: bool) -> Result<(), Failure> {
    match cmd {
        KvCmd::Get { key } => {
            let r = ok(client.call("GET", &format!("/kv/{}", encode_path(&key)), b""))?;
            let revision = etag(&r);
            if json {
                return print_json(&serde_json::json!({
                    "key": key,
                    "value": String::from_utf8_lossy(&r.body),
                    "revision": revision,
                }));
            }
            println!("{}", String::from_utf8_lossy(&r.body));
            Ok(())
        }
        KvCmd::Put { key, value } => {
            let r = ok(client.call(
                "PUT",
                &format!("/kv/{}", encode_path(&key)),
                value.as_bytes(),
            ))?;
            let revision = etag(&r);
            if json {
                return print_json(&serde_json::json!({"key": key, "revision": revision}));
            }
            println!("OK (revision {})", revision.unwrap_or(0));
            Ok(())
        }
        KvCmd::Del { key } => {
            let r = ok(client.call("DELETE", &format!("/kv/{}", encode_path(&key)), b""))?;
            done(json, &r, "deleted")
        }
        KvCmd::List { prefix, limit } => {
            let v = get_json(
                client,
                &format!("/kv/?prefix={}&limit={limit}", encode_query(&prefix)),
            )?;
            if json {
                return print_json(&v);
            }
            let mut rows = vec![row(&["KEY", "REVISION"])];
            for k in v["keys"].as_array().into_iter().flatten() {
                rows.push(vec![str_of(&k["key"]), k["revision"].to_string()]);
            }
            print_table(&rows);
            if v["truncated"].as_bool() == Some(true) {
                println!("(more keys: raise --limit)");
            }
            Ok(())
        }
    }
}

fn etag(r: &Reply) -> Option<u64> {
    r.header("etag")?.trim().trim_matches('"').parse().ok()
}

fn str_of(v: &Value) -> String {
    v.as_str()
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string())
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

fn print_json(v: &Value) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(v).map_err(|e| Failure(e.to_string(), 1))?;
    println!("{text}");
    Ok(())
}

fn print_table(rows: &[Vec<String>]) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, cell)| format!("{cell:<w$}", w = widths.get(i).copied().unwrap_or(0)))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}
