#!/usr/bin/env bash
# sealkit's whole test suite, on a fresh Debian machine with Rust.
# Installs the test peers it needs first (openssl, ssh-keygen, Debian's age CLI, Python
# `cryptography` and PyYAML),
# then runs: rustfmt, clippy -D warnings, every workspace test (unit, vectors, CLI goldens,
# real-peer interop, CRD drift), the deploy/ kustomize build, and the quickstart demo.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n== %s ==\n' "$*"; }

say "test peers"
missing=()
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v ssh-keygen >/dev/null 2>&1 || missing+=(openssh-client)
command -v python3 >/dev/null 2>&1 || missing+=(python3 python3-venv)
command -v age >/dev/null 2>&1 || missing+=(age)
command -v git >/dev/null 2>&1 || missing+=(git)
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
# boto3 comes with it and seeds the data, an AWS client we did not write).
moto_venv="${XDG_CACHE_HOME:-$HOME/.cache}/sealkit/moto-venv"
if ! "$moto_venv/bin/python" -c 'import moto, boto3, flask' 2>/dev/null; then
  echo "installing moto[server] into $moto_venv"
  python3 -m venv "$moto_venv" || { apt-get update -qq && apt-get install -y -qq python3-venv && python3 -m venv "$moto_venv"; }
  "$moto_venv/bin/pip" install -q 'moto[server]==5.2.5'
fi
export SEALKIT_MOTO_SERVER="$moto_venv/bin/moto_server" SEALKIT_MOTO_PYTHON="$moto_venv/bin/python"
export SEALKIT_REQUIRE_PEERS=1
echo "moto: $("$SEALKIT_MOTO_PYTHON" -c 'import moto; print(moto.__version__)')"
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
# Crates we decided against (see docs/formats.md and shared/reference/dependencies.md): the rsa
# crate (RUSTSEC-2023-0071), a second crypto stack (ring, OpenSSL), unmaintained YAML crates.
for crate in rsa ring openssl-sys native-tls serde_yaml serde_yml; do
  if cargo tree --workspace --locked -e normal,build -i "$crate" 2>/dev/null | grep -q .; then
    echo "forbidden crate in the dependency tree: $crate"; exit 1
  fi
done
echo "no rsa, ring, openssl-sys, native-tls, serde_yaml or serde_yml in the tree"

say "tests"
if [ -z "${SEALKIT_E2E_KUBECONFIG:-}" ]; then
  echo "e2e: skipped (set SEALKIT_E2E_KUBECONFIG to a kubeconfig to run tests/tests/e2e.rs against that cluster;"
  echo "     also SEALKIT_E2E_CONTROLLER_IP, an address of this host the API server reaches, for --validate/--re-encrypt)"
fi
cargo test --workspace --locked

say "deploy/ renders with kustomize"
if command -v kubectl >/dev/null 2>&1; then
  kubectl kustomize deploy >/dev/null && echo "kubectl kustomize deploy: ok"
else
  echo "kubectl not installed: skipped the kustomize render of deploy/"
fi

say "quickstart demo"
cargo run -q --locked -p sealkit-cli -- demo --bits 2048

say "quickstart build of the example GitOps repository"
cargo run -q --locked -p sealkit-cli -- build examples/gitops/apps/overlays/staging \
  --age-key-file examples/gitops/keys/example.agekey >/dev/null
