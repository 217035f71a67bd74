//! Layer bombs: tiny layers that unpack to far more than their size (issue 10, attack 7). Each is what an
//! attacker would push; the budgets in `jetship::image::unpack` must stop them.

use std::io::Write;

fn octal(field: &mut [u8], value: u64) {
    let s = format!("{:0width$o}\0", value, width = field.len() - 1);
    field.copy_from_slice(s.as_bytes());
}

/// A 2.5 KiB plain tar whose one GNU sparse entry declares a 3 GiB file: 512 bytes of data, the rest a hole.
pub fn sparse_bomb() -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.set_path("var/log/lastlog").unwrap();
    h.set_entry_type(tar::EntryType::GNUSparse);
    h.set_size(512);
    h.set_mode(0o644);
    h.set_mtime(1_700_000_000);
    let g = h.as_gnu_mut().unwrap();
    octal(&mut g.realsize, 3 << 30);
    octal(&mut g.sparse[0].offset, 0);
    octal(&mut g.sparse[0].numbytes, 512);
    octal(&mut g.sparse[1].offset, 3 << 30);
    octal(&mut g.sparse[1].numbytes, 0);
    h.set_cksum();
    let mut tar = h.as_bytes().to_vec();
    tar.extend([b'x'; 512]);
    tar.extend([0u8; 1024]);
    tar
}

/// About 2 MiB of gzip that inflates to a tar holding one 2 GiB file of zeros: one gzip member with the tar
/// header, then 2048 members of 1 MiB of zeros each. The DiffID is not computed (the unpack stops long before it
/// would be compared).
pub fn gzip_bomb() -> Vec<u8> {
    let gz = |data: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    };
    let mut h = tar::Header::new_gnu();
    h.set_path("zeros.bin").unwrap();
    h.set_size(2 << 30);
    h.set_mode(0o644);
    h.set_cksum();
    let zeros = gz(&vec![0u8; 1 << 20]);
    let mut blob = gz(h.as_bytes());
    for _ in 0..2048 {
        blob.extend(&zeros);
    }
    blob.extend(gz(&[0u8; 1024]));
    blob
}

/// 40,000 empty files in about 400 KiB of gzip.
pub fn inode_bomb() -> (Vec<u8>, String) {
    let mut tar = tar::Builder::new(Vec::new());
    for i in 0..40_000 {
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        tar.append_data(&mut h, format!("d{}/f{i}", i / 1000), &[][..]).unwrap();
    }
    let raw = tar.into_inner().unwrap();
    let diff_id = super::registry::sha256(&raw);
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(&raw).unwrap();
    (e.finish().unwrap(), diff_id)
}
