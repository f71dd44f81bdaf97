"""The installation's CA: what lets the forward proxy read an agent's HTTPS requests.

An agent that sends its API calls through the forward proxy (``HTTPS_PROXY``) opens a
``CONNECT`` tunnel to a registered destination and speaks TLS inside it *to Tether*: the
proxy answers with a certificate for the destination's host, minted here and signed by
this installation's own CA. The agent trusts that CA (``SSL_CERT_FILE=ca.pem`` in its
environment, :attr:`InstallationCA.cert_file`); Tether then decides, injects the
destination's credential and forwards the request over a TLS connection of its own that
verifies the real destination.

What is guaranteed:

- One CA per installation, in ``TETHER_HOME/egress/``: ``ca.pem`` (the certificate,
  public) and ``ca-key.pem`` (its private key, mode 0600), the folder mode 0700. Made on
  first use, never replaced; each file is written whole to a private staging file and
  linked in place, under an exclusive lock on ``egress/.ca.lock``, so processes that start
  together end with one CA, and none reads half of it. A key that others can read, a
  certificate without its key, a pair that does not match, or an expired CA is refused
  (the proxy does not start) rather than repaired behind anyone's back.
- EC P-256 with SHA-256 (what every TLS client accepts), ``BasicConstraints(ca=True,
  path_length=0)`` (it signs leaves, never another CA), key usage ``keyCertSign`` and
  ``cRLSign`` only, valid for :data:`CA_VALIDITY`.
- Leaves are minted on demand for one host each (a ``dNSName`` or ``iPAddress``
  subjectAltName, ``serverAuth`` only, valid :data:`LEAF_VALIDITY`), on a key pair that
  lives in this process's memory only; each host's server :class:`ssl.SSLContext`
  (TLS 1.2 or later, ALPN ``http/1.1``, an SNI naming another host refused) is cached in a
  bounded LRU and minted again before its leaf nears its end.

The trust asked of an agent. Name constraints cannot confine the CA to the hosts Tether
brokers (destinations are registered after the CA is made), so whoever holds
``ca-key.pem`` can mint a certificate for any host that a client trusting ``ca.pem``
accepts. Give ``ca.pem`` to the agents that use the proxy, in *their* environment only
(``SSL_CERT_FILE`` replaces the default bundle for that process: it then reaches nothing
but the destinations Tether brokers, which is the point); never install it in a system or
browser trust store. The proxy itself mints leaves only for registered destinations
(``CONNECT`` elsewhere is refused), and ``ca-key.pem`` stays with Tether's other keys.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import ipaddress
import os
import secrets
import ssl
import stat
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tether.errors import InvalidRequest

__all__ = [
    "CA_CERT_FILE",
    "CA_DIR",
    "CA_KEY_FILE",
    "CA_VALIDITY",
    "LEAF_VALIDITY",
    "InstallationCA",
]

CA_DIR = "egress"
CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca-key.pem"
CA_VALIDITY = dt.timedelta(days=3650)
LEAF_VALIDITY = dt.timedelta(days=7)
_LEAF_RENEW = dt.timedelta(days=1)  # a cached leaf this close to its end is minted again
_BACKDATE = dt.timedelta(hours=1)  # clients whose clocks run a little behind still accept it
_LOCK_FILE = ".ca.lock"
_CACHE_SIZE = 256


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True, slots=True)
class _Leaf:
    context: ssl.SSLContext
    not_after: dt.datetime


class InstallationCA:
    """The CA of the installation at ``home`` (see the module docstring); build it with
    :meth:`open`. Thread-safe: leaves are minted under a lock."""

    def __init__(
        self,
        directory: Path,
        certificate: x509.Certificate,
        key: ec.EllipticCurvePrivateKey,
        *,
        clock: Callable[[], dt.datetime] = _now,
        cache_size: int = _CACHE_SIZE,
    ) -> None:
        self.directory = directory
        self.certificate = certificate
        self._key = key
        self._clock = clock
        self._cache_size = max(1, cache_size)
        self._leaf_key = ec.generate_private_key(ec.SECP256R1())  # never written anywhere
        self._leaves: OrderedDict[str, _Leaf] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def open(
        cls,
        home: Path,
        *,
        clock: Callable[[], dt.datetime] = _now,
        cache_size: int = _CACHE_SIZE,
    ) -> InstallationCA:
        """The CA in ``home/egress/``, made there on first use. Raises InvalidRequest
        (saying what to do) when the files are unusable."""
        directory = home / CA_DIR
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise InvalidRequest(f"cannot make {directory}: {exc.strerror}") from None
        with _locked(directory / _LOCK_FILE):
            certificate, key = _load_or_make(directory, clock())
        _check(directory, certificate, key, clock())
        return cls(directory, certificate, key, clock=clock, cache_size=cache_size)

    @property
    def cert_file(self) -> Path:
        """``ca.pem``: what an agent trusts (``SSL_CERT_FILE``)."""
        return self.directory / CA_CERT_FILE

    @property
    def pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")

    @property
    def fingerprint(self) -> str:
        """The certificate's SHA-256 fingerprint, hex with colons (as browsers show it)."""
        return self.certificate.fingerprint(hashes.SHA256()).hex(":").upper()

    def context_for(self, host: str) -> ssl.SSLContext:
        """The server-side TLS context for ``host`` (a DNS name or an IP address, as the
        proxy's ``CONNECT`` named it): a leaf for it, cached until it nears its end."""
        name = _host(host)
        now = self._clock()
        with self._lock:
            cached = self._leaves.get(name)
            if cached is not None and cached.not_after - _LEAF_RENEW > now:
                self._leaves.move_to_end(name)
                return cached.context
        leaf = self._mint(name, now)
        with self._lock:
            self._leaves[name] = leaf
            self._leaves.move_to_end(name)
            while len(self._leaves) > self._cache_size:
                self._leaves.popitem(last=False)
        return leaf.context

    def leaf(self, host: str) -> x509.Certificate:
        """A freshly minted leaf certificate for ``host`` (for inspection and tests)."""
        return self._certificate(_host(host), self._clock())

    def _certificate(self, host: str, now: dt.datetime) -> x509.Certificate:
        try:
            san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            san = x509.DNSName(host)
        ca_ski = self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        public = self._leaf_key.public_key()
        subject = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Tether egress proxy")]
        if len(host) <= 64:  # the upper bound of a commonName
            subject.append(x509.NameAttribute(NameOID.COMMON_NAME, host))
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name(subject))
            .issuer_name(self.certificate.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(min(now + LEAF_VALIDITY, self.certificate.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, False, False, False, False),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .add_extension(x509.SubjectAlternativeName([san]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski.value),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )

    def _mint(self, host: str, now: dt.datetime) -> _Leaf:
        certificate = self._certificate(host, now)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols(["http/1.1"])
        _load_chain(context, certificate, self._leaf_key)
        context.sni_callback = _only(host)
        return _Leaf(context, certificate.not_valid_after_utc)


def _host(host: str) -> str:
    name = host.strip().strip("[]").rstrip(".").lower()
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        pass
    labels = name.split(".")
    if (
        not name
        or len(name) > 253
        or not all(
            0 < len(label) <= 63
            and label.isascii()
            and label.replace("-", "").isalnum()
            and not label.startswith("-")
            and not label.endswith("-")
            for label in labels
        )
    ):
        raise InvalidRequest(f"{host!r} is not a DNS name or an IP address")
    return name


def _only(host: str) -> Callable[[ssl.SSLObject, str | None, ssl.SSLContext], int | None]:
    """An SNI callback that refuses a server name other than ``host`` (a client that
    names none, as for an IP address, is served ``host``'s certificate)."""

    def callback(_: ssl.SSLObject, name: str | None, __: ssl.SSLContext) -> int | None:
        if name is not None and name.rstrip(".").lower() != host:
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        return None

    return callback


def _load_chain(
    context: ssl.SSLContext, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> None:
    """``ssl`` loads a certificate chain only from a file: the leaf and its key go to a
    private temporary file, the key encrypted under a password that never leaves this
    process, and the file is gone before this returns."""
    password = secrets.token_bytes(32)
    pem = certificate.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password),
    )
    fd, name = tempfile.mkstemp(prefix="tether-leaf-", suffix=".pem")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        context.load_cert_chain(name, password=password)
    finally:
        os.unlink(name)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise InvalidRequest(f"cannot open {path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _load_or_make(
    directory: Path, now: dt.datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """Under the lock: the CA on disk, or a new one written there."""
    cert_file, key_file = directory / CA_CERT_FILE, directory / CA_KEY_FILE
    if key_file.exists():
        key = _read_key(key_file)
        if cert_file.exists():
            return _read_certificate(cert_file), key
        # a start that stopped between the two files: the key is whole, finish its pair
        certificate = _ca_certificate(key, now)
        _write_once(cert_file, certificate.public_bytes(serialization.Encoding.PEM))
        return certificate, key
    if cert_file.exists():
        raise InvalidRequest(
            f"{cert_file} has no private key beside it ({key_file}): move {cert_file} away "
            "to make a new CA (agents must then trust the new ca.pem)"
        )
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = _ca_certificate(key, now)
    _write_once(
        key_file,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    _write_once(cert_file, certificate.public_bytes(serialization.Encoding.PEM))
    return certificate, key


def _ca_certificate(key: ec.EllipticCurvePrivateKey, now: dt.datetime) -> x509.Certificate:
    public = key.public_key()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Tether"),
            x509.NameAttribute(
                NameOID.COMMON_NAME, f"Tether egress proxy CA {secrets.token_hex(4)}"
            ),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(public)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), False)
        .sign(key, hashes.SHA256())
    )


