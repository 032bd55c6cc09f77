//! The library programs on the device, each against an independent CPU computation.

mod common;

use common::{bytes_count, config, TestRuntime};
use megaring::vm::library::library_program;
use megaring::{Completion, DeviceBuffer, Job, Placement};

/// Deterministic test data.
fn bytes(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

fn upload(rt: &TestRuntime, data: &[u8]) -> DeviceBuffer {
    let mut words = vec![0u32; data.len().div_ceil(4).max(1)];
    bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..data.len()].copy_from_slice(data);
    let buffer = rt.alloc_u32(words.len() as u64, Placement::DeviceShared).unwrap();
    buffer.write_u32(0, &words).unwrap();
    buffer
}

fn run(rt: &TestRuntime, name: &str, buffers: &[&DeviceBuffer], grid: u32, args: [u32; 4]) -> Completion {
    let library = library_program(name).unwrap();
    let program = rt.load_program(library.load().unwrap()).unwrap();
    let table = rt.buffer_table(buffers).unwrap();
    let fuel = library.fuel(grid, rt.info().vm_lanes);
    rt.submit(Job::program(&program, &table, grid, args, fuel).unwrap())
        .unwrap()
        .wait()
        .unwrap()
}

#[test]
fn integer_programs_equal_plain_cpu_loops() {
    let rt = TestRuntime::new(config());
    let data = bytes(8_000, 7);
    let input = upload(&rt, &data);
    let words: &[u32] = bytemuck::cast_slice(&data);

    let sum = run(&rt, "sum-u32", &[&input], 2_000, [0; 4]);
    assert_eq!(sum.results[0], words.iter().fold(0u32, |s, &w| s.wrapping_add(w)));

    let grid = 2_000usize;
    let count = run(&rt, "count-byte", &[&input], grid as u32, [0x41, 0, 0, 0]);
    assert_eq!(
        count.results[0] as usize,
        data[..grid].iter().filter(|&&b| b == 0x41).count()
    );

    let text = b"one\ntwo\n\nthree\nno newline at the end".repeat(40);
    let text_buffer = upload(&rt, &text);
    let lines = run(&rt, "lines", &[&text_buffer], text.len() as u32, [0; 4]);
    assert_eq!(lines.results[0] as usize, text.iter().filter(|&&b| b == b'\n').count()); // wc -l

    let bins = rt.alloc_u32(256, Placement::HostCached).unwrap();
    run(&rt, "histogram", &[&input, &bins], grid as u32, [0; 4]);
    let mut expected = [0u32; 256];
    data[..grid].iter().for_each(|&b| expected[b as usize] += 1);
    assert_eq!(bins.read_u32(0, 256).unwrap(), expected);
    rt.finish();
}

#[test]
fn float_programs_equal_ieee_arithmetic_on_the_cpu() {
    let rt = TestRuntime::new(config());
    let n = 1_500usize;
    // Floats from small integers and simple fractions: no denormals, some NaN and infinities.
    let mut xs: Vec<f32> = bytes(n * 2, 11)
        .chunks(2)
        .map(|c| (i32::from(c[0]) - 128) as f32 / 8.0 + f32::from(c[1]))
        .collect();
    xs[17] = f32::NAN;
    xs[900] = f32::INFINITY;
    let ys: Vec<f32> = bytes(n, 13).iter().map(|&b| f32::from(b) * 0.5).collect();
    let x = rt.alloc_u32(n as u64, Placement::DeviceShared).unwrap();
    let y = rt.alloc_u32(n as u64, Placement::HostCached).unwrap();
    x.write_u32(0, bytemuck::cast_slice(&xs)).unwrap();
    y.write_u32(0, bytemuck::cast_slice(&ys)).unwrap();

    let minmax = run(&rt, "minmax-f32", &[&x], n as u32, [0; 4]);
    let finite = xs.iter().filter(|v| !v.is_nan());
    let min = finite.clone().fold(f32::INFINITY, |m, &v| m.min(v));
    let max = finite.fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    assert_eq!(minmax.results[..2], [min.to_bits(), max.to_bits()]);

    let a = 1.5f32;
    run(&rt, "saxpy", &[&x, &y], n as u32, [a.to_bits(), 0, 0, 0]);
    let expected: Vec<u32> = xs.iter().zip(&ys).map(|(&x, &y)| (a * x + y).to_bits()).collect();
    let got = y.read_u32(0, n as u64).unwrap();
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        let both_nan = f32::from_bits(*g).is_nan() && f32::from_bits(*e).is_nan();
        assert!(g == e || both_nan, "saxpy element {i}: {g:#x} vs {e:#x}");
    }
    rt.finish();
}

