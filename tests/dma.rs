//! GPU-initiated reads on lavapipe: programs write read requests, the host serves them with
//! real io_uring reads of real files into imported memory, and continuations run over the
//! bytes in place; index chasing, linked-list chains and every kind of bad request.

mod common;

use std::io::Write;
use std::path::PathBuf;

use common::{config, scratch, TestRuntime, COPY_REQUESTS};
use megaring::io::{DmaError, DmaReport, DmaRequest, DmaService};
use megaring::vm::{assemble, verify, VerifiedProgram};
use megaring::{DeviceBuffer, Error, Placement, Runtime};

/// Sums b0's u32 words → result 0; result 1 = request arg0; result 2 = bytes read.
const SUM: &str = "
        tile.begin r30
        lane r1
        add r1, r1, r30
        grid r2
        movi r9, 2
        shru r2, r2, r9        ; words
        lanes r3
top:    ltu r4, r1, r2
        brz r4, done
        ld32 r5, b0[r1]
        add r6, r6, r5
        add r1, r1, r3
        jmp top
done:   red.add r7, r6
        result 0, r7
        arg r8, 1
        result 1, r8
        arg r8, 0
        result 2, r8
        halt
";

/// b0 is an index: word 0 = N, then N (offset, length) pairs. Requests one read per block
/// of the same file (arg 3) with continuation `arg 1` and arg0 = the block's number.
const INDEX: &str = "
        lane r1
        lanes r3
        ld32 r2, b0[r0]        ; N
        movi r10, 1
        movi r11, 3
        arg r20, 1
        arg r21, 3
top:    ltu r4, r1, r2
        brz r4, done
        shl r5, r1, r10
        addi r5, r5, 1
        ld32 r6, b0[r5]        ; offset
        addi r5, r5, 1
        ld32 r7, b0[r5]        ; length
        atomic.add r8, b1[r0], r10
        shl r8, r8, r11
        addi r8, r8, 8
        st32 b1[r8], r21       ; file
        addi r8, r8, 1
        st32 b1[r8], r6        ; offset_lo
        addi r8, r8, 2         ; offset_hi stays 0
        st32 b1[r8], r7        ; length
        addi r8, r8, 1
        st32 b1[r8], r20       ; continuation
        addi r8, r8, 1
        st32 b1[r8], r1        ; arg0 = block number
        add r1, r1, r3
        jmp top
done:   halt
";

/// A linked-list block: word 0 = next block's offset (0xFFFFFFFF ends), word 1 = its length.
/// Sums the block (result 0), result 1 = depth (arg 1); lane 0 requests the next block with
/// depth + 1 and this continuation (arg 2) again.
const CHAIN: &str = "
        lane r1
        grid r2
        movi r9, 2
        shru r2, r2, r9
        lanes r3
top:    ltu r4, r1, r2
        brz r4, done
        ld32 r5, b0[r1]
        add r6, r6, r5
        add r1, r1, r3
        jmp top
done:   red.add r7, r6
        result 0, r7
        arg r8, 1
        result 1, r8
        lane r10
        brnz r10, end
        ld32 r12, b0[r0]       ; next offset
        movi r13, -1
        eq r14, r12, r13
        brnz r14, end
        movi r15, 1
        atomic.add r16, b1[r0], r15
        movi r17, 3
        shl r16, r16, r17
        addi r16, r16, 8
        arg r18, 3
        st32 b1[r16], r18      ; file
        addi r16, r16, 1
        st32 b1[r16], r12      ; offset_lo
        addi r16, r16, 2
        ld32 r18, b0[r15]      ; length
        st32 b1[r16], r18
        addi r16, r16, 1
        arg r18, 2
        st32 b1[r16], r18      ; continuation: this one
        addi r16, r16, 1
        addi r19, r8, 1
        st32 b1[r16], r19      ; arg0 = depth + 1
        addi r16, r16, 1
        st32 b1[r16], r18      ; arg1 = this continuation
end:    halt
";

/// Reads far outside b0.
const FAULT: &str = "
        movi r1, 100000
        ld32 r2, b0[r1]
        halt
";

fn program(source: &str) -> VerifiedProgram {
    verify(&assemble(source).unwrap(), 2).unwrap()
}

