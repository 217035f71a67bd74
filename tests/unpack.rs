//! Layer unpacking and snapshots, checked against `umoci unpack` of the same OCI layout, plus malicious layers,
//! crash safety and DiffID verification. Runs as root (overlayfs, chown, trusted xattrs, mknod).

mod support;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use jetship::image::snapshot::{self, LayerSpec, RootfsKind, RootfsMode, SnapshotError, SnapshotStore};
use jetship::image::unpack::{self, Destination, UnpackError, UnpackPolicy, WhiteoutMode};
use sha2::{Digest, Sha256};

const T0: u64 = 1_600_000_000;

/// One tar entry, written with raw names so tests can build malformed layers too.
#[derive(Clone)]
enum E {
    Dir(&'static str, u32, u32, u64),
    File(String, Vec<u8>, u32, u32, u64),
    XattrFile(&'static str, &'static [u8], &'static str, &'static [u8]),
    Symlink(&'static str, String),
    Hardlink(String, String),
    Char(&'static str, u32, u32),
    Fifo(&'static str),
}

fn file(path: &str, content: &str, mode: u32) -> E {
    E::File(path.to_string(), content.as_bytes().to_vec(), mode, 0, T0 + 10)
}

fn owned(path: &str, content: &str, mode: u32, uid: u32) -> E {
    E::File(path.to_string(), content.as_bytes().to_vec(), mode, uid, T0 + 20)
}

fn dir(path: &'static str, mode: u32) -> E {
    E::Dir(path, mode, 0, T0 + 30)
}

fn link(path: &'static str, target: &str) -> E {
    E::Symlink(path, target.to_string())
}

fn hard(path: &str, target: &str) -> E {
    E::Hardlink(path.to_string(), target.to_string())
}

fn append(
    b: &mut tar::Builder<Vec<u8>>,
    path: &[u8],
    link: Option<&[u8]>,
    mut h: tar::Header,
    data: &[u8],
    extra_pax: &[(&str, &[u8])],
) {
    let mut pax: Vec<(String, Vec<u8>)> = extra_pax.iter().map(|(k, v)| (k.to_string(), v.to_vec())).collect();
    if path.len() > 99 {
        pax.push(("path".into(), path.to_vec()));
    } else {
        h.as_old_mut().name[..path.len()].copy_from_slice(path);
    }
    if let Some(l) = link {
        if l.len() > 99 {
            pax.push(("linkpath".into(), l.to_vec()));
        } else {
            h.as_old_mut().linkname[..l.len()].copy_from_slice(l);
        }
    }
    if !pax.is_empty() {
        b.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice()))).unwrap();
    }
    h.set_size(data.len() as u64);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

fn header(kind: tar::EntryType, mode: u32, uid: u32, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(uid as u64);
    h.set_gid(uid as u64);
    h.set_mtime(mtime);
    h
}

fn tar_of(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        match e {
            E::Dir(p, mode, uid, mt) => {
                append(&mut b, p.as_bytes(), None, header(tar::EntryType::Directory, *mode, *uid, *mt), b"", &[])
            }
            E::File(p, data, mode, uid, mt) => {
                append(&mut b, p.as_bytes(), None, header(tar::EntryType::Regular, *mode, *uid, *mt), data, &[])
            }
            E::XattrFile(p, data, xname, xval) => {
                let key = format!("SCHILY.xattr.{xname}");
                append(
                    &mut b,
                    p.as_bytes(),
                    None,
                    header(tar::EntryType::Regular, 0o644, 0, T0 + 40),
                    data,
                    &[(key.as_str(), xval)],
                )
            }
            E::Symlink(p, t) => append(
                &mut b,
                p.as_bytes(),
                Some(t.as_bytes()),
                header(tar::EntryType::Symlink, 0o777, 0, T0 + 50),
                b"",
                &[],
            ),
            E::Hardlink(p, t) => append(
                &mut b,
                p.as_bytes(),
                Some(t.as_bytes()),
                header(tar::EntryType::Link, 0o644, 0, T0 + 10),
                b"",
                &[],
            ),
            E::Fifo(p) => append(&mut b, p.as_bytes(), None, header(tar::EntryType::Fifo, 0o620, 0, T0 + 70), b"", &[]),
            E::Char(p, major, minor) => {
                let mut h = header(tar::EntryType::Char, 0o666, 0, T0);
                h.set_device_major(*major).unwrap();
                h.set_device_minor(*minor).unwrap();
                append(&mut b, p.as_bytes(), None, h, b"", &[])
            }
        }
    }
    b.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn sha(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

const GZ: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// A layer as stored: the blob, its media type and the DiffID of its tar.
struct Layer {
    blob: Vec<u8>,
    media_type: &'static str,
    diff_id: String,
}

fn layer(entries: &[E], media_type: &'static str) -> Layer {
    let tar = tar_of(entries);
    let diff_id = sha(&tar);
    let blob = match media_type {
        GZ => gzip(&tar),
        ZSTD => zstd::encode_all(&tar[..], 3).unwrap(),
        _ => tar,
    };
    Layer { blob, media_type, diff_id }
}

fn long_name() -> String {
    format!("opt/app/{}", "long-name-".repeat(16))
}

/// Three layers with everything the issue lists: modes (setuid), owners, times, symlinks, hardlinks, xattrs,
/// an empty dir, a long name, file and dir whiteouts, an opaque dir, and a parent only a lower layer has.
fn test_image() -> Vec<Layer> {
    let l1 = layer(
        &[
            dir("etc/", 0o755),
            file("etc/hostname", "jetson\n", 0o644),
            file("etc/removeme", "bye\n", 0o644),
            link("etc/abs", "/etc/hostname"),
            dir("usr/", 0o755),
            dir("usr/bin/", 0o755),
            E::File("usr/bin/tool".into(), b"#!/bin/sh\necho tool\n".to_vec(), 0o4755, 0, T0 + 5),
            link("usr/bin/tool-rel", "tool"),
            hard("usr/bin/tool-hard", "usr/bin/tool"),
            dir("home/", 0o755),
            E::Dir("home/user/", 0o700, 1000, T0 + 60),
            owned("home/user/notes.txt", "mine\n", 0o600, 1000),
            dir("opt/", 0o755),
            dir("opt/app/", 0o750),
            dir("opt/app/data/", 0o755),
            file("opt/app/data/a.txt", "a\n", 0o644),
            file("opt/app/data/b.txt", "b\n", 0o644),
            dir("opt/app/data/sub/", 0o755),
            file("opt/app/data/sub/deep.txt", "deep\n", 0o644),
            link("opt/app/up", "../../etc"),
            E::XattrFile("opt/app/x.bin", b"\x00\x01binary", "user.jetship", b"hello"),
            E::File(long_name(), b"long\n".to_vec(), 0o644, 0, T0 + 7),
            dir("var/", 0o755),
            dir("var/empty/", 0o711),
            dir("var/gone/", 0o755),
            file("var/gone/inside", "x\n", 0o644),
            dir("var/lib/", 0o755),
            file("var/lib/state", "old\n", 0o644),
            E::Fifo("var/pipe"),
            // A symlink whose target needs a PAX linkpath.
            E::Symlink("opt/app/far", format!("/{}/target", "deep-dir".repeat(20))),
        ],
        GZ,
    );
    let l2 = layer(
        &[
            dir("etc/", 0o755),
            file("etc/.wh.removeme", "", 0o644),
            file("etc/hostname", "orin\n", 0o600),
            dir("opt/", 0o755),
            dir("opt/app/", 0o750),
            dir("opt/app/data/", 0o700),
            file("opt/app/data/.wh..wh..opq", "", 0o644),
            file("opt/app/data/c.txt", "c\n", 0o644),
            file("opt/app/up", "now a file\n", 0o644),
            dir("var/", 0o755),
            file("var/.wh.gone", "", 0o644),
            // A directory replaced by a symlink.
            link("var/lib", "/opt/app/data"),
            dir("usr/", 0o755),
            dir("usr/bin/", 0o755),
            file("usr/bin/a", "same inode\n", 0o755),
            hard("usr/bin/a-link", "usr/bin/a"),
            hard("usr/bin/a-link2", "/usr/bin/a"),
        ],
        GZ,
    );
    let l3 = layer(
        &[
            // No `home/user/` entry: the parent comes from layer 1.
            owned("home/user/.profile", "export A=1\n", 0o644, 1000),
            dir("usr/", 0o755),
            dir("usr/bin/", 0o755),
            file("usr/bin/.wh.tool-hard", "", 0o644),
            // A hardlink to a file only a lower layer has (no `etc/` entry either).
            hard("etc/hostname-link", "etc/hostname"),
        ],
        TAR,
    );
    vec![l1, l2, l3]
}

/// Writes an OCI image layout holding `layers` under tag `test`.
fn write_oci_layout(dir: &Path, layers: &[Layer]) {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| {
        let d = sha(data);
        fs::write(blobs.join(d.trim_start_matches("sha256:")), data).unwrap();
        d
    };
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()},
    });
    let config = serde_json::to_vec(&config).unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(&config), "size": config.len()},
        "layers": layers.iter().map(|l| serde_json::json!({"mediaType": l.media_type, "digest": put(&l.blob), "size": l.blob.len()})).collect::<Vec<_>>(),
    });
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": put(&manifest), "size": manifest.len(),
                        "annotations": {"org.opencontainers.image.ref.name": "test"}}],
    });
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

