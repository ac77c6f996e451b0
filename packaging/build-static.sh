#!/usr/bin/env bash
# Builds the static x86_64 Linux binary: target/x86_64-unknown-linux-musl/release/indaba
# (under $CARGO_TARGET_DIR when set), then checks that it is static and runs.
#
# Adds the Rust target with rustup when it is missing, and installs nothing else: a missing
# tool is named with the Debian package that brings it. Extra arguments go to `cargo build`
# (e.g. --no-default-features for the C library's allocator instead of mimalloc).
set -euo pipefail
cd "$(dirname "$0")/.."

readonly TARGET=x86_64-unknown-linux-musl

die() {
    echo "build-static: $*" >&2
    exit 1
}

missing=()
command -v rustup >/dev/null || missing+=("rustup (https://rustup.rs; the musl target is added with it)")
command -v file >/dev/null || missing+=("file (apt-get install file)")
command -v ldd >/dev/null || missing+=("ldd (apt-get install libc-bin)")
# mimalloc is C, compiled by the cc crate with the musl toolchain.
if [ -z "${CC_x86_64_unknown_linux_musl:-}" ] && ! command -v musl-gcc >/dev/null; then
    missing+=("musl-gcc (apt-get install musl-tools)")
fi
if [ "${#missing[@]}" -gt 0 ]; then
    printf 'build-static: missing: %s\n' "${missing[@]}" >&2
    exit 1
fi

if ! rustup target list --installed | grep -qx "$TARGET"; then
    echo "== rustup target add $TARGET"
    rustup target add "$TARGET"
fi
export CC_x86_64_unknown_linux_musl="${CC_x86_64_unknown_linux_musl:-musl-gcc}"

echo "== cargo build --release --locked --target $TARGET $*"
cargo build --release --locked --target "$TARGET" "$@"

built="${CARGO_TARGET_DIR:-target}/$TARGET/release/indaba"
[ -x "$built" ] || die "no binary at $built"

echo "== checks"
kind=$(file -L "$built")
echo "$kind"
case "$kind" in
*"statically linked"* | *"static-pie linked"*) ;;
*) die "$built is not static" ;;
esac
# ldd lists a dynamic binary's libraries as "name => path"; a static one has none.
if ldd "$built" 2>&1 | grep -q '=>'; then
    ldd "$built" >&2 || true
    die "$built loads shared libraries"
fi
"$built" --version
echo "== static binary: $built"