fn write_file(dir: &tempfile::TempDir, name: &str, words: &[u32]) -> PathBuf {
    let path = dir.path().join(name);
    let mut file = std::fs::File::create(&path).unwrap();
    file.write_all(bytemuck::cast_slice(words)).unwrap();
    path
}

/// Deterministic pseudo-random words.
fn words(n: usize, seed: u32) -> Vec<u32> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        })
        .collect()
}

fn sum(words: &[u32]) -> u32 {
    words.iter().fold(0u32, |s, &w| s.wrapping_add(w))
}

/// A device buffer holding `records`, the input of COPY_REQUESTS.
fn records(rt: &Runtime, records: &[DmaRequest]) -> DeviceBuffer {
    let words: Vec<u32> = records.iter().flat_map(DmaRequest::to_words).collect();
    let buffer = rt.alloc_u32(words.len() as u64, Placement::DeviceShared).unwrap();
    buffer.write_u32(0, &words).unwrap();
    buffer
}

fn req(file: u32, offset: u64, len: u32, continuation: u32, arg0: u32) -> DmaRequest {
    DmaRequest {
        file,
        offset,
        len,
        continuation,
        args: [arg0, continuation],
    }
}

fn ok_results(report: &DmaReport) {
    for job in &report.jobs {
        if let Err(e) = &job.outcome {
            panic!("job {:?} failed: {e}", job.chain);
        }
    }
}

#[test]
fn index_chase_reads_every_block_and_sums_it() {
    let rt = TestRuntime::new(config());
    let dir = scratch();
    // 4 KiB index, then 24 blocks of 4..4096 bytes stored in a shuffled order.
    let n = 24usize;
    let lens: Vec<usize> = (0..n).map(|i| 4 * (1 + (i * 379 + 13) % 1024)).collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| (i * 7 + 3) % n);
    let mut file = vec![0u32; 1024];
    let mut blocks = vec![Vec::new(); n];
    let mut index = vec![(0u32, 0u32); n];
    for &i in &order {
        blocks[i] = words(lens[i] / 4, i as u32 + 1);
        index[i] = ((file.len() * 4) as u32, lens[i] as u32);
        file.extend(&blocks[i]);
    }
    file[0] = n as u32;
    for (i, &(offset, len)) in index.iter().enumerate() {
        file[1 + 2 * i] = offset;
        file[2 + 2 * i] = len;
    }
    let path = write_file(&dir, "indexed", &file);

    let mut dma = DmaService::new(&rt, 4, 4096, 32).unwrap();
    assert!(dma.arena_imported());
    let f = dma.register_file(&path).unwrap();
    let sum_id = dma.register_continuation(program(SUM)).unwrap();
    let index_id = dma.register_continuation(program(INDEX)).unwrap();
    // The start job only asks for the index; the index continuation asks for the blocks.
    let start = req(f, 0, 4096, index_id, sum_id);
    let input = records(&rt, &[start]);
    let report = dma.run(&program(COPY_REQUESTS), Some(&input), &[], 1, [0; 4]).unwrap();
    ok_results(&report);
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    assert_eq!(report.jobs.len(), n + 2);
    assert_eq!(report.continuations(index_id).count(), 1);
    let mut seen = vec![false; n];
    for job in report.continuations(sum_id) {
        let done = job.outcome.as_ref().unwrap();
        let block = done.results[1] as usize;
        assert!(!seen[block], "block {block} summed twice");
        seen[block] = true;
        assert_eq!(job.request.unwrap().args[0] as usize, block);
        assert_eq!((job.bytes, done.results[2] as usize), (lens[block], lens[block]));
        assert_eq!(done.results[0], sum(&blocks[block]), "block {block}");
        assert_eq!((job.chain.len(), job.chain[0]), (2, 0), "{:?}", job.chain);
    }
    assert!(seen.iter().all(|&s| s), "every block was read: {seen:?}");
    drop(dma);
    rt.finish();
}

