//! `megaring scan`: stream files through io_uring into imported host memory and run a
//! program over them on the GPU in place; a result table on stdout, progress on stderr.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use megaring::io::{FileReport, ScanOptions, ScanProgram, Scanner};
use megaring::{Runtime, RuntimeConfig};

/// Options of `megaring scan`.
#[derive(Args)]
pub struct ScanArgs {
    /// Files to scan (directories need --recursive).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// `lines`, `count-byte`, `count-literal`, `crc32`, `histogram`, or an assembly file
    /// (`*.asm`: b0 = the chunk's bytes, b1 = 1,024 scratch words; result words summed).
    #[arg(long, short)]
    program: String,
    /// The byte `count-byte` counts (decimal, 0x hex, or one character).
    #[arg(long)]
    byte: Option<String>,
    /// The string `count-literal` counts (escapes: \n \t \\ \0 \xNN).
    #[arg(long)]
    literal: Option<String>,
    /// Argument words of an assembly program (up to 4).
    #[arg(long = "arg", value_parser = super::parse_word)]
    args: Vec<u32>,
    /// Walk directories given, scanning every regular file under them.
    #[arg(long, short)]
    recursive: bool,
    /// Read with O_DIRECT where the file system allows (default: through the page cache).
    #[arg(long)]
    direct: bool,
    /// Chunk size in KiB, at most 1,048,576 (1 GiB) (default: 4096, 64 on lavapipe).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    chunk_kib: Option<u64>,
    /// Chunks in flight (arena slots; default: 16, 4 on lavapipe).
    #[arg(long)]
    slots: Option<usize>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn parse_byte(text: &str) -> Result<u8, String> {
    let parsed = if let Some(hex) = text.strip_prefix("0x") {
        u8::from_str_radix(hex, 16).ok()
    } else if text.chars().count() == 1 && !text.as_bytes()[0].is_ascii_digit() {
        Some(text.as_bytes()[0]).filter(|_| text.len() == 1)
    } else {
        text.parse::<u8>().ok()
    };
    parsed.ok_or_else(|| format!("--byte {text}: give 0..255, 0x00..0xff or one ASCII character"))
}

fn unescape(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'n') => out.push(b'\n'),
            Some(b't') => out.push(b'\t'),
            Some(b'r') => out.push(b'\r'),
            Some(b'0') => out.push(0),
            Some(b'\\') => out.push(b'\\'),
            Some(b'x') => {
                let hex: String = [bytes.next(), bytes.next()]
                    .iter()
                    .flatten()
                    .map(|&c| c as char)
                    .collect();
                out.push(u8::from_str_radix(&hex, 16).map_err(|_| format!("bad escape \\x{hex} in --literal"))?);
            }
            other => {
                return Err(format!(
                    "unknown escape \\{} in --literal; use \\n \\t \\r \\0 \\\\ or \\xNN",
                    other.map_or(String::new(), |c| (c as char).to_string())
                ))
            }
        }
    }
    Ok(out)
}

fn program(args: &ScanArgs) -> Result<ScanProgram, String> {
    let needs = |what: &str| format!("--program {} needs {what}", args.program);
    Ok(match args.program.as_str() {
        "lines" => ScanProgram::Lines,
        "crc32" => ScanProgram::Crc32,
        "histogram" => ScanProgram::Histogram,
        "count-byte" => ScanProgram::CountByte(parse_byte(args.byte.as_deref().ok_or_else(|| needs("--byte"))?)?),
        "count-literal" => {
            ScanProgram::CountLiteral(unescape(args.literal.as_deref().ok_or_else(|| needs("--literal"))?)?)
        }
        path => {
            if args.args.len() > 4 {
                return Err(format!("{} arguments given; a job takes at most 4", args.args.len()));
            }
            let source = std::fs::read_to_string(path).map_err(|e| {
                format!(
                    "cannot read {path}: {e} (give lines, count-byte, count-literal, crc32, histogram or a .asm file)"
                )
            })?;
            let parsed = megaring::vm::assemble(&source).map_err(|e| format!("{path}: {e}"))?;
            let verified = megaring::vm::verify(&parsed, 2).map_err(|e| format!("{path}: {e}"))?;
            let mut words = [0u32; 4];
            words[..args.args.len()].copy_from_slice(&args.args);
            ScanProgram::Custom {
                program: verified,
                args: words,
            }
        }
    })
}

