//! `megaring`: inspect the device and runtime (`info`), run programs (`run`), scan files
//! through the zero-copy ingest path (`scan`) and measure it all (`bench`).

mod scan;
mod soak;

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand, ValueEnum};
use megaring::bench::{self, LatencyOptions, RingReport};
use megaring::vk::{list_devices, Context, DeviceSelector};
use megaring::{Placement, Runtime, RuntimeConfig};

#[derive(Parser)]
#[command(name = "megaring", version, about = "Persistent Vulkan megakernel runtime")]
struct Cli {
    /// Device index or name substring (default: MEGARING_DEVICE, else the best device).
    #[arg(long, global = true)]
    device: Option<String>,
    /// Enable the Khronos validation layer (also MEGARING_VALIDATION=1).
    #[arg(long, global = true)]
    validation: bool,
    /// Resident workgroups of the megakernel (default: 1 on lavapipe, 32 elsewhere).
    #[arg(long, global = true)]
    workgroups: Option<u32>,
    /// VM lanes each invocation interprets in lock step, 4 or 8 (default: 4).
    #[arg(long, global = true)]
    vm_sublanes: Option<u32>,
    /// Lanes (invocations) per workgroup, a power of two up to 64 (default: 8 on lavapipe,
    /// 64 elsewhere).
    #[arg(long, global = true)]
    lanes: Option<u32>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Devices, the chosen device's features and memory types, the rings' memory, the
    /// self-test result and the mode (persistent or batch fallback).
    Info {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Assemble, verify and run a bytecode program on the device; print its results.
    Run(RunArgs),
    /// Stream files through io_uring into imported host memory and run a program over
    /// them on the GPU in place; a result table on stdout (exit code 1 if any file failed).
    Scan(scan::ScanArgs),
    /// Runs every kind of job, spread jobs, scans, relaunches and runtime restarts from
    /// several threads at once, checks every result, and reports lost, duplicated or wrong
    /// jobs and hangs (exit code 1 if any).
    Soak(soak::SoakArgs),
    /// Measurements, each against a baseline measured in the same run.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
}

/// Options of `megaring run`.
#[derive(Args)]
struct RunArgs {
    /// An assembly file (`*.asm`) or a library program name (`lines`, `count-byte`, ...).
    program: String,
    /// File whose bytes are buffer b0 (default: none, an empty buffer).
    #[arg(long)]
    input: Option<std::path::PathBuf>,
    /// Argument words, in order (up to 4; decimal or 0x hex).
    #[arg(long = "arg", value_parser = parse_word)]
    args: Vec<u32>,
    /// Grid size (default: the input's length in bytes).
    #[arg(long)]
    grid: Option<u32>,
    /// Instructions per lane (default: the most this device allows per job).
    #[arg(long)]
    fuel: Option<u32>,
    /// Split the grid into tiles of this many elements, one job each (library programs
    /// that combine tiles: sum-u32, count-byte, lines, histogram, minmax-f32, saxpy).
    /// Without it, such a program's grid too large for one job is split automatically.
    #[arg(long)]
    tile: Option<u32>,
    /// u32 words of the output buffer b1 to allocate and print (non-zero words only).
    #[arg(long, default_value_t = 256)]
    output_words: u32,
    /// Run the job this many times (the results and b1 shown are the last run's).
    #[arg(long, default_value_t = 1)]
    repeat: u32,
    /// Print the time from submit to completion (fastest and median over the runs).
    #[arg(long)]
    time: bool,
}

fn parse_word(s: &str) -> Result<u32, String> {
    let parsed = match s.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse::<u32>(),
    };
    parsed.map_err(|e| format!("`{s}` is not a u32 ({e})"))
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Ring round trip vs vkQueueSubmit + fence, jobs/s, and relaunch after an idle park.
    Latency(LatencyArgs),
    /// Interpreted vs native time of `sum-u32`, `saxpy` and `crc32` on equal workgroups.
    Vm(VmArgs),
    /// File to GPU result: the zero-copy io_uring path vs read() + memcpy, and the raw
    /// io_uring read rate, through the page cache and with O_DIRECT.
    Ingest(IngestArgs),
}