fn umoci_unpack(layout: &Path, bundle: &Path) -> PathBuf {
    let umoci = support::require_tool("umoci", "umoci");
    let out = Command::new(umoci)
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:test", layout.display()))
        .arg(bundle)
        .output()
        .unwrap();
    assert!(out.status.success(), "umoci unpack failed: {}", String::from_utf8_lossy(&out.stderr));
    bundle.join("rootfs")
}

/// What the comparison looks at for one path.
#[derive(Debug, PartialEq, Eq)]
struct Node {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    target: Option<PathBuf>,
    content: Option<Vec<u8>>,
    /// Other paths sharing this inode.
    links: Vec<String>,
    user_xattrs: Vec<(String, Vec<u8>)>,
}

fn user_xattrs(p: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(names) = xattr_list(p) else {
        return Vec::new();
    };
    let mut out: Vec<_> = names
        .into_iter()
        .filter(|n| n.starts_with("user."))
        .map(|n| {
            let v = xattr_get(p, &n);
            (n, v)
        })
        .collect();
    out.sort();
    out
}

fn xattr_list(p: &Path) -> std::io::Result<Vec<String>> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let mut buf = vec![0u8; 4096];
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(buf[..n as usize]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect())
}

fn xattr_get(p: &Path, name: &str) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 4096];
    let r = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    buf.truncate(r.max(0) as usize);
    buf
}

