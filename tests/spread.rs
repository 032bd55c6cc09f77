//! Spread jobs (`Runtime::submit_tiled`): one ring entry whose tiles the kernel's
//! workgroups share through the board. Every tile runs once, with its own `tile.begin`
//! and `grid`; a faulting tile fails the job with its tile number; tiles go on across
//! epochs and through shutdown; more spread jobs than the open list holds still finish.

mod common;

use common::{config, TestRuntime};
use megaring::ring::layout as p;
use megaring::vm::{assemble, verify};
use megaring::{DeviceBuffer, DeviceProgram, Error, Placement, Runtime, RuntimeConfig, TiledHandle};

/// Each lane writes `out[i] = 3 i + arg 0` for its elements of the tile; results: the
/// tile's first element, its end, and how many elements its lanes wrote. Tiles starting at
/// or after element `arg 1` divide by zero.
const TILE_PROGRAM: &str = "
        tile.begin r30
        lane r1
        add r1, r1, r30
        grid r2
        lanes r3
        arg r8, 0
        movi r9, 3
        ltu r4, r1, r2
        brz r4, done
    top: mul r5, r1, r9
        add r5, r5, r8
        st32 b0[r1], r5
        addi r6, r6, 1
        loop r1, r3, r2, top
    done: red.add r7, r6
        arg r10, 1
        leu r11, r10, r30
        brz r11, fine
        movi r12, 0
        divu r13, r11, r12
    fine: result 0, r30
        result 1, r2
        result 2, r7
        halt
";

const GRID: u32 = 10_000;
const TILE: u32 = 300;
const FUEL: u32 = 200;
const NO_FAULT: u32 = u32::MAX;

struct Setup {
    program: DeviceProgram,
    out: DeviceBuffer,
    table: megaring::BufferTable,
}

/// Two resident workgroups (lavapipe's default is one), so that tiles are shared.
fn two_workgroups() -> RuntimeConfig {
    RuntimeConfig {
        workgroups: Some(2),
        ..config()
    }
}

fn load(rt: &Runtime) -> DeviceProgram {
    rt.load_program(verify(&assemble(TILE_PROGRAM).unwrap(), 1).unwrap())
        .unwrap()
}

fn setup(rt: &Runtime) -> Setup {
    let program = load(rt);
    let out = rt.alloc_u32(u64::from(GRID), Placement::HostCached).unwrap();
    let table = rt.buffer_table(&[&out]).unwrap();
    Setup { program, out, table }
}

fn submit(rt: &Runtime, s: &Setup, add: u32, fault_from: u32) -> TiledHandle {
    rt.submit_tiled(&s.program, &s.table, GRID, TILE, [add, fault_from, 0, 0], FUEL)
        .unwrap()
}

/// A fresh output buffer of `grid` words, and `program` submitted over it (no fault).
fn submit_fresh(rt: &Runtime, program: &DeviceProgram, grid: u32, tile: u32, add: u32) -> (DeviceBuffer, TiledHandle) {
    let out = rt.alloc_u32(u64::from(grid), Placement::HostCached).unwrap();
    let table = rt.buffer_table(&[&out]).unwrap();
    let handle = rt
        .submit_tiled(program, &table, grid, tile, [add, NO_FAULT, 0, 0], FUEL)
        .unwrap();
    (out, handle)
}

/// Asserts `out[i] = 3 i + add` for all its words.
fn assert_filled(out: &DeviceBuffer, add: u32, what: &str) {
    let words = out.read_u32(0, out.len_u32()).unwrap();
    for (i, w) in words.iter().enumerate() {
        assert_eq!(*w, 3 * i as u32 + add, "{what}: element {i}");
    }
}

/// Asserts every tile's results and every element's value.
fn check(s: &Setup, tiles: &[megaring::Completion], add: u32) {
    assert_eq!(tiles.len(), GRID.div_ceil(TILE) as usize);
    for (t, c) in tiles.iter().enumerate() {
        let begin = t as u32 * TILE;
        let end = (begin + TILE).min(GRID);
        assert_eq!(c.tag, t as u64);
        assert_eq!(c.results[..3], [begin, end, end - begin], "tile {t}");
    }
    assert_filled(&s.out, add, "the job's buffer");
}

#[test]
fn every_tile_of_a_spread_job_runs_once_with_its_own_range() {
    let rt = TestRuntime::new(two_workgroups());
    let s = setup(&rt);
    let handle = submit(&rt, &s, 7, NO_FAULT);
    assert_eq!(handle.tiles(), GRID.div_ceil(TILE));
    let tiles = handle.wait().unwrap();
    check(&s, &tiles, 7);
    let again = submit(&rt, &s, 11, NO_FAULT).wait().unwrap();
    check(&s, &again, 11);
    rt.runtime.shutdown().unwrap();
    // One completion per spread job, plus the start-up self-test's ping.
    assert_eq!(rt.stats().jobs_done, 3, "{:?}", rt.stats());
    rt.finish();
}

#[test]
fn a_faulting_tile_fails_the_job_with_its_tile_and_the_kernel_goes_on() {
    let rt = TestRuntime::new(two_workgroups());
    let s = setup(&rt);
    // Tiles 5 and later fault; the lowest is reported.
    match submit(&rt, &s, 1, 5 * TILE).wait() {
        Err(Error::Fault(fault)) => {
            assert_eq!(fault.tag, 5, "{fault:?}");
            assert_eq!(fault.status, p::STATUS_FAULT_DIVIDE_BY_ZERO, "{fault:?}");
        }
        other => panic!("expected the fault of tile 5, got {other:?}"),
    }
    // The tiles before it still ran, and the next spread job runs whole.
    assert_eq!(s.out.read_u32(u64::from(4 * TILE), 1).unwrap(), [3 * 4 * TILE + 1]);
    let tiles = submit(&rt, &s, 2, NO_FAULT).wait().unwrap();
    check(&s, &tiles, 2);
    rt.finish();
}

