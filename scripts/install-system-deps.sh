#!/usr/bin/env bash
# Installs the Debian packages the end-to-end tests run for real: Prometheus (and promtool),
# Alertmanager (and amtool), Redis (the shared KPI window store), nginx (the load balancer in
# front of several exporters), Chromium, and systemd-analyze (to verify the shipped units).
# Does nothing when they are already there. It installs packages and nothing else: the tests
# start their own servers on free loopback ports with their own directories, so a Prometheus,
# Alertmanager, Redis or nginx already running on this machine (the packages' own services
# included) is never used, stopped, killed or reconfigured.
set -euo pipefail
need=()
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 || need+=(prometheus-alertmanager)
command -v amtool >/dev/null 2>&1 || need+=(prometheus-alertmanager)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
[ ${#need[@]} -eq 0 ] && exit 0
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "install-system-deps: need root (or sudo) to apt-get install: ${need[*]}" >&2; exit 1; }
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${need[@]}" | sort -u) >/dev/null
