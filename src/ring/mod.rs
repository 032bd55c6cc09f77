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
//!
//! Every index is valid, `u32::MAX` included: the words that say "job `i`" hold `i + 1`
//! (wrapping, so 0 for `u32::MAX`), and a ring starts with every slot's sequence words
//! set to the lap before its first index, never to the value its first job will write.

pub mod layout;

use std::collections::HashMap;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
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
    pub(crate) const TILES_DONE: ControlWord = ControlWord(std::mem::offset_of!(ControlBlock, tiles_done));
    #[cfg(feature = "fault-injection")]
    pub(crate) const FAULT: ControlWord = ControlWord(std::mem::offset_of!(ControlBlock, fault));
}

/// Host-side bookkeeping for one ring slot.
#[derive(Debug, Default)]
struct SlotState {
    /// Equals `i` while job `i` owns the slot (from reservation until its completion is
    /// taken); then `i + N`, the only index that may reserve it next. Moved on by CAS,
    /// either by the handle taking the completion or by the producer of `i + N`.
    next: AtomicU32,
    /// `i + 1` (as u64, so never 0) when the handle of job `i` was dropped before taking
    /// its completion (the producer of `i + N` then discards it). 0 otherwise.
    detached: AtomicU64,
    /// The buffers of the job published in this slot, kept alive until its completion is
    /// consumed. Tagged with the job's index: whoever frees the slot for `i + N` drops
    /// them only while they are still job `i`'s, so a release that comes late never
    /// drops the buffers of the job published after it.
    keep: Mutex<Keep>,
}

