//! Packing, as a library so the host tests can drive it.
//!
//! * [`pack_initfs`]: a static x86_64 ELF linked for the initfs load address
//!   (user 0x1000 + its header page) becomes a Redox initfs image: the
//!   header, an inode table with one empty root directory, and the ELF's
//!   PT_LOAD segments at `vaddr - 0x1000` (zero-fill included), padded to
//!   whole pages. The kernel copies the image to user address 0x1000 and
//!   jumps to the header's bootstrap entry (the ELF entry point).
//! * [`pack_bundle`]: kernel ELF file + initfs image -> the PVH loader's
//!   module (format in `redox_boot_format::bundle`).

use redox_boot_format::{bundle, initfs, page_align_up, PAGE_SIZE};

#[derive(Debug, PartialEq, Eq)]
pub enum PackError {
    NotElf64Le,
    NotX86_64,
    NotExecutable,
    Truncated(&'static str),
    /// A segment would overwrite the header and inode table.
    SegmentOverlapsHeader { vaddr: u64 },
    /// A segment lies below the initfs load address, or two overlap.
    SegmentMisplaced { vaddr: u64 },
    EntryOutsideImage { entry: u64 },
    NoLoadSegment,
    TooLarge,
    EmptyPart,
}

impl std::fmt::Display for PackError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PackError::NotElf64Le => write!(f, "not a little-endian ELF64 file"),
            PackError::NotX86_64 => write!(f, "not an x86_64 ELF"),
            PackError::NotExecutable => write!(f, "not a static executable (ET_EXEC)"),
            PackError::Truncated(what) => write!(f, "file truncated in the {what}"),
            PackError::SegmentOverlapsHeader { vaddr } => {
                write!(f, "segment at {vaddr:#x} overlaps the initfs header and inode table")
            }
            PackError::SegmentMisplaced { vaddr } => {
                write!(f, "segment at {vaddr:#x} is below the initfs load address or overlaps another")
            }
            PackError::EntryOutsideImage { entry } => write!(f, "entry point {entry:#x} is outside the image"),
            PackError::NoLoadSegment => write!(f, "no PT_LOAD segment"),
            PackError::TooLarge => write!(f, "image larger than 4 GiB"),
            PackError::EmptyPart => write!(f, "empty kernel or initfs"),
        }
    }
}

impl std::error::Error for PackError {}

/// One PT_LOAD segment of a static ELF.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub vaddr: u64,
    pub offset: u64,
    pub filesz: u64,
    pub memsz: u64,
}

/// What the packer needs of an ELF: entry and PT_LOAD segments.
#[derive(Debug, PartialEq, Eq)]
pub struct Elf {
    pub entry: u64,
    pub segments: Vec<Segment>,
}

const ET_EXEC: u16 = 2;
const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;

fn field<const N: usize>(f: &[u8], at: usize, what: &'static str) -> Result<[u8; N], PackError> {
    f.get(at..at + N).and_then(|b| b.try_into().ok()).ok_or(PackError::Truncated(what))
}

/// Parse the ELF header and program headers.
pub fn parse_elf(f: &[u8]) -> Result<Elf, PackError> {
    if f.get(..4) != Some(b"\x7fELF") || f.get(4) != Some(&2) || f.get(5) != Some(&1) {
        return Err(PackError::NotElf64Le);
    }
    let u16_at = |at, what| field::<2>(f, at, what).map(u16::from_le_bytes);
    let u64_at = |at, what| field::<8>(f, at, what).map(u64::from_le_bytes);
    if u16_at(16, "ELF header")? != ET_EXEC {
        return Err(PackError::NotExecutable);
    }
    if u16_at(18, "ELF header")? != EM_X86_64 {
        return Err(PackError::NotX86_64);
    }
    let entry = u64_at(24, "ELF header")?;
    let phoff = usize::try_from(u64_at(32, "ELF header")?).map_err(|_| PackError::Truncated("ELF header"))?;
    let phentsize = usize::from(u16_at(54, "ELF header")?);
    let phnum = usize::from(u16_at(56, "ELF header")?);
    let mut segments = Vec::new();
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        let kind = field::<4>(f, ph, "program headers").map(u32::from_le_bytes)?;
        if kind != PT_LOAD {
            continue;
        }
        let seg = Segment {
            offset: u64_at(ph + 8, "program headers")?,
            vaddr: u64_at(ph + 16, "program headers")?,
            filesz: u64_at(ph + 32, "program headers")?,
            memsz: u64_at(ph + 40, "program headers")?,
        };
        let end = seg.offset.checked_add(seg.filesz).ok_or(PackError::Truncated("segment data"))?;
        if end > f.len() as u64 || seg.filesz > seg.memsz {
            return Err(PackError::Truncated("segment data"));
        }
        if seg.memsz > 0 {
            segments.push(seg);
        }
    }
    if segments.is_empty() {
        return Err(PackError::NoLoadSegment);
    }
    Ok(Elf { entry, segments })
}

