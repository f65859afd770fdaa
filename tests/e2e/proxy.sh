#!/usr/bin/env bash
# End-to-end: the multi-process proxy (x-pci-proxy-dev, whose memory listener
# merges sections like vhost-user) with a real remote process emulating an
# LSI SCSI controller: SeaBIOS reads the disk through it with the default
# (10.2) barriers and with merge-barriers=, on pc and q35, 4 KiB guest RAM.
# Needs KVM (x-pci-proxy-dev does not work under TCG); skipped without it.
# Speaks TAP.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec /usr/bin/python3 scripts/proxy_churn.py --memory memfd --tap
