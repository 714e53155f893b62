#!/usr/bin/env bash
# Builds the .deb with cpack, installs it with dpkg -i into a private root (so the test machine
# is not changed), and runs iarelayd --version from the installed files.
set -euo pipefail
build_dir=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$build_dir"
cpack -G DEB -B "$work/out" >"$work/cpack.log" 2>&1 || { cat "$work/cpack.log"; exit 1; }
deb=$(ls "$work"/out/iarelay_*.deb)
echo "built $(basename "$deb")"
dpkg-deb --contents "$deb" | awk '{print $6}' >"$work/contents"
for f in ./usr/bin/iarelayd ./usr/bin/iarelay ./usr/lib/systemd/system/iarelayd.service \
         ./etc/iarelay/iarelay.conf ./usr/share/doc/iarelay/help/iarelayd.txt; do
  grep -qx "$f" "$work/contents" || { echo "missing from package: $f"; exit 1; }
done
root="$work/root"
mkdir -p "$root/var/lib/dpkg/updates" "$root/var/lib/dpkg/info"
touch "$root/var/lib/dpkg/status"
# Dependencies are this machine's libraries, not the private root's: check them here instead.
dpkg -i --root="$root" --force-depends --force-script-chrootless --no-triggers \
  --force-not-root "$deb" >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; exit 1; }
depends=$(dpkg-deb -f "$deb" Depends)
echo "depends: $depends"
version=$("$root/usr/bin/iarelayd" --version)
echo "installed: $version"
[[ $version == "iarelayd "* ]]