fn walk_tree(root: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    let mut inodes: HashMap<(u64, u64), Vec<String>> = HashMap::new();
    fn rec(root: &Path, dir: &Path, out: &mut BTreeMap<String, Node>, inodes: &mut HashMap<(u64, u64), Vec<String>>) {
        let mut names: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        names.sort();
        for p in names {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let md = fs::symlink_metadata(&p).unwrap();
            let ft = md.file_type();
            let kind = if ft.is_dir() {
                "dir"
            } else if ft.is_symlink() {
                "symlink"
            } else if ft.is_file() {
                "file"
            } else if ft.is_char_device() {
                "char"
            } else if ft.is_fifo() {
                "fifo"
            } else {
                "other"
            };
            if ft.is_file() && md.nlink() > 1 {
                inodes.entry((md.dev(), md.ino())).or_default().push(rel.clone());
            }
            out.insert(
                rel.clone(),
                Node {
                    kind,
                    mode: md.mode() & 0o7777,
                    uid: md.uid(),
                    gid: md.gid(),
                    mtime: md.mtime(),
                    target: ft.is_symlink().then(|| fs::read_link(&p).unwrap()),
                    content: ft.is_file().then(|| fs::read(&p).unwrap()),
                    links: Vec::new(),
                    user_xattrs: if ft.is_symlink() { Vec::new() } else { user_xattrs(&p) },
                },
            );
            if ft.is_dir() {
                rec(root, &p, out, inodes);
            }
        }
    }
    rec(root, root, &mut out, &mut inodes);
    for group in inodes.values() {
        for p in group {
            out.get_mut(p).unwrap().links = group.iter().filter(|q| *q != p).cloned().collect();
        }
    }
    out
}

fn assert_same_tree(ours: &Path, reference: &Path, what: &str) {
    let a = walk_tree(ours);
    let b = walk_tree(reference);
    let names_a: Vec<_> = a.keys().collect();
    let names_b: Vec<_> = b.keys().collect();
    assert_eq!(names_a, names_b, "{what}: different names than umoci");
    for (k, va) in &a {
        assert_eq!(va, &b[k], "{what}: `{k}` differs from umoci's");
    }
}

