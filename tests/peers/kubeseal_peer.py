#!/usr/bin/env python3
"""An independent implementation of the Sealed Secrets formats, for interop tests.

Written from the upstream format description (sealed-secrets pkg/crypto/crypto.go and
sealedsecret_expansion.go), on OpenSSL through the `cryptography` package. It shares no code
with sealkit: if sealkit and this script agree, sealkit agrees with the format, not with itself.

Commands (JSON on stdin/stdout):
  open-doc KEY.pem          stdin: SealedSecret JSON -> {"key": base64(plaintext), ...}
  seal-doc CERT.pem         stdin: {"name","namespace","scope","type","items":{k: b64}} -> SealedSecret JSON
  flip-check KEY.pem LABEL  stdin: base64 blob -> checks that every single flipped byte fails
  make-cert KEY.pem OUT.pem [--expired]   self-signed RSA certificate (optionally already expired)
"""
import base64
import datetime
import json
import os
import struct
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import NameOID

CLUSTER_WIDE = "sealedsecrets.bitnami.com/cluster-wide"
NAMESPACE_WIDE = "sealedsecrets.bitnami.com/namespace-wide"


def oaep(label):
    return padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=label or None)


def hybrid_encrypt(pub, plaintext, label):
    session = os.urandom(32)
    rsa_ct = pub.encrypt(session, oaep(label))
    body = AESGCM(session).encrypt(b"\0" * 12, plaintext, None)
    return struct.pack(">H", len(rsa_ct)) + rsa_ct + body


def hybrid_decrypt(priv, blob, label):
    if len(blob) < 2:
        raise ValueError("too short")
    (n,) = struct.unpack(">H", blob[:2])
    if len(blob) < 2 + n:
        raise ValueError("truncated")
    session = priv.decrypt(blob[2 : 2 + n], oaep(label))
    return AESGCM(session).decrypt(b"\0" * 12, blob[2 + n :], None)


def label_for(meta):
    ann = meta.get("annotations") or {}
    ns, name = meta.get("namespace", ""), meta.get("name", "")
    if ann.get(CLUSTER_WIDE) == "true":
        return b""
    if ann.get(NAMESPACE_WIDE) == "true":
        return ns.encode()
    return f"{ns}/{name}".encode()


def load_key(path):
    with open(path, "rb") as f:
        return serialization.load_pem_private_key(f.read(), password=None)


def load_cert_key(path):
    with open(path, "rb") as f:
        return x509.load_pem_x509_certificate(f.read()).public_key()


def open_doc(key_path):
    priv = load_key(key_path)
    doc = json.load(sys.stdin)
    label = label_for(doc["metadata"])
    out = {}
    for k, v in doc["spec"]["encryptedData"].items():
        out[k] = base64.b64encode(hybrid_decrypt(priv, base64.b64decode(v), label)).decode()
    json.dump(out, sys.stdout)


def seal_doc(cert_path):
    pub = load_cert_key(cert_path)
    req = json.load(sys.stdin)
    meta = {"name": req["name"], "namespace": req["namespace"]}
    scope = req.get("scope", "strict")
    if scope == "cluster-wide":
        meta["annotations"] = {CLUSTER_WIDE: "true"}
    elif scope == "namespace-wide":
        meta["annotations"] = {NAMESPACE_WIDE: "true"}
    label = label_for(meta)
    enc = {k: base64.b64encode(hybrid_encrypt(pub, base64.b64decode(v), label)).decode() for k, v in req["items"].items()}
    doc = {
        "kind": "SealedSecret",
        "apiVersion": "bitnami.com/v1alpha1",
        "metadata": dict(meta),
        "spec": {"template": {"metadata": dict(meta), "type": req.get("type", "Opaque")}, "encryptedData": enc},
    }
    json.dump(doc, sys.stdout, indent=2)


def flip_check(key_path, label):
    priv = load_key(key_path)
    blob = base64.b64decode(sys.stdin.read().strip())
    hybrid_decrypt(priv, blob, label.encode())  # the original must open
    for i in range(len(blob)):
        t = bytearray(blob)
        t[i] ^= 0x01
        try:
            hybrid_decrypt(priv, bytes(t), label.encode())
        except Exception:
            continue
        sys.exit(f"flipped byte {i} still decrypted")
    print(f"ok: {len(blob)} single-byte flips all rejected")


def make_cert(key_path, out_path, expired):
    priv = load_key(key_path)
    now = datetime.datetime.now(datetime.timezone.utc)
    if expired:
        start, end = now - datetime.timedelta(days=30), now - datetime.timedelta(days=1)
    else:
        start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "peer")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(priv.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .sign(priv, hashes.SHA256())
    )
    with open(out_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "open-doc":
        open_doc(args[0])
    elif cmd == "seal-doc":
        seal_doc(args[0])
    elif cmd == "flip-check":
        flip_check(args[0], args[1])
    elif cmd == "make-cert":
        make_cert(args[0], args[1], "--expired" in args)
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
