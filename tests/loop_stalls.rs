//! Each shard's event-loop stall histogram is in `/metrics`: the probe runs on every shard,
//! its buckets are cumulative and end at the count, and the longest stall is reported.

mod support;

use std::time::Duration;

use support::{Cluster, ClusterOptions};

fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[test]
fn every_shard_reports_its_loop_stalls() {
    support::print_replay("loop_stalls", "every_shard_reports_its_loop_stalls", "");
    let shards = 2;
    let c = Cluster::start(ClusterOptions::new(1, shards)).unwrap_or_else(|e| panic!("{e}"));
    let mut client = c.client(1);
    let metrics = support::retry(Duration::from_secs(20), || {
        let r = client.get("/metrics").map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&r.body).into_owned();
        for s in 0..shards {
            let n = sample(
                &text,
                &format!("mast_shard_loop_stall_seconds_count{{shard=\"{s}\"}}"),
            )
            .unwrap_or(0.0);
            if n < 10.0 {
                return Err(format!("shard {s}: {n} probes so far"));
            }
        }
        Ok(text)
    })
    .unwrap_or_else(|e| panic!("probes: {e}"));
    for s in 0..shards {
        let prefix = format!("mast_shard_loop_stall_seconds_bucket{{shard=\"{s}\",le=");
        let buckets: Vec<f64> = metrics
            .lines()
            .filter(|l| l.starts_with(&prefix))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse().ok())
            .collect();
        assert_eq!(buckets.len(), 13, "shard {s}:\n{metrics}");
        assert!(
            buckets.windows(2).all(|w| w[0] <= w[1]),
            "shard {s}: {buckets:?}"
        );
        let count = sample(
            &metrics,
            &format!("mast_shard_loop_stall_seconds_count{{shard=\"{s}\"}}"),
        );
        assert_eq!(buckets.last().copied(), count, "shard {s}");
        let max = sample(
            &metrics,
            &format!("mast_shard_loop_stall_max_seconds{{shard=\"{s}\"}}"),
        )
        .unwrap_or_else(|| panic!("shard {s}: no max\n{metrics}"));
        assert!((0.0..60.0).contains(&max), "shard {s}: max {max}");
    }
}