#[test]
fn crc32_equals_zlib_on_a_real_file() {
    let rt = TestRuntime::new(config());
    // The first bytes of a real file (this test's source), up to the size whose per-lane
    // work fits one lavapipe epoch.
    let file = std::fs::read(file!()).unwrap();
    let x2n = rt.alloc_u32(32, Placement::DeviceShared).unwrap();
    x2n.write_u32(0, &megaring::vm::library::crc32_x2n()).unwrap();
    for len in [0usize, 1, 63, 600] {
        let data = &file[..len];
        let input = upload(&rt, data);
        let accumulator = rt.alloc_u32(1, Placement::DeviceShared).unwrap();
        let library = library_program("crc32").unwrap();
        let program = rt.load_program(library.load().unwrap()).unwrap();
        let table = rt.buffer_table(&[&input, &x2n, &accumulator]).unwrap();
        let job = Job::program(&program, &table, len as u32, [0; 4], rt.max_fuel()).unwrap();
        let done = rt.submit(job).unwrap().wait().unwrap();
        assert_eq!(done.results[0], crc32fast::hash(data), "{len} bytes");
    }
    rt.finish();
}

#[test]
fn count_literal_equals_bytes_count_across_chunk_borders() {
    let rt = TestRuntime::new(config());
    let hay = b"aaaa abab ababab aaab the then the end aaaaaaa".repeat(4);
    let input = upload(&rt, &hay);
    let library = library_program("count-literal").unwrap();
    let program = rt.load_program(library.load().unwrap()).unwrap();
    for needle in [&b"a"[..], b"aa", b"aaa", b"abab", b"the", b"xyz"] {
        let literal = upload(&rt, needle);
        let scratch = rt
            .alloc_u32(
                2 * u64::from(rt.info().vm_lanes) * needle.len() as u64,
                Placement::DeviceShared,
            )
            .unwrap();
        let table = rt.buffer_table(&[&input, &literal, &scratch]).unwrap();
        let job = Job::program(
            &program,
            &table,
            hay.len() as u32,
            [needle.len() as u32, 0, 0, 0],
            rt.max_fuel(),
        )
        .unwrap();
        let done = rt.submit(job).unwrap().wait().unwrap();
        assert_eq!(
            u64::from(done.results[0]),
            bytes_count(&hay, needle),
            "`{}`",
            String::from_utf8_lossy(needle)
        );
    }
    rt.finish();
}