#[test]
fn a_chain_of_continuations_follows_a_linked_list_to_its_end() {
    let rt = TestRuntime::new(config());
    let dir = scratch();
    // 12 blocks at shuffled places; each starts with the next one's offset and length.
    let n = 12usize;
    let lens: Vec<usize> = (0..n).map(|i| 8 + 4 * ((i * 601 + 77) % 1000)).collect();
    let mut place: Vec<usize> = (0..n).collect();
    place.sort_by_key(|&i| (i * 5 + 2) % n);
    let mut offsets = vec![0usize; n];
    let mut at = 64; // some bytes before the first block
    for &i in &place {
        offsets[i] = at;
        at += lens[i];
    }
    let mut file = vec![0xdead_beef_u32; at / 4];
    let mut blocks = Vec::new();
    for i in 0..n {
        let mut block = words(lens[i] / 4, 100 + i as u32);
        (block[0], block[1]) = match i + 1 < n {
            true => (offsets[i + 1] as u32, lens[i + 1] as u32),
            false => (u32::MAX, 0),
        };
        file[offsets[i] / 4..offsets[i] / 4 + block.len()].copy_from_slice(&block);
        blocks.push(block);
    }
    let path = write_file(&dir, "list", &file);

    let mut dma = DmaService::new(&rt, 2, 4096, 4).unwrap();
    let f = dma.register_file(&path).unwrap();
    let chain_id = dma.register_continuation(program(CHAIN)).unwrap();
    let head = req(f, offsets[0] as u64, lens[0] as u32, chain_id, 0);
    let input = records(&rt, &[head]);
    let report = dma.run(&program(COPY_REQUESTS), Some(&input), &[], 1, [0; 4]).unwrap();
    ok_results(&report);
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    let jobs: Vec<_> = report.continuations(chain_id).collect();
    assert_eq!(jobs.len(), n, "the whole list was followed");
    for (depth, job) in jobs.iter().enumerate() {
        let done = job.outcome.as_ref().unwrap();
        assert_eq!(done.results[1] as usize, depth, "completions come in chain order");
        assert_eq!(done.results[0], sum(&blocks[depth]), "block {depth}");
        assert_eq!(job.request.unwrap().offset, offsets[depth] as u64);
        assert_eq!(job.chain, vec![0; depth + 1]);
    }

    // A list that loops forever is cut by the job limit instead of hanging.
    let mut looped = file.clone();
    looped[offsets[n - 1] / 4] = offsets[0] as u32;
    looped[offsets[n - 1] / 4 + 1] = lens[0] as u32;
    let path = write_file(&dir, "loop", &looped);
    let f = dma.register_file(&path).unwrap();
    dma.set_max_jobs(30);
    let input = records(&rt, &[DmaRequest { file: f, ..head }]);
    let report = dma.run(&program(COPY_REQUESTS), Some(&input), &[], 1, [0; 4]).unwrap();
    ok_results(&report);
    assert_eq!(report.jobs.len(), 30);
    assert!(
        matches!(report.rejected[..], [ref r] if matches!(r.error, DmaError::JobLimit { request: 0, limit: 30 })),
        "{:?}",
        report.rejected
    );
    drop(dma);
    rt.finish();
}