/// Options of `megaring bench ingest`.
#[derive(Args)]
struct IngestArgs {
    /// Directory for the test file (a disk file system for O_DIRECT; default: /var/tmp).
    #[arg(long, default_value = "/var/tmp")]
    dir: std::path::PathBuf,
    /// Test file size in MiB (default: 2048, 16 on lavapipe).
    #[arg(long)]
    mib: Option<u64>,
    /// Runs per path (the median counts).
    #[arg(long, default_value_t = 3)]
    samples: usize,
    /// Chunk size in KiB, at most 1,048,576 (1 GiB) (default: the scanner's).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    chunk_kib: Option<u64>,
    /// Chunks in flight (default: the scanner's).
    #[arg(long)]
    slots: Option<usize>,
    /// Skip the O_DIRECT row.
    #[arg(long)]
    no_direct: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Options of `megaring bench vm`.
#[derive(Args)]
struct VmArgs {
    /// Elements per run (default: 2,000 on lavapipe, 16,777,216 elsewhere).
    #[arg(long)]
    elements: Option<u32>,
    /// Workgroups on each side: tiles of the interpreted job (on a runtime with that many
    /// resident workgroups) and workgroups of the native dispatch. 1 measures the
    /// interpreter at equal parallelism on one workgroup; the device's multiprocessor
    /// count (132 on an H100) uses the whole GPU.
    #[arg(long, default_value_t = 1)]
    tiles: u32,
    /// Runs per side.
    #[arg(long, default_value_t = 10)]
    samples: usize,
    /// Programs to compare, in order (default: sum-u32, saxpy, crc32); may repeat. NAME=FILE
    /// runs the assembly in FILE in place of library program NAME (same buffers, arguments
    /// and results, four times its fuel; checked against the native result).
    #[arg(long = "program", value_parser = parse_program)]
    programs: Vec<(String, Option<std::path::PathBuf>)>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn parse_program(s: &str) -> Result<(String, Option<std::path::PathBuf>), String> {
    Ok(match s.split_once('=') {
        Some((name, file)) => (name.to_string(), Some(file.into())),
        None => (s.to_string(), None),
    })
}

/// Options of `megaring bench latency`.
#[derive(Args)]
struct LatencyArgs {
    /// Round trips per measurement (default: 2,000 on lavapipe, 20,000 elsewhere).
    #[arg(long)]
    iterations: Option<usize>,
    /// Jobs per throughput measurement (default: 20,000 on lavapipe, 1,000,000 elsewhere).
    #[arg(long)]
    jobs: Option<u64>,
    /// Jobs each host thread keeps in flight.
    #[arg(long, default_value_t = 256)]
    in_flight: usize,
    /// Host threads for the multi-threaded throughput run.
    #[arg(long, default_value_t = 4)]
    threads: usize,
    /// Jobs per `submit_batch` call in the batched runs.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Where completion entries live.
    #[arg(long, value_enum, default_value_t = CqChoice::Both)]
    cq: CqChoice,
    /// Relaunch-after-park samples (0 to skip).
    #[arg(long, default_value_t = 20)]
    relaunch_samples: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum CqChoice {
    /// Device-local host-visible memory (BAR) where it exists.
    Device,
    /// Host memory.
    Host,
    /// Both, one after the other.
    Both,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let defaults = RuntimeConfig::default();
    let config = RuntimeConfig {
        device: cli
            .device
            .as_deref()
            .map_or(defaults.device.clone(), DeviceSelector::parse),
        validation: cli.validation || defaults.validation,
        workgroups: cli.workgroups,
        vm_sublanes: cli.vm_sublanes,
        lanes: cli.lanes,
        ..defaults
    };
    let outcome: Result<(), Box<dyn std::error::Error>> = match cli.command {
        Command::Info { json } => info(config, json).map_err(Into::into),
        Command::Bench {
            what: BenchCommand::Latency(args),
        } => latency(config, args).map_err(Into::into),
        Command::Run(args) => run(config, args),
        Command::Scan(args) => match scan::scan(config, args) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::FAILURE, // per-file errors are in the table
            Err(e) => Err(e),
        },
        Command::Soak(args) => match soak::soak(config, args) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::FAILURE, // the failures are in the report
            Err(e) => Err(e),
        },
        Command::Bench {
            what: BenchCommand::Vm(args),
        } => bench_vm(config, args),
        Command::Bench {
            what: BenchCommand::Ingest(args),
        } => bench_ingest(config, args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("megaring: {e}");
            ExitCode::FAILURE
        }
    }
}

fn info(config: RuntimeConfig, json: bool) -> megaring::Result<()> {
    let devices = list_devices()?;
    let runtime = Runtime::new(config)?;
    let i = runtime.info();
    let c = &i.caps;
    let self_test = match &i.self_test {
        Ok(rtt) => format!(
            "passed (ping through the running kernel: {:.1} us)",
            bench::micros(*rtt)
        ),
        Err(why) => format!("failed: {why}"),
    };
    if json {
        let value = serde_json::json!({
            "devices": devices.iter().map(|d| serde_json::json!({
                "index": d.index, "name": d.name, "kind": format!("{:?}", d.kind), "driver": d.driver,
                "usable": d.missing_requirements().is_empty(),
            })).collect::<Vec<_>>(),
            "chosen": c.index,
            "name": c.name,
            "driver": c.driver,
            "api_version": format!("{}.{}.{}", c.api_version.0, c.api_version.1, c.api_version.2),
            "features": {
                "buffer_device_address": c.buffer_device_address,
                "vulkan_memory_model": c.vulkan_memory_model,
                "shader_int64": c.shader_int64,
                "shader_buffer_int64_atomics": c.shader_buffer_int64_atomics,
                "timeline_semaphore": c.timeline_semaphore,
                "external_memory_host_alignment": c.external_memory_host,
            },
            "memory_types": c.memory_types.iter().map(|t| serde_json::json!({
                "index": t.index, "flags": format!("{:?}", t.flags), "heap": t.heap, "heap_size": t.heap_size,
            })).collect::<Vec<_>>(),
            "rings": {
                "control": {"memory_type": i.memory[0].0, "flags": i.memory[0].1},
                "sq": {"memory_type": i.memory[1].0, "flags": i.memory[1].1},
                "cq": {"memory_type": i.memory[2].0, "flags": i.memory[2].1},
                "entries": i.ring_entries,
            },
            "mode": format!("{:?}", i.mode),
            "self_test": self_test,
            "workgroups": i.workgroups,
            "lanes": i.lanes,
            "vm_lanes": i.vm_lanes,
            "vm_converged": i.vm_converged,
            "kernel_statistics": i.kernel_statistics.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
            "epoch_budget": i.epoch_budget,
            "idle_polls": i.idle_polls,
            "validation": i.validation,
        });
        println!("{}", serde_json::to_string_pretty(&value).expect("serialisable"));
    } else {
        println!("Vulkan devices:");
        for d in &devices {
            let mark = if d.index == c.index { "*" } else { " " };
            let missing = d.missing_requirements();
            let usable = if missing.is_empty() {
                String::new()
            } else {
                format!("  (unusable: lacks {})", missing.join(", "))
            };
            println!(" {mark} [{}] {} ({:?}, {}){usable}", d.index, d.name, d.kind, d.driver);
        }
        println!(
            "\nChosen device: [{}] {}  Vulkan {}.{}.{}",
            c.index, c.name, c.api_version.0, c.api_version.1, c.api_version.2
        );
        println!("Features:");
        println!("  bufferDeviceAddress        {}", c.buffer_device_address);
        println!("  vulkanMemoryModel          {}", c.vulkan_memory_model);
        println!("  shaderInt64                {}", c.shader_int64);
        println!("  shaderBufferInt64Atomics   {}", c.shader_buffer_int64_atomics);
        println!("  timelineSemaphore          {}", c.timeline_semaphore);
        println!(
            "  VK_EXT_external_memory_host {}",
            c.external_memory_host
                .map_or("absent".to_owned(), |a| format!("present (alignment {a} bytes)"))
        );
        println!("Memory types:");
        for t in &c.memory_types {
            println!(
                "  [{}] heap {} ({} MiB): {:?}",
                t.index,
                t.heap,
                t.heap_size >> 20,
                t.flags
            );
        }
        println!("Rings ({} entries):", i.ring_entries);
        for (name, (index, flags)) in ["control block", "submission queue", "completion queue"]
            .iter()
            .zip(&i.memory)
        {
            println!("  {name:<17} memory type {index}: {flags}");
        }
        println!("Self-test: {self_test}");
        println!(
            "Mode: {:?}{}",
            i.mode,
            if i.mode == megaring::Mode::Batch {
                " (fallback: the kernel is launched per batch of jobs)"
            } else {
                " (one resident kernel per epoch)"
            }
        );
        println!(
            "Resident workgroups: {} x {} lanes ({} VM lanes; converged dispatcher {})",
            i.workgroups,
            i.lanes,
            i.vm_lanes,
            if i.vm_converged { "on" } else { "off" }
        );
        if !i.kernel_statistics.is_empty() {
            let stats: Vec<String> = i.kernel_statistics.iter().map(|(k, v)| format!("{k} {v}")).collect();
            println!("Megakernel, as the driver compiled it: {}", stats.join(", "));
        }
        println!(
            "Epoch budget: {} loop iterations per invocation; park after {} empty polls",
            i.epoch_budget, i.idle_polls
        );
        println!("Validation layer: {}", if i.validation { "on" } else { "off" });
    }
    runtime.shutdown()
}

fn run(config: RuntimeConfig, args: RunArgs) -> Result<(), Box<dyn std::error::Error>> {
    use megaring::vm::{assemble, library::library_program, verify, VmError};
    if args.time && args.repeat < 2 {
        return Err("--time needs --repeat 2 or more (the first run warms up and is not timed)".into());
    }
    if args.args.len() > 4 {
        return Err(format!("{} arguments given; a job takes at most 4", args.args.len()).into());
    }
    let library = library_program(&args.program);
    if args.tile.is_some() && !library.is_some_and(|l| l.buffers <= 2 && l.combines_results()) {
        return Err(format!(
            "--tile needs a library program whose tiles combine, not `{}`",
            args.program
        )
        .into());
    }
    let program = match library {
        Some(library) => verify(&assemble(library.source)?, 2)?,
        None => {
            let source = std::fs::read_to_string(&args.program).map_err(|e| {
                format!(
                    "cannot read {}: {e} (give a .asm file or a library program name)",
                    args.program
                )
            })?;
            let parsed = assemble(&source).map_err(|e| match &e {
                VmError::Syntax { line, column, message } => {
                    let text = source.lines().nth(line - 1).unwrap_or("");
                    let caret = " ".repeat(column - 1);
                    format!("{}:{line}:{column}: {message}\n    {text}\n    {caret}^", args.program)
                }
                _ => format!("{}: {e}", args.program),
            })?;
            verify(&parsed, 2).map_err(|e| format!("{}: {e}", args.program))?
        }
    };
    let input = match &args.input {
        Some(path) => std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        None => Vec::new(),
    };
    let runtime = Runtime::new(config)?;
    let mut words = vec![0u32; input.len().div_ceil(4).max(1)];
    bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..input.len()].copy_from_slice(&input);
    let b0 = runtime.alloc_u32(words.len() as u64, Placement::DeviceShared)?;
    b0.write_u32(0, &words)?;
    let b1 = runtime.alloc_u32(u64::from(args.output_words.max(1)), Placement::HostCached)?;
    let grid = match args.grid {
        Some(grid) => grid,
        None => u32::try_from(input.len()).map_err(|_| "input longer than 4 GiB; give --grid")?,
    };
    let mut job_args = [0u32; 4];
    job_args[..args.args.len()].copy_from_slice(&args.args);
    let fuel = args.fuel.unwrap_or(runtime.max_fuel());
    let loaded = runtime.load_program(program)?;
    let table = runtime.buffer_table(&[&b0, &b1])?;
    // Tileable library programs split grids too large for one job, in the largest tiles a
    // job can take on this device.
    let tileable = library.filter(|l| l.buffers <= 2 && l.combines_results());
    let max_tile = tileable.map(|l| l.max_tile(runtime.info().vm_lanes, runtime.max_fuel()));
    let tile = match (args.tile, max_tile) {
        (Some(tile), Some(max)) if tile > max => {
            return Err(
                format!("--tile {tile} needs more fuel than one job has on this device; use at most {max}").into(),
            )
        }
        (Some(tile), _) => Some(tile),
        (None, Some(max)) if args.fuel.is_none() && grid > max => Some(max),
        _ => None,
    };
    let run_once = || match (tile, library) {
        (Some(tile), Some(library)) => {
            let fuel = args.fuel.unwrap_or(library.fuel(tile, runtime.info().vm_lanes));
            let tiles: Vec<[u32; 4]> = runtime
                .submit_tiled(&loaded, &table, grid, tile, job_args, fuel)?
                .wait()?
                .iter()
                .map(|c| c.results)
                .collect();
            let results = library.combine(&tiles).expect("checked combinable");
            Ok(megaring::Completion {
                tag: 0,
                status: 0,
                results,
            })
        }
        _ => runtime
            .submit(megaring::Job::program(&loaded, &table, grid, job_args, fuel)?)?
            .wait(),
    };
    let mut outcome = run_once();
    let mut times = Vec::new();
    for _ in 1..args.repeat.max(1) {
        let start = std::time::Instant::now();
        outcome = run_once();
        times.push(start.elapsed());
    }
    // After the kernel's last launch ended: a device's writes to host memory are certain
    // to have landed only then (docs/protocol.md, "Guarantees").
    runtime.shutdown()?;
    let shown = b1.read_u32(0, u64::from(args.output_words.max(1)))?;
    let done = outcome?;
    if args.time {
        times.sort();
        println!(
            "time: fastest {:.1} us, median {:.1} us over {} runs after a warm-up",
            bench::micros(times[0]),
            bench::micros(times[times.len() / 2]),
            times.len()
        );
    }
    for (k, r) in done.results.iter().enumerate() {
        // Show the f32 reading only where the word looks like a normal float.
        let exponent = (r >> 23) & 0xff;
        let float = if exponent != 0 && exponent != 0xff {
            format!(", f32 {}", f32::from_bits(*r))
        } else {
            String::new()
        };
        println!("result {k}: {r} ({r:#010x}{float})");
    }
    for (k, w) in shown.iter().enumerate().filter(|(_, w)| **w != 0) {
        println!("b1[{k}] = {w}");
    }
    Ok(())
}