fn store_snapshots(store: &SnapshotStore, layers: &[Layer], policy: &UnpackPolicy) -> Vec<snapshot::Snapshot> {
    let specs: Vec<LayerSpec> =
        layers.iter().map(|l| LayerSpec { diff_id: l.diff_id.clone(), media_type: l.media_type.into() }).collect();
    store.ensure_all(&specs, |i, _| Ok(&layers[i].blob[..]), policy).unwrap()
}

#[test]
fn unpacked_trees_equal_umoci_unpack_flattened_copied_and_overlay() {
    let tmp = tempfile::tempdir().unwrap();
    let layers = test_image();
    let layout = tmp.path().join("layout");
    write_oci_layout(&layout, &layers);
    let reference = umoci_unpack(&layout, &tmp.path().join("bundle"));
    let expected = walk_tree(&reference);
    // Make sure the reference itself shows what the layers mean, so a broken umoci cannot hide a bug.
    assert!(!expected.contains_key("etc/removeme") && !expected.contains_key("var/gone"));
    assert!(!expected.contains_key("opt/app/data/a.txt") && expected.contains_key("opt/app/data/c.txt"));
    assert_eq!(expected["usr/bin/tool"].mode, 0o4755);
    assert_eq!((expected["var/pipe"].kind, expected["var/lib"].kind), ("fifo", "symlink"));
    assert_eq!(expected["etc/hostname-link"].links, ["etc/hostname"]);
    assert!(expected["opt/app/far"].target.as_ref().unwrap().as_os_str().len() > 100);

    // 1. Every layer applied straight from its tar onto one tree, whiteouts as deletions.
    let flat = tmp.path().join("flat");
    fs::create_dir(&flat).unwrap();
    for l in &layers {
        let dest = Destination { root: flat.clone(), lowers: Vec::new(), whiteouts: WhiteoutMode::Apply };
        let stats = unpack::unpack_layer(&l.blob[..], Some(l.media_type), &dest, &UnpackPolicy::default()).unwrap();
        unpack::verify_diff_id(&stats, &l.diff_id).unwrap();
    }
    assert_same_tree(&flat, &reference, "tar applied flat");

    // 2. Snapshots (overlay-style whiteouts), then the flattened-copy root file system.
    let store = SnapshotStore::open(&tmp.path().join("state")).unwrap();
    let snaps = store_snapshots(&store, &layers, &UnpackPolicy::default());
    let lowers: Vec<&Path> = snaps.iter().map(|s| s.fs.as_path()).collect();
    let copy = snapshot::mount_rootfs(&lowers, &tmp.path().join("c-copy"), RootfsMode::Copy).unwrap();
    assert_eq!(copy.kind(), RootfsKind::Copy);
    assert_same_tree(copy.path(), &reference, "flattened copy of snapshots");

    // 3. The overlay-mounted root file system.
    let mut ovl = snapshot::mount_rootfs(&lowers, &tmp.path().join("c-ovl"), RootfsMode::Overlay).unwrap();
    assert_eq!(ovl.kind(), RootfsKind::Overlay);
    assert_same_tree(ovl.path(), &reference, "overlay rootfs");
    ovl.unmount().unwrap();
    assert!(fs::read_dir(ovl.path()).unwrap().next().is_none(), "overlay unmounted");
    ovl.remove().unwrap();
    copy.remove().unwrap();
}

#[test]
fn snapshots_record_whiteouts_the_overlay_way() {
    let tmp = tempfile::tempdir().unwrap();
    let layers = test_image();
    let store = SnapshotStore::open(tmp.path()).unwrap();
    let snaps = store_snapshots(&store, &layers, &UnpackPolicy::default());
    let l2 = &snaps[1].fs;
    let md = fs::symlink_metadata(l2.join("etc/removeme")).unwrap();
    assert!(md.file_type().is_char_device() && md.rdev() == 0, "whiteout is a 0:0 char device");
    assert!(fs::symlink_metadata(l2.join("etc/.wh.removeme")).is_err());
    assert_eq!(xattr_get(&l2.join("opt/app/data"), "trusted.overlay.opaque"), b"y");
    // Layer 3 has no `home/user/` entry: its copy keeps layer 1's owner and mode.
    let md = fs::metadata(snaps[2].fs.join("home/user")).unwrap();
    assert_eq!((md.uid(), md.mode() & 0o7777, md.mtime()), (1000, 0o700, (T0 + 60) as i64));
}

