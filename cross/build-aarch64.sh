#!/usr/bin/env bash
# Static aarch64 build for Jetson with cargo-zigbuild (see cross/README.md). Not runnable on the CI machine.
set -euo pipefail
cd "$(dirname "$0")/.."
target=aarch64-unknown-linux-musl
command -v cargo-zigbuild >/dev/null || { echo "install cargo-zigbuild: cargo install --locked cargo-zigbuild" >&2; exit 1; }
zig_lib=$(python3 -m ziglang env 2>/dev/null | sed -n 's/.*"lib_dir": "\(.*\)".*/\1/p' || true)
[ -n "$zig_lib" ] || zig_lib=$(zig env | sed -n 's/.*"lib_dir": "\(.*\)".*/\1/p')
# bindgen (v4l) needs the target's kernel UAPI and musl headers: use zig's bundled copies.
export BINDGEN_EXTRA_CLANG_ARGS_${target//-/_}="--target=aarch64-linux-musl -I$zig_lib/libc/include/aarch64-linux-musl -I$zig_lib/libc/include/aarch64-linux-any -I$zig_lib/libc/include/any-linux-any -I$zig_lib/libc/include/generic-musl"
cargo zigbuild --release --locked --target "$target"
ls -l "target/$target/release/jetship"
