//! Rust side of the shared protocol: the constants and `#[repr(C)]` structs generated from
//! `src/protocol.rs`, the same file `build.rs` turns into `protocol.glsl`.

/// Expands the protocol's constants to `pub const NAME: u32`.
macro_rules! shared_constants {
    ($($(#[$meta:meta])* $name:ident = $value:expr;)*) => {
        $( $(#[$meta])* pub const $name: u32 = $value; )*
    };
}

/// Expands the protocol's structs to `#[repr(C)]` plain-old-data structs.
macro_rules! shared_structs {
    ($($(#[$meta:meta])* struct $name:ident { $($(#[$fmeta:meta])* $field:ident : $ty:ident,)* })*) => {
        $(
            $(#[$meta])*
            #[repr(C)]
            #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
            pub struct $name {
                $( $(#[$fmeta])* pub $field: $ty, )*
            }
        )*
    };
}

include!("../protocol.rs");

/// Byte offset of `SqEntry::seq`, the word written last.
pub const SQ_SEQ_OFFSET: usize = std::mem::offset_of!(SqEntry, seq);
/// Byte offset of `CqEntry::seq`, the word written last.
pub const CQ_SEQ_OFFSET: usize = std::mem::offset_of!(CqEntry, seq);

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::size_of;

    #[test]
    fn entries_have_the_sizes_the_protocol_documents() {
        assert_eq!(size_of::<SqEntry>(), 80);
        assert_eq!(size_of::<CqEntry>(), 32);
        assert_eq!(size_of::<ControlBlock>(), 76);
        assert_eq!(size_of::<LaunchParams>(), 48);
        assert_eq!(size_of::<TileCounter>(), 32);
        assert_eq!(size_of::<TileResult>(), 32);
        assert_eq!(SQ_SEQ_OFFSET, 76, "seq must be the last word of an SQ entry");
        assert_eq!(CQ_SEQ_OFFSET, 28, "seq must be the last word of a CQ entry");
    }

    #[test]
    fn generated_glsl_header_declares_every_struct_and_constant() {
        let header = include_str!(concat!(env!("OUT_DIR"), "/protocol.glsl"));
        for name in [
            "ControlBlock",
            "SqEntry",
            "CqEntry",
            "LaunchParams",
            "TileCounter",
            "TileResult",
        ] {
            assert!(header.contains(&format!("struct {name} {{")), "{name} missing");
        }
        assert!(header.contains(&format!("const uint MAGIC = {MAGIC}u;")));
        assert!(header.contains(&format!("const uint JOB_SUM_U32 = {JOB_SUM_U32}u;")));
        assert!(header.contains("    uint64_t buf0;"));
    }
}