#[test]
fn zstd_gzip_and_plain_layers_unpack_to_the_same_tree_and_diff_id() {
    let tmp = tempfile::tempdir().unwrap();
    let entries = [dir("a/", 0o755), file("a/f", "content\n", 0o640), link("a/l", "f"), hard("a/h", "a/f")];
    let mut trees = Vec::new();
    for (i, mt) in [GZ, ZSTD, TAR].into_iter().enumerate() {
        let l = layer(&entries, mt);
        let root = tmp.path().join(i.to_string());
        fs::create_dir(&root).unwrap();
        let dest = Destination { root: root.clone(), lowers: Vec::new(), whiteouts: WhiteoutMode::Apply };
        // No media type: the compression is sniffed from the magic bytes.
        let stats = unpack::unpack_layer(&l.blob[..], None, &dest, &UnpackPolicy::default()).unwrap();
        assert_eq!(stats.diff_id, l.diff_id, "{mt}");
        assert_eq!((stats.files, stats.symlinks, stats.hardlinks), (1, 1, 1));
        trees.push(walk_tree(&root));
    }
    assert_eq!(trees[0], trees[1]);
    assert_eq!(trees[0], trees[2]);
}

#[test]
fn media_type_that_contradicts_the_blob_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let l = layer(&[file("f", "x", 0o644)], TAR);
    let dest = Destination { root: tmp.path().to_path_buf(), lowers: Vec::new(), whiteouts: WhiteoutMode::Apply };
    let err = unpack::unpack_layer(&l.blob[..], Some(GZ), &dest, &UnpackPolicy::default()).unwrap_err();
    assert!(matches!(err, UnpackError::CompressionMismatch { .. }), "{err}");
    assert!(!tmp.path().join("f").exists());
}

#[test]
fn device_nodes_are_skipped_unless_policy_allows_them() {
    let tmp = tempfile::tempdir().unwrap();
    let l = layer(&[dir("dev/", 0o755), E::Char("dev/null", 1, 3), E::Char("dev/mem", 1, 1)], TAR);
    let store = SnapshotStore::open(&tmp.path().join("deny")).unwrap();
    let s = store_snapshots(&store, std::slice::from_ref(&l), &UnpackPolicy::default());
    assert_eq!(s[0].stats.as_ref().unwrap().devices_skipped, 2);
    assert!(fs::read_dir(s[0].fs.join("dev")).unwrap().next().is_none());

    let store = SnapshotStore::open(&tmp.path().join("allow")).unwrap();
    let s = store_snapshots(&store, &[l], &UnpackPolicy { allow_devices: true, ..Default::default() });
    let md = fs::symlink_metadata(s[0].fs.join("dev/null")).unwrap();
    assert!(md.file_type().is_char_device());
    assert_eq!((libc::major(md.rdev()), libc::minor(md.rdev())), (1, 3));
}

#[test]
fn existing_snapshot_is_reused_not_unpacked_again() {
    let tmp = tempfile::tempdir().unwrap();
    let layers = test_image();
    let store = SnapshotStore::open(tmp.path()).unwrap();
    let first = store_snapshots(&store, &layers, &UnpackPolicy::default());
    assert!(first.iter().all(|s| !s.reused));
    let specs: Vec<LayerSpec> =
        layers.iter().map(|l| LayerSpec { diff_id: l.diff_id.clone(), media_type: l.media_type.into() }).collect();
    let again = store
        .ensure_all(
            &specs,
            |_, _| -> std::io::Result<&[u8]> { panic!("blob opened for an existing snapshot") },
            &UnpackPolicy::default(),
        )
        .unwrap();
    assert!(again.iter().all(|s| s.reused));
    assert_eq!(first.iter().map(|s| &s.fs).collect::<Vec<_>>(), again.iter().map(|s| &s.fs).collect::<Vec<_>>());
    let expected_chain = snapshot::chain_ids(&specs.iter().map(|s| s.diff_id.clone()).collect::<Vec<_>>()).unwrap();
    assert_eq!(again.iter().map(|s| s.chain_id.clone()).collect::<Vec<_>>(), expected_chain);
    assert!(again[2]
        .fs
        .starts_with(tmp.path().join("snapshots").join(expected_chain[2].trim_start_matches("sha256:"))));
}