#[test]
fn bad_requests_get_typed_errors_and_the_valid_ones_still_run() {
    let rt = TestRuntime::new(config());
    let dir = scratch();
    let data = words(3000, 9);
    let path = write_file(&dir, "data", &data);
    let len = (data.len() * 4) as u64;

    let mut dma = DmaService::new(&rt, 2, 4096, 16).unwrap();
    let f = dma.register_file(&path).unwrap();
    let sum_id = dma.register_continuation(program(SUM)).unwrap();
    let fault_id = dma.register_continuation(program(FAULT)).unwrap();
    let max = dma.max_read() as u32;
    let good = req(f, 400, 2000, sum_id, 5);
    let requests = [
        good,
        req(99, 400, 2000, sum_id, 5),
        req(f, 400, 2000, 99, 5),
        req(f, 400, 0, sum_id, 5),
        req(f, 400, max + 4, sum_id, 5),
        req(f, len, 2000, sum_id, 5),
        req(f, 1 << 32, 2000, sum_id, 5),
        req(f, 400, 2000, fault_id, 5),
        req(f, len - 100, 2000, sum_id, 6), // runs past the end of the file: a short read
    ];
    let input = records(&rt, &requests);
    let report = dma.run(&program(COPY_REQUESTS), Some(&input), &[], 1, [0; 4]).unwrap();
    let mut rejected: Vec<_> = report.rejected.iter().map(|r| (r.error.request(), &r.error)).collect();
    rejected.sort_by_key(|(k, _)| *k);
    let errors: Vec<String> = rejected.iter().map(|(_, e)| e.to_string()).collect();
    let indices: Vec<_> = rejected.iter().map(|(k, _)| k.unwrap()).collect();
    assert_eq!(indices, [1, 2, 3, 4, 5, 6], "{errors:#?}");
    assert!(
        report.rejected.iter().all(|r| r.chain.is_empty()),
        "rejected from the initial job"
    );
    let e: Vec<_> = rejected.iter().map(|(_, e)| *e).collect();
    assert!(
        matches!(e[0], DmaError::UnknownFile { file: 99, files: 1, .. }),
        "{errors:?}"
    );
    assert!(matches!(
        e[1],
        DmaError::UnknownContinuation {
            continuation: 99,
            continuations: 2,
            ..
        }
    ));
    assert!(matches!(e[2], DmaError::ZeroLength { .. }));
    assert!(matches!(e[3], DmaError::TooLong { len: l, max: m, .. } if *l == max + 4 && *m == max as usize));
    assert!(matches!(e[4], DmaError::PastEnd { offset, file_len, path: p, .. }
        if *offset == len && *file_len == len && p == &path));
    assert!(matches!(
        e[5],
        DmaError::PastEnd {
            offset: 0x1_0000_0000,
            ..
        }
    ));
    for (k, message) in indices.iter().zip(&errors) {
        assert!(message.starts_with(&format!("request {k}: ")), "{message}");
    }
    assert!(errors.iter().any(|e| e.contains("register_file")), "{errors:?}");
    // The initial job, the two sums and the faulting continuation ran.
    assert_eq!(report.jobs.len(), 4);
    let sums: Vec<_> = report.continuations(sum_id).collect();
    assert_eq!(sums.len(), 2);
    for job in sums {
        let done = job.outcome.as_ref().unwrap();
        let (first, bytes) = if done.results[1] == 5 { (100, 2000) } else { (2975, 100) };
        assert_eq!(done.results[2], bytes);
        assert_eq!(done.results[0], sum(&data[first..first + bytes as usize / 4]));
        assert_eq!(job.chain, [if bytes == 2000 { 0 } else { 8 }]);
    }
    let fault = report.continuations(fault_id).next().unwrap();
    assert!(
        matches!(fault.outcome, Err(Error::Fault(f)) if f.status == 17 && f.detail == 100_000),
        "{:?}",
        fault.outcome
    );

    // A counter beyond the buffer's capacity is capped and reported; the capped records are
    // zeros (file 0, continuation 0, length 0). Writing a record past it faults the job.
    let overcount = verify(
        &assemble("lane r1\nbrnz r1, end\nmovi r2, 40\natomic.add r3, b1[r0], r2\nend: halt").unwrap(),
        2,
    )
    .unwrap();
    let report = dma.run(&overcount, None, &[], 1, [0; 4]).unwrap();
    ok_results(&report);
    assert!(matches!(
        report.rejected[0].error,
        DmaError::TooManyRequests {
            requested: 40,
            capacity: 16
        }
    ));
    assert_eq!(report.rejected.len(), 17);
    assert!(report.rejected[1..]
        .iter()
        .enumerate()
        .all(|(k, r)| matches!(r.error, DmaError::ZeroLength { request } if request as usize == k)));
    let input = records(&rt, &[good; 17]);
    let report = dma.run(&program(COPY_REQUESTS), Some(&input), &[], 1, [0; 4]).unwrap();
    assert!(matches!(
        report.jobs[..],
        [ref job] if matches!(job.outcome, Err(Error::Fault(f)) if f.status == 17)
    ));
    assert!(report.rejected.is_empty(), "a faulting job's requests are dropped");

    // Afterwards every slot is free again: a full batch of good requests runs.
    let input = records(&rt, &[good; 16]);
    let report = dma.run(&program(COPY_REQUESTS), Some(&input), &[], 1, [0; 4]).unwrap();
    ok_results(&report);
    assert_eq!(report.continuations(sum_id).count(), 16);
    drop(dma);
    rt.finish();
}