/// Bytes at the start of the image used by the header and the inode table
/// (one inode: the empty root directory).
pub const METADATA_SIZE: u64 = (initfs::HEADER_SIZE + initfs::INODE_SIZE) as u64;
/// The inode table follows the header directly.
const INODE_TABLE_OFFSET: u32 = initfs::HEADER_SIZE as u32;

/// Build an initfs image from a static ELF file.
pub fn pack_initfs(elf_file: &[u8]) -> Result<Vec<u8>, PackError> {
    let elf = parse_elf(elf_file)?;
    let base = initfs::LOAD_ADDRESS;
    let mut segs = elf.segments.clone();
    segs.sort_by_key(|s| s.vaddr);
    let mut end = METADATA_SIZE;
    for s in &segs {
        let start = s.vaddr.checked_sub(base).ok_or(PackError::SegmentMisplaced { vaddr: s.vaddr })?;
        if start < METADATA_SIZE {
            return Err(PackError::SegmentOverlapsHeader { vaddr: s.vaddr });
        }
        if start < end {
            return Err(PackError::SegmentMisplaced { vaddr: s.vaddr });
        }
        end = start.checked_add(s.memsz).ok_or(PackError::TooLarge)?;
    }
    let entry_ok = segs.iter().any(|s| elf.entry >= s.vaddr && elf.entry < s.vaddr + s.memsz);
    if !entry_ok {
        return Err(PackError::EntryOutsideImage { entry: elf.entry });
    }
    let size = page_align_up(end).ok_or(PackError::TooLarge)?;
    if size > u64::from(u32::MAX) {
        return Err(PackError::TooLarge);
    }
    let mut image = vec![0u8; size as usize];
    let header = initfs::Header {
        inode_table_offset: INODE_TABLE_OFFSET,
        initfs_size: size,
        page_size: PAGE_SIZE as u16,
        root_inode: 0,
        inode_count: 1,
        bootstrap_entry: elf.entry,
    };
    image[..initfs::HEADER_SIZE].copy_from_slice(&header.encode());
    let root = initfs::encode_inode(initfs::INODE_TYPE_DIR, 0, METADATA_SIZE as u32);
    image[initfs::HEADER_SIZE..METADATA_SIZE as usize].copy_from_slice(&root);
    for s in &segs {
        let at = (s.vaddr - base) as usize;
        let data = &elf_file[s.offset as usize..(s.offset + s.filesz) as usize];
        image[at..at + data.len()].copy_from_slice(data);
        // The zero-fill tail (.bss) is already zero.
    }
    Ok(image)
}