fn bench_ingest(config: RuntimeConfig, args: IngestArgs) -> Result<(), Box<dyn std::error::Error>> {
    let runtime = Runtime::new(config)?;
    let lavapipe = runtime.info().caps.lavapipe;
    let options = bench::IngestOptions {
        dir: args.dir,
        bytes: args.mib.unwrap_or(if lavapipe { 16 } else { 2048 }) << 20,
        samples: args.samples,
        scan: megaring::io::ScanOptions {
            chunk_bytes: args.chunk_kib.map(|k| (k << 10) as usize),
            slots: args.slots,
            ..Default::default()
        },
        direct: !args.no_direct,
    };
    let report = bench::ingest(&runtime, &options)?;
    runtime.shutdown()?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
        return Ok(());
    }
    println!(
        "{}: `{}` over a {} MiB file; {}",
        report.device,
        report.program,
        report.bytes >> 20,
        report.ingest
    );
    for r in &report.rows {
        println!(
            "  {:<10} raw io_uring {:>8.3} GB/s | zero-copy scan {:>8.3} GB/s | read()+memcpy scan {:>8.3} GB/s -> {:.2}x the baseline, {:.0}% of raw io_uring{}",
            r.mode,
            r.raw_uring,
            r.scan,
            r.copy,
            r.speedup(),
            100.0 * r.of_ceiling(),
            if r.mode == "O_DIRECT" && !r.direct { " (O_DIRECT refused: buffered)" } else { "" }
        );
    }
    Ok(())
}

