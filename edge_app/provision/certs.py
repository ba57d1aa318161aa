"""The fleet's TLS material: a CA, the broker's server certificate, one client certificate per
device. ECDSA P-256 keys derived from the seed, RFC 6979 deterministic signatures, fixed validity
dates and serials from the seed: the same inputs give byte-identical PEM files.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edge_app.provision.fleet import FleetFile
from edge_app.provision.seed import Seed

# Order of the P-256 group: private values must lie in [1, n-1].
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


@dataclass(frozen=True)
class Issued:
    cert_pem: bytes
    key_pem: bytes


def _key(seed: Seed, name: str) -> ec.EllipticCurvePrivateKey:
    value = int.from_bytes(seed.derive("ec-key", name), "big") % (_P256_ORDER - 1) + 1
    return ec.derive_private_key(value, ec.SECP256R1())


def _serial(seed: Seed, name: str) -> int:
    return int.from_bytes(seed.derive("serial", name)[:19], "big") | 1


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _validity(fleet: FleetFile) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.combine(fleet.tls.not_before, dt.time(), tzinfo=dt.UTC)
    return start, start + dt.timedelta(days=fleet.tls.days)


def _name(common_name: str, fleet: FleetFile) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"edge-app fleet {fleet.fleet}"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


class FleetCA:
    """The fleet's certificate authority; its key never leaves the generator's memory."""

    def __init__(self, fleet: FleetFile, seed: Seed) -> None:
        self._fleet = fleet
        self._seed = seed
        self._key = _key(seed, "ca")
        self.name = _name(f"edge-app {fleet.fleet} CA", fleet)
        start, end = _validity(fleet)
        public = self._key.public_key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(public)
            .serial_number(_serial(seed, "ca"))
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_usage(cert_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        )
        self.cert = builder.sign(self._key, hashes.SHA256(), ecdsa_deterministic=True)

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, label: str, common_name: str, server_hosts: list[str] | None = None) -> Issued:
        """A leaf certificate: a server one when ``server_hosts`` is given, else a client one."""
        key = _key(self._seed, label)
        start, end = _validity(self._fleet)
        purpose = (
            ExtendedKeyUsageOID.SERVER_AUTH if server_hosts else ExtendedKeyUsageOID.CLIENT_AUTH
        )
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name, self._fleet))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(_serial(self._seed, label))
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([purpose]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        )
        if server_hosts:
            builder = builder.add_extension(_san(server_hosts), critical=False)
        cert = builder.sign(self._key, hashes.SHA256(), ecdsa_deterministic=True)
        return Issued(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key))


def _usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=not cert_sign,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)
