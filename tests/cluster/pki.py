"""The small certificate authority of a test cluster, made with ``cryptography``.

Why our own CA: the API server must serve TLS that clients verify (pytest turns urllib3's
InsecureRequestWarning into an error, and "insecure-skip-tls-verify" would hide real mistakes),
and client certificates are the simplest credentials that go through real authentication and
RBAC: the admin is in ``system:masters``; the controller manager and the scheduler use their
well-known user names, so the bootstrap RBAC policy applies to them as in a real cluster.

EC P-256 keys: generating them takes microseconds, unlike RSA, and every component accepts them.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# The first address of the service range: the API server's own "kubernetes" Service.
KUBERNETES_SERVICE_IP = "10.0.0.1"
_VALIDITY = dt.timedelta(days=30)


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, as files the components read."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert_file: Path
    key_file: Path

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def _issue(
    directory: Path,
    stem: str,
    common_name: str,
    *,
    signer: KeyPair | None,
    organization: str | None = None,
    usages: Sequence[x509.ObjectIdentifier] = (),
    sans: Sequence[x509.GeneralName] = (),
) -> KeyPair:
    key = ec.generate_private_key(ec.SECP256R1())
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    subject = x509.Name(attributes)
    is_ca = signer is None
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if signer is None else signer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=is_ca,
                crl_sign=is_ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if signer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.key.public_key()),
            critical=False,
        )
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    cert = builder.sign(key if signer is None else signer.key, hashes.SHA256())
    pair = KeyPair(cert, key, directory / f"{stem}.crt", directory / f"{stem}.key")
    pair.cert_file.write_bytes(pair.cert_pem())
    pair.key_file.write_bytes(pair.key_pem())
    pair.key_file.chmod(0o600)
    return pair


def _client(directory: Path, stem: str, user: str, group: str | None, ca: KeyPair) -> KeyPair:
    return _issue(
        directory,
        stem,
        user,
        signer=ca,
        organization=group,
        usages=[ExtendedKeyUsageOID.CLIENT_AUTH],
    )


@dataclass(frozen=True)
class Pki:
    """Every certificate and key one cluster needs, written under one directory."""

    ca: KeyPair
    serving: KeyPair
    admin: KeyPair
    controller_manager: KeyPair
    scheduler: KeyPair
    front_proxy_ca: KeyPair
    front_proxy_client: KeyPair
    service_account_key: Path
    service_account_pub: Path

    @classmethod
    def create(cls, directory: Path) -> Pki:
        directory.mkdir(parents=True, exist_ok=True)
        ca = _issue(directory, "ca", "sigrun-test-ca", signer=None)
        dns = [
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ]
        ips = ["127.0.0.1", KUBERNETES_SERVICE_IP]
        serving = _issue(
            directory,
            "apiserver",
            "kube-apiserver",
            signer=ca,
            usages=[ExtendedKeyUsageOID.SERVER_AUTH],
            sans=[x509.DNSName(name) for name in dns]
            + [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips],
        )
        admin = _client(directory, "admin", "sigrun-admin", "system:masters", ca)
        kcm = _client(directory, "controller-manager", "system:kube-controller-manager", None, ca)
        scheduler = _client(directory, "scheduler", "system:kube-scheduler", None, ca)
        front_proxy_ca = _issue(directory, "front-proxy-ca", "sigrun-front-proxy-ca", signer=None)
        front_proxy_client = _client(
            directory, "front-proxy-client", "front-proxy-client", None, front_proxy_ca
        )

        sa_key = ec.generate_private_key(ec.SECP256R1())
        sa_key_file = directory / "service-account.key"
        sa_pub_file = directory / "service-account.pub"
        sa_key_file.write_bytes(
            sa_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        sa_key_file.chmod(0o600)
        sa_pub_file.write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        return cls(
            ca,
            serving,
            admin,
            kcm,
            scheduler,
            front_proxy_ca,
            front_proxy_client,
            sa_key_file,
            sa_pub_file,
        )