fn bench_vm(config: RuntimeConfig, args: VmArgs) -> Result<(), Box<dyn std::error::Error>> {
    let lavapipe = list_devices()?.iter().all(|d| d.lavapipe);
    let elements = args.elements.unwrap_or(if lavapipe { 2_000 } else { 1 << 24 });
    let chosen = if args.programs.is_empty() {
        bench::VM_PROGRAMS.iter().map(|p| (p.to_string(), None)).collect()
    } else {
        args.programs
    };
    let mut programs = Vec::new();
    for (name, file) in &chosen {
        let source = match file {
            Some(file) => {
                Some(std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?)
            }
            None => None,
        };
        programs.push((name.as_str(), source));
    }
    let results = bench::vm_vs_native(&config, &programs, elements, args.tiles.max(1), args.samples.max(1))?;
    if args.json {
        let value = serde_json::json!(results.iter().map(|r| r.to_json()).collect::<Vec<_>>());
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    if let Some(first) = results.first() {
        let stats: Vec<String> = first
            .kernel_statistics
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        println!(
            "megakernel: {} VM lanes per workgroup{}{}",
            first.vm_lanes,
            if stats.is_empty() { "" } else { "; driver: " },
            stats.join(", ")
        );
    }
    for r in &results {
        println!(
            "{:<8} {:>10} elements x {} tiles: interpreted p50 {:>10.1} us, native p50 {:>10.1} us -> interpreted / native = {:.2}",
            r.program,
            r.elements,
            r.tiles,
            bench::micros(r.interpreted.p50),
            bench::micros(r.native.p50),
            r.ratio()
        );
    }
    println!("(as many workgroups on each side as tiles: the interpreter's overhead at equal parallelism; both include their submission)");
    Ok(())
}

fn latency(config: RuntimeConfig, args: LatencyArgs) -> megaring::Result<()> {
    // The baseline runs first, on a device context of its own: a resident megakernel
    // would hold the queue it submits to.
    let ctx = Arc::new(Context::new(&config.device, config.validation, config.validation_echo)?);
    let lavapipe = ctx.caps().lavapipe;
    let device = ctx.caps().name.clone();
    let opts = LatencyOptions {
        iterations: args.iterations.unwrap_or(if lavapipe { 2_000 } else { 20_000 }),
        jobs: args.jobs.unwrap_or(if lavapipe { 20_000 } else { 1_000_000 }),
        in_flight: args.in_flight,
        threads: args.threads,
        batch: args.batch,
        relaunch_samples: args.relaunch_samples,
    };
    opts.check()?;
    if !args.json {
        eprintln!(
            "device: {device}; measuring vkQueueSubmit + fence ({} round trips)...",
            opts.iterations
        );
    }
    let baseline = bench::submit_fence_baseline(&ctx, opts.iterations)?;
    drop(ctx);
    let placements = match args.cq {
        CqChoice::Device => vec![Placement::DeviceShared],
        CqChoice::Host => vec![Placement::HostCached],
        CqChoice::Both => vec![Placement::DeviceShared, Placement::HostCached],
    };
    let mut reports = Vec::new();
    for placement in placements {
        if !args.json {
            eprintln!("measuring the ring with completions in {placement:?} memory...");
        }
        let runtime = Runtime::new(RuntimeConfig {
            cq_placement: placement,
            ..config.clone()
        })?;
        reports.push((RingReport::measure(&runtime, placement, &opts)?, runtime.info().mode));
        runtime.shutdown()?;
    }
    if args.json {
        let value = serde_json::json!({
            "device": device,
            "submit_fence": baseline.to_json(),
            "in_flight_per_thread": opts.in_flight,
            "rings": reports.iter().map(|(r, mode)| {
                let mut v = r.to_json(&baseline, opts.threads, opts.batch);
                v["mode"] = serde_json::json!(format!("{mode:?}"));
                v
            }).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&value).expect("serialisable"));
        return Ok(());
    }
    println!("device: {device}");
    println!(
        "vkQueueSubmit + fence wait      p50 {:>8.1} us   p99 {:>8.1} us   ({} samples)",
        bench::micros(baseline.p50),
        bench::micros(baseline.p99),
        baseline.samples
    );
    for (r, mode) in &reports {
        println!(
            "ring, completions in {:?} memory ({}), {:?} mode, {} workgroup(s):",
            r.cq_placement, r.cq_memory, mode, r.workgroups
        );
        println!(
            "  round trip                    p50 {:>8.1} us   p99 {:>8.1} us   -> {:.1}x faster than submit+fence (p50)",
            bench::micros(r.round_trip.p50),
            bench::micros(r.round_trip.p99),
            bench::ratio(baseline.p50, r.round_trip.p50)
        );
        println!(
            "  jobs/s, 1 host thread         {:>10.0}   (submit per job, {} in flight)",
            r.jobs_per_s_one_thread, opts.in_flight
        );
        println!(
            "  jobs/s, 1 host thread         {:>10.0}   (submit_batch of {}, {} in flight)",
            r.jobs_per_s_batched, opts.batch, opts.in_flight
        );
        println!(
            "  jobs/s, {} host threads        {:>10.0}   (submit_batch of {}, {} in flight each)",
            opts.threads, r.jobs_per_s_threads, opts.batch, opts.in_flight
        );
        if let Some(relaunch) = r.relaunch {
            println!(
                "  first job after an idle park  p50 {:>8.1} us   p99 {:>8.1} us   ({} samples)",
                bench::micros(relaunch.p50),
                bench::micros(relaunch.p99),
                relaunch.samples
            );
        }
    }
    Ok(())
}