#[test]
fn tiled_grids_larger_than_one_job_combine_to_the_cpu_answer() {
    let rt = TestRuntime::new(config());
    let lanes = rt.info().vm_lanes;
    // 60,000 elements: far more than one lavapipe job's fuel covers; 2,000 per tile.
    let (grid, tile) = (60_000u32, 2_000u32);
    let data = bytes(grid as usize * 4, 21);
    let words: &[u32] = bytemuck::cast_slice(&data);
    let input = upload(&rt, &data);
    let tiled = |name: &str, buffers: &[&DeviceBuffer], grid: u32, args: [u32; 4]| {
        let library = library_program(name).unwrap();
        let program = rt.load_program(library.load().unwrap()).unwrap();
        let table = rt.buffer_table(buffers).unwrap();
        let handle = rt
            .submit_tiled(&program, &table, grid, tile, args, library.fuel(tile, lanes))
            .unwrap();
        assert_eq!(handle.tiles(), grid.div_ceil(tile));
        let results: Vec<[u32; 4]> = handle.wait().unwrap().iter().map(|c| c.results).collect();
        assert_eq!(results.len(), grid.div_ceil(tile) as usize);
        library.combine(&results).unwrap()
    };

    let sum = tiled("sum-u32", &[&input], grid, [0; 4]);
    assert_eq!(sum[0], words.iter().fold(0u32, |s, &w| s.wrapping_add(w)));
    let count = tiled("count-byte", &[&input], grid * 4, [0x7f, 0, 0, 0]);
    assert_eq!(count[0] as usize, data.iter().filter(|&&b| b == 0x7f).count());
    let bins = rt.alloc_u32(256, Placement::HostCached).unwrap();
    tiled("histogram", &[&input, &bins], grid * 4, [0; 4]);
    let mut expected = [0u32; 256];
    data.iter().for_each(|&b| expected[b as usize] += 1);
    assert_eq!(bins.read_u32(0, 256).unwrap(), expected);

    let floats: Vec<f32> = words.iter().map(|&w| (w % 100_000) as f32 / 7.0 - 5_000.0).collect();
    let fx = rt.alloc_u32(u64::from(grid), Placement::DeviceShared).unwrap();
    fx.write_u32(0, bytemuck::cast_slice(&floats)).unwrap();
    let minmax = tiled("minmax-f32", &[&fx], grid, [0; 4]);
    let min = floats.iter().fold(f32::INFINITY, |m, &v| m.min(v));
    let max = floats.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    assert_eq!(minmax[..2], [min.to_bits(), max.to_bits()]);
    rt.finish();
}

#[test]
fn crc32_and_count_literal_tiles_combine_exactly_on_a_real_file() {
    let rt = TestRuntime::new(config());
    let lanes = rt.info().vm_lanes;
    // A real file, large enough for dozens of lavapipe-sized tiles.
    let file = std::fs::read(file!()).unwrap();
    let data = &file[..file.len().min(12_000)];
    let input = upload(&rt, data);
    let len = data.len() as u32;

    let crc = library_program("crc32").unwrap();
    let tile = crc.max_tile(lanes, rt.max_fuel()).min(len / 8).max(1);
    let tiles = len.div_ceil(tile);
    let k = upload(&rt, bytemuck::cast_slice(&megaring::vm::library::crc32_x2n()));
    let acc = rt.alloc_u32(u64::from(tiles), Placement::DeviceShared).unwrap();
    let program = rt.load_program(crc.load().unwrap()).unwrap();
    let buffers = rt.buffer_table(&[&input, &k, &acc]).unwrap();
    let handle = rt
        .submit_tiled(&program, &buffers, len, tile, [0, tile, 0, 0], crc.fuel(tile, lanes))
        .unwrap();
    assert!(handle.tiles() >= 8, "{} tiles", handle.tiles());
    let results: Vec<[u32; 4]> = handle.wait().unwrap().iter().map(|c| c.results).collect();
    assert_eq!(
        crc.combine(&results).unwrap()[0],
        crc32fast::hash(data),
        "crc32 over {tiles} tiles"
    );

    let literal = library_program("count-literal").unwrap();
    let program = rt.load_program(literal.load().unwrap()).unwrap();
    for needle in [&b"ee"[..], b"the", b"rt.", b"  "] {
        let m = needle.len() as u32;
        let tile = megaring::vm::library::literal_max_tile(lanes, m, rt.max_fuel()).min(len / 8);
        let tiles = len.div_ceil(tile);
        let scratch = rt
            .alloc_u32(u64::from(2 * lanes * m * tiles), Placement::HostCached)
            .unwrap();
        let lit = upload(&rt, needle);
        let buffers = rt.buffer_table(&[&input, &lit, &scratch]).unwrap();
        let fuel = megaring::vm::library::literal_fuel(tile, lanes, m);
        rt.submit_tiled(&program, &buffers, len, tile, [m, tile, len, 0], fuel)
            .unwrap()
            .wait()
            .unwrap();
        let words = scratch.read_u32(0, scratch.len_u32()).unwrap();
        let (count, _) = megaring::vm::library::literal_chain(&words, lanes, m, tiles as usize, 0);
        let shown = String::from_utf8_lossy(needle);
        assert_eq!(count, bytes_count(data, needle), "`{shown}` over {tiles} tiles");
    }
    rt.finish();
}
