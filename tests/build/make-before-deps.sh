#!/bin/bash
# On a fresh machine the deps target installs GLib's headers after make has
# read the Makefile: `make demo` (qemu, then xensim) must still find them.
# A stand-in pkg-config knows GLib only once a stand-in deps step has run,
# and xensim is built from scratch in a scratch build folder.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

mkdir "$scratch/bin"
cat > "$scratch/bin/pkg-config" <<EOS
#!/bin/sh
# Before deps ran, GLib is not installed.
[ -e "$scratch/deps-done" ] || exit 1
exec /usr/bin/pkg-config "\$@"
EOS
chmod +x "$scratch/bin/pkg-config"

PATH="$scratch/bin:$PATH" make -C "$top" -s xensim \
    BUILD="$scratch/build" INSTALL_DEPS="touch $scratch/deps-done"
test -x "$scratch/build/xensim/xenblk-front"
test -e "$scratch/deps-done"
echo "xensim built with GLib found only after deps"
