//! Unpacks an image from an OCI image layout with jetship's snapshot store, as `umoci unpack` would, and
//! prints the time taken. Used by `scripts/bench-unpack`; also handy to inspect what a layer unpacks to.
//!
//!     cargo run --release --example unpack -- <oci-layout-dir> <tag> <state-dir> [<container-dir>]
//!
//! With a container dir, the root file system is also assembled (overlayfs, else a flattened copy) and
//! left mounted at `<container-dir>/rootfs` until the program exits.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use jetship::image::snapshot::{self, LayerSpec, RootfsMode, SnapshotStore};
use jetship::image::unpack::UnpackPolicy;

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let f = File::open(path).with_context(|| format!("open {}", path.display()))?;
    serde_json::from_reader(BufReader::new(f)).with_context(|| format!("parse {}", path.display()))
}

fn blob(layout: &Path, digest: &str) -> Result<PathBuf> {
    let hex = digest.strip_prefix("sha256:").ok_or_else(|| anyhow!("digest {digest} is not sha256"))?;
    Ok(layout.join("blobs/sha256").join(hex))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        bail!("usage: unpack <oci-layout-dir> <tag> <state-dir> [<container-dir>]");
    }
    let (layout, tag, state) = (Path::new(&args[0]), &args[1], Path::new(&args[2]));
    let index = read_json(&layout.join("index.json"))?;
    let desc = index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str() == Some(tag))
        .ok_or_else(|| anyhow!("tag {tag} not in {}", layout.display()))?;
    let manifest = read_json(&blob(layout, desc["digest"].as_str().unwrap_or_default())?)?;
    let config = read_json(&blob(layout, manifest["config"]["digest"].as_str().unwrap_or_default())?)?;
    let diff_ids = config["rootfs"]["diff_ids"].as_array().cloned().unwrap_or_default();
    let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
    if diff_ids.len() != layers.len() {
        bail!("manifest has {} layers but config lists {} diff_ids", layers.len(), diff_ids.len());
    }
    let specs: Vec<LayerSpec> = layers
        .iter()
        .zip(&diff_ids)
        .map(|(l, d)| LayerSpec {
            diff_id: d.as_str().unwrap_or_default().to_string(),
            media_type: l["mediaType"].as_str().unwrap_or_default().to_string(),
        })
        .collect();

    let start = Instant::now();
    let store = SnapshotStore::open(state)?;
    let snaps = store.ensure_all(
        &specs,
        |i, _| {
            File::open(blob(layout, layers[i]["digest"].as_str().unwrap_or_default()).map_err(std::io::Error::other)?)
        },
        &UnpackPolicy::default(),
    )?;
    let rootfs = match args.get(3) {
        Some(dir) => {
            let lowers: Vec<&Path> = snaps.iter().map(|s| s.fs.as_path()).collect();
            Some(snapshot::mount_rootfs(&lowers, Path::new(dir), RootfsMode::Auto)?)
        }
        None => None,
    };
    let secs = start.elapsed().as_secs_f64();
    let files: u64 = snaps.iter().filter_map(|s| s.stats.as_ref()).map(|s| s.files).sum();
    let bytes: u64 = snaps.iter().filter_map(|s| s.stats.as_ref()).map(|s| s.tar_bytes).sum();
    println!("unpacked {} layers ({files} files, {bytes} tar bytes) in {secs:.3} s", snaps.len());
    if let Some(r) = rootfs {
        println!("rootfs {:?} at {}", r.kind(), r.path().display());
    }
    Ok(())
}
