//! Interpreted vs native time of the `sum-u32`, `saxpy` and `crc32` library programs on the
//! same data and parallelism (one workgroup each), measured in the same run; prints the ratios.
//!
//! `cargo bench --profile dev --bench vm`; `MEGARING_DEVICE` picks the device.

use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use megaring::bench::{InterpretedRun, NativeBaseline, VM_PROGRAMS};
use megaring::vk::{Context, DeviceSelector};
use megaring::{Runtime, RuntimeConfig};

fn vm(c: &mut Criterion) {
    let probe = Arc::new(Context::new(&DeviceSelector::from_env(), false, false).expect("Vulkan device"));
    let lavapipe = probe.caps().lavapipe;
    let lanes = if lavapipe { 8 } else { 64 };
    let elements = if lavapipe { 2_000 } else { 1 << 20 };
    let mut group = c.benchmark_group("vm");
    group.sample_size(10).measurement_time(Duration::from_secs(3));
    let mut native_means = Vec::new();
    for name in VM_PROGRAMS {
        let mut native = NativeBaseline::new(&probe, name, lanes, elements, 1).expect("baseline");
        let total = Cell::new((Duration::ZERO, 0u64));
        group.bench_function(format!("{name}/native"), |b| {
            b.iter_custom(|iters| {
                let t: Duration = (0..iters).map(|_| native.run().expect("dispatch")).sum();
                let (s, n) = total.get();
                total.set((s + t, n + iters));
                t
            })
        });
        native_means.push(total.get().0.as_secs_f64() / total.get().1.max(1) as f64);
    }
    drop(probe);
    let config = RuntimeConfig {
        lanes: Some(lanes),
        epoch_budget: if lavapipe { None } else { Some(1 << 30) },
        ..RuntimeConfig::default()
    };
    let runtime = Runtime::new(config).expect("runtime");
    for (name, native_mean) in VM_PROGRAMS.into_iter().zip(native_means) {
        let run = InterpretedRun::new(&runtime, name, elements, 1).expect("program");
        let total = Cell::new((Duration::ZERO, 0u64));
        group.bench_function(format!("{name}/interpreted"), |b| {
            b.iter_custom(|iters| {
                let t: Duration = (0..iters).map(|_| run.run(&runtime).expect("job").0).sum();
                let (s, n) = total.get();
                total.set((s + t, n + iters));
                t
            })
        });
        let mean = total.get().0.as_secs_f64() / total.get().1.max(1) as f64;
        println!(
            "ratio: {name} interpreted / native = {:.2} ({elements} elements, one workgroup each)",
            mean / native_mean
        );
    }
    group.finish();
    runtime.shutdown().expect("shutdown");
}

criterion_group!(benches, vm);
criterion_main!(benches);
