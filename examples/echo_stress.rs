//! Verified echo stress: several host threads submit echo jobs and check every
//! completion, printing jobs/s; for devices where the test suite (which needs the validation
//! layer) cannot run. Exits non-zero on any wrong, lost or stuck completion.
use megaring::{Job, JobHandle, Placement, Runtime, RuntimeConfig};
use std::time::{Duration, Instant};

fn main() {
    let env = |k: &str, d: u64| std::env::var(k).ok().and_then(|s| s.parse().ok()).unwrap_or(d);
    let (wg, threads, jobs, window) = (
        env("WG", 32) as u32,
        env("THREADS", 4),
        env("JOBS", 400_000),
        env("WINDOW", 256) as usize,
    );
    let cq = if std::env::var("CQ").as_deref() == Ok("device") {
        Placement::DeviceShared
    } else {
        Placement::HostCached
    };
    let rt = Runtime::new(RuntimeConfig {
        workgroups: Some(wg),
        cq_placement: cq,
        ring_entries: 8192,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let rt = &rt;
            s.spawn(move || {
                let mut w: std::collections::VecDeque<(JobHandle, [u32; 4])> = Default::default();
                let check = |(mut h, words): (JobHandle, [u32; 4])| {
                    let tag = h.tag();
                    match h.wait_timeout(Duration::from_secs(5)) {
                        Ok(c) if c.tag == tag && c.results == words => {}
                        other => {
                            println!("BAD job {tag}: {other:?} {}", h.describe());
                            std::process::exit(2)
                        }
                    }
                };
                for i in 0..jobs / threads {
                    if w.len() >= window {
                        check(w.pop_front().unwrap());
                    }
                    let words = [t as u32, i as u32, (i as u32).wrapping_mul(2_654_435_761), !(i as u32)];
                    w.push_back((rt.submit(Job::echo(words).with_tag(t << 40 | i)).unwrap(), words));
                }
                w.into_iter().for_each(check);
            });
        }
    });
    let rate = (jobs / threads * threads) as f64 / start.elapsed().as_secs_f64();
    rt.shutdown().unwrap();
    println!(
        "wg={wg} cq={cq:?} threads={threads} window={window}: {rate:.0} verified echo jobs/s, {:?}",
        rt.stats()
    );
}