/// Only complete snapshots (64-hex names) are in the store; no temp dir is left.
fn committed(store: &SnapshotStore) -> Vec<String> {
    fs::read_dir(store.dir()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
}

#[test]
fn truncated_layer_commits_nothing_and_next_attempt_succeeds_after_crash_cleanup() {
    let tmp = tempfile::tempdir().unwrap();
    let mut big = vec![dir("d/", 0o755)];
    for i in 0..200 {
        big.push(E::File(format!("d/f{i}"), vec![i as u8; 4096 + i * 13], 0o644, 0, T0));
    }
    let l = layer(&big, GZ);
    let spec = LayerSpec { diff_id: l.diff_id.clone(), media_type: GZ.into() };
    let state = tmp.path().join("state");
    let store = SnapshotStore::open(&state).unwrap();
    let cut = &l.blob[..l.blob.len() / 2];
    let err = store.ensure(&[], &spec, || Ok(cut), &UnpackPolicy::default()).unwrap_err();
    assert!(
        matches!(&err, SnapshotError::Unpack { source: UnpackError::Corrupt { .. }, .. }),
        "truncated gzip must be reported as a corrupt stream: {err}"
    );
    assert!(err.to_string().contains("corrupt or truncated"), "{err}");
    assert!(committed(&store).is_empty(), "{:?}", committed(&store));

    // A crash midway leaves a temp dir with half a tree; the next start removes it.
    let leftover = store.dir().join(".tmp-deadbeef-1/fs/d");
    fs::create_dir_all(&leftover).unwrap();
    fs::write(leftover.join("f0"), b"half").unwrap();
    let store = SnapshotStore::open(&state).unwrap();
    assert!(committed(&store).is_empty());

    let s = store.ensure(&[], &spec, || Ok(&l.blob[..]), &UnpackPolicy::default()).unwrap();
    assert_eq!(fs::read(s.fs.join("d/f199")).unwrap(), vec![199u8; 4096 + 199 * 13]);
    assert_eq!(committed(&store), vec![l.diff_id.trim_start_matches("sha256:").to_string()]);
}

#[test]
fn diff_id_mismatch_is_refused_and_nothing_is_committed() {
    let tmp = tempfile::tempdir().unwrap();
    let l = layer(&[file("f", "x", 0o644)], GZ);
    let other = layer(&[file("f", "y", 0o644)], GZ);
    let store = SnapshotStore::open(tmp.path()).unwrap();
    let spec = LayerSpec { diff_id: other.diff_id.clone(), media_type: GZ.into() };
    let err = store.ensure(&[], &spec, || Ok(&l.blob[..]), &UnpackPolicy::default()).unwrap_err();
    assert!(matches!(&err, SnapshotError::Unpack { source: UnpackError::DiffIdMismatch { .. }, .. }), "{err}");
    assert!(err.to_string().contains(&other.diff_id) && err.to_string().contains(&l.diff_id), "{err}");
    assert!(committed(&store).is_empty());
}

/// Unpacks one malicious layer into a fresh store whose temp dir sits four levels below a temp dir holding a
/// canary file and an empty `etc/`; `case(tmp)` gives the entries and the one that must be refused. Checks the
/// refusal names that entry, the canary is byte-for-byte untouched, nothing else appears outside and nothing
/// is committed.
fn assert_refused(name: &str, case: impl Fn(&Path) -> (Vec<E>, String)) {
    let tmp = tempfile::tempdir().unwrap();
    let canary = tmp.path().join("canary");
    fs::write(&canary, b"canary: do not touch\n").unwrap();
    fs::create_dir(tmp.path().join("etc")).unwrap();
    let (entries, bad_entry) = case(tmp.path());
    let state = tmp.path().join("state");
    let store = SnapshotStore::open(&state).unwrap();
    let l = layer(&entries, GZ);
    let spec = LayerSpec { diff_id: l.diff_id.clone(), media_type: GZ.into() };
    let err = store.ensure(&[], &spec, || Ok(&l.blob[..]), &UnpackPolicy::default()).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(&err, SnapshotError::Unpack { source: UnpackError::Unsafe { entry, .. }, .. } if *entry == bad_entry),
        "{name}: expected refusal of `{bad_entry}`, got: {msg}"
    );
    assert!(msg.contains("refused layer entry") && msg.contains(&bad_entry), "{name}: {msg}");
    assert_eq!(fs::read(&canary).unwrap(), b"canary: do not touch\n", "{name}: canary changed");
    let mut names: Vec<_> =
        fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["canary", "etc", "state"], "{name}: something was written next to the canary");
    assert!(fs::read_dir(tmp.path().join("etc")).unwrap().next().is_none(), "{name}: wrote outside");
    assert!(committed(&store).is_empty(), "{name}: a snapshot was committed");
}