/// The files to scan: those given, and with --recursive every regular file under the
/// directories given (sorted). Anything else is passed on to get its own error.
fn expand(files: &[PathBuf], recursive: bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for path in files {
        if recursive && path.is_dir() {
            let mut stack = vec![path.clone()];
            let mut found = Vec::new();
            while let Some(dir) = stack.pop() {
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    found.push(dir); // reported as its own error
                    continue;
                };
                for entry in entries.flatten() {
                    match entry.file_type() {
                        Ok(t) if t.is_dir() => stack.push(entry.path()),
                        Ok(t) if t.is_file() => found.push(entry.path()),
                        _ => {} // symlinks and special files: not followed
                    }
                }
            }
            found.sort();
            out.extend(found);
        } else {
            out.push(path.clone());
        }
    }
    out
}

/// Runs the scan; returns whether every file succeeded.
pub fn scan(config: RuntimeConfig, args: ScanArgs) -> Result<bool, Box<dyn std::error::Error>> {
    let program = program(&args)?;
    let files = expand(&args.files, args.recursive);
    let runtime = Runtime::new(config)?;
    let options = ScanOptions {
        chunk_bytes: args.chunk_kib.map(|k| (k << 10) as usize),
        slots: args.slots,
        direct: args.direct,
        tiles_per_chunk: None,
        copy_reads: false,
        vulkan_arena: false,
    };
    let name = program.name();
    let mut scanner = Scanner::new(&runtime, program, &options)?;
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} ({msg} files)",
        )
        .expect("valid template"),
    );
    let start = Instant::now();
    let reports = scanner.scan(&files, &mut |p| {
        bar.set_length(p.bytes_total);
        bar.set_position(p.bytes_done);
        bar.set_message(format!("{}/{}", p.files_done, p.files_total));
    });
    bar.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    let bytes: u64 = reports.iter().map(|r| r.bytes).sum();
    let failed = reports.iter().filter(|r| r.outcome.is_err()).count();
    let rate = bytes as f64 / seconds.max(1e-9) / 1e9;
    if args.json {
        let value = serde_json::json!({
            "program": name,
            "files": reports.iter().map(report_json).collect::<Vec<_>>(),
            "bytes": bytes,
            "seconds": seconds,
            "gb_per_s": rate,
            "failed": failed,
            "ingest": scanner.describe(),
            "device": runtime.info().caps.name,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        let width = reports
            .iter()
            .map(|r| r.path.display().to_string().len())
            .max()
            .unwrap_or(4)
            .min(80);
        println!("{:<width$}  {:>14}  {name}", "file", "bytes");
        for r in &reports {
            let shown = match &r.outcome {
                Ok(v) => v.to_string(),
                Err(e) => format!("error: {e}"),
            };
            println!("{:<width$}  {:>14}  {shown}", r.path.display(), r.bytes);
        }
    }
    eprintln!(
        "megaring scan: {} files ({failed} failed), {bytes} bytes in {seconds:.3} s = {} on {}; {}",
        reports.len(),
        if rate >= 1.0 {
            format!("{rate:.2} GB/s")
        } else {
            format!("{:.1} MB/s", rate * 1e3)
        },
        runtime.info().caps.name,
        scanner.describe()
    );
    drop(scanner);
    runtime.shutdown()?;
    Ok(failed == 0)
}

fn report_json(r: &FileReport) -> serde_json::Value {
    match &r.outcome {
        Ok(v) => serde_json::json!({"path": r.path, "bytes": r.bytes, "direct": r.direct, "result": v.to_json()}),
        Err(e) => serde_json::json!({"path": r.path, "bytes": r.bytes, "error": e.to_string()}),
    }
}
