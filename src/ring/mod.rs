//! Host side of the ring protocol (docs/protocol.md): the control block, the submission
//! queue (SQ) the host publishes into, and the completion queue (CQ) the kernel posts to.
//!
//! Algorithm: a bounded multi-producer ring with per-entry sequence words (the scheme of
//! crossbeam's `ArrayQueue`, with the GPU as the consumer). Indices are `u32` counters that
//! never reset; entry `i` lives in slot `i & mask`. Producers take an index by CAS on the
//! host-only `tail` once that slot is free, write the payload, then `seq = i + 1` with
//! release ordering. The kernel claims `i` by CAS on `sq_head` only after seeing that seq,
//! and posts job `i`'s completion into CQ slot `i & mask` (payload first, seq last).
//! A slot is free for index `i + N` once job `i` has completed: its handle took the
//! completion, or the producer of `i + N` moved it to a host-side overflow table. So the
//! ring's capacity bounds the jobs on the device, never the completions a host holds.

pub mod layout;

use std::collections::HashMap;
use std::sync::atomic::{fence, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use layout::{ControlBlock, CqEntry, SqEntry, CQ_SEQ_OFFSET, SQ_SEQ_OFFSET};

use crate::error::Result;
use crate::vk::{Buffer, Context, Placement};

/// A field of the control block, by byte offset.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ControlWord(usize);

impl ControlWord {
    pub(crate) const SHUTDOWN: ControlWord = ControlWord(std::mem::offset_of!(ControlBlock, shutdown));
    pub(crate) const YIELD: ControlWord = ControlWord(std::mem::offset_of!(ControlBlock, yield_request));
    pub(crate) const EPOCH: ControlWord = ControlWord(std::mem::offset_of!(ControlBlock, epoch));
    pub(crate) const SQ_HEAD: ControlWord = ControlWord(std::mem::offset_of!(ControlBlock, sq_head));
    pub(crate) const HEARTBEAT: ControlWord = ControlWord(std::mem::offset_of!(ControlBlock, heartbeat));
    pub(crate) const RESIDENT: ControlWord = ControlWord(std::mem::offset_of!(ControlBlock, resident));
    pub(crate) const JOBS_DONE: ControlWord = ControlWord(std::mem::offset_of!(ControlBlock, jobs_done));
    pub(crate) const UNPLANNED_EXITS: ControlWord = ControlWord(std::mem::offset_of!(ControlBlock, unplanned_exits));
    pub(crate) const SPREAD_OPEN: ControlWord = ControlWord(std::mem::offset_of!(ControlBlock, spread_open));
}

/// Host-side bookkeeping for one ring slot.
#[derive(Debug, Default)]
struct SlotState {
    /// Equals `i` while job `i` owns the slot (from reservation until its completion is
    /// taken); then `i + N`, the only index that may reserve it next. Moved on by CAS,
    /// either by the handle taking the completion or by the producer of `i + N`.
    next: AtomicU32,
    /// `i + 1` when the handle of job `i` was dropped before taking its completion (the
    /// producer of `i + N` then discards it). 0 otherwise.
    detached: AtomicU32,
    /// Buffers the job in this slot uses, kept alive until its completion is consumed.
    keep: Mutex<Vec<Arc<Buffer>>>,
}

/// Pads a value to its own cache line.
#[derive(Debug, Default)]
#[repr(align(64))]
struct CachePadded<T>(T);

/// The shared buffers (control block, rings, board) and the host's view of them.
pub(crate) struct Rings {
    control: Buffer,
    sq: Buffer,
    cq: Buffer,
    /// The board of spread jobs (docs/protocol.md, "Spread jobs"): written by the kernel,
    /// by the host only to reset it while no kernel runs.
    board: Buffer,
    entries: u32,
    /// Next index a producer will reserve (host only, never reset).
    tail: CachePadded<AtomicU32>,
    slots: Box<[SlotState]>,
    /// Completions moved out of the CQ because a producer needed their slot before the
    /// job's handle took them. Touched only on that slow path.
    overflow: Mutex<HashMap<u32, CqEntry>>,
}

impl Rings {
    /// Allocates the control block and rings with `entries` slots (a power of two).
    pub(crate) fn new(ctx: &Arc<Context>, entries: u32, cq_placement: Placement) -> Result<Self> {
        debug_assert!(entries.is_power_of_two());
        let control = Buffer::new(
            ctx,
            "megaring control block",
            std::mem::size_of::<ControlBlock>() as u64,
            Placement::DeviceShared,
        )?;
        let sq = Buffer::new(
            ctx,
            "megaring submission queue",
            u64::from(entries) * std::mem::size_of::<SqEntry>() as u64,
            Placement::DeviceShared,
        )?;
        let cq = Buffer::new(
            ctx,
            "megaring completion queue",
            u64::from(entries) * std::mem::size_of::<CqEntry>() as u64,
            cq_placement,
        )?;
        let board = Buffer::new(
            ctx,
            "megaring board",
            Self::board_bytes(entries),
            Placement::DeviceShared,
        )?;
        board.write_bytes(0, &vec![0u8; Self::board_bytes(entries) as usize]);
        let block = ControlBlock {
            magic: layout::MAGIC,
            version: layout::PROTOCOL_VERSION,
            ..Default::default()
        };
        control.write_bytes(0, bytemuck::bytes_of(&block));
        let slots = (0..entries)
            .map(|i| SlotState {
                next: AtomicU32::new(i),
                ..Default::default()
            })
            .collect();
        fence(Ordering::SeqCst);
        Ok(Rings {
            control,
            sq,
            cq,
            board,
            entries,
            tail: CachePadded(AtomicU32::new(0)),
            slots,
            overflow: Mutex::default(),
        })
    }

    pub(crate) fn entries(&self) -> u32 {
        self.entries
    }

    pub(crate) fn control_buffer(&self) -> &Buffer {
        &self.control
    }

    pub(crate) fn sq_buffer(&self) -> &Buffer {
        &self.sq
    }

    pub(crate) fn cq_buffer(&self) -> &Buffer {
        &self.cq
    }

    pub(crate) fn board_buffer(&self) -> &Buffer {
        &self.board
    }

    /// Bytes of the board of a ring of `entries` slots: the open list, then a tile
    /// counter per slot.
    fn board_bytes(entries: u32) -> u64 {
        u64::from(layout::BOARD_OPEN) * 4 + u64::from(entries) * std::mem::size_of::<layout::TileCounter>() as u64
    }

    /// Tiles finished over every slot's tile counter (wrapping): moves whenever a launch
    /// finishes a tile of a spread job. Reads the whole board.
    pub(crate) fn board_tiles_done(&self) -> u32 {
        let counters = u64::from(self.entries) * std::mem::size_of::<layout::TileCounter>() as u64;
        let mut bytes = vec![0u8; counters as usize];
        self.board.read_bytes(u64::from(layout::BOARD_OPEN) * 4, &mut bytes);
        bytes
            .chunks_exact(std::mem::size_of::<layout::TileCounter>())
            .map(|c| bytemuck::pod_read_unaligned::<layout::TileCounter>(c).done)
            .fold(0u32, u32::wrapping_add)
    }

    /// Empties the board's open list and zeroes the count of open spread jobs, after their
    /// jobs were failed. Only while no kernel runs.
    pub(crate) fn reset_board(&self) {
        self.board.write_bytes(0, &[0u8; layout::BOARD_OPEN as usize * 4]);
        self.store(ControlWord::SPREAD_OPEN, 0);
    }

    fn word(buffer: &Buffer, offset: usize) -> &AtomicU32 {
        debug_assert!(offset % 4 == 0 && (offset as u64) + 4 <= buffer.size());
        // SAFETY: the offset is 4-aligned and inside the mapping (checked by callers' fixed
        // layouts), the mapping lives as long as `buffer`, and every access to shared words
        // goes through atomics on both sides.
        unsafe { AtomicU32::from_ptr(buffer.mapped().0.as_ptr().add(offset).cast::<u32>()) }
    }

    /// Reads a control-block word.
    pub(crate) fn load(&self, word: ControlWord) -> u32 {
        Self::word(&self.control, word.0).load(Ordering::Acquire)
    }

    /// Writes a control-block word and makes it visible to the device at once.
    pub(crate) fn store(&self, word: ControlWord, value: u32) {
        Self::word(&self.control, word.0).store(value, Ordering::Release);
        fence(Ordering::SeqCst);
    }

    /// The whole control block (a snapshot, word by word).
    pub(crate) fn control_snapshot(&self) -> ControlBlock {
        let mut bytes = [0u8; std::mem::size_of::<ControlBlock>()];
        for (i, chunk) in bytes.chunks_exact_mut(4).enumerate() {
            chunk.copy_from_slice(&Self::word(&self.control, i * 4).load(Ordering::Acquire).to_ne_bytes());
        }
        bytemuck::pod_read_unaligned(&bytes)
    }

    /// Indices reserved by producers so far.
    pub(crate) fn reserved(&self) -> u32 {
        self.tail.0.load(Ordering::SeqCst)
    }

    /// Whether some reserved entry has not been claimed by the kernel (or cancelled), or a
    /// claimed spread job has tiles left for a later launch.
    pub(crate) fn has_pending(&self) -> bool {
        self.reserved() != self.load(ControlWord::SQ_HEAD) || self.spread_open()
    }

    /// Whether a claimed spread job has not completed yet.
    pub(crate) fn spread_open(&self) -> bool {
        self.load(ControlWord::SPREAD_OPEN) != 0
    }

    /// Reserves up to `want` consecutive indices whose slots are free; `None` when the
    /// next slot is busy.
    pub(crate) fn try_reserve_run(&self, want: u32) -> Option<(u32, u32)> {
        let mut tail = self.tail.0.load(Ordering::Relaxed);
        loop {
            let mut count = 0;
            while count < want && self.free_slot_for(tail.wrapping_add(count)) {
                count += 1;
            }
            if count == 0 {
                return None;
            }
            match self
                .tail
                .0
                .compare_exchange_weak(tail, tail.wrapping_add(count), Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Some((tail, count)),
                Err(current) => tail = current,
            }
        }
    }

    /// Makes the slot of `index` free for it if its previous job has completed.
    fn free_slot_for(&self, index: u32) -> bool {
        let slot = self.slot(index);
        let previous = index.wrapping_sub(self.entries);
        if slot.next.load(Ordering::Acquire) != previous {
            return slot.next.load(Ordering::Acquire) == index;
        }
        // Read the completion before moving `next`: the slot cannot be rewritten (by job
        // `index`) until the CAS below lets `index` in.
        let Some(entry) = self.completion(previous) else {
            return false; // still on the device: the ring is full
        };
        // Only the producer whose CAS wins stores the completion; a losing producer (or
        // the job's handle, which took it) leaves the table alone. A handle that looks
        // between the CAS and the insert finds nothing yet and looks again.
        if slot
            .next
            .compare_exchange(previous, index, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            slot.keep.lock().unwrap_or_else(|p| p.into_inner()).clear();
            let detached = previous.wrapping_add(1);
            if slot.detached.load(Ordering::Acquire) != detached {
                self.overflow().insert(previous, entry);
                // The handle may have been dropped while we inserted: drop the entry too.
                if slot.detached.load(Ordering::Acquire) == detached {
                    self.overflow().remove(&previous);
                }
            }
        }
        slot.next.load(Ordering::Acquire) == index
    }

    fn slot(&self, index: u32) -> &SlotState {
        &self.slots[(index & (self.entries - 1)) as usize]
    }

    fn overflow(&self) -> std::sync::MutexGuard<'_, HashMap<u32, CqEntry>> {
        self.overflow.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes `entries` at the reserved indices `first..`: every payload first, one
    /// fence, then every seq word, and one more fence to push them out. Batching shares
    /// the two fences (which drain write-combining buffers across PCIe) among the jobs.
    pub(crate) fn publish(&self, first: u32, entries: impl ExactSizeIterator<Item = (SqEntry, Vec<Arc<Buffer>>)>) {
        let count = entries.len() as u32;
        for (k, (mut entry, keep)) in entries.enumerate() {
            let index = first.wrapping_add(k as u32);
            if !keep.is_empty() {
                *self.slot(index).keep.lock().unwrap_or_else(|p| p.into_inner()) = keep;
            }
            entry.seq = 0;
            let offset = (index & (self.entries - 1)) as usize * std::mem::size_of::<SqEntry>();
            self.sq
                .write_bytes(offset as u64, &bytemuck::bytes_of(&entry)[..SQ_SEQ_OFFSET]);
        }
        // Order the payloads before the seq words, also for write-combined (BAR) mappings:
        // on x86 this is an mfence, which drains write-combining buffers.
        fence(Ordering::SeqCst);
        for k in 0..count {
            let index = first.wrapping_add(k);
            let offset = (index & (self.entries - 1)) as usize * std::mem::size_of::<SqEntry>();
            Self::word(&self.sq, offset + SQ_SEQ_OFFSET).store(index.wrapping_add(1), Ordering::Release);
        }
        // Push the seq words out now rather than when the write-combining buffer fills.
        fence(Ordering::SeqCst);
    }

    /// The completion of `index`, if posted.
    pub(crate) fn completion(&self, index: u32) -> Option<CqEntry> {
        let offset = (index & (self.entries - 1)) as usize * std::mem::size_of::<CqEntry>();
        if Self::word(&self.cq, offset + CQ_SEQ_OFFSET).load(Ordering::Acquire) != index.wrapping_add(1) {
            return None;
        }
        let mut bytes = [0u8; std::mem::size_of::<CqEntry>()];
        self.cq.read_bytes(offset as u64, &mut bytes[..CQ_SEQ_OFFSET]);
        let mut entry: CqEntry = bytemuck::pod_read_unaligned(&bytes);
        entry.seq = index.wrapping_add(1);
        Some(entry)
    }

    /// Takes the completion of `index` if it has been posted, freeing its slot.
    pub(crate) fn take(&self, index: u32) -> Option<CqEntry> {
        let slot = self.slot(index);
        if slot.next.load(Ordering::Acquire) == index {
            let entry = self.completion(index)?;
            if slot
                .next
                .compare_exchange(
                    index,
                    index.wrapping_add(self.entries),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
            {
                slot.keep.lock().unwrap_or_else(|p| p.into_inner()).clear();
                return Some(entry);
            }
        }
        // A producer needed the slot and moved the completion aside.
        self.overflow().remove(&index)
    }

    /// Records that the handle of `index` was dropped before taking its completion.
    pub(crate) fn detach(&self, index: u32) {
        self.slot(index)
            .detached
            .store(index.wrapping_add(1), Ordering::Release);
        self.overflow().remove(&index);
    }

    /// One line describing the state of `index`'s slot, for diagnostics.
    pub(crate) fn describe(&self, index: u32) -> String {
        let slot = self.slot(index);
        let offset = (index & (self.entries - 1)) as usize * std::mem::size_of::<CqEntry>();
        format!(
            "index {index}: slot next {} detached {} cq seq {} in overflow {}; tail {} sq_head {}",
            slot.next.load(Ordering::SeqCst),
            slot.detached.load(Ordering::SeqCst),
            Self::word(&self.cq, offset + CQ_SEQ_OFFSET).load(Ordering::SeqCst),
            self.overflow().contains_key(&index),
            self.reserved(),
            self.load(ControlWord::SQ_HEAD)
        )
    }

    /// Posts a host-made completion with `status` for `index`, tagged from its SQ entry.
    /// Only for entries no workgroup will complete.
    fn post_from_host(&self, index: u32, status: u32) {
        let slot_no = (index & (self.entries - 1)) as usize;
        let mut bytes = [0u8; std::mem::size_of::<SqEntry>()];
        self.sq
            .read_bytes((slot_no * std::mem::size_of::<SqEntry>()) as u64, &mut bytes);
        let job: SqEntry = bytemuck::pod_read_unaligned(&bytes);
        let done = CqEntry {
            tag: job.tag,
            status,
            ..Default::default()
        };
        let offset = slot_no * std::mem::size_of::<CqEntry>();
        self.cq
            .write_bytes(offset as u64, &bytemuck::bytes_of(&done)[..CQ_SEQ_OFFSET]);
        fence(Ordering::SeqCst);
        Self::word(&self.cq, offset + CQ_SEQ_OFFSET).store(index.wrapping_add(1), Ordering::Release);
    }

    /// Fails with STATUS_LOST every job in `from..to` that was claimed but has no
    /// completion. Only while no kernel runs. Returns how many.
    pub(crate) fn fail_unfinished(&self, from: u32, to: u32) -> u32 {
        let mut lost = 0;
        let mut index = from;
        while index != to {
            if self.slot(index).next.load(Ordering::Acquire) == index && self.completion(index).is_none() {
                self.post_from_host(index, layout::STATUS_LOST);
                lost += 1;
            }
            index = index.wrapping_add(1);
        }
        lost
    }

    /// Cancels every published, unclaimed entry. Only while no kernel runs and no producer
    /// is between reserve and publish: the host then owns `sq_head`.
    pub(crate) fn cancel_unclaimed(&self) -> u32 {
        let mut head = self.load(ControlWord::SQ_HEAD);
        let tail = self.reserved();
        let mut cancelled = 0;
        while head != tail {
            self.post_from_host(head, layout::STATUS_CANCELLED);
            head = head.wrapping_add(1);
            self.store(ControlWord::SQ_HEAD, head);
            cancelled += 1;
        }
        cancelled
    }
}
