//! The `megaring` command on the real device: `run` with a library program and a file,
//! an assembly error pointing at its line, a device fault, `info`, and `scan` (table, JSON,
//! per-file errors, argument errors) against answers computed here.

mod common;

use common::{bytes_count, scratch};
use std::process::Command;
use std::sync::Mutex;

/// One device user at a time (on lavapipe the GPU is the CPU): these tests start whole
/// processes.
static DEVICE: Mutex<()> = Mutex::new(());

fn megaring(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_megaring"))
        .args(args)
        .env("MEGARING_VALIDATION", "1")
        .env(
            "XDG_RUNTIME_DIR",
            std::env::var("XDG_RUNTIME_DIR").unwrap_or_else(|_| "/tmp".into()),
        )
        .output()
        .expect("megaring runs")
}

fn temp_file(name: &str, contents: &[u8]) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("megaring-cli-{}-{name}", std::process::id()));
    std::fs::write(&path, contents).unwrap();
    path
}

#[test]
fn run_counts_lines_reports_asm_errors_by_line_and_faults_by_name() {
    let _device = DEVICE.lock().unwrap_or_else(|p| p.into_inner());
    let text = temp_file("text", b"alpha\nbeta\n\ngamma\nno newline");
    let out = megaring(&["run", "lines", "--input", text.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("result 0: 4 "), "{stdout}");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("[vulkan validation]"),
        "validation messages"
    );

    // Repeated runs give the same results, timed after a warm-up run.
    let out = megaring(&[
        "run",
        "lines",
        "--input",
        text.to_str().unwrap(),
        "--repeat",
        "3",
        "--time",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains("result 0: 4 ") && stdout.contains("over 2 runs after a warm-up"),
        "{stdout}"
    );
    let out = megaring(&["run", "lines", "--input", text.to_str().unwrap(), "--time"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--time needs --repeat 2"));

    let bad = temp_file("bad.asm", b"    lane r1\n    ad r2, r1, r1\n    halt\n");
    let out = megaring(&["run", bad.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("bad.asm:2:5: unknown mnemonic `ad`; did you mean `add`?"),
        "{stderr}"
    );

    let div = temp_file("div.asm", b"    grid r1\n    divu r3, r1, r2\n    halt\n");
    let out = megaring(&["run", div.to_str().unwrap(), "--grid", "5"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("integer division by zero at instruction 1, lane 0"),
        "{stderr}"
    );
    for path in [text, bad, div] {
        let _ = std::fs::remove_file(path);
    }
}

#[test]
fn run_tiles_a_file_too_large_for_one_job() {
    let _device = DEVICE.lock().unwrap_or_else(|p| p.into_inner());
    let text: Vec<u8> = (0..200_000u32)
        .map(|i| if i % 37 == 0 { b'\n' } else { b'a' + (i % 26) as u8 })
        .collect();
    let path = temp_file("big", &text);
    let out = megaring(&["run", "lines", "--input", path.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let expected = text.iter().filter(|&&b| b == b'\n').count();
    assert!(stdout.contains(&format!("result 0: {expected} ")), "{stdout}");
    let out = megaring(&["run", "lines", "--input", path.to_str().unwrap(), "--tile", "100000000"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("use at most"),
        "an oversized tile is refused with the limit"
    );
    let _ = std::fs::remove_file(path);
}

#[test]
fn info_reports_mode_and_ring_memory() {
    let _device = DEVICE.lock().unwrap_or_else(|p| p.into_inner());
    let out = megaring(&["info"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for needle in [
        "Chosen device:",
        "Self-test: passed",
        "Mode: Persistent",
        "completion queue",
        "Validation layer: on",
    ] {
        assert!(stdout.contains(needle), "missing `{needle}` in:\n{stdout}");
    }
    // The converged dispatcher is on by default except on lavapipe (llvmpipe).
    let out = megaring(&["info", "--json"]);
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).expect("info --json prints JSON");
    let lavapipe = info["driver"].as_str().unwrap_or("").contains("llvmpipe");
    assert_eq!(info["vm_converged"], serde_json::Value::Bool(!lavapipe), "{info}");
    let shown = if lavapipe {
        "converged dispatcher off"
    } else {
        "converged dispatcher on"
    };
    assert!(stdout.contains(shown), "missing `{shown}` in:\n{stdout}");
}

/// Pseudo-random text-like bytes with newlines and overlapping repeats of `ab`.
fn text(len: usize, seed: u32) -> Vec<u8> {
    common::text(len, seed, b"aab ab\nabab\nb\nxyz")
}

/// The table row of `path`: its whitespace-separated fields (path, bytes, result...).
fn row<'a>(stdout: &'a str, path: &std::path::Path) -> Vec<&'a str> {
    let path = path.to_str().unwrap();
    stdout
        .lines()
        .find(|line| line.split_whitespace().next() == Some(path))
        .unwrap_or_else(|| panic!("no row for {path} in:\n{stdout}"))
        .split_whitespace()
        .collect()
}

#[test]
fn scan_lines_prints_the_wc_l_count_per_file() {
    let _device = DEVICE.lock().unwrap_or_else(|p| p.into_inner());
    let dir = scratch();
    // Larger than one chunk (64 KiB on lavapipe), no newline at the end.
    let data = text(100_000, 1);
    let path = dir.path().join("text.txt");
    std::fs::write(&path, &data).unwrap();
    let out = megaring(&["scan", "-p", "lines", path.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(out.status.code(), Some(0));
    let lines = data.iter().filter(|&&b| b == b'\n').count();
    assert_eq!(
        row(&stdout, &path),
        [path.to_str().unwrap(), &data.len().to_string(), &lines.to_string()],
        "{stdout}"
    );
    assert!(
        stdout.lines().next().unwrap().contains("lines"),
        "header names the program: {stdout}"
    );
    assert!(!stderr.contains("[vulkan validation]"), "validation messages: {stderr}");
}

#[test]
fn scan_reports_a_missing_file_in_its_row_and_fails_but_scans_the_others() {
    let _device = DEVICE.lock().unwrap_or_else(|p| p.into_inner());
    let dir = scratch();
    let (a, b) = (text(30_000, 2), text(5_000, 3));
    let good_a = dir.path().join("a.txt");
    let good_b = dir.path().join("b.txt");
    let missing = dir.path().join("missing.txt");
    std::fs::write(&good_a, &a).unwrap();
    std::fs::write(&good_b, &b).unwrap();
    let out = megaring(&[
        "scan",
        "-p",
        "lines",
        good_a.to_str().unwrap(),
        missing.to_str().unwrap(),
        good_b.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "a missing file fails the command: {stdout}");
    for (path, data) in [(&good_a, &a), (&good_b, &b)] {
        let lines = data.iter().filter(|&&c| c == b'\n').count();
        assert_eq!(
            row(&stdout, path),
            [path.to_str().unwrap(), &data.len().to_string(), &lines.to_string()],
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let bad = row(&stdout, &missing).join(" ");
    assert!(bad.contains("error:"), "{bad}");
    assert!(bad.contains("no such file"), "{bad}");
}

#[test]
fn scan_json_gives_each_file_its_crc32() {
    let _device = DEVICE.lock().unwrap_or_else(|p| p.into_inner());
    let dir = scratch();
    let files: Vec<(std::path::PathBuf, Vec<u8>)> = [(80_000, 4), (1, 5), (4_099, 6)]
        .into_iter()
        .enumerate()
        .map(|(i, (len, seed))| {
            let path = dir.path().join(format!("{i}.bin"));
            let data = text(len, seed);
            std::fs::write(&path, &data).unwrap();
            (path, data)
        })
        .collect();
    let mut args = vec!["scan", "-p", "crc32", "--json"];
    args.extend(files.iter().map(|(p, _)| p.to_str().unwrap()));
    let out = megaring(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(json["program"], "crc32", "{json}");
    assert_eq!(json["failed"], 0, "{json}");
    assert_eq!(json["files"].as_array().map(Vec::len), Some(files.len()), "{json}");
    for (i, (path, data)) in files.iter().enumerate() {
        let file = &json["files"][i];
        assert_eq!(file["path"], path.to_str().unwrap(), "{json}");
        assert_eq!(file["bytes"], data.len() as u64, "{json}");
        assert_eq!(
            file["result"],
            u64::from(crc32fast::hash(data)),
            "{}: {json}",
            path.display()
        );
    }
}

#[test]
fn scan_count_literal_equals_bytes_count() {
    let _device = DEVICE.lock().unwrap_or_else(|p| p.into_inner());
    let dir = scratch();
    let data = text(100_000, 7);
    let path = dir.path().join("literal.txt");
    std::fs::write(&path, &data).unwrap();
    // `\n` is the command's escape, not a newline in the argument.
    let out = megaring(&[
        "scan",
        "-p",
        "count-literal",
        "--literal",
        "ab\\n",
        path.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let expected = bytes_count(&data, b"ab\n");
    assert!(expected > 100, "the test data has matches: {expected}");
    assert_eq!(
        row(&stdout, &path),
        [path.to_str().unwrap(), &data.len().to_string(), &expected.to_string()],
        "{stdout}"
    );
}

#[test]
fn scan_count_byte_without_byte_names_the_missing_option() {
    let _device = DEVICE.lock().unwrap_or_else(|p| p.into_inner());
    let dir = scratch();
    let path = dir.path().join("x.txt");
    std::fs::write(&path, b"x\n").unwrap();
    let out = megaring(&["scan", "-p", "count-byte", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(stderr.contains("--byte"), "{stderr}");
}

#[test]
fn bench_vm_measures_a_replacement_program_and_checks_its_result() {
    let _device = DEVICE.lock().unwrap_or_else(|p| p.into_inner());
    // A plain strided sum in place of the library's sum-u32 (one tile: tile.begin is 0).
    let plain = temp_file("sum.asm", common::STRIDED_SUM_ASM.as_bytes());
    let arg = format!("sum-u32={}", plain.display());
    let out = megaring(&[
        "bench",
        "vm",
        "--elements",
        "2000",
        "--samples",
        "1",
        "--program",
        &arg,
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let rows = rows.as_array().expect("an array");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["program"], "sum-u32");
    assert!(rows[0]["interpreted_over_native_p50"].as_f64().unwrap() > 0.0);

    // A replacement that computes something else is caught, and so is an unknown name.
    let wrong = temp_file("zero.asm", b"        halt\n");
    let arg = format!("sum-u32={}", wrong.display());
    let out = megaring(&["bench", "vm", "--elements", "2000", "--samples", "1", "--program", &arg]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the measurement is void"),
        "{out:?}"
    );
    let out = megaring(&["bench", "vm", "--program", "sum-u64"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("use one of"), "{out:?}");
    let _ = std::fs::remove_file(plain);
    let _ = std::fs::remove_file(wrong);
}

#[test]
fn scan_reports_permission_denied_for_a_file_the_user_cannot_read() {
    use std::os::unix::fs::PermissionsExt;
    let _device = DEVICE.lock().unwrap_or_else(|p| p.into_inner());
    let dir = scratch();
    let mode =
        |path: &std::path::Path, mode| std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    mode(dir.path(), 0o755);
    let data = text(20_000, 8);
    let open = dir.path().join("open.txt");
    let secret = dir.path().join("secret.txt");
    std::fs::write(&open, &data).unwrap();
    std::fs::write(&secret, &data).unwrap();
    mode(&open, 0o644);
    // A shader cache the unprivileged user may write (lavapipe compiles at first dispatch).
    let cache = dir.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    mode(&cache, 0o777);
    let binary = env!("CARGO_BIN_EXE_megaring");
    // SAFETY: geteuid has no preconditions.
    let mut command = if unsafe { libc::geteuid() } == 0 {
        // root reads every file: run as nobody, for whom the file is root's alone.
        mode(&secret, 0o600);
        if Command::new("setpriv").arg("--version").output().is_err() {
            eprintln!("skipped: running as root and setpriv (util-linux) is missing, so no user lacks the permission");
            return;
        }
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", binary]);
        c
    } else {
        mode(&secret, 0o000);
        Command::new(binary)
    };
    let out = command
        .args(["scan", "-p", "lines", open.to_str().unwrap(), secret.to_str().unwrap()])
        .env("MEGARING_VALIDATION", "1")
        .env("XDG_RUNTIME_DIR", "/tmp")
        .env("XDG_CACHE_HOME", &cache)
        .output()
        .expect("megaring runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failing file fails the command: {stdout}{stderr}"
    );
    let lines = data.iter().filter(|&&b| b == b'\n').count();
    assert_eq!(
        row(&stdout, &open),
        [open.to_str().unwrap(), &data.len().to_string(), &lines.to_string()],
        "{stdout}{stderr}"
    );
    let denied = row(&stdout, &secret).join(" ");
    assert!(denied.contains("permission denied"), "{denied}");
    assert!(!stderr.contains("[vulkan validation]"), "validation messages: {stderr}");
}

#[test]
fn bench_latency_refuses_zero_counts_and_honours_the_global_workgroups() {
    let _device = DEVICE.lock().unwrap_or_else(|p| p.into_inner());
    let out = megaring(&["bench", "latency", "--iterations", "0"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("iterations = 0"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let out = megaring(&[
        "--workgroups",
        "2",
        "bench",
        "latency",
        "--iterations",
        "20",
        "--jobs",
        "200",
        "--threads",
        "2",
        "--relaunch-samples",
        "0",
        "--cq",
        "host",
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["rings"][0]["workgroups"], 2, "{report}");
}

#[test]
fn scan_refuses_a_chunk_larger_than_a_gibibyte() {
    let out = megaring(&["scan", "-p", "lines", "--chunk-kib", "8388608", "Cargo.toml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "a usage error: {stderr}");
    assert!(stderr.contains("--chunk-kib"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn soak_checks_every_result_through_restarts_and_reports_json() {
    let _device = DEVICE.lock().unwrap_or_else(|p| p.into_inner());
    let out = megaring(&[
        "soak",
        "--seconds",
        "6",
        "--restart-every",
        "2",
        "--threads",
        "3",
        "--json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}{stderr}", String::from_utf8_lossy(&out.stdout));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["ok"], true, "{report}");
    let jobs = &report["jobs"];
    for failure in ["lost", "duplicated", "wrong", "hangs", "errors"] {
        assert_eq!(jobs[failure], 0, "{failure}: {report}");
    }
    assert_eq!(report["validation_errors"], 0, "{report}");
    assert!(jobs["done"].as_u64().unwrap() > 0, "{report}");
    assert!(report["runtime_restarts"].as_u64().unwrap() >= 1, "{report}");
}
