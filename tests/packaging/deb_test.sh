#!/usr/bin/env bash
# Packaging.DebInstallsAndRuns: builds the .deb with cpack and checks its contents; then installs
# it for real (dpkg -i, the postinst creating the iarelay account) into a throwaway copy of this
# system, starts iarelayd as the installed unit would, and runs every runbook command of the
# installed docs/operations.md as written (installed_runbooks.sh does that part).
#
# The throwaway system: a private mount namespace and pid namespace, an overlay over / whose
# upper layer is a temp dir, and a chroot into it. Everything dpkg, useradd and the daemon write
# lands in the temp dir; the machine is not changed. That needs root and CAP_SYS_ADMIN: without
# them the test says so and exits 77, which ctest reports as skipped (SKIP_RETURN_CODE).
set -euo pipefail
build_dir=$1
here=$(cd "$(dirname "$0")" && pwd)
source_dir=$(cd "$here/../.." && pwd)
skip=77
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$build_dir"
cpack -G DEB -B "$work/out" >"$work/cpack.log" 2>&1 || { cat "$work/cpack.log"; exit 1; }
deb=$(ls "$work"/out/iarelay_*.deb)
echo "built $(basename "$deb")"
dpkg-deb --contents "$deb" | awk '{print $6}' >"$work/contents"
for f in ./usr/bin/iarelayd ./usr/bin/iarelay ./usr/bin/iarelay-sink \
         ./usr/lib/systemd/system/iarelayd.service ./etc/iarelay/iarelay.conf \
         ./usr/share/doc/iarelay/operations.md ./usr/share/doc/iarelay/help/iarelayd.txt \
         ./usr/share/doc/iarelay/integration-agent.md \
         ./usr/share/iarelay/integration-agent/iarelay-shim.js; do
  grep -qx "$f" "$work/contents" || { echo "missing from package: $f"; exit 1; }
done
echo "depends: $(dpkg-deb -f "$deb" Depends)"
# An upgrade must keep the operator's configuration: it is a conffile.
dpkg-deb -I "$deb" conffiles | grep -qx /etc/iarelay/iarelay.conf ||
  { echo "/etc/iarelay/iarelay.conf is not a conffile: an upgrade would overwrite it"; exit 1; }

if [[ $(id -u) -ne 0 ]]; then
  echo "SKIP: installing the package for real needs root (a mount namespace with an overlay"
  echo "      over /); run this test as root to check the runbooks on the installed package"
  exit $skip
fi
if ! unshare -m -p -f true 2>"$work/unshare.err"; then
  echo "SKIP: cannot make a mount and pid namespace here ($(head -c 200 "$work/unshare.err"));"
  echo "      the installed-package runbooks need CAP_SYS_ADMIN"
  exit $skip
fi

stage=$work/stage
mkdir -p "$stage" "$work/upper" "$work/overlay-work" "$work/merged"
cp "$deb" "$here/installed_runbooks.sh" "$source_dir/tests/fixtures/xmatters/ib_status.json" \
  "$stage/"
# The daemons started inside die with the pid namespace when the script ends, whatever happens.
set +e
timeout --kill-after=5 100 unshare -m -p -f --kill-child bash -c '
  set -e
  work=$1 stage=$2
  mount --make-rprivate /
  if ! mount -t overlay overlay \
        -o "lowerdir=/,upperdir=$work/upper,workdir=$work/overlay-work" "$work/merged"; then
    echo "SKIP: overlay over / not permitted here"; exit 77
  fi
  mount -t proc proc "$work/merged/proc"
  mount --rbind /dev "$work/merged/dev"
  mount -t tmpfs tmpfs "$work/merged/run"
  exec chroot "$work/merged" /bin/bash "$stage/installed_runbooks.sh" "$stage"
' overlay "$work" "$stage"
rc=$?
set -e
if [[ $rc -eq 124 || $rc -eq 137 ]]; then echo "FAIL: the installed-package run took over 100 s"; fi
exit $rc
