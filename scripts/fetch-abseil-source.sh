#!/usr/bin/env bash
# Fetches Debian 12's Abseil source package (the same version as libabsl-dev,
# with Debian's patches applied) into DEST, for the Windows (MinGW) build,
# which compiles the parts of Abseil tierlock uses from it: Debian packages
# Abseil only for Linux. Uses a private apt state under DEST, so the system's
# apt sources are not changed (no deb-src line needed). Does nothing if DEST
# already holds the source.
#   usage: scripts/fetch-abseil-source.sh DEST
set -euo pipefail
dest=${1:?usage: fetch-abseil-source.sh DEST}
if [[ -f "$dest/src/CMakeLists.txt" ]]; then
  echo "fetch-abseil-source: $dest/src already there"
  exit 0
fi
command -v dpkg-source >/dev/null || {
  echo "fetch-abseil-source: dpkg-source missing (apt-get install dpkg-dev)" >&2
  exit 1
}
mkdir -p "$dest/apt/lists/partial" "$dest/apt/cache/archives/partial" "$dest/dl"
# Debian's own mirror, as the system's sources name it (bookworm = Debian 12).
mirror=$(grep -rhE '^[[:space:]]*(URIs:|deb[[:space:]])' /etc/apt/sources.list \
           /etc/apt/sources.list.d/ 2>/dev/null |
         grep -oE 'https?://[^ ]*/debian/?' | grep -v security | head -n1 || true)
mirror=${mirror:-http://deb.debian.org/debian}
echo "deb-src $mirror bookworm main" > "$dest/apt/sources.list"
apt_opts=(
  -o "Dir::Etc::SourceList=$dest/apt/sources.list"
  -o Dir::Etc::SourceParts=/dev/null
  -o "Dir::State::Lists=$dest/apt/lists"
  -o "Dir::Cache=$dest/apt/cache"
  -o APT::Sandbox::User=root
  -o Debug::NoLocking=1
)
apt-get "${apt_opts[@]}" -q update
(cd "$dest/dl" && apt-get "${apt_opts[@]}" -q source --download-only abseil)
rm -rf "$dest/src.tmp"
dpkg-source --no-check -x "$dest"/dl/abseil_*.dsc "$dest/src.tmp" >/dev/null
mv "$dest/src.tmp" "$dest/src"
rm -rf "$dest/apt"
echo "fetch-abseil-source: $(basename "$dest"/dl/abseil_*.dsc .dsc) in $dest/src"