/// The buffers a job holds, and the job's index.
#[derive(Debug, Default)]
struct Keep {
    index: u32,
    buffers: Vec<Arc<Buffer>>,
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
    /// Allocates the control block and rings with `entries` slots (a power of two), whose
    /// first job takes index `first`.
    pub(crate) fn new(ctx: &Arc<Context>, entries: u32, cq_placement: Placement, first: u32) -> Result<Self> {
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
            sq_head: first,
            ..Default::default()
        };
        control.write_bytes(0, bytemuck::bytes_of(&block));
        // Slot k's first index, and the sequence words of the lap before it: "published"
        // and "completed" for no index this ring will hand out before that lap comes round.
        let first_of = |k: u32| first.wrapping_add(k.wrapping_sub(first) & (entries - 1));
        for k in 0..entries {
            let stale = first_of(k).wrapping_sub(entries).wrapping_add(1);
            let sq_offset = k as usize * std::mem::size_of::<SqEntry>() + SQ_SEQ_OFFSET;
            let cq_offset = k as usize * std::mem::size_of::<CqEntry>() + CQ_SEQ_OFFSET;
            sq.write_bytes(sq_offset as u64, &stale.to_ne_bytes());
            cq.write_bytes(cq_offset as u64, &stale.to_ne_bytes());
        }
        let slots = (0..entries)
            .map(|k| SlotState {
                next: AtomicU32::new(first_of(k)),
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
            tail: CachePadded(AtomicU32::new(first)),
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

    /// Bytes of the board of a ring of `entries` slots: the open list (64-bit words), then
    /// a tile counter per slot.
    fn board_bytes(entries: u32) -> u64 {
        u64::from(layout::BOARD_OPEN) * 8 + u64::from(entries) * std::mem::size_of::<layout::TileCounter>() as u64
    }

    /// Empties the board's open list and zeroes the count of open spread jobs, after their
    /// jobs were failed. Only while no kernel runs.
    pub(crate) fn reset_board(&self) {
        self.board.write_bytes(0, &[0u8; layout::BOARD_OPEN as usize * 8]);
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
            self.release(previous);
            let detached = u64::from(previous) + 1;
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

    /// Drops the buffers job `index` kept alive, if its slot still holds them (once the
    /// slot was handed to `index + N`, its producer may have stored its own already).
    fn release(&self, index: u32) {
        let buffers = {
            let mut keep = self.slot(index).keep.lock().unwrap_or_else(|p| p.into_inner());
            if keep.index != index {
                return;
            }
            std::mem::take(&mut keep.buffers)
        };
        drop(buffers); // outside the lock: freeing memory takes the allocator's lock
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
        for (k, (mut entry, buffers)) in entries.enumerate() {
            let index = first.wrapping_add(k as u32);
            // Replaces what the slot's previous job kept: it has completed (or `index` could
            // not have been reserved), so nothing on the device uses those buffers.
            let previous = std::mem::replace(
                &mut *self.slot(index).keep.lock().unwrap_or_else(|p| p.into_inner()),
                Keep { index, buffers },
            );
            drop(previous);
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
                self.release(index);
                return Some(entry);
            }
        }
        // A producer needed the slot and moved the completion aside.
        self.overflow().remove(&index)
    }

    /// Records that the handle of `index` was dropped before taking its completion.
    pub(crate) fn detach(&self, index: u32) {
        self.slot(index).detached.store(u64::from(index) + 1, Ordering::Release);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vk::DeviceSelector;

    fn rings(entries: u32, first: u32) -> (Arc<Context>, Rings) {
        let ctx = Arc::new(Context::new(&DeviceSelector::from_env(), false, false).expect("a Vulkan device"));
        let rings = Rings::new(&ctx, entries, Placement::HostCached, first).unwrap();
        (ctx, rings)
    }

    fn buffer(ctx: &Arc<Context>) -> Arc<Buffer> {
        Arc::new(Buffer::new(ctx, "kept", 4, Placement::HostCached).unwrap())
    }

    #[test]
    fn a_late_release_never_drops_the_buffers_of_the_next_job_in_the_slot() {
        let (ctx, rings) = rings(2, 0);
        let (a, b) = (buffer(&ctx), buffer(&ctx));
        let (first, _) = rings.try_reserve_run(1).unwrap();
        rings.publish(first, std::iter::once((SqEntry::default(), vec![a.clone()])));
        rings.post_from_host(first, layout::STATUS_OK);
        // The handle of job 0 hands its slot to index 2 ...
        let slot = rings.slot(first);
        slot.next
            .compare_exchange(0, 2, Ordering::AcqRel, Ordering::Acquire)
            .unwrap();
        // ... a producer reserves 2 and publishes it with its own buffers ...
        assert_eq!(rings.try_reserve_run(2), Some((1, 2)));
        rings.publish(
            1,
            [(SqEntry::default(), vec![]), (SqEntry::default(), vec![b.clone()])].into_iter(),
        );
        // ... and only then does the handle's release of job 0 come.
        rings.release(first);
        assert_eq!(Arc::strong_count(&b), 2, "job 2's buffer was dropped while it runs");
        assert_eq!(
            Arc::strong_count(&a),
            1,
            "job 0's buffer outlived its job and the slot's reuse"
        );
        // Job 2 completes and is taken: now its buffer goes.
        rings.post_from_host(2, layout::STATUS_OK);
        assert!(rings.take(2).is_some());
        assert_eq!(Arc::strong_count(&b), 1);
    }

    #[test]
    fn a_ring_starting_at_any_index_sees_no_job_before_it_is_published() {
        for first in [0, 1, u32::MAX - 2, u32::MAX - 1, u32::MAX] {
            let (_ctx, rings) = rings(4, first);
            assert_eq!(rings.load(ControlWord::SQ_HEAD), first);
            for k in 0..4u32 {
                let index = first.wrapping_add(k);
                assert!(
                    rings.completion(index).is_none(),
                    "first {first}: index {index} looks completed"
                );
                let offset = (index & 3) as usize * std::mem::size_of::<SqEntry>() + SQ_SEQ_OFFSET;
                let seq = Rings::word(&rings.sq, offset).load(Ordering::Acquire);
                assert_ne!(
                    seq,
                    index.wrapping_add(1),
                    "first {first}: index {index} looks published"
                );
            }
            assert_eq!(rings.try_reserve_run(8), Some((first, 4)));
            assert_eq!(rings.try_reserve_run(1), None, "a full ring has no room");
        }
    }

    #[test]
    fn the_completion_of_index_u32_max_is_kept_for_its_handle_unless_detached() {
        for detach in [false, true] {
            let (_ctx, rings) = rings(2, u32::MAX);
            assert_eq!(rings.try_reserve_run(1), Some((u32::MAX, 1)));
            rings.publish(u32::MAX, std::iter::once((SqEntry::default(), vec![])));
            rings.post_from_host(u32::MAX, layout::STATUS_OK);
            if detach {
                rings.detach(u32::MAX);
            }
            // The producer of index 1 (u32::MAX + 2) needs the slot: it moves the completion
            // aside for the handle, or drops it for a detached job.
            assert_eq!(rings.try_reserve_run(2), Some((0, 2)));
            let kept = rings.overflow().contains_key(&u32::MAX);
            assert_eq!(kept, !detach, "detached {detach}");
            if !detach {
                assert!(rings.take(u32::MAX).is_some(), "the handle finds its completion");
            }
        }
    }
}