def _write_once(path: Path, data: bytes) -> None:
    """Create ``path`` (0600) whole: a private staging file, linked in place (never
    replacing a file that is there), the folder synced."""
    staging = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    try:
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(staging, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise InvalidRequest(f"cannot write {path}: {exc.strerror}") from None
    finally:
        staging.unlink(missing_ok=True)


def _read_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidRequest(f"cannot read the egress CA key {path}: {exc.strerror}") from None
    if mode & 0o077:
        raise InvalidRequest(
            f"the egress CA key {path} is readable by others (mode {mode:04o}): chmod 600 it"
        )
    try:
        key = serialization.load_pem_private_key(data, None)
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InvalidRequest(f"the egress CA key {path} is not an unencrypted EC private key")
    return key


def _read_certificate(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except OSError as exc:
        raise InvalidRequest(f"cannot read the egress CA {path}: {exc.strerror}") from None
    except ValueError:
        raise InvalidRequest(f"the egress CA {path} is not a PEM certificate") from None


def _check(
    directory: Path,
    certificate: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    now: dt.datetime,
) -> None:
    """A loaded pair is refused unless it is a CA, this key's, and valid now."""
    where = directory / CA_CERT_FILE
    if certificate.public_key() != key.public_key():
        raise InvalidRequest(f"{where} does not belong to {directory / CA_KEY_FILE}")
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
        certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    except x509.ExtensionNotFound:
        raise InvalidRequest(f"{where} is not a CA certificate Tether made") from None
    if not constraints.value.ca:
        raise InvalidRequest(f"{where} is not a CA certificate")
    if not certificate.not_valid_before_utc <= now < certificate.not_valid_after_utc:
        raise InvalidRequest(
            f"the egress CA {where} is not valid now (until "
            f"{certificate.not_valid_after_utc:%Y-%m-%d}): move {directory} away to make a "
            "new one, and give agents the new ca.pem"
        )