#[test]
fn spread_jobs_go_on_across_epochs_and_finish_through_shutdown() {
    // An epoch holds about four tiles per workgroup: the job needs several launches.
    let rt = TestRuntime::new(RuntimeConfig {
        workgroups: Some(2),
        epoch_budget: Some(20_000),
        ..config()
    });
    let s = setup(&rt);
    let tiles = submit(&rt, &s, 3, NO_FAULT).wait().unwrap();
    check(&s, &tiles, 3);
    let launches = rt.stats().launches;
    assert!(launches >= 4, "{launches} launches for {} tiles", tiles.len());

    // Shut down once the next job has been claimed (its tile 0 wrote element 0): its
    // remaining tiles still run, in launches that drain the board.
    s.out.write_u32(0, &[0]).unwrap();
    let handle = submit(&rt, &s, 5, NO_FAULT);
    while s.out.read_u32(0, 1).unwrap() != [5] {
        std::thread::yield_now();
    }
    rt.runtime.shutdown().unwrap();
    let tiles = handle.wait().unwrap();
    check(&s, &tiles, 5);
    assert!(rt.stats().budget_exits > 0, "{:?}", rt.stats());
    rt.finish();
}

#[test]
fn more_spread_jobs_than_the_open_list_holds_all_finish() {
    let rt = TestRuntime::new(two_workgroups());
    let program = load(&rt);
    let jobs = p::BOARD_OPEN + 8;
    let submitted: Vec<_> = (0..jobs).map(|k| submit_fresh(&rt, &program, 400, 100, k)).collect();
    for (k, (out, handle)) in submitted.into_iter().enumerate() {
        assert_eq!(handle.wait().unwrap().len(), 4);
        assert_filled(&out, k as u32, &format!("job {k}"));
    }
    rt.finish();
}

#[test]
fn tile_results_stay_each_jobs_own_when_result_buffers_are_reused() {
    let rt = TestRuntime::new(two_workgroups());
    let program = load(&rt);
    // Rounds of jobs of other shapes, in flight together: a finished job's result buffer
    // goes to a later job, never to one in flight, and a larger job gets a larger one.
    for round in 0..3u32 {
        let shapes = [(1200, 100), (400, 100), (900, 300), (2000, 100)];
        let submitted: Vec<_> = shapes
            .iter()
            .enumerate()
            .map(|(k, &(grid, tile))| {
                (
                    grid,
                    tile,
                    submit_fresh(&rt, &program, grid, tile, 10 * round + k as u32),
                )
            })
            .collect();
        for (k, (grid, tile, (out, handle))) in submitted.into_iter().enumerate() {
            let tiles = handle.wait().unwrap();
            assert_eq!(tiles.len() as u32, grid.div_ceil(tile), "round {round} job {k}");
            for (t, c) in tiles.iter().enumerate() {
                let begin = t as u32 * tile;
                let end = (begin + tile).min(grid);
                assert_eq!(
                    c.results[..3],
                    [begin, end, end - begin],
                    "round {round} job {k} tile {t}"
                );
            }
            assert_filled(&out, 10 * round + k as u32, &format!("round {round} job {k}"));
        }
    }
    rt.finish();
}

#[test]
fn spread_jobs_run_in_batch_mode_too() {
    // No resident kernel: each launch drains what is pending and exits when idle; the
    // supervisor launches again while the spread job is open.
    let rt = TestRuntime::new(RuntimeConfig {
        mode: megaring::ModeRequest::Batch,
        ..two_workgroups()
    });
    assert_eq!(rt.info().mode, megaring::Mode::Batch);
    let s = setup(&rt);
    let tiles = submit(&rt, &s, 9, NO_FAULT).wait().unwrap();
    check(&s, &tiles, 9);
    rt.finish();
}

#[test]
fn spread_jobs_at_shutdown_finish_or_are_cancelled_and_dropped_handles_detach() {
    let rt = TestRuntime::new(two_workgroups());
    let s = setup(&rt);
    // A dropped handle detaches its job (on a buffer of its own): it still runs, and the
    // ring goes on.
    let (other, detached) = submit_fresh(&rt, &s.program, GRID, TILE, 4);
    drop(detached);
    check(&s, &submit(&rt, &s, 6, NO_FAULT).wait().unwrap(), 6);

    // Several spread jobs in flight at shutdown: each one either finishes whole (it was
    // claimed) or is cancelled (it was not); none hangs or comes back half done.
    let submitted: Vec<_> = (0..6).map(|_| submit_fresh(&rt, &s.program, GRID, TILE, 1)).collect();
    rt.runtime.shutdown().unwrap();
    let mut finished = 0;
    for (out, handle) in submitted {
        match handle.wait() {
            Ok(tiles) => {
                assert_eq!(tiles.len(), GRID.div_ceil(TILE) as usize);
                assert_filled(&out, 1, "a job finished at shutdown");
                finished += 1;
            }
            Err(Error::Cancelled { .. }) => {}
            Err(e) => panic!("a spread job at shutdown ended with {e}"),
        }
    }
    eprintln!("{finished} of 6 spread jobs finished at shutdown, the rest cancelled");
    // The detached job was claimed before the job after it completed (claims go in ring
    // order), so it ran whole.
    assert_filled(&other, 4, "the detached job");
    rt.finish();
}
