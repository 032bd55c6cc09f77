//! The `megaring` command on the real device: `run` with a library program and a file,
//! an assembly error pointing at its line, a device fault, and `info`.

use std::process::Command;
use std::sync::Mutex;

/// One device user at a time (DESIGN.md §2.9): these tests start whole processes.
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
}
