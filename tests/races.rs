//! Races between the host, the kernel and the supervisor that today's other tests do not
//! reach: buffers a running job holds, spread jobs beyond the board's open list, and a
//! healthy kernel that a narrow progress check would call hung.

mod common;

use std::time::Duration;

use common::{config, TestRuntime, STRIDED_SUM_ASM};
use megaring::ring::layout as p;
use megaring::vm::{assemble, verify};
use megaring::{Job, Placement, RuntimeConfig};

/// A generous bound that turns a lost completion into a failure instead of a hang.
const BOUND: Duration = Duration::from_secs(120);

#[test]
fn buffers_a_job_holds_stay_alive_until_it_completes() {
    // Four threads on a 4-entry ring: handles taking completions race producers reusing
    // the same slots. Each job's program, table and data live only in what the job holds
    // (the submitter drops its own at once), and every thread allocates all the time, so
    // a buffer freed under a running job comes back zeroed or as another job's data.
    let rt = TestRuntime::new(RuntimeConfig {
        ring_entries: 4,
        workgroups: Some(2),
        ..config()
    });
    let verified = verify(&assemble(STRIDED_SUM_ASM).unwrap(), 1).unwrap();
    std::thread::scope(|s| {
        for t in 0..4u32 {
            let (rt, verified) = (&rt.runtime, &verified);
            s.spawn(move || {
                for i in 0..250u32 {
                    let words: Vec<u32> = (0..256).map(|k| t << 24 | i << 12 | k).collect();
                    let data = rt.alloc_u32(256, Placement::DeviceShared).unwrap();
                    data.write_u32(0, &words).unwrap();
                    let program = rt.load_program(verified.clone()).unwrap();
                    let table = rt.buffer_table(&[&data]).unwrap();
                    let job = Job::program(&program, &table, 256, [0; 4], 2_000).unwrap();
                    drop((data, program, table));
                    let mut handle = rt.submit(job.with_tag(u64::from(t << 16 | i))).unwrap();
                    let done = handle.wait_timeout(BOUND).unwrap();
                    let sum = words.iter().fold(0u32, |a, w| a.wrapping_add(*w));
                    assert_eq!(done.results[0], sum, "thread {t} job {i}: a buffer it held was freed");
                }
            });
        }
    });
    rt.finish();
}

/// A tile program that does next to nothing: what a tile costs the epoch budget comes
/// from its fuel, not from what it runs.
const LIGHT_TILE: &str = "
        tile.begin r1
        result 0, r1
        halt
";

#[test]
fn spread_jobs_beyond_the_open_list_all_finish_when_many_are_claimed_at_once() {
    // Eight threads publish four spread jobs each at once, twice the board's open list,
    // while every workgroup is idle: each workgroup claims one. Tiles take a third of an
    // epoch, so claimers leave for budget with tiles of their jobs left, and the jobs
    // must be listed for others to finish them.
    let rt = TestRuntime::new(config());
    let program = rt
        .load_program(verify(&assemble(LIGHT_TILE).unwrap(), 0).unwrap())
        .unwrap();
    let table = rt.buffer_table(&[]).unwrap();
    let fuel = rt.max_fuel() / 3;
    let (tile, tiles) = (16u32, 40u32);
    let jobs_per_thread = 2 * p::BOARD_OPEN / 8;
    for round in 0..3 {
        std::thread::scope(|s| {
            for t in 0..8 {
                let (rt, program, table) = (&rt.runtime, &program, &table);
                s.spawn(move || {
                    let handles: Vec<_> = (0..jobs_per_thread)
                        .map(|_| {
                            rt.submit_tiled(program, table, tile * tiles, tile, [0; 4], fuel)
                                .unwrap()
                        })
                        .collect();
                    for (k, mut handle) in handles.into_iter().enumerate() {
                        let done = handle
                            .wait_timeout(BOUND)
                            .unwrap_or_else(|e| panic!("round {round} thread {t} job {k}: {e}"));
                        assert_eq!(done.len() as u32, tiles);
                        for (i, c) in done.iter().enumerate() {
                            assert_eq!(
                                c.results[0],
                                tile * i as u32,
                                "round {round} thread {t} job {k} tile {i}"
                            );
                        }
                    }
                });
            }
        });
    }
    rt.finish();
}

