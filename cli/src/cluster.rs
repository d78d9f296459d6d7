//! The cluster-facing kubeseal flags: `--fetch-cert`, `--validate` and `--re-encrypt` reach the
//! controller through the API server's service proxy
//! (`/api/v1/namespaces/<ns>/services/http:<name>:<port>/proxy/…`, with `<port>` the name of the
//! Service's first port), exactly as kubeseal does, so they work against sealkit's controller
//! and against upstream's. Kubeconfig, `--context` and auth plugins are kube's (as kubectl).

use k8s_openapi::api::core::v1::Service;
use kube::api::Api;
use kube::config::KubeConfigOptions;
use kube::{Client, Config};

use crate::error::CliError;

/// Where the controller is.
pub struct Target<'a> {
    /// `--kubeconfig` (may be a `:`-separated list, as KUBECONFIG).
    pub kubeconfig: Option<&'a str>,
    /// `--context`.
    pub context: Option<&'a str>,
    /// `--controller-namespace`.
    pub namespace: &'a str,
    /// `--controller-name`.
    pub name: &'a str,
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::io_at("cannot start the async runtime", &e))
}

pub(crate) async fn client(t: &Target<'_>) -> Result<Client, CliError> {
    let options = KubeConfigOptions {
        context: t.context.map(str::to_string),
        ..Default::default()
    };
    let config = match t.kubeconfig.filter(|k| !k.is_empty()) {
        Some(paths) => {
            let kc = crate::kubeconfig::load(paths)?.ok_or_else(|| {
                CliError::usage(format!("no kubeconfig found at {paths}"))
                    .with_hint("point KUBECONFIG/--kubeconfig at the cluster, or give --cert FILE|URL to work offline")
            })?;
            Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| CliError::input(format!("kubeconfig: {}", kube_message(&e))))?
        }
        None => Config::infer().await.map_err(|e| {
            CliError::usage(format!("cannot find a cluster: {}", infer_message(&e))).with_hint(
                "set KUBECONFIG or pass --kubeconfig, or give --cert FILE|URL to work offline",
            )
        })?,
    };
    Client::try_from(config).map_err(|e| {
        CliError::io(format!(
            "cannot create a Kubernetes client: {}",
            kube_message(&e)
        ))
    })
}

/// Why no cluster was found without `--kubeconfig`/`KUBECONFIG`. kube tries the kubeconfig and
/// then the in-cluster environment and reports both failures in one nested sentence; the usual
/// case, no kubeconfig file and not in a Pod, is said plainly.
fn infer_message(e: &kube::config::InferConfigError) -> String {
    use kube::config::KubeconfigError;
    let in_pod = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    match std::error::Error::source(e).and_then(|s| s.downcast_ref::<KubeconfigError>()) {
        Some(KubeconfigError::ReadConfig(io, path))
            if io.kind() == std::io::ErrorKind::NotFound && !in_pod =>
        {
            format!(
                "KUBECONFIG is not set, {} does not exist, and this is not a Pod in a cluster",
                path.display()
            )
        }
        Some(KubeconfigError::FindPath) if !in_pod => {
            "KUBECONFIG is not set, there is no home directory to find ~/.kube/config in, and \
             this is not a Pod in a cluster"
                .to_string()
        }
        _ => kube_message(e),
    }
}

/// kube's message for a kubeconfig error, unless a `*-data` field is not valid base64: kube's
/// text then ends in the base64 crate's, which names a byte of the value and its offset (for
/// `client-key-data`, a byte of the private key). That error names the field instead.
fn kube_message(e: &(dyn std::error::Error + 'static)) -> String {
    use kube::config::{KubeconfigError, LoadDataError};
    let mut field = "a *-data field";
    let mut cur = Some(e);
    while let Some(err) = cur {
        match err.downcast_ref::<KubeconfigError>() {
            Some(KubeconfigError::LoadCertificateAuthority(_)) => {
                field = "certificate-authority-data"
            }
            Some(KubeconfigError::LoadClientCertificate(_)) => field = "client-certificate-data",
            Some(KubeconfigError::LoadClientKey(_)) => field = "client-key-data",
            _ => {}
        }
        if let Some(LoadDataError::DecodeBase64(_)) = err.downcast_ref::<LoadDataError>() {
            return format!("the kubeconfig's {field} is not valid base64");
        }
        cur = err.source();
    }
    e.to_string()
}

async fn proxy_path(client: &Client, t: &Target<'_>, suffix: &str) -> Result<String, CliError> {
    let svc = Api::<Service>::namespaced(client.clone(), t.namespace).get(t.name).await.map_err(|e| {
        CliError::io(format!("cannot get the sealed secrets service {}/{}: {e}", t.namespace, t.name))
            .with_hint("use --controller-name and --controller-namespace to name the controller's Service (Helm installs name it after the release)")
    })?;
    let port = svc
        .spec
        .and_then(|s| s.ports)
        .and_then(|p| p.into_iter().next())
        .and_then(|p| p.name)
        .unwrap_or_default();
    Ok(format!(
        "/api/v1/namespaces/{}/services/http:{}:{port}/proxy{suffix}",
        t.namespace, t.name
    ))
}

async fn call(
    t: &Target<'_>,
    method: &str,
    suffix: &str,
    body: Vec<u8>,
) -> Result<(u16, String), CliError> {
    let client = client(t).await?;
    let path = proxy_path(&client, t, suffix).await?;
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header(
            http::header::ACCEPT,
            "application/x-pem-file, application/json, */*",
        )
        .body(body)
        .map_err(|e| CliError::io(e.to_string()))?;
    match client.request_text(req).await {
        Ok(text) => Ok((200, text)),
        Err(kube::Error::Api(status)) => Ok((status.code, status.message)),
        Err(e) => Err(CliError::io(format!(
            "the controller could not be reached through the API server: {e}"
        ))),
    }
}

/// `GET /v1/cert.pem` through the service proxy.
pub fn fetch_cert(t: &Target<'_>) -> Result<Vec<u8>, CliError> {
    let (code, body) = runtime()?.block_on(call(t, "GET", "/v1/cert.pem", Vec::new()))?;
    if code != 200 {
        return Err(CliError::io(format!(
            "cannot fetch the certificate: HTTP {code}: {}",
            body.trim()
        )));
    }
    Ok(body.into_bytes())
}

/// `POST /v1/verify`: Ok(true) if the controller can unseal it, Ok(false) on 409.
pub fn verify(t: &Target<'_>, sealed: Vec<u8>) -> Result<Result<(), String>, CliError> {
    let (code, body) = runtime()?.block_on(call(t, "POST", "/v1/verify", sealed))?;
    match code {
        200 => Ok(Ok(())),
        409 => Ok(Err(body.trim().to_string())),
        c => Err(CliError::io(format!(
            "cannot validate the sealed secret: HTTP {c}: {}",
            body.trim()
        ))),
    }
}

/// `POST /v1/rotate`: the SealedSecret re-encrypted with the controller's newest key.
pub fn rotate(t: &Target<'_>, sealed: Vec<u8>) -> Result<String, CliError> {
    let (code, body) = runtime()?.block_on(call(t, "POST", "/v1/rotate", sealed))?;
    match code {
        200 => Ok(body),
        409 => Err(CliError::input(format!(
            "unable to rotate the sealed secret: {}",
            body.trim()
        ))),
        c => Err(CliError::io(format!(
            "cannot re-encrypt the sealed secret: HTTP {c}: {}",
            body.trim()
        ))),
    }
}
