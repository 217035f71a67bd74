//! Image pulls against a real `docker-registry` on loopback, with faults injected by a proxy the test controls.

mod support;

use std::io::Read;
use std::time::Duration;

use jetship::base::Platform;
use jetship::host::l4t::L4tVersion;
use jetship::image::pull::{self, PullOptions};
use jetship::image::reference::TemplateVars;
use jetship::image::registry::{Client, ClientOptions, Credential};
use jetship::image::store::ImageStore;
use support::registry::{self as reg, Compression::*, Proxy, Pusher, Registry};
use tokio_util::sync::CancellationToken;

const MIB: usize = 1 << 20;

fn client() -> Client {
    Client::new(ClientOptions { retries: 3, backoff_cap: Duration::from_millis(50), ..Default::default() }).unwrap()
}

fn opts(platform: &str) -> PullOptions {
    PullOptions {
        platform: Platform::parse(platform).unwrap(),
        concurrency: 4,
        retries: 3,
        backoff_cap: Duration::from_millis(50),
        disk_reserve: 0,
        unpack_factor: 0.0,
    }
}

fn vars() -> TemplateVars {
    TemplateVars::from_l4t(L4tVersion::new(36, 4, 3))
}

async fn pull(
    client: &Client,
    store: &ImageStore,
    image: &str,
    o: &PullOptions,
) -> Result<pull::PullReport, pull::Error> {
    pull::pull(client, store, image, &vars(), o, None, CancellationToken::new()).await
}

fn read_blob(store: &ImageStore, digest: &str) -> Vec<u8> {
    let mut v = Vec::new();
    store.open_blob(digest).unwrap().read_to_end(&mut v).unwrap();
    v
}

fn assert_image_stored(store: &ImageStore, img: &reg::Image) {
    for b in std::iter::once(&img.config).chain(&img.layers).chain([&img.manifest]) {
        assert_eq!(read_blob(store, &b.digest), b.data, "blob {} ({})", b.digest, b.media_type);
    }
}

#[tokio::test]
async fn pulls_oci_index_for_the_requested_platform_with_gzip_zstd_and_plain_layers() {
    let registry = Registry::start();
    let arm = reg::image(1, "arm64", &[(300_000, Gzip), (200_000, Zstd), (100_000, Plain)], true);
    let amd = reg::image(2, "amd64", &[(100_000, Gzip)], true);
    let p = Pusher::new(&registry.addr);
    p.image("multi/app", None, &arm).await;
    p.image("multi/app", None, &amd).await;
    let idx = reg::index(&[(&amd, "amd64", None), (&arm, "arm64", Some("v8"))], true);
    p.manifest("multi/app", "v1", &idx).await;

    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let image = format!("{}/multi/app:v1", registry.addr);
    let report = pull(&client(), &store, &image, &opts("linux/arm64")).await.unwrap();
    assert_eq!(report.record.manifest_digest, arm.manifest.digest);
    assert_eq!(report.record.index_digest.as_deref(), Some(idx.digest.as_str()));
    assert_eq!(report.record.platform, "linux/arm64");
    assert_eq!(report.record.resolved, format!("{image}@{}", idx.digest), "pinned by digest");
    let types: Vec<_> = report.record.layers.iter().map(|l| l.media_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.oci.image.layer.v1.tar+zstd",
            "application/vnd.oci.image.layer.v1.tar"
        ]
    );
    assert_image_stored(&store, &arm);
    assert!(!store.has_blob(&amd.layers[0].digest), "the other platform's layer is not fetched");
    let stored = store.image(&image).unwrap();
    assert_eq!(stored.config.architecture().to_string(), "arm64");
    assert_eq!(stored.manifest.layers().len(), 3);

    // The same index for amd64 picks the other manifest; a second pull of arm64 downloads nothing.
    let report = pull(&client(), &store, &image, &opts("linux/amd64")).await.unwrap();
    assert_eq!(report.record.manifest_digest, amd.manifest.digest);
    let again = pull(&client(), &store, &image, &opts("linux/arm64/v8")).await.unwrap();
    assert_eq!(again.downloaded_bytes, 0);
    assert_eq!(again.record.previous_manifest_digest.as_deref(), Some(amd.manifest.digest.as_str()));
}

#[tokio::test]
async fn pulls_docker_schema2_manifest_list() {
    let registry = Registry::start();
    let arm = reg::image(3, "arm64", &[(200_000, Gzip), (50_000, Plain)], false);
    let amd = reg::image(4, "amd64", &[(60_000, Gzip)], false);
    let p = Pusher::new(&registry.addr);
    p.image("docker/app", None, &arm).await;
    p.image("docker/app", None, &amd).await;
    let list = reg::index(&[(&amd, "amd64", None), (&arm, "arm64", None)], false);
    p.manifest("docker/app", "latest", &list).await;
    // A plain schema2 manifest under its own tag as well.
    p.manifest("docker/app", "single", &amd.manifest).await;

    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let report =
        pull(&client(), &store, &format!("{}/docker/app", registry.addr), &opts("linux/arm64/v8")).await.unwrap();
    assert_eq!(report.record.manifest_digest, arm.manifest.digest, "arm64 without variant fits arm64/v8");
    assert_eq!(report.record.manifest_media_type, reg::DOCKER_MANIFEST);
    assert_image_stored(&store, &arm);
    let single =
        pull(&client(), &store, &format!("{}/docker/app:single", registry.addr), &opts("linux/arm64")).await.unwrap();
    assert_eq!(single.record.index_digest, None);
    assert_image_stored(&store, &amd);
}