#[test]
fn malicious_layers_are_refused_and_the_canary_stays_untouched() {
    // The snapshot root is <tmp>/state/snapshots/.tmp-*/fs: four `..` reach <tmp>.
    const UP: &str = "../../../..";
    let one = |e: E, bad: &str| {
        let bad = bad.to_string();
        move |_: &Path| (vec![e.clone()], bad.clone())
    };
    assert_refused("dotdot to canary", one(file(&format!("{UP}/canary"), "evil", 0o644), &format!("{UP}/canary")));
    assert_refused("dotdot", one(file("../evil", "evil", 0o644), "../evil"));
    assert_refused("inner dotdot", |_| {
        let bad = format!("a/../{UP}/canary");
        (vec![dir("a/", 0o755), file(&bad, "evil", 0o644)], bad)
    });
    // Absolute symlink escape: `link -> /`, then a write through it at the canary's absolute path.
    assert_refused("absolute symlink to /", |tmp| {
        let bad = format!("link{}", tmp.join("canary").display());
        (vec![link("link", "/"), file(&bad, "evil", 0o644)], bad)
    });
    assert_refused("absolute symlink to a dir outside", |tmp| {
        let target = tmp.join("etc").display().to_string();
        (vec![link("etc", &target), file("etc/passwd", "evil", 0o644)], "etc/passwd".into())
    });
    // Relative symlink escapes.
    assert_refused("relative symlink", |_| {
        (vec![link("link", UP), file("link/canary", "evil", 0o644)], "link/canary".into())
    });
    assert_refused("relative symlink, dir", |_| {
        (vec![link("link", UP), dir("link/etc/x/", 0o755)], "link/etc/x/".into())
    });
    // Hardlinks to a file outside, through an escaping symlink, and placed through one.
    assert_refused("hardlink outside", |_| (vec![hard("h", &format!("{UP}/canary"))], "h".into()));
    assert_refused("hardlink via symlink", |_| (vec![link("link", UP), hard("h", "link/canary")], "h".into()));
    assert_refused("hardlink placed via symlink", |_| {
        (vec![file("x", "x", 0o644), link("link", "../../../../etc"), hard("link/h", "x")], "link/h".into())
    });
    // Whiteouts that would delete outside.
    assert_refused("whiteout dotdot", one(file(&format!("{UP}/.wh.canary"), "", 0o644), &format!("{UP}/.wh.canary")));
    assert_refused("whiteout of dotdot", one(file(".wh...", "", 0o644), ".wh..."));
    assert_refused("whiteout via symlink", |_| {
        (vec![link("link", UP), file("link/.wh.canary", "", 0o644)], "link/.wh.canary".into())
    });
    assert_refused("opaque via symlink", |_| {
        (vec![link("link", UP), file("link/.wh..wh..opq", "", 0o644)], "link/.wh..wh..opq".into())
    });
}

#[test]
fn path_through_a_lower_layers_symlink_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let l1 = layer(&[link("lib", "/tmp")], GZ);
    let l2 = layer(&[file("lib/evil", "evil", 0o644)], GZ);
    let store = SnapshotStore::open(tmp.path()).unwrap();
    let specs: Vec<LayerSpec> =
        [&l1, &l2].iter().map(|l| LayerSpec { diff_id: l.diff_id.clone(), media_type: GZ.into() }).collect();
    let blobs = [&l1.blob, &l2.blob];
    let err = store.ensure_all(&specs, |i, _| Ok(&blobs[i][..]), &UnpackPolicy::default()).unwrap_err();
    assert!(err.to_string().contains("`lib/evil`") && err.to_string().contains("symlink"), "{err}");
    assert_eq!(committed(&store).len(), 1, "only the first layer is committed");
}

