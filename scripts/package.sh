#!/usr/bin/env bash
# Builds the Debian package target/debian/mfa_<version>_<arch>.deb from this checkout: the
# release build of only what is installed, man pages and completions generated from the
# programs' clap definitions (packaging/gen), then dpkg-deb. Needs what scripts/build-deps.sh
# installs (a Rust toolchain, a C compiler, libpam0g-dev, dpkg-dev); no root needed.
# See docs/PACKAGING.md.
set -euo pipefail

cd "$(dirname "$0")/.."
if [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi

TARGET=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release --locked -p mfad -p mfa -p pam_mfa -p mfa-login-prompt -p mfa-web -p mfa-gen
BIN=$TARGET/release

VERSION=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)
ARCH=$(dpkg --print-architecture)
MULTIARCH=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch)
OUT=$TARGET/debian
STAGE=$OUT/mfa_${VERSION}_${ARCH}
DEB=$OUT/mfa_${VERSION}_${ARCH}.deb
rm -rf "$STAGE" "$DEB"
mkdir -p "$STAGE/DEBIAN"

# Programs and the module, stripped (the debug build keeps the symbols).
install -D -m 0755 "$BIN/mfad" "$STAGE/usr/sbin/mfad"
install -D -m 0755 "$BIN/mfa-login-prompt" "$STAGE/usr/sbin/mfa-login-prompt"
install -D -m 0755 "$BIN/mfa-web" "$STAGE/usr/sbin/mfa-web"
install -D -m 0755 "$BIN/mfa" "$STAGE/usr/bin/mfa"
install -D -m 0644 "$BIN/libpam_mfa.so" "$STAGE/usr/lib/$MULTIARCH/security/pam_mfa.so"
strip --remove-section=.comment --remove-section=.note "$STAGE/usr/sbin/mfad" \
    "$STAGE/usr/sbin/mfa-login-prompt" "$STAGE/usr/sbin/mfa-web" "$STAGE/usr/bin/mfa"
strip --remove-section=.comment --remove-section=.note --strip-unneeded \
    "$STAGE/usr/lib/$MULTIARCH/security/pam_mfa.so"

# Every systemd unit in packaging/ (mfad.service, mfad.socket, mfa-web.service).
units=()
for unit in packaging/*.service packaging/*.socket; do
    [ -e "$unit" ] || continue
    install -D -m 0644 "$unit" "$STAGE/lib/systemd/system/$(basename "$unit")"
    units+=("$(basename "$unit")")
done

# The configuration: a conffile, root's alone (it may hold provider tokens).
install -D -m 0600 conf/mfad.toml "$STAGE/etc/mfa/mfad.toml"
# mfa-web's holds no secret: readable by its own user.
install -D -m 0644 conf/mfa-web.toml "$STAGE/etc/mfa/mfa-web.toml"
# The PAM service mfad checks the enrolment page's passwords through.
install -D -m 0644 packaging/pam.d/mfa-web "$STAGE/etc/pam.d/mfa-web"
printf '%s\n' /etc/mfa/mfad.toml /etc/mfa/mfa-web.toml /etc/pam.d/mfa-web >"$STAGE/DEBIAN/conffiles"

# Man pages and completions.
GEN=$OUT/gen
rm -rf "$GEN"
"$BIN/mfa-gen" man "$GEN/man"
"$BIN/mfa-gen" completions "$GEN/completions"
for page in "$GEN"/man/*; do
    section=${page##*.}
    install -D -m 0644 "$page" "$STAGE/usr/share/man/man$section/$(basename "$page")"
    gzip -9n "$STAGE/usr/share/man/man$section/$(basename "$page")"
done
for name in mfa mfad; do
    install -D -m 0644 "$GEN/completions/bash/$name" "$STAGE/usr/share/bash-completion/completions/$name"
    install -D -m 0644 "$GEN/completions/zsh/_$name" "$STAGE/usr/share/zsh/vendor-completions/_$name"
    install -D -m 0644 "$GEN/completions/fish/$name.fish" "$STAGE/usr/share/fish/vendor_completions.d/$name.fish"
done

# Documentation (the unit's Documentation= is file:/usr/share/doc/mfa/README.md).
DOC=$STAGE/usr/share/doc/mfa
install -D -m 0644 README.md "$DOC/README.md"
for f in docs/*.md; do
    install -D -m 0644 "$f" "$DOC/$(basename "$f")"
done
install -D -m 0644 conf/mfad.toml "$DOC/examples/mfad.toml"
install -D -m 0644 conf/mfa-web.toml "$DOC/examples/mfa-web.toml"
install -D -m 0644 conf/pam.d-sshd "$DOC/examples/pam.d-sshd"
install -D -m 0644 conf/sshd_config.snippet "$DOC/examples/sshd_config.snippet"
install -D -m 0644 conf/fail2ban/filter.d/mfad.conf "$DOC/examples/fail2ban/filter.d/mfad.conf"
install -D -m 0644 packaging/debian/copyright "$DOC/copyright"
sed -e "s/@VERSION@/$VERSION/" -e "s/@DATE@/$(date -R -d "@${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}")/" \
    packaging/debian/changelog | gzip -9n >"$DOC/changelog.gz"
chmod 0644 "$DOC/changelog.gz"

# Maintainer scripts, told which units there are.
for script in postinst prerm postrm; do
    sed "s/@UNITS@/${units[*]}/" "packaging/debian/$script" >"$STAGE/DEBIAN/$script"
    chmod 0755 "$STAGE/DEBIAN/$script"
done

# Runtime dependencies: what the binaries link (dpkg-shlibdeps; libc6, libgcc-s1,
# libpam0g). dpkg-shlibdeps wants a debian/control to read: give it a minimal one.
SHLIBS=$OUT/shlibs
rm -rf "$SHLIBS"
mkdir -p "$SHLIBS/debian"
printf 'Source: mfa\n\nPackage: mfa\nArchitecture: any\n' >"$SHLIBS/debian/control"
depends=$(cd "$SHLIBS" && dpkg-shlibdeps -O "$STAGE/usr/sbin/mfad" "$STAGE/usr/sbin/mfa-login-prompt" \
    "$STAGE/usr/sbin/mfa-web" \
    "$STAGE/usr/bin/mfa" "$STAGE/usr/lib/$MULTIARCH/security/pam_mfa.so" |
    sed -n 's/^shlibs:Depends=//p')
size=$(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)
sed -e "s/@VERSION@/$VERSION/" -e "s/@ARCH@/$ARCH/" -e "s/@SIZE@/$size/" -e "s/@DEPENDS@/$depends/" \
    packaging/debian/control.in >"$STAGE/DEBIAN/control"
(cd "$STAGE" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z |
    xargs -0 md5sum) >"$STAGE/DEBIAN/md5sums"
chmod 0644 "$STAGE/DEBIAN/md5sums" "$STAGE/DEBIAN/control" "$STAGE/DEBIAN/conffiles"

dpkg-deb --root-owner-group -Zxz --build "$STAGE" "$DEB" >/dev/null
rm -rf "$STAGE" "$SHLIBS" "$GEN"
echo "$DEB"