async fn one_layer_image(registry: &Registry, repo: &str, size: usize, seed: u64) -> reg::Image {
    let img = reg::image(seed, "arm64", &[(size, Plain)], true);
    Pusher::new(&registry.addr).image(repo, Some("v1"), &img).await;
    img
}

#[tokio::test]
async fn pull_resumes_after_connection_cut() {
    let registry = Registry::start();
    let img = one_layer_image(&registry, "cut/app", 4 * MIB, 10).await;
    let layer = &img.layers[0];
    let proxy = Proxy::start(&registry.addr).await;
    {
        let mut f = proxy.faults();
        f.cut_after = Some(MIB as u64 + 12_345);
        f.cut_times = 1;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let report = pull(&client(), &store, &format!("{}/cut/app:v1", proxy.addr), &opts("linux/arm64")).await.unwrap();
    assert_image_stored(&store, &img);
    let reqs = proxy.state.requests(&layer.digest);
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(reqs[0].range, None);
    assert_eq!(reqs[1].range, Some(format!("bytes={}-", MIB + 12_345)), "resumed where the cut happened");
    let served = proxy.state.served(&layer.digest);
    assert_eq!(served, layer.data.len() as u64, "nothing fetched twice");
    assert_eq!(report.downloaded_bytes, layer.data.len() as u64 + img.config.data.len() as u64);
}

#[tokio::test]
async fn registry_ignoring_range_is_handled() {
    let registry = Registry::start();
    let img = one_layer_image(&registry, "norange/app", 2 * MIB, 11).await;
    let proxy = Proxy::start(&registry.addr).await;
    {
        let mut f = proxy.faults();
        f.cut_after = Some(500_000);
        f.cut_times = 1;
        f.ignore_range = true;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    pull(&client(), &store, &format!("{}/norange/app:v1", proxy.addr), &opts("linux/arm64")).await.unwrap();
    assert_image_stored(&store, &img);
    let reqs = proxy.state.requests(&img.layers[0].digest);
    assert_eq!(reqs.len(), 2);
    assert!(reqs[1].range.is_some(), "a resume was asked for");
    assert_eq!(reqs[1].served, img.layers[0].data.len() as u64, "the whole blob came again and was taken from 0");
}

#[tokio::test]
async fn server_errors_and_429_are_retried_within_a_bound() {
    let registry = Registry::start();
    let img = one_layer_image(&registry, "flaky/app", 100_000, 12).await;
    let proxy = Proxy::start(&registry.addr).await;
    proxy.faults().blob_statuses.extend([500, 429, 503]);
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let image = format!("{}/flaky/app:v1", proxy.addr);
    pull(&client(), &store, &image, &opts("linux/arm64")).await.unwrap();
    assert_image_stored(&store, &img);

    // Failing for ever: the pull gives up after the configured retries and names the image and blob.
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    proxy.faults().blob_statuses.extend([500; 50]);
    proxy.state.clear();
    let mut o = opts("linux/arm64");
    o.retries = 2;
    o.concurrency = 1;
    let err = pull(&client(), &store, &image, &o).await.unwrap_err().to_string();
    assert!(err.contains(&image) && err.contains("after 3 attempts") && err.contains("500"), "{err}");
    assert_eq!(proxy.state.requests("/blobs/").len(), 3, "1 try + 2 retries");
}

#[tokio::test]
async fn corrupted_bytes_are_detected_refetched_and_never_committed() {
    let registry = Registry::start();
    let img = one_layer_image(&registry, "corrupt/app", MIB, 13).await;
    let layer = img.layers[0].clone();
    let proxy = Proxy::start(&registry.addr).await;
    {
        let mut f = proxy.faults();
        f.flip_at = Some(777_777);
        f.flip_times = 1;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let image = format!("{}/corrupt/app:v1", proxy.addr);
    pull(&client(), &store, &image, &opts("linux/arm64")).await.unwrap();
    assert_image_stored(&store, &img);
    let reqs = proxy.state.requests(&layer.digest);
    assert_eq!(reqs.len(), 2, "refetched once");
    assert_eq!(reqs[1].range, None, "a corrupt partial is not resumed");

    // Corrupt every time: the pull fails with a digest error and nothing lands in the store.
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    {
        let mut f = proxy.faults();
        f.flip_at = Some(5000); // past the small config blob
        f.flip_times = 100;
    }
    let mut o = opts("linux/arm64");
    o.retries = 1;
    let err = pull(&client(), &store, &image, &o).await.unwrap_err().to_string();
    assert!(err.contains("corrupted") && err.contains(&layer.digest) && err.contains(&image), "{err}");
    assert!(!store.has_blob(&layer.digest));
    assert_eq!(store.partial_len(&layer.digest), 0);
    assert!(store.image(&image).is_err(), "no record for a failed pull");
}

#[tokio::test]
async fn preflight_refuses_a_huge_layer_on_a_small_disk_before_the_first_byte() {
    let registry = Registry::start();
    let img = one_layer_image(&registry, "huge/app", 1000, 14).await;
    let proxy = Proxy::start(&registry.addr).await;
    // Declare a 10 GB layer (the registry would refuse such a lie, so the proxy serves the manifest).
    let mut m: serde_json::Value = serde_json::from_slice(&img.manifest.data).unwrap();
    m["layers"][0]["size"] = serde_json::json!(10_000_000_000u64);
    let huge = reg::Blob::new(reg::OCI_MANIFEST, serde_json::to_vec(&m).unwrap());
    proxy
        .faults()
        .overrides
        .insert("/v2/huge/app/manifests/v1".into(), (200, reg::OCI_MANIFEST.into(), vec![], huge.data.clone()));
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let free = store.free_bytes().unwrap();
    let mut o = opts("linux/arm64");
    // Make "small" relative to this disk: the reserve leaves less than 10 GB.
    o.disk_reserve = free.saturating_sub(5_000_000_000);
    o.unpack_factor = 1.0;
    let image = format!("{}/huge/app:v1", proxy.addr);
    let err = pull(&client(), &store, &image, &o).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, pull::Error::NoSpace { .. }), "{msg}");
    assert!(msg.contains(&image) && msg.contains("not enough disk space"), "{msg}");
    let pull::Error::NoSpace { needed, free: f, .. } = err else { unreachable!() };
    assert!(msg.contains(&needed.to_string()) && msg.contains(&f.to_string()), "both numbers: {msg}");
    assert!(needed > 20_000_000_000, "download + unpack estimate + reserve: {needed}");
    assert!(proxy.state.requests("/blobs/").is_empty(), "no byte fetched before the check");
}

#[tokio::test]
async fn bad_manifests_give_clear_errors_naming_the_image() {
    let registry = Registry::start();
    let img = one_layer_image(&registry, "bad/app", 1000, 15).await;
    let amd = reg::image(16, "amd64", &[(1000, Gzip)], true);
    let p = Pusher::new(&registry.addr);
    p.image("bad/app", None, &amd).await;
    p.manifest("bad/app", "amd-only", &reg::index(&[(&amd, "amd64", None)], true)).await;
    let proxy = Proxy::start(&registry.addr).await;
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let c = client();
    let o = opts("linux/arm64");
    let serve = |tag: &str, ct: &str, extra: Vec<(String, String)>, body: Vec<u8>| {
        proxy.faults().overrides.insert(format!("/v2/bad/app/manifests/{tag}"), (200, ct.into(), extra, body));
    };
    serve("garbage", reg::OCI_MANIFEST, vec![], b"{\"schemaVersion\": 2, \"layers\": [".to_vec());
    let mut m: serde_json::Value = serde_json::from_slice(&img.manifest.data).unwrap();
    m["layers"][0]["mediaType"] = serde_json::json!("application/x-rar");
    serve("weird-layer", reg::OCI_MANIFEST, vec![], serde_json::to_vec(&m).unwrap());
    serve("html", "text/html", vec![], b"<html>login</html>".to_vec());
    serve(
        "lying",
        reg::OCI_MANIFEST,
        vec![("Docker-Content-Digest".into(), reg::sha256(b"something else"))],
        img.manifest.data.clone(),
    );
    let mut wrong_digest = img.clone();
    wrong_digest.layers[0].digest = format!("sha512:{}", "ab".repeat(64));
    let lying_layer = reg::manifest_for(img.config.clone(), wrong_digest.layers, true);
    serve("sha512", reg::OCI_MANIFEST, vec![], lying_layer.manifest.data.clone());

    let cases = [
        ("garbage", "malformed"),
        ("weird-layer", "application/x-rar"),
        ("html", "text/html"),
        ("lying", "corrupted"),
        ("sha512", "sha256"),
        ("amd-only", "no manifest for platform linux/arm64 in the index (it has: linux/amd64)"),
        ("missing", "not found"),
    ];
    for (tag, want) in cases {
        let image = format!("{}/bad/app:{tag}", proxy.addr);
        let err = pull(&c, &store, &image, &o).await.expect_err(tag).to_string();
        assert!(err.contains(&format!("{}/bad/app", proxy.addr)) && err.contains(want), "{tag}: {err}");
    }
    assert!(store.records().unwrap().is_empty(), "nothing recorded for bad input");
}

#[tokio::test]
async fn gc_keeps_current_and_previous_images_only() {
    let registry = Registry::start();
    let p = Pusher::new(&registry.addr);
    let imgs: Vec<_> = (0..3).map(|i| reg::image(20 + i, "arm64", &[(20_000, Gzip)], true)).collect();
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let image = format!("{}/gc/app:v1", registry.addr);
    for img in &imgs {
        p.image("gc/app", Some("v1"), img).await;
        pull(&client(), &store, &image, &opts("linux/arm64")).await.unwrap();
    }
    let other = reg::image(30, "arm64", &[(10_000, Plain)], true);
    p.image("gc/other", Some("v1"), &other).await;
    let other_ref = format!("{}/gc/other:v1", registry.addr);
    pull(&client(), &store, &other_ref, &opts("linux/arm64")).await.unwrap();

    let report = store.gc(None).unwrap();
    assert_eq!(report.removed_blobs, 3, "the first image's config, layer and manifest");
    assert!(!store.has_blob(&imgs[0].layers[0].digest));
    assert_image_stored(&store, &imgs[1]);
    assert_image_stored(&store, &imgs[2]);
    assert_image_stored(&store, &other);

    // Only `gc/app` in use: `gc/other`'s blobs go.
    let name = format!("{}/gc/app:v1", registry.addr);
    let report = store.gc(Some(&[name])).unwrap();
    assert_eq!((report.removed_blobs, report.removed_records), (3, 1));
    assert!(!store.has_blob(&other.layers[0].digest));
    assert!(store.image(&other_ref).is_err(), "the unused image's record went with its blobs");
    assert_image_stored(&store, &imgs[2]);
}

#[tokio::test]
async fn htpasswd_registry_needs_basic_credentials() {
    let registry = Registry::start_htpasswd("jet", "s3cret");
    let img = reg::image(40, "arm64", &[(10_000, Gzip)], true);
    Pusher::new(&registry.addr).with_basic("jet", "s3cret").image("priv/app", Some("v1"), &img).await;
    let image = format!("{}/priv/app:v1", registry.addr);
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();

    let err = pull(&client(), &store, &image, &opts("linux/arm64")).await.unwrap_err().to_string();
    assert!(err.contains(&image) && err.contains(&format!("registry.credentials.\"{}\"", registry.addr)), "{err}");

    let with = |password: &str| {
        let mut o = ClientOptions { retries: 1, ..Default::default() };
        o.credentials.insert(registry.addr.clone(), Credential { username: "jet".into(), password: password.into() });
        Client::new(o).unwrap()
    };
    let err = pull(&with("wrong"), &store, &image, &opts("linux/arm64")).await.unwrap_err().to_string();
    assert!(err.contains("credentials were refused"), "{err}");
    pull(&with("s3cret"), &store, &image, &opts("linux/arm64")).await.unwrap();
    assert_image_stored(&store, &img);
}

#[tokio::test]
async fn bearer_token_flow_gets_one_token_per_scope() {
    let registry = Registry::start();
    let img = reg::image(41, "arm64", &[(10_000, Gzip), (10_000, Zstd)], true);
    Pusher::new(&registry.addr).image("tok/app", Some("v1"), &img).await;
    let proxy = Proxy::start(&registry.addr).await;
    proxy.faults().bearer = Some(("tkn-123".into(), Some(("robot".into(), "pw".into()))));
    let image = format!("{}/tok/app:v1", proxy.addr);
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();

    // Anonymous: the token endpoint refuses, and the error says what to configure.
    let err = pull(&client(), &store, &image, &opts("linux/arm64")).await.unwrap_err().to_string();
    assert!(err.contains("token endpoint") && err.contains("registry.credentials"), "{err}");

    let mut o = ClientOptions::default();
    o.credentials.insert(proxy.addr.clone(), Credential { username: "robot".into(), password: "pw".into() });
    let c = Client::new(o).unwrap();
    proxy.state.token_requests.lock().unwrap().clear();
    pull(&c, &store, &image, &opts("linux/arm64")).await.unwrap();
    assert_image_stored(&store, &img);
    let tokens = proxy.state.token_requests.lock().unwrap().clone();
    assert!(!tokens.is_empty(), "a token was requested");
    assert!(
        tokens.iter().all(|t| t.contains("service=test-registry") && t.contains("scope=repository%3Atok%2Fapp%3Apull")),
        "{tokens:?}"
    );
    assert!(tokens.len() <= 4, "tokens are cached per scope, not fetched per request: {tokens:?}");
}

#[tokio::test]
async fn auto_tag_resolves_against_the_registry_and_pins_the_digest() {
    let registry = Registry::start();
    let p = Pusher::new(&registry.addr);
    let mut digests = std::collections::HashMap::new();
    for (i, tag) in ["r35.4.1", "r36.3.0", "r36.4.0", "r36.4.7", "2.2-r36.4.0-cu128", "latest"].iter().enumerate() {
        let img = reg::image(50 + i as u64, "arm64", &[(1000, Gzip)], true);
        p.image("dustynv/l4t-pytorch", Some(tag), &img).await;
        digests.insert(*tag, img.manifest.digest.clone());
    }
    let c = client();
    let image = format!("{}/dustynv/l4t-pytorch:{{auto}}", registry.addr);
    let res = pull::resolve(&c, &image, &vars()).await.unwrap();
    assert_eq!(res.reference.tag.as_deref(), Some("2.2-r36.4.0-cu128"), "the build that names a package version");
    assert_eq!(res.reference.digest.as_deref(), Some(digests["2.2-r36.4.0-cu128"].as_str()));
    let d = res.decision.unwrap();
    assert_eq!(d.rejected().count(), 5);
    assert!(d.tied.is_empty(), "the tag rules decide: {:?}", d.tied);

    // Paged tag listing returns every tag.
    let parsed =
        jetship::image::reference::Reference::parse(&format!("{}/dustynv/l4t-pytorch", registry.addr)).unwrap();
    let mut tags = c.list_tags_paged(&parsed, 2).await.unwrap();
    tags.sort();
    assert_eq!(tags.len(), 6, "{tags:?}");

    // JetPack 6.0 host: the pre-36.4 build.
    let jp60 = TemplateVars::from_l4t(L4tVersion::new(36, 3, 0));
    let res = pull::resolve(&c, &image, &jp60).await.unwrap();
    assert_eq!(res.reference.tag.as_deref(), Some("r36.3.0"));
    // JetPack 4 host: nothing fits; the error explains.
    let jp4 = TemplateVars::from_l4t(L4tVersion::new(32, 7, 1));
    let err = pull::resolve(&c, &image, &jp4).await.unwrap_err().to_string();
    assert!(err.contains("no tag fits L4T 32.7.1") && err.contains("takes R32 images from 32.7.0 on"), "{err}");
    // A pinned digest wins: no tag list is read.
    let pinned = format!("{}/dustynv/l4t-pytorch:{{auto}}@{}", registry.addr, digests["r35.4.1"]);
    let res = pull::resolve(&c, &pinned, &vars()).await.unwrap();
    assert!(res.decision.is_none());
    assert_eq!(res.reference.digest.as_deref(), Some(digests["r35.4.1"].as_str()));
    // Off Jetson, {auto} cannot be resolved.
    let err = pull::resolve(&c, &image, &TemplateVars::default()).await.unwrap_err().to_string();
    assert!(err.contains("L4T_VERSION"), "{err}");
}

fn fixture(name: &str) -> String {
    support::fixture_host(name).to_str().unwrap().to_owned()
}

#[tokio::test]
async fn resolve_command_picks_per_fixture_host_and_explains_rejections() {
    let registry = Registry::start();
    let p = Pusher::new(&registry.addr);
    let mut digests = std::collections::HashMap::new();
    let tags = [
        "humble-ros-base-l4t-r32.7.1",
        "humble-ros-base-l4t-r35.4.1",
        "humble-ros-base-l4t-r36.2.0",
        "humble-ros-base-r36.4.0",
        "humble-desktop-l4t-r36.2.0",
        "latest-jetson-jetpack5",
        "latest-jetson-jetpack6",
    ];
    for (i, tag) in tags.iter().enumerate() {
        let img = reg::image(60 + i as u64, "arm64", &[(1000, Gzip)], true);
        p.image("dustynv/ros", Some(tag), &img).await;
        digests.insert(*tag, img.manifest.digest.clone());
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = reg::write_config(dir.path(), &dir.path().join("state"), "retry_backoff_cap_s = 0.1");
    let image = format!("{}/dustynv/ros:humble-ros-base-{{auto}}", registry.addr);
    let resolve = |host: &str, extra: &[&str]| {
        let root = fixture(host);
        let mut args = vec!["resolve", image.as_str(), "--root", root.as_str()];
        args.extend_from_slice(extra);
        let out = support::jetship_with_config(&cfg, &args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    // Each fixture host gets the build for its L4T; the first line is the pinned reference.
    for (host, tag) in [
        ("orin-nano-super-jp62", "humble-ros-base-r36.4.0"),
        ("agx-orin-jp60", "humble-ros-base-l4t-r36.2.0"),
        ("orin-nx-jp512", "humble-ros-base-l4t-r35.4.1"),
        ("nano-jp461", "humble-ros-base-l4t-r32.7.1"),
    ] {
        let (code, text, err) = resolve(host, &[]);
        assert_eq!(code, Some(0), "{host}: {text}{err}");
        let first = text.lines().next().unwrap_or_default();
        assert_eq!(first, format!("{}/dustynv/ros:{tag}@{}", registry.addr, digests[tag]), "{host}");
        assert_eq!(text.matches("rejected ").count(), 3, "{host}: every other candidate explained: {text}");
        assert!(!text.contains("rejected humble-desktop"), "other flavours are not candidates: {text}");
    }
    // The 36.4 boundary, in words.
    let (_, text, _) = resolve("orin-nano-super-jp62", &[]);
    assert!(
        text.contains("rejected humble-ros-base-l4t-r36.2.0: built for L4T 36.2.0: incompatible, host L4T 36.4.3 takes R36 images from 36.4.0 on"),
        "{text}"
    );
    let (_, text, _) = resolve("agx-orin-jp60", &[]);
    assert!(text.contains("rejected humble-ros-base-r36.4.0: built for L4T 36.4.0: incompatible, host L4T 36.3.0 takes R36 images before 36.4.0"), "{text}");

    // JSON for a JetPack 5.1.2 host.
    let (code, text, err) = resolve("orin-nx-jp512", &["--json"]);
    assert_eq!(code, Some(0), "{err}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["digest"], digests["humble-ros-base-l4t-r35.4.1"]);
    assert_eq!(v["decision"]["chosen"], "humble-ros-base-l4t-r35.4.1");
    assert_eq!(v["decision"]["candidates"].as_array().unwrap().len(), 4);

    // Template variables: the ultralytics naming, from the fixture host's JetPack.
    let ul = format!("{}/dustynv/ros:latest-jetson-jetpack{{jetpack_major}}", registry.addr);
    let out =
        support::jetship_with_config(&cfg, &["resolve", &ul, "--root", &fixture("orin-nx-jp512")]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&format!(
            "{}/dustynv/ros:latest-jetson-jetpack5@{}",
            registry.addr, digests["latest-jetson-jetpack5"]
        )),
        "{text}"
    );

    let jp62_root = fixture("orin-nano-super-jp62");

    // Not a Jetson: {auto} cannot be resolved, and the error says why.
    let (code, _, err) = resolve("generic-x86", &[]);
    assert_ne!(code, Some(0));
    assert!(err.contains("L4T_VERSION") && err.contains("dustynv/ros"), "{err}");

    // L4T_VERSION that does not parse is a warning on stderr and in the JSON, and the files' release is used.
    for extra in [&[][..], &["--json"][..]] {
        let mut args = vec!["resolve", image.as_str(), "--root", &jp62_root];
        args.extend_from_slice(extra);
        let out = support::jetship_with_config(&cfg, &args).env("L4T_VERSION", "36").output().unwrap();
        let (text, err) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(0), "{text}{err}");
        assert!(
            err.contains("warning: L4T_VERSION ignored: `36` is not an L4T version")
                && err.contains("using L4T 36.4.3"),
            "{err}"
        );
        assert!(text.contains("humble-ros-base-r36.4.0@"), "{text}");
        if !extra.is_empty() {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert!(v["warnings"][0].as_str().unwrap().starts_with("L4T_VERSION ignored: `36`"), "{v}");
        }
    }
    let out = support::jetship_with_config(&cfg, &["pull", &image, "--root", &jp62_root, "--quiet"])
        .env("L4T_VERSION", "6.2")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("warning: L4T_VERSION ignored: `6.2`") && err.contains("JetPack 6.2 is L4T 36.4.3"), "{err}");

    // A release no tag fits (L4T_VERSION overrides a Jetson's files): every candidate explained, exit code 1.
    let out = support::jetship_with_config(&cfg, &["resolve", &image, "--root", &fixture("nano-jp461")])
        .env("L4T_VERSION", "32.6.1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.starts_with("no tag of") && text.matches("rejected ").count() == 4,
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An image whose config says when it was built (`created`, as `docker build` writes it), or says nothing.
fn built_at(seed: u64, arch: &str, created: Option<&str>) -> reg::Image {
    let base = reg::image(seed, arch, &[(500, Gzip)], true);
    let mut config: serde_json::Value = serde_json::from_slice(&base.config.data).unwrap();
    if let Some(c) = created {
        config["created"] = serde_json::json!(c);
    }
    reg::manifest_for(reg::Blob::new(&base.config.media_type, serde_json::to_vec(&config).unwrap()), base.layers, true)
}

#[tokio::test]
async fn tied_candidates_are_ranked_by_the_creation_time_the_registry_gives() {
    let registry = Registry::start();
    let p = Pusher::new(&registry.addr);
    let repo = "dustynv/vllm";
    // dustynv/vllm as on Docker Hub in May 2025 (jetson-containers' data/containers.json), on a JetPack 6.2 host:
    // three 0.8.6 builds tie on every tag rule (CUDA/Ubuntu tokens do not count); the older versions never do.
    let newest = "0.8.6-r36.4-cu128-24.04";
    let arm = built_at(1, "arm64", Some("2025-05-06T06:15:02Z"));
    let amd = built_at(2, "amd64", Some("2025-05-06T06:15:02Z"));
    p.image(repo, None, &arm).await;
    p.image(repo, None, &amd).await;
    let idx = reg::index(&[(&arm, "arm64", Some("v8")), (&amd, "amd64", None)], true);
    p.manifest(repo, newest, &idx).await;
    let singles = [
        ("0.8.6-r36.4.0-cu128-24.04", Some("2025-05-01T08:21:38Z")),
        ("0.8.6-r36.4.0", None),
        ("0.6.3-r36.4.0", Some("2030-01-01T00:00:00Z")),
        ("r36.4.0", Some("2030-01-01T00:00:00Z")),
        ("0.8.6-sbsa-cu128", Some("2030-01-01T00:00:00Z")),
    ];
    for (i, (tag, created)) in singles.iter().enumerate() {
        p.image(repo, Some(tag), &built_at(10 + i as u64, "arm64", *created)).await;
    }
    let proxy = Proxy::start(&registry.addr).await;
    let image = format!("{}/{repo}:{{auto}}", proxy.addr);

    let res = pull::resolve(&client(), &image, &vars()).await.unwrap();
    assert_eq!(res.reference.tag.as_deref(), Some(newest));
    assert_eq!(res.reference.digest.as_deref(), Some(idx.digest.as_str()), "pinned to the index");
    let d = res.decision.unwrap();
    assert_eq!(d.tied, ["0.8.6-r36.4-cu128-24.04", "0.8.6-r36.4.0", "0.8.6-r36.4.0-cu128-24.04"]);
    let because = d.chosen_because.as_deref().unwrap();
    assert!(because.contains("created 2025-05-06T06:15:02Z, the latest of 3 tags"), "{because}");
    let why = |tag: &str| d.rejected().find(|(t, _)| *t == tag).map(|(_, r)| r.to_string()).unwrap();
    assert!(
        why("0.8.6-r36.4.0-cu128-24.04").ends_with("created later (2025-05-06T06:15:02Z against 2025-05-01T08:21:38Z)")
    );
    assert!(
        why("0.8.6-r36.4.0").ends_with("this one's creation time is unknown: its image config has no `created` time"),
        "{}",
        why("0.8.6-r36.4.0")
    );
    assert!(why("0.6.3-r36.4.0").ends_with("package version 0.8.6 is higher than 0.6.3"));
    assert!(why("r36.4.0").ends_with("it names package version 0.8.6, this tag names none"));
    assert_eq!(why("0.8.6-sbsa-cu128"), "no L4T (r36.4.0) or JetPack (jetpack6, jp6) token in the tag");
    // Only the tied candidates were asked: the others' manifests and configs were never fetched.
    for untouched in ["0.6.3-r36.4.0", "r36.4.0", "0.8.6-sbsa-cu128"] {
        assert!(proxy.state.requests(&format!("manifests/{untouched}")).is_empty(), "{untouched} was fetched");
    }
    let asked = proxy.state.requests("/blobs/sha256:");
    assert_eq!(asked.len(), 3, "one config per tied tag: {:?}", asked.iter().map(|s| &s.path).collect::<Vec<_>>());
    assert!(asked.iter().any(|s| s.path.ends_with(&amd.config.digest)), "the index's entry for this machine");

    // The same through the CLI (straight to the registry: this test's runtime, which serves the proxy, waits on the
    // child): the chosen line says why, JSON carries the tie.
    let image = format!("{}/{repo}:{{auto}}", registry.addr);
    let dir = tempfile::tempdir().unwrap();
    let cfg = reg::write_config(dir.path(), &dir.path().join("state"), "retry_backoff_cap_s = 0.1");
    let root = fixture("orin-nano-super-jp62");
    let out = support::jetship_with_config(&cfg, &["resolve", &image, "--root", &root]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.starts_with(&format!("{}/{repo}:{newest}@{}", registry.addr, idx.digest)), "{text}");
    assert!(
        text.contains(&format!(
            "chosen {newest}: package version 0.8.6; L4T 36.4.0; extra tokens: none; CUDA/Ubuntu tokens: cu128, \
             24.04; created 2025-05-06T06:15:02Z, the latest of 3 tags that tie on every tag rule"
        )),
        "{text}"
    );
    assert_eq!(text.matches("rejected ").count(), 5, "{text}");
    let out = support::jetship_with_config(&cfg, &["resolve", &image, "--root", &root, "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["decision"]["tied"].as_array().unwrap().len(), 3);
    assert_eq!(v["decision"]["candidates"][0]["created"], "2025-05-06T06:15:02Z");
    assert_eq!(v["decision"]["candidates"][0]["reading"]["variants"], serde_json::json!(["cu128", "24.04"]));
}

#[tokio::test]
async fn pull_command_prints_a_summary_and_stores_the_image() {
    let registry = Registry::start();
    let img = reg::image(70, "arm64", &[(200_000, Gzip), (100_000, Zstd)], true);
    Pusher::new(&registry.addr).image("cli/app", Some("v1"), &img).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let cfg = reg::write_config(dir.path(), &state, "disk_reserve_bytes = 0");
    let image = format!("{}/cli/app:v1", registry.addr);
    let out = support::jetship_with_config(&cfg, &["pull", &image, "--platform", "linux/arm64"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.starts_with(&format!("pulled {image}@{}", img.manifest.digest)), "{text}");
    assert!(text.contains("in 3 blobs") && text.contains("MB/s"), "{text}");
    let store = ImageStore::open(&state).unwrap();
    assert_image_stored(&store, &img);

    let out = support::jetship_with_config(&cfg, &["image-gc"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("removed 0 blobs"), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_pull_resumes_from_kept_partials() {
    let registry = Registry::start();
    let img = one_layer_image(&registry, "kill/app", 6 * MIB, 80).await;
    let layer = img.layers[0].clone();
    let proxy = Proxy::start(&registry.addr).await;
    proxy.faults().throttle_bps = Some(3 * MIB as u64);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let cfg = reg::write_config(dir.path(), &state, "disk_reserve_bytes = 0");
    let image = format!("{}/kill/app:v1", proxy.addr);

    let mut child = support::jetship_with_config(&cfg, &["pull", &image, "--platform", "linux/arm64", "--quiet"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let store = ImageStore::open(&state).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while store.partial_len(&layer.digest) < MIB as u64 {
        assert!(std::time::Instant::now() < deadline, "no partial appeared");
        assert!(child.try_wait().unwrap().is_none(), "pull ended before it was killed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    child.wait().unwrap();
    let kept = store.partial_len(&layer.digest);
    assert!(kept >= MIB as u64 && kept < layer.data.len() as u64, "{kept}");

    proxy.faults().throttle_bps = None;
    proxy.state.clear();
    let out = support::jetship_with_config(&cfg, &["pull", &image, "--platform", "linux/arm64"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_image_stored(&store, &img);
    let reqs = proxy.state.requests(&layer.digest);
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].range, Some(format!("bytes={kept}-")));
    assert_eq!(reqs[0].served, layer.data.len() as u64 - kept, "only the missing bytes were transferred");
}

#[tokio::test]
async fn mirror_is_tried_first_and_falls_through_to_the_registry() {
    let upstream = Registry::start();
    let mirror = Registry::start();
    let img = reg::image(90, "arm64", &[(20_000, Gzip)], true);
    let only_upstream = reg::image(91, "arm64", &[(20_000, Gzip)], true);
    Pusher::new(&mirror.addr).image("mir/app", Some("v1"), &img).await;
    Pusher::new(&upstream.addr).image("mir/app", Some("v1"), &img).await;
    Pusher::new(&upstream.addr).image("mir/app", Some("v2"), &only_upstream).await;
    let mirror_proxy = Proxy::start(&mirror.addr).await;
    let upstream_proxy = Proxy::start(&upstream.addr).await;

    let mut o = ClientOptions { retries: 1, ..Default::default() };
    o.mirrors
        .insert(upstream_proxy.addr.clone(), vec![url::Url::parse(&format!("http://{}", mirror_proxy.addr)).unwrap()]);
    let c = Client::new(o).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    pull(&c, &store, &format!("{}/mir/app:v1", upstream_proxy.addr), &opts("linux/arm64")).await.unwrap();
    assert_image_stored(&store, &img);
    assert!(upstream_proxy.state.requests("/v2/mir/").is_empty(), "the mirror served everything");
    assert!(!mirror_proxy.state.requests(&img.layers[0].digest).is_empty());

    // The mirror lacks v2: the registry itself serves it.
    pull(&c, &store, &format!("{}/mir/app:v2", upstream_proxy.addr), &opts("linux/arm64")).await.unwrap();
    assert_image_stored(&store, &only_upstream);
    assert!(!upstream_proxy.state.requests(&only_upstream.layers[0].digest).is_empty());
}

#[tokio::test]
async fn a_layer_listed_twice_is_fetched_once() {
    let registry = Registry::start();
    let base = reg::image(95, "arm64", &[(30_000, Gzip)], true);
    let twice = reg::manifest_for(base.config.clone(), vec![base.layers[0].clone(), base.layers[0].clone()], true);
    Pusher::new(&registry.addr).image("dup/app", Some("v1"), &twice).await;
    let proxy = Proxy::start(&registry.addr).await;
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let report = pull(&client(), &store, &format!("{}/dup/app:v1", proxy.addr), &opts("linux/arm64")).await.unwrap();
    assert_eq!(report.record.layers.len(), 2);
    assert_eq!(proxy.state.requests(&base.layers[0].digest).len(), 1);
    assert_image_stored(&store, &twice);
}

#[tokio::test]
async fn a_partial_holding_every_byte_is_verified_and_committed_without_asking_the_registry() {
    let registry = Registry::start();
    let img = one_layer_image(&registry, "whole/app", 2 * MIB, 81).await;
    let layer = img.layers[0].clone();
    let proxy = Proxy::start(&registry.addr).await;
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    // What a kill between the last byte and the commit leaves: a partial holding the whole blob.
    let mut ing = store.ingest(&layer.digest, layer.data.len() as u64, "t").unwrap().unwrap();
    ing.write(&layer.data).unwrap();
    ing.flush().unwrap();
    drop(ing);
    let image = format!("{}/whole/app:v1", proxy.addr);
    pull(&client(), &store, &image, &opts("linux/arm64")).await.unwrap();
    assert_image_stored(&store, &img);
    assert!(proxy.state.requests(&layer.digest).is_empty(), "the complete partial was asked for again");

    // The same, with the kept bytes wrong: verified, thrown away, fetched again from the start.
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let mut ing = store.ingest(&layer.digest, layer.data.len() as u64, "t").unwrap().unwrap();
    let mut bad = layer.data.clone();
    bad[1000] ^= 0x40;
    ing.write(&bad).unwrap();
    ing.flush().unwrap();
    drop(ing);
    proxy.state.clear();
    pull(&client(), &store, &image, &opts("linux/arm64")).await.unwrap();
    assert_image_stored(&store, &img);
    let reqs = proxy.state.requests(&layer.digest);
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].range, None, "fetched again from 0");
}

#[tokio::test]
async fn a_416_for_a_kept_partial_restarts_the_blob_from_zero() {
    let registry = Registry::start();
    let img = one_layer_image(&registry, "r416/app", MIB, 82).await;
    let layer = img.layers[0].clone();
    let proxy = Proxy::start(&registry.addr).await;
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let mut ing = store.ingest(&layer.digest, layer.data.len() as u64, "t").unwrap().unwrap();
    ing.write(&layer.data[..1000]).unwrap();
    ing.flush().unwrap();
    drop(ing);
    // Only the layer is asked for, so the 416 is its answer.
    store.put_blob(&img.config.digest, &img.config.data).unwrap();
    proxy.faults().blob_statuses.push_back(416);
    let image = format!("{}/r416/app:v1", proxy.addr);
    pull(&client(), &store, &image, &opts("linux/arm64")).await.unwrap();
    assert_image_stored(&store, &img);
    let ranges: Vec<_> = proxy.state.requests(&layer.digest).into_iter().map(|r| r.range).collect();
    assert_eq!(ranges, [Some("bytes=1000-".to_owned()), None], "asked once with the range, then from the start");
}

#[tokio::test]
async fn damaged_blobs_in_the_store_are_fetched_again_not_trusted() {
    let registry = Registry::start();
    let img = one_layer_image(&registry, "dmg/app", 64 * 1024, 83).await;
    let proxy = Proxy::start(&registry.addr).await;
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let image = format!("{}/dmg/app:v1", proxy.addr);
    pull(&client(), &store, &image, &opts("linux/arm64")).await.unwrap();
    for blob in [&img.config, &img.layers[0]] {
        let path = store.blob_path(&blob.digest).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
    }
    proxy.state.clear();
    pull(&client(), &store, &image, &opts("linux/arm64")).await.unwrap();
    assert_image_stored(&store, &img);
    for blob in [&img.config, &img.layers[0]] {
        assert_eq!(proxy.state.requests(&blob.digest).len(), 1, "{} was not fetched again", blob.media_type);
    }
}
