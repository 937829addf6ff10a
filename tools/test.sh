#!/usr/bin/env bash
# The test command (README, .ci/run): installs what the tests need, then runs every test.
#   - mesa-vulkan-drivers: Mesa's lavapipe, a software Vulkan adapter, so the wgpu tests run
#     for real on a machine without a GPU (they fail, not skip, without an adapter when CI=true)
#   - graphviz: `dot -Tsvg` renders apr-ir's DOT output
#   - python3 + gguf-py + numpy: the independent reader that checks files apr-ir writes
#   - chromium: loads `apr-ir check --html` pages headless (self-contained, scripts run)
# Tests that need one of these fail (not skip) when it is missing and CI=true.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
ls /usr/share/vulkan/icd.d/lvp_icd.*.json >/dev/null 2>&1 || need_apt+=(mesa-vulkan-drivers libvulkan1)
command -v dot >/dev/null 2>&1 || need_apt+=(graphviz)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-pip)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  fi
fi
if ! python3 -c "import gguf, numpy" >/dev/null 2>&1; then
  python3 -m pip install -q -r tools/requirements-test.txt || python3 -m pip install -q --break-system-packages -r tools/requirements-test.txt
fi

# Mesa wants a runtime dir; without one it prints a warning per adapter it opens.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
cargo test --workspace --release "$@"