#[test]
fn a_kernel_of_more_workgroups_than_run_at_once_is_not_declared_unresponsive() {
    // On a 2-core machine lavapipe runs two workgroups at a time: 48 take turns, each
    // taking tiles or idling out for milliseconds, so one dispatch lasts far longer than
    // the hang timeout while every part of it is busy or idle on purpose. Neither a
    // heartbeat of workgroup 0 alone nor claims from the ring show that (tiles come from
    // the board); every workgroup's heartbeat and finished tiles do.
    let rt = TestRuntime::new(RuntimeConfig {
        workgroups: Some(48),
        idle_polls: Some(6_000),
        hang_timeout: Duration::from_millis(300),
        ..config()
    });
    let program = rt
        .load_program(verify(&assemble(LIGHT_TILE).unwrap(), 0).unwrap())
        .unwrap();
    let table = rt.buffer_table(&[]).unwrap();
    for round in 0..3 {
        let fuel = rt.max_fuel() / 4;
        let mut spread = rt.submit_tiled(&program, &table, 4 * 500, 4, [0; 4], fuel).unwrap();
        let mut echo = rt.submit(Job::echo([round, 1, 2, 3])).unwrap();
        assert_eq!(spread.wait_timeout(BOUND).unwrap().len(), 500, "round {round}");
        assert_eq!(echo.wait_timeout(BOUND).unwrap().results, [round, 1, 2, 3]);
        // Let the dispatch idle out, workgroup after workgroup.
        std::thread::sleep(Duration::from_millis(1_500));
    }
    rt.finish();
}

/// Submits `count` echo jobs from this thread and checks each comes back once with its
/// own words, by a mix of paths chosen by ring index (`index + shift` mod 4): waited at
/// once, held while later jobs go by (so producers move the completion aside), polled in
/// a loop, or dropped (detached). Returns how many came back.
fn wrap_stream(rt: &megaring::Runtime, thread: u32, count: u32, shift: u32) -> u32 {
    use std::collections::VecDeque;
    let mut held: VecDeque<(megaring::JobHandle, [u32; 4])> = VecDeque::new();
    let mut checked = 0;
    let check = |mut handle: megaring::JobHandle, words: [u32; 4]| {
        let index = handle.index();
        let done = handle
            .wait_timeout(BOUND)
            .unwrap_or_else(|e| panic!("job at index {index}: {e}; {}", handle.describe()));
        assert_eq!(done.results, words, "job at index {index} got another job's completion");
        assert_eq!(done.tag, u64::from(words[0]) << 32 | u64::from(words[1]));
        1
    };
    for i in 0..count {
        let words = [thread, i, !i, i.rotate_left(9)];
        let job = Job::echo(words).with_tag(u64::from(thread) << 32 | u64::from(i));
        let mut handle = rt.submit(job).unwrap();
        match handle.index().wrapping_add(shift) % 4 {
            0 => checked += check(handle, words),
            1 => held.push_back((handle, words)),
            2 => loop {
                if let Some(outcome) = handle.poll() {
                    let done = outcome.unwrap();
                    assert_eq!(done.results, words, "polled job at index {}", handle.index());
                    checked += 1;
                    break;
                }
                std::thread::yield_now();
            },
            _ => drop(handle),
        }
        // Hold about 100 jobs: more than the ring's 64 entries.
        if held.len() > 100 {
            let (handle, words) = held.pop_front().unwrap();
            checked += check(handle, words);
        }
    }
    for (handle, words) in held {
        checked += check(handle, words);
    }
    checked
}

#[test]
fn every_completion_comes_back_once_across_the_index_wrap() {
    // Indices wrap at 2^32 (after 36 minutes at 2 M jobs/s): start 25,000 below it, so
    // the 100,000 jobs of two runs cross it, the job at index u32::MAX is held while its
    // slot is reused in one run and detached in the other.
    for shift in [2, 0] {
        let rt = TestRuntime::new(RuntimeConfig {
            ring_entries: 64,
            first_index: u32::MAX - 25_000,
            ..config()
        });
        let checked: u32 = std::thread::scope(|s| {
            let workers: Vec<_> = (0..2)
                .map(|t| {
                    let rt = &rt.runtime;
                    s.spawn(move || wrap_stream(rt, t, 25_000, shift))
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).sum()
        });
        assert!(checked >= 35_000, "{checked} of 50,000 jobs checked");
        let next = rt.submit(Job::echo([7, 7, 7, 7])).unwrap();
        assert!(next.index() > 20_000 && next.index() < 30_000, "index {}", next.index());
        assert_eq!(next.wait().unwrap().results, [7, 7, 7, 7]);
        rt.finish();
    }
}
