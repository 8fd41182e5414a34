//! Byte layouts shared by the host-side packer and the bare-metal PVH loader.
//!
//! * [`initfs`]: the header of a Redox initfs image ("RedoxFtw"), as the
//!   Redox kernel reads it (`usermode_bootstrap` copies the whole image to
//!   user address 0x1000 and jumps to the little-endian u64 at offset 0x1a)
//!   and as redox-initfs documents it (magic, inode table offset, image
//!   size, page size, root inode, inode count, bootstrap entry).
//! * [`bundle`]: our own container that carries the kernel ELF and the
//!   initfs image to the PVH loader as ONE QEMU `-initrd` module (QEMU's PVH
//!   boot hands over a single module).
//!
//! Every layout is little-endian and encoded/decoded byte by byte, without
//! `unsafe` and without relying on struct layout.
#![no_std]

/// x86_64 page size: the unit of every alignment below.
pub const PAGE_SIZE: u64 = 4096;

/// Round `x` up to a multiple of [`PAGE_SIZE`]; `None` on overflow.
pub fn page_align_up(x: u64) -> Option<u64> {
    x.checked_add(PAGE_SIZE - 1).map(|v| v & !(PAGE_SIZE - 1))
}

fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(dst) = buf.get_mut(at..at + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

fn get<const N: usize>(buf: &[u8], at: usize) -> Option<[u8; N]> {
    buf.get(at..at.checked_add(N)?)?.try_into().ok()
}

pub mod initfs {
    //! The Redox initfs header (redox-initfs `types.rs`, `#[repr(C, packed)]`):
    //!
    //! | offset | size | field                |
    //! |--------|------|----------------------|
    //! | 0x00   | 8    | magic "RedoxFtw"     |
    //! | 0x08   | 4    | inode_table_offset   |
    //! | 0x0c   | 8    | initfs_size          |
    //! | 0x14   | 2    | page_size            |
    //! | 0x16   | 2    | root_inode           |
    //! | 0x18   | 2    | inode_count          |
    //! | 0x1a   | 8    | bootstrap_entry      |
    //!
    //! An inode is 12 bytes: type (u32: 0 file, 1 executable, 2 directory,
    //! 3 link), length (u32), offset (u32) of its data in the image.
    use super::{get, put};

    pub const MAGIC: [u8; 8] = *b"RedoxFtw";
    pub const HEADER_SIZE: usize = 0x22;
    pub const OFFSET_INODE_TABLE: usize = 0x08;
    pub const OFFSET_INITFS_SIZE: usize = 0x0c;
    pub const OFFSET_PAGE_SIZE: usize = 0x14;
    pub const OFFSET_ROOT_INODE: usize = 0x16;
    pub const OFFSET_INODE_COUNT: usize = 0x18;
    /// Where the kernel reads the entry point (src/syscall/process.rs).
    pub const OFFSET_BOOTSTRAP_ENTRY: usize = 0x1a;
    /// User address at which the kernel maps the image's first byte.
    pub const LOAD_ADDRESS: u64 = 0x1000;

    pub const INODE_SIZE: usize = 12;
    pub const INODE_TYPE_DIR: u32 = 2;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Header {
        pub inode_table_offset: u32,
        pub initfs_size: u64,
        pub page_size: u16,
        pub root_inode: u16,
        pub inode_count: u16,
        pub bootstrap_entry: u64,
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum HeaderError {
        TooShort,
        BadMagic,
    }

    impl Header {
        pub fn encode(&self) -> [u8; HEADER_SIZE] {
            let mut b = [0u8; HEADER_SIZE];
            put(&mut b, 0, &MAGIC);
            put(&mut b, OFFSET_INODE_TABLE, &self.inode_table_offset.to_le_bytes());
            put(&mut b, OFFSET_INITFS_SIZE, &self.initfs_size.to_le_bytes());
            put(&mut b, OFFSET_PAGE_SIZE, &self.page_size.to_le_bytes());
            put(&mut b, OFFSET_ROOT_INODE, &self.root_inode.to_le_bytes());
            put(&mut b, OFFSET_INODE_COUNT, &self.inode_count.to_le_bytes());
            put(&mut b, OFFSET_BOOTSTRAP_ENTRY, &self.bootstrap_entry.to_le_bytes());
            b
        }

        pub fn decode(b: &[u8]) -> Result<Header, HeaderError> {
            if b.len() < HEADER_SIZE {
                return Err(HeaderError::TooShort);
            }
            if b.get(..8) != Some(&MAGIC[..]) {
                return Err(HeaderError::BadMagic);
            }
            let f = || HeaderError::TooShort;
            Ok(Header {
                inode_table_offset: u32::from_le_bytes(get(b, OFFSET_INODE_TABLE).ok_or_else(f)?),
                initfs_size: u64::from_le_bytes(get(b, OFFSET_INITFS_SIZE).ok_or_else(f)?),
                page_size: u16::from_le_bytes(get(b, OFFSET_PAGE_SIZE).ok_or_else(f)?),
                root_inode: u16::from_le_bytes(get(b, OFFSET_ROOT_INODE).ok_or_else(f)?),
                inode_count: u16::from_le_bytes(get(b, OFFSET_INODE_COUNT).ok_or_else(f)?),
                bootstrap_entry: u64::from_le_bytes(get(b, OFFSET_BOOTSTRAP_ENTRY).ok_or_else(f)?),
            })
        }
    }

    /// One inode of the inode table.
    pub fn encode_inode(kind: u32, length: u32, offset: u32) -> [u8; INODE_SIZE] {
        let mut b = [0u8; INODE_SIZE];
        put(&mut b, 0, &kind.to_le_bytes());
        put(&mut b, 4, &length.to_le_bytes());
        put(&mut b, 8, &offset.to_le_bytes());
        b
    }
}

pub mod bundle {
    //! Our container for the PVH loader: one page of header, then the kernel
    //! ELF file and the initfs image, each starting on a page boundary (QEMU
    //! loads the module page-aligned, so both land page-aligned in memory and
    //! the loader hands them to the kernel in place).
    //!
    //! | offset | size | field                       |
    //! |--------|------|-----------------------------|
    //! | 0x00   | 8    | magic "HWBPBNDL"            |
    //! | 0x08   | 4    | version (1)                 |
    //! | 0x0c   | 4    | reserved, 0                 |
    //! | 0x10   | 8    | kernel offset (page-aligned)|
    //! | 0x18   | 8    | kernel size (bytes)         |
    //! | 0x20   | 8    | initfs offset (page-aligned)|
    //! | 0x28   | 8    | initfs size (bytes)         |
    use super::{get, page_align_up, put, PAGE_SIZE};

    pub const MAGIC: [u8; 8] = *b"HWBPBNDL";
    pub const VERSION: u32 = 1;
    pub const HEADER_SIZE: usize = 0x30;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Header {
        pub kernel_offset: u64,
        pub kernel_size: u64,
        pub initfs_offset: u64,
        pub initfs_size: u64,
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum BundleError {
        TooShort,
        BadMagic,
        BadVersion(u32),
        /// A part does not start on a page boundary.
        Unaligned,
        /// A part lies (partly) outside the bundle, or the parts overlap the
        /// header or each other.
        OutOfBounds,
        /// A part is empty.
        Empty,
    }

    impl Header {
        /// The layout of a bundle holding a kernel and an initfs of these
        /// sizes: header page, kernel, initfs, each page-aligned.
        pub fn layout(kernel_size: u64, initfs_size: u64) -> Option<Header> {
            let kernel_offset = PAGE_SIZE;
            let initfs_offset = page_align_up(kernel_offset.checked_add(kernel_size)?)?;
            Some(Header { kernel_offset, kernel_size, initfs_offset, initfs_size })
        }

        /// Total bundle length.
        pub fn total_size(&self) -> Option<u64> {
            let k = self.kernel_offset.checked_add(self.kernel_size)?;
            let i = self.initfs_offset.checked_add(self.initfs_size)?;
            Some(k.max(i))
        }

        pub fn encode(&self) -> [u8; HEADER_SIZE] {
            let mut b = [0u8; HEADER_SIZE];
            put(&mut b, 0, &MAGIC);
            put(&mut b, 0x08, &VERSION.to_le_bytes());
            put(&mut b, 0x10, &self.kernel_offset.to_le_bytes());
            put(&mut b, 0x18, &self.kernel_size.to_le_bytes());
            put(&mut b, 0x20, &self.initfs_offset.to_le_bytes());
            put(&mut b, 0x28, &self.initfs_size.to_le_bytes());
            b
        }

        /// Decode and validate against the bundle's length `total`.
        pub fn decode(b: &[u8], total: u64) -> Result<Header, BundleError> {
            if b.len() < HEADER_SIZE {
                return Err(BundleError::TooShort);
            }
            if b.get(..8) != Some(&MAGIC[..]) {
                return Err(BundleError::BadMagic);
            }
            let f = || BundleError::TooShort;
            let version = u32::from_le_bytes(get(b, 0x08).ok_or_else(f)?);
            if version != VERSION {
                return Err(BundleError::BadVersion(version));
            }
            let h = Header {
                kernel_offset: u64::from_le_bytes(get(b, 0x10).ok_or_else(f)?),
                kernel_size: u64::from_le_bytes(get(b, 0x18).ok_or_else(f)?),
                initfs_offset: u64::from_le_bytes(get(b, 0x20).ok_or_else(f)?),
                initfs_size: u64::from_le_bytes(get(b, 0x28).ok_or_else(f)?),
            };
            h.validate(total)?;
            Ok(h)
        }

        fn validate(&self, total: u64) -> Result<(), BundleError> {
            if self.kernel_size == 0 || self.initfs_size == 0 {
                return Err(BundleError::Empty);
            }
            if !self.kernel_offset.is_multiple_of(PAGE_SIZE) || !self.initfs_offset.is_multiple_of(PAGE_SIZE) {
                return Err(BundleError::Unaligned);
            }
            let k_end = self.kernel_offset.checked_add(self.kernel_size).ok_or(BundleError::OutOfBounds)?;
            let i_end = self.initfs_offset.checked_add(self.initfs_size).ok_or(BundleError::OutOfBounds)?;
            let header_end = HEADER_SIZE as u64;
            let disjoint = k_end <= self.initfs_offset || i_end <= self.kernel_offset;
            if self.kernel_offset < header_end || self.initfs_offset < header_end || !disjoint {
                return Err(BundleError::OutOfBounds);
            }
            if k_end > total || i_end > total {
                return Err(BundleError::OutOfBounds);
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initfs_header_puts_the_entry_point_where_the_kernel_reads_it() {
        let h = initfs::Header {
            inode_table_offset: 0x40,
            initfs_size: 0x5000,
            page_size: 4096,
            root_inode: 0,
            inode_count: 1,
            bootstrap_entry: 0x0123_4567_89ab_cdef,
        };
        let b = h.encode();
        assert_eq!(&b[..8], b"RedoxFtw");
        assert_eq!(b[0x1a..0x22], 0x0123_4567_89ab_cdefu64.to_le_bytes());
        assert_eq!(b[0x0c..0x14], 0x5000u64.to_le_bytes());
        assert_eq!(initfs::Header::decode(&b), Ok(h));
    }

    #[test]
    fn initfs_header_is_refused_with_wrong_magic_or_too_short() {
        let mut b = initfs::Header {
            inode_table_offset: 0,
            initfs_size: 0,
            page_size: 4096,
            root_inode: 0,
            inode_count: 0,
            bootstrap_entry: 1,
        }
        .encode();
        assert_eq!(initfs::Header::decode(&b[..initfs::HEADER_SIZE - 1]), Err(initfs::HeaderError::TooShort));
        b[0] = b'X';
        assert_eq!(initfs::Header::decode(&b), Err(initfs::HeaderError::BadMagic));
    }

    #[test]
    fn bundle_layout_page_aligns_both_parts_and_round_trips() {
        let h = bundle::Header::layout(0x1234, 0x3000).unwrap();
        assert_eq!(h.kernel_offset, 0x1000);
        assert_eq!(h.initfs_offset, 0x3000);
        assert_eq!(h.total_size(), Some(0x6000));
        assert_eq!(bundle::Header::decode(&h.encode(), 0x6000), Ok(h));
    }

    #[test]
    fn bundle_is_refused_when_a_part_runs_past_the_end() {
        let h = bundle::Header::layout(0x1000, 0x1000).unwrap();
        assert_eq!(bundle::Header::decode(&h.encode(), 0x2fff), Err(bundle::BundleError::OutOfBounds));
    }

    #[test]
    fn bundle_is_refused_when_parts_overlap_or_are_unaligned_or_empty() {
        let base = bundle::Header::layout(0x2000, 0x1000).unwrap();
        let overlap = bundle::Header { initfs_offset: 0x2000, ..base };
        assert_eq!(bundle::Header::decode(&overlap.encode(), 0x10000), Err(bundle::BundleError::OutOfBounds));
        let unaligned = bundle::Header { initfs_offset: 0x3800, ..base };
        assert_eq!(bundle::Header::decode(&unaligned.encode(), 0x10000), Err(bundle::BundleError::Unaligned));
        let empty = bundle::Header { kernel_size: 0, ..base };
        assert_eq!(bundle::Header::decode(&empty.encode(), 0x10000), Err(bundle::BundleError::Empty));
        let over_header = bundle::Header { kernel_offset: 0, ..base };
        assert_eq!(bundle::Header::decode(&over_header.encode(), 0x10000), Err(bundle::BundleError::OutOfBounds));
    }

    #[test]
    fn bundle_with_wrong_magic_or_version_is_refused() {
        let mut b = bundle::Header::layout(1, 1).unwrap().encode();
        b[8] = 2;
        assert_eq!(bundle::Header::decode(&b, 0x3000), Err(bundle::BundleError::BadVersion(2)));
        b[0] = 0;
        assert_eq!(bundle::Header::decode(&b, 0x3000), Err(bundle::BundleError::BadMagic));
    }
}
