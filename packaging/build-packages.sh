#!/usr/bin/env bash
# Builds target/packaging/indaba_<version>-1_amd64.deb and indaba-<version>-1.x86_64.rpm from
# the static musl binary, with the metadata in Cargo.toml ([package.metadata.deb] and
# [package.metadata.generate-rpm]). Installs the two packagers, pinned, if they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

readonly TARGET=x86_64-unknown-linux-musl
readonly CARGO_DEB_VERSION=3.8.0
readonly CARGO_GENERATE_RPM_VERSION=0.21.1
readonly OUT=target/packaging

die() {
    echo "build-packages: $*" >&2
    exit 1
}

# `cargo install` of a pinned version, unless exactly that version is already installed.
need_tool() {
    local crate=$1 version=$2 subcommand=$3
    if ! cargo "$subcommand" --version 2>/dev/null | grep -qx "$crate $version"; then
        echo "== cargo install $crate@$version"
        cargo install --locked --quiet "$crate@$version"
    fi
}
need_tool cargo-deb "$CARGO_DEB_VERSION" deb
need_tool cargo-generate-rpm "$CARGO_GENERATE_RPM_VERSION" generate-rpm
command -v strip >/dev/null || die "strip not found (apt-get install binutils)"

echo "== static binary ($TARGET)"
if [ -f packaging/build-static.sh ]; then
    bash packaging/build-static.sh
else
    if ! rustup target list --installed | grep -qx "$TARGET"; then
        rustup target add "$TARGET"
    fi
    cargo build --release --locked --target "$TARGET"
fi
built="${CARGO_TARGET_DIR:-target}/$TARGET/release/indaba"
[ -x "$built" ] || die "no binary at $built"
file -L "$built" | grep -Eq 'statically linked|static-pie linked' ||
    die "$built is not static: $(file -L "$built")"

# Both packages take this stripped copy (the metadata names it); the build output is left
# as it was, with its debug info.
rm -rf "$OUT"
mkdir -p "$OUT"
strip -o "$OUT/indaba" "$built"

echo "== .deb"
cargo deb --no-build --no-strip --output "$OUT/"
echo "== .rpm"
cargo generate-rpm --output "$OUT/"

ls -l "$OUT"/*.deb "$OUT"/*.rpm