/// Build the loader's bundle from a kernel ELF file and an initfs image.
pub fn pack_bundle(kernel: &[u8], initfs_image: &[u8]) -> Result<Vec<u8>, PackError> {
    if kernel.is_empty() || initfs_image.is_empty() {
        return Err(PackError::EmptyPart);
    }
    let header = bundle::Header::layout(kernel.len() as u64, initfs_image.len() as u64).ok_or(PackError::TooLarge)?;
    let total = header.total_size().and_then(page_align_up).ok_or(PackError::TooLarge)?;
    let mut out = vec![0u8; usize::try_from(total).map_err(|_| PackError::TooLarge)?];
    out[..bundle::HEADER_SIZE].copy_from_slice(&header.encode());
    let k = header.kernel_offset as usize;
    out[k..k + kernel.len()].copy_from_slice(kernel);
    let i = header.initfs_offset as usize;
    out[i..i + initfs_image.len()].copy_from_slice(initfs_image);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal static ELF64 x86_64 executable with the given PT_LOAD
    /// segments (vaddr, file bytes, memsz) and entry point.
    fn elf(entry: u64, segs: &[(u64, &[u8], u64)]) -> Vec<u8> {
        let phoff = 64usize;
        let data_start = phoff + 56 * segs.len();
        let mut f = vec![0u8; data_start];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = 1;
        f[6] = 1;
        f[16..18].copy_from_slice(&ET_EXEC.to_le_bytes());
        f[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        f[24..32].copy_from_slice(&entry.to_le_bytes());
        f[32..40].copy_from_slice(&(phoff as u64).to_le_bytes());
        f[52..54].copy_from_slice(&64u16.to_le_bytes());
        f[54..56].copy_from_slice(&56u16.to_le_bytes());
        f[56..58].copy_from_slice(&(segs.len() as u16).to_le_bytes());
        for (i, (vaddr, bytes, memsz)) in segs.iter().enumerate() {
            let off = f.len() as u64;
            f.extend_from_slice(bytes);
            let ph = phoff + 56 * i;
            f[ph..ph + 4].copy_from_slice(&PT_LOAD.to_le_bytes());
            f[ph + 8..ph + 16].copy_from_slice(&off.to_le_bytes());
            f[ph + 16..ph + 24].copy_from_slice(&vaddr.to_le_bytes());
            f[ph + 32..ph + 40].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
            f[ph + 40..ph + 48].copy_from_slice(&memsz.to_le_bytes());
        }
        f
    }

    #[test]
    fn initfs_image_places_segments_at_vaddr_minus_load_address_with_bss_zeroed() {
        let code = [0x90u8, 0x90, 0xf4];
        let data = [1u8, 2, 3, 4];
        let f = elf(0x2000, &[(0x2000, &code, 3), (0x3000, &data, 0x2000)]);
        let img = pack_initfs(&f).unwrap();
        assert_eq!(img.len(), 0x4000, "0x1000 + 0x3000 rounded to pages");
        assert_eq!(&img[0x1000..0x1003], &code);
        assert_eq!(&img[0x2000..0x2004], &data);
        assert!(img[0x2004..].iter().all(|&b| b == 0));
        let h = initfs::Header::decode(&img).unwrap();
        assert_eq!(h.bootstrap_entry, 0x2000);
        assert_eq!(h.initfs_size, 0x4000);
        assert_eq!(h.page_size, 4096);
        assert_eq!((h.root_inode, h.inode_count), (0, 1));
        // The kernel reads the entry at 0x1a.
        assert_eq!(img[0x1a..0x22], 0x2000u64.to_le_bytes());
        // The root inode: an empty directory.
        let inode = &img[h.inode_table_offset as usize..][..initfs::INODE_SIZE];
        assert_eq!(inode[..4], initfs::INODE_TYPE_DIR.to_le_bytes());
        assert_eq!(inode[4..8], 0u32.to_le_bytes());
    }

    #[test]
    fn initfs_refuses_a_segment_over_the_header() {
        let f = elf(0x1010, &[(0x1010, &[0x90], 1)]);
        assert_eq!(pack_initfs(&f), Err(PackError::SegmentOverlapsHeader { vaddr: 0x1010 }));
    }

    #[test]
    fn initfs_refuses_a_segment_below_the_load_address() {
        let f = elf(0x800, &[(0x800, &[0x90], 1)]);
        assert_eq!(pack_initfs(&f), Err(PackError::SegmentMisplaced { vaddr: 0x800 }));
    }

    #[test]
    fn initfs_refuses_overlapping_segments() {
        let f = elf(0x2000, &[(0x2000, &[0x90; 16], 0x1800), (0x3000, &[1], 1)]);
        assert_eq!(pack_initfs(&f), Err(PackError::SegmentMisplaced { vaddr: 0x3000 }));
    }

    #[test]
    fn initfs_refuses_an_entry_outside_every_segment() {
        let f = elf(0x9000, &[(0x2000, &[0x90], 1)]);
        assert_eq!(pack_initfs(&f), Err(PackError::EntryOutsideImage { entry: 0x9000 }));
    }

    #[test]
    fn initfs_refuses_non_elf_and_wrong_machine_and_truncated_files() {
        assert_eq!(pack_initfs(b"MZ\x90\x00"), Err(PackError::NotElf64Le));
        let mut f = elf(0x2000, &[(0x2000, &[0x90], 1)]);
        f[18] = 3; // EM_386
        assert_eq!(pack_initfs(&f), Err(PackError::NotX86_64));
        let f = elf(0x2000, &[(0x2000, &[0x90; 8], 8)]);
        assert!(matches!(pack_initfs(&f[..f.len() - 4]), Err(PackError::Truncated(_))));
        let f = elf(0x2000, &[]);
        assert_eq!(pack_initfs(&f), Err(PackError::NoLoadSegment));
    }

    #[test]
    fn bundle_holds_kernel_and_initfs_page_aligned_and_decodes() {
        let kernel = vec![0xaa; 0x1801];
        let initfs_img = vec![0xbb; 0x2000];
        let b = pack_bundle(&kernel, &initfs_img).unwrap();
        let h = bundle::Header::decode(&b, b.len() as u64).unwrap();
        assert_eq!(h.kernel_offset % PAGE_SIZE, 0);
        assert_eq!(h.initfs_offset % PAGE_SIZE, 0);
        assert_eq!(&b[h.kernel_offset as usize..][..kernel.len()], &kernel[..]);
        assert_eq!(&b[h.initfs_offset as usize..][..initfs_img.len()], &initfs_img[..]);
        assert_eq!(b.len() as u64 % PAGE_SIZE, 0);
    }

    #[test]
    fn bundle_refuses_an_empty_part() {
        assert_eq!(pack_bundle(&[], &[1]), Err(PackError::EmptyPart));
        assert_eq!(pack_bundle(&[1], &[]), Err(PackError::EmptyPart));
    }
}
