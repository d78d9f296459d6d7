//! End to end against a real Kubernetes API server: the CRDs from `deploy/crds/`,
//! `sealkit-controller` run as a local process with the identity `deploy/` gives it, `sealkit`
//! with the controller's certificate, and kubectl as the user. `scripts/test.sh` starts a
//! kube-apiserver + kube-controller-manager v1.28.7 (`shared/k8s/control-plane`) and points
//! `SEALKIT_E2E_KUBECONFIG` at it; without a cluster every test here is a counted skip (a failure
//! under `SEALKIT_REQUIRE_PEERS`).
//!
//! What the API server cannot do here: run Pods (no kubelet), and proxy to a loopback address
//! (the service-proxy test gives the controller an address of its own through a veth pair).

mod external;
mod gitops;
mod harness;
mod proxy;
mod unseal;
