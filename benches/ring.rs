//! Ring round trip against `vkQueueSubmit` + fence on the same device, measured in the
//! same run, plus sustained jobs/s. Prints the speed-up ratio at the end.
//!
//! `cargo bench --profile dev --bench ring` reuses the test build (shaderc is compiled
//! once per profile); `MEGARING_DEVICE` picks the device.

use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use megaring::bench::{ring_round_trip, throughput, SubmitBaseline};
use megaring::vk::{Context, DeviceSelector};
use megaring::{Runtime, RuntimeConfig};

fn round_trip(c: &mut Criterion) {
    let mut group = c.benchmark_group("round_trip");
    group.measurement_time(Duration::from_secs(3));
    // Sum of measured time and iterations of each side, for the ratio.
    let fence = Cell::new((Duration::ZERO, 0u64));
    let ring = Cell::new((Duration::ZERO, 0u64));
    {
        // The baseline gets a context of its own: a resident kernel would hold its queue.
        let ctx = Arc::new(Context::new(&DeviceSelector::from_env(), false, false).expect("Vulkan device"));
        let mut baseline = SubmitBaseline::new(&ctx).expect("baseline pipeline");
        group.bench_function("vkQueueSubmit+fence", |b| {
            b.iter_custom(|iters| {
                let total: Duration = (0..iters).map(|_| baseline.round_trip().expect("dispatch")).sum();
                let (t, n) = fence.get();
                fence.set((t + total, n + iters));
                total
            })
        });
    }
    let runtime = Runtime::new(RuntimeConfig::default()).expect("runtime");
    group.bench_function("ring", |b| {
        b.iter_custom(|iters| {
            let total: Duration = (0..iters).map(|_| ring_round_trip(&runtime).expect("job")).sum();
            let (t, n) = ring.get();
            ring.set((t + total, n + iters));
            total
        })
    });
    group.finish();
    let mean = |(t, n): (Duration, u64)| t.as_secs_f64() / n.max(1) as f64;
    println!(
        "ratio: ring round trip is {:.1}x faster than vkQueueSubmit+fence (mean {:.1} us vs {:.1} us, {})",
        mean(fence.get()) / mean(ring.get()),
        mean(ring.get()) * 1e6,
        mean(fence.get()) * 1e6,
        runtime.info().caps.name
    );

    let mut group = c.benchmark_group("jobs");
    let batch = 4096u64;
    group.throughput(Throughput::Elements(batch));
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("nop_256_in_flight_1_thread", |b| {
        b.iter(|| throughput(&runtime, batch, 256, 1, 1).expect("jobs"))
    });
    group.bench_function("nop_256_in_flight_1_thread_batch_32", |b| {
        b.iter(|| throughput(&runtime, batch, 256, 1, 32).expect("jobs"))
    });
    group.finish();
    runtime.shutdown().expect("shutdown");
}

criterion_group!(benches, round_trip);
criterion_main!(benches);
