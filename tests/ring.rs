//! The ring protocol and epochs on the real device: layouts agree both ways, built-in jobs
//! compute the right thing, many threads submit at once, and no job is lost, duplicated
//! or reordered across thousands of kernel relaunches.

mod common;

use common::{config, TestRuntime};
use megaring::{Job, Mode, Placement};

#[test]
fn echo_round_trips_every_field_through_the_kernel() {
    let rt = TestRuntime::new(config());
    assert_eq!(rt.info().mode, Mode::Persistent, "self-test: {:?}", rt.info().self_test);
    let words = [0xDEAD_BEEF, 0, u32::MAX, 0x0102_0304];
    let done = rt
        .submit(Job::echo(words).with_tag(0x1122_3344_5566_7788))
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(done.tag, 0x1122_3344_5566_7788);
    assert_eq!(done.results, words);
    rt.finish();
}

#[test]
fn fill_copy_and_sum_compute_what_the_cpu_computes() {
    let rt = TestRuntime::new(config());
    let n = 10_000u64;
    let src = rt.alloc_u32(n, Placement::DeviceShared).unwrap();
    let dst = rt.alloc_u32(n, Placement::HostCached).unwrap();
    let data: Vec<u32> = (0..n as u32).map(|i| i.wrapping_mul(2_654_435_761)).collect();
    src.write_u32(0, &data).unwrap();

    let sum = rt.submit(Job::sum_u32(&src, 0..n).unwrap()).unwrap().wait().unwrap();
    assert_eq!(sum.sum_u64(), data.iter().map(|&x| u64::from(x)).sum::<u64>());

    rt.submit(Job::copy(&src, 100..n, &dst, 0).unwrap())
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(dst.read_u32(0, n - 100).unwrap(), data[100..]);

    rt.submit(Job::fill(&dst, 10..20, 7).unwrap()).unwrap().wait().unwrap();
    let filled = dst.read_u32(0, 30).unwrap();
    assert!(filled[10..20].iter().all(|&x| x == 7));
    assert_eq!(filled[..10], data[100..110]);
    assert_eq!(filled[20..30], data[120..130]);
    rt.finish();
}

#[test]
fn a_batch_larger_than_the_ring_is_published_in_order_in_runs() {
    // lavapipe's default budget on every device, so the refused job below is refused everywhere.
    let rt = TestRuntime::new(megaring::RuntimeConfig {
        ring_entries: 16,
        epoch_budget: Some(60_000),
        ..config()
    });
    let handles = rt
        .submit_batch((0..100u32).map(|i| Job::echo([i, i + 1, i + 2, i + 3]).with_tag(u64::from(i))))
        .unwrap();
    assert_eq!(handles.len(), 100);
    assert!(
        handles.windows(2).all(|w| w[1].index() == w[0].index() + 1),
        "consecutive ring indices"
    );
    for (i, handle) in handles.into_iter().enumerate() {
        let i = i as u32;
        let done = handle.wait().unwrap();
        assert_eq!((done.tag, done.results), (u64::from(i), [i, i + 1, i + 2, i + 3]));
    }
    // A refused job refuses the whole batch: nothing is published.
    let buffer = rt.alloc_u32(64, Placement::DeviceShared).unwrap();
    let bad = vec![Job::nop(), Job::fill(&buffer, 0..64, 1).unwrap(), Job::nop()];
    let n = u64::from(rt.info().lanes) * 30_000;
    let huge = rt.alloc_u32(n, Placement::DeviceShared).unwrap();
    let mut batch = bad;
    batch.push(Job::fill(&huge, 0..n, 1).unwrap());
    assert!(matches!(
        rt.submit_batch(batch),
        Err(megaring::Error::JobTooLarge { .. })
    ));
    assert_eq!(buffer.read_u32(0, 1).unwrap(), [0], "no job of a refused batch ran");
    rt.finish();
}
