#!/usr/bin/env bash
# Installs the Debian packages multiwan's tests and demo need, only those
# missing. Needs root (the tests do too).
set -euo pipefail
declare -A pkg=(
  [nft]=nftables [ip]=iproute2 [conntrack]=conntrack [curl]=curl
  [iperf3]=iperf3 [dnsmasq]=dnsmasq-base [dhclient]=isc-dhcp-client [socat]=socat [ping]=iputils-ping
  # tunnel WANs: userspace WireGuard (the CI kernel has no wireguard module)
  [wireguard-go]=wireguard-go [wg]=wireguard-tools
  # DNS tests: dig
  [dig]=bind9-dnsutils
  [chromium]=chromium
  # packaging/ tests: the package, its unit, manual pages and completions
  # (procps: pkill and kill for the lab's process handling)
  [dpkg-deb]=dpkg [lintian]=lintian [systemd-analyze]=systemd [pkill]=procps
  [groff]=groff-base [man]=man-db [zsh]=zsh
)
missing=()
for cmd in "${!pkg[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin:/sbin command -v "$cmd" >/dev/null 2>&1 || missing+=("${pkg[$cmd]}")
done
# The dashboard's screenshots need a font (no command to look for).
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "deps: missing packages ${missing[*]}; run as root (sudo make test) to install them" >&2
  exit 1
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