#[test]
fn rootfs_falls_back_to_a_copy_when_overlay_cannot_mount() {
    let tmp = tempfile::tempdir().unwrap();
    let layers = test_image();
    let store = SnapshotStore::open(&tmp.path().join("state")).unwrap();
    let snaps = store_snapshots(&store, &layers, &UnpackPolicy::default());
    let lowers: Vec<&Path> = snaps.iter().map(|s| s.fs.as_path()).collect();
    // overlayfs options cannot carry a `:` in a path, so the mount fails and Auto copies instead.
    let dir = tmp.path().join("c:odd");
    let err = snapshot::mount_rootfs(&lowers, &dir, RootfsMode::Overlay).unwrap_err();
    assert!(matches!(err, SnapshotError::Mount { .. }), "{err}");
    let copy = snapshot::mount_rootfs(&lowers, &dir, RootfsMode::Auto).unwrap();
    assert_eq!(copy.kind(), RootfsKind::Copy);
    assert_eq!(fs::read(copy.path().join("etc/hostname")).unwrap(), b"orin\n");
    assert!(!copy.path().join("etc/removeme").exists());

    // The overlay is unmounted when its value is dropped.
    let ovl = snapshot::mount_rootfs(&lowers, &tmp.path().join("c2"), RootfsMode::Auto).unwrap();
    assert_eq!(ovl.kind(), RootfsKind::Overlay);
    let path = ovl.path().to_path_buf();
    assert!(path.join("etc/hostname").exists());
    drop(ovl);
    assert!(!path.join("etc/hostname").exists(), "overlay still mounted after drop");
}

#[test]
fn overlay_xattrs_from_a_layer_are_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let l = layer(&[E::XattrFile("f", b"x", "trusted.overlay.redirect", b"/etc")], TAR);
    let store = SnapshotStore::open(tmp.path()).unwrap();
    let s = store_snapshots(&store, &[l], &UnpackPolicy::default());
    assert_eq!(s[0].stats.as_ref().unwrap().xattrs_skipped, 1);
    assert!(xattr_get(&s[0].fs.join("f"), "trusted.overlay.redirect").is_empty());
}

#[test]
fn a_damaged_snapshot_is_never_used_but_moved_aside_and_unpacked_again() {
    let tmp = tempfile::tempdir().unwrap();
    let mut entries = vec![dir("bin/", 0o755)];
    entries.push(E::File("bin/busybox".into(), vec![7u8; 64 * 1024], 0o755, 0, T0));
    entries.push(file("etc/hostname", "box\n", 0o644));
    let l = layer(&entries, GZ);
    let spec = LayerSpec { diff_id: l.diff_id.clone(), media_type: GZ.into() };
    let state = tmp.path().join("state");
    let store = SnapshotStore::open(&state).unwrap();
    let first = store.ensure(&[], &spec, || Ok(&l.blob[..]), &UnpackPolicy::default()).unwrap();
    let snap_dir = first.fs.parent().unwrap().to_path_buf();
    let busybox = first.fs.join("bin/busybox");
    type Damage<'a> = (&'a str, Box<dyn Fn() + 'a>);
    let damages: Vec<Damage<'_>> = vec![
        (
            "a truncated file",
            Box::new(|| fs::OpenOptions::new().write(true).open(&busybox).unwrap().set_len(812).unwrap()),
        ),
        ("no completion record", Box::new(|| fs::remove_file(snap_dir.join("meta.json")).unwrap())),
        (
            "a garbled completion record",
            Box::new(|| fs::write(snap_dir.join("meta.json"), b"{\"chain_id\": 4").unwrap()),
        ),
        ("a file added", Box::new(|| fs::write(first.fs.join("etc/extra"), b"x").unwrap())),
        (
            "both: truncated and no record",
            Box::new(|| {
                fs::OpenOptions::new().write(true).open(&busybox).unwrap().set_len(100).unwrap();
                fs::remove_file(snap_dir.join("meta.json")).unwrap();
            }),
        ),
    ];
    for (what, damage) in &damages {
        damage();
        let again = store.ensure(&[], &spec, || Ok(&l.blob[..]), &UnpackPolicy::default()).unwrap();
        assert!(!again.reused, "{what}: the damaged snapshot was used");
        assert_eq!(fs::metadata(again.fs.join("bin/busybox")).unwrap().len(), 64 * 1024, "{what}");
        assert!(fs::read_dir(store.dir()).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".broken-")));
        let sound = store.ensure(
            &[],
            &spec,
            || -> std::io::Result<&[u8]> { panic!("{what}: unpacked twice") },
            &UnpackPolicy::default(),
        );
        assert!(sound.unwrap().reused, "{what}: the new snapshot is sound");
    }
    // Nothing mounts a root file system of this state dir: the next open deletes what was moved aside.
    let store = SnapshotStore::open(&state).unwrap();
    assert_eq!(committed(&store), vec![l.diff_id.trim_start_matches("sha256:").to_string()]);
    assert_eq!(store.check().unwrap().0, 1);
}
