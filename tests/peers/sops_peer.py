#!/usr/bin/env python3
"""An independent implementation of the SOPS value layer and MAC, for interop tests.

Written from the format description (getsops/sops aes/cipher.go, tree walk and MAC rules), on
OpenSSL through `cryptography`, with PyYAML for YAML. It shares no code with sealkit.

  decrypt FORMAT KEYHEX FILE   -> plaintext tree as JSON on stdout; exits 1 if any value or the
                                  MAC fails to verify
  encrypt KEYHEX AGE_JSON      -> stdin: plaintext JSON object; stdout: a SOPS JSON file whose
                                  values are encrypted with the data key KEYHEX and whose `age`
                                  metadata is AGE_JSON ([{recipient, enc}]); unencrypted_suffix rule
"""
import base64
import datetime
import hashlib
import json
import os
import re
import sys

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ENC = re.compile(r"^ENC\[AES256_GCM,data:(.*),iv:(.*),tag:(.*),type:(.*)\]$")


def dec_value(key, text, aad):
    m = ENC.match(text)
    if not m:
        raise ValueError("not an encrypted value")
    data, iv, tag = (base64.b64decode(m.group(i)) for i in (1, 2, 3))
    plain = AESGCM(key).decrypt(iv, data + tag, aad.encode())  # 32-byte IV accepted
    kind = m.group(4)
    if kind == "int":
        return int(plain), kind
    if kind == "float":
        return float(plain), kind
    if kind == "bool":
        return plain.decode() in ("True", "true", "1", "t", "T", "TRUE"), kind
    return plain.decode(), kind


def enc_value(key, value, aad):
    if isinstance(value, bool):
        plain, kind = ("True" if value else "False"), "bool"
    elif isinstance(value, int):
        plain, kind = str(value), "int"
    elif isinstance(value, float):
        plain, kind = go_float(value), "float"
    else:
        plain, kind = value, "str"
    iv = os.urandom(32)
    ct = AESGCM(key).encrypt(iv, plain.encode(), aad.encode())
    return "ENC[AES256_GCM,data:%s,iv:%s,tag:%s,type:%s]" % (
        base64.b64encode(ct[:-16]).decode(), base64.b64encode(iv).decode(), base64.b64encode(ct[-16:]).decode(), kind)


def go_float(f):
    r = repr(f)
    if "e" in r or "E" in r:
        r = format(f, "f").rstrip("0").rstrip(".")
    return r[:-2] if r.endswith(".0") else r


def mac_bytes(v):
    if isinstance(v, bool):
        return b"True" if v else b"False"
    if isinstance(v, int):
        return str(v).encode()
    if isinstance(v, float):
        return go_float(v).encode()
    return str(v).encode()


def unencrypted(path, suffix):
    return any(k.endswith(suffix) for k in path)


def walk(node, path, key, h, suffix, encrypt):
    """Decrypts (or encrypts) in place, feeding the MAC in document order."""
    if isinstance(node, dict):
        return {k: walk(v, path + [str(k)], key, h, suffix, encrypt) for k, v in node.items()}
    if isinstance(node, list):
        return [walk(v, path, key, h, suffix, encrypt) for v in node]
    if node is None:
        return None
    aad = ":".join(path) + ":"
    if encrypt:
        h.update(mac_bytes(node))
        if unencrypted(path, suffix) or node == "":
            return node
        return enc_value(key, node, aad)
    if isinstance(node, str) and node.startswith("ENC[AES256_GCM,"):
        value, _ = dec_value(key, node, aad)
    else:
        value = node
    h.update(mac_bytes(value))
    return value


def unflatten(pairs):
    root = {}
    for k, v in pairs:
        parts = k.split("__")
        cur, key = root, parts[0]
        for p in parts[1:]:
            nxt = int(p[5:]) if p.startswith("list_") else p[4:]
            if isinstance(key, int):
                while len(cur) <= key:
                    cur.append(None)
                if cur[key] is None:
                    cur[key] = [] if isinstance(nxt, int) else {}
                cur = cur[key]
            else:
                cur = cur.setdefault(key, [] if isinstance(nxt, int) else {})
            key = nxt
        v = v.replace("\\n", "\n")
        if isinstance(key, int):
            while len(cur) <= key:
                cur.append(None)
            cur[key] = v
        else:
            cur[key] = v
    return root


def load(fmt, text):
    if fmt == "json" or fmt == "binary":
        doc = json.loads(text)
        return doc, doc.pop("sops")
    if fmt == "yaml":
        import yaml
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
        doc = docs[0]
        meta = doc.pop("sops")
        return doc, meta
    if fmt == "dotenv":
        doc, meta = {}, []
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            k, v = line.split("=", 1)
            if k.startswith("sops_"):
                meta.append((k[5:], v))
            else:
                doc[k] = v.replace("\\n", "\n")
        return doc, unflatten(meta)
    if fmt == "ini":
        doc, meta, section = {}, [], None
        for line in text.splitlines():
            t = line.strip()
            if not t or t[0] in ";#":
                continue
            if t.startswith("["):
                section = t[1:-1]
                continue
            k, v = (x.strip() for x in t.split("=", 1))
            if section == "sops":
                meta.append((k, v))
            else:
                doc.setdefault(section, {})[k] = v.replace("\\n", "\n")
        return doc, unflatten(meta)
    raise SystemExit("unknown format " + fmt)


def decrypt(fmt, keyhex, path):
    key = bytes.fromhex(keyhex)
    with open(path) as f:
        doc, meta = load(fmt, f.read())
    h = hashlib.sha512()
    suffix = meta.get("unencrypted_suffix", "_unencrypted")
    plain = walk(doc, [], key, h, suffix, False)
    lastmodified = meta["lastmodified"]
    if isinstance(lastmodified, datetime.datetime):
        lastmodified = lastmodified.strftime("%Y-%m-%dT%H:%M:%SZ")
    stored, _ = dec_value(key, meta["mac"], lastmodified)
    if stored.upper() != h.hexdigest().upper():
        sys.exit("MAC mismatch")
    json.dump(plain, sys.stdout)


def encrypt(keyhex, age_json):
    key = bytes.fromhex(keyhex)
    doc = json.load(sys.stdin)
    h = hashlib.sha512()
    out = walk(doc, [], key, h, "_unencrypted", True)
    lastmodified = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    out["sops"] = {
        "age": json.loads(age_json),
        "lastmodified": lastmodified,
        "mac": enc_value(key, h.hexdigest().upper(), lastmodified),
        "unencrypted_suffix": "_unencrypted",
        "version": "3.13.2",
    }
    json.dump(out, sys.stdout, indent="\t")


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "decrypt":
        decrypt(*sys.argv[2:5])
    elif cmd == "encrypt":
        encrypt(*sys.argv[2:4])
    else:
        sys.exit("unknown command " + cmd)
