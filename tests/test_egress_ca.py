"""The installation's CA (tether.egress.ca): made once, private, reused, one CA when
processes start together; leaves for DNS names and IP addresses that a real TLS client
(``ssl``, strict X.509 checks) accepts against ``ca.pem`` and nothing else; the files
refused rather than repaired when they are wrong."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import ssl
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from tether.egress.ca import CA_VALIDITY, LEAF_VALIDITY, InstallationCA
from tether.errors import InvalidRequest

SRC = Path(__file__).resolve().parents[1] / "src"


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


def _handshake(ca: InstallationCA, host: str, server_name: str | None, trust: Path) -> str:
    """A real TLS handshake over loopback: the server side with ``ca``'s context for
    ``host``, the client trusting only ``trust``; returns what the server sent."""
    listener = socket.create_server(("127.0.0.1", 0))
    context = ca.context_for(host)
    failures: list[BaseException] = []

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with context.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"hello")
        except (OSError, ssl.SSLError) as exc:
            failures.append(exc)
        finally:
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client = ssl.create_default_context(cafile=str(trust))
    client.verify_flags |= ssl.VERIFY_X509_STRICT
    try:
        with (
            socket.create_connection(listener.getsockname(), timeout=10) as raw,
            client.wrap_socket(raw, server_hostname=server_name) as tls,
        ):
            return tls.recv(5).decode()
    finally:
        thread.join(10)
        listener.close()


def test_the_ca_is_made_once_private_and_reused(tmp_path: Path) -> None:
    ca = InstallationCA.open(tmp_path)
    folder = tmp_path / "egress"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / "ca-key.pem").stat().st_mode) == 0o600
    assert ca.cert_file == folder / "ca.pem"
    assert ca.cert_file.read_text() == ca.pem
    assert sorted(p.name for p in folder.iterdir()) == [".ca.lock", "ca-key.pem", "ca.pem"]

    certificate = ca.certificate
    constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca is True and constraints.path_length == 0
    usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature
    key = certificate.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert lifetime >= CA_VALIDITY

    again = InstallationCA.open(tmp_path)  # a restart: the same CA, nothing rewritten
    assert again.fingerprint == ca.fingerprint
    assert again.cert_file.read_text() == ca.pem


def test_processes_starting_together_end_with_one_ca(tmp_path: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from tether.egress.ca import InstallationCA; "
        "print(InstallationCA.open(Path(sys.argv[1])).fingerprint)"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    started = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    results = [p.communicate(timeout=120) for p in started]
    assert all(p.returncode == 0 for p in started), results
    fingerprints = {out.strip() for out, _ in results}
    assert len(fingerprints) == 1
    assert fingerprints == {InstallationCA.open(tmp_path).fingerprint}
    assert sorted(p.name for p in (tmp_path / "egress").iterdir()) == [
        ".ca.lock",
        "ca-key.pem",
        "ca.pem",
    ]  # no staging file left behind


@pytest.mark.parametrize("host", ["localhost", "api.example.com", "127.0.0.1", "::1"])
def test_a_leaf_verifies_against_the_ca_in_a_real_handshake(tmp_path: Path, host: str) -> None:
    ca = InstallationCA.open(tmp_path)
    name = host if not host[0].isdigit() and ":" not in host else None
    # the client checks the name: server_hostname for DNS names, the IP otherwise
    assert _handshake(ca, host, name or host, ca.cert_file) == "hello"
    leaf = ca.leaf(host)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert len(list(san)) == 1
    constraints = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca is False
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc <= LEAF_VALIDITY + dt.timedelta(
        hours=1
    )


def test_a_leaf_is_not_accepted_for_another_host_nor_by_a_client_trusting_another_ca(
    tmp_path: Path,
) -> None:
    ca = InstallationCA.open(tmp_path / "one")
    other = InstallationCA.open(tmp_path / "two")
    with pytest.raises(ssl.SSLCertVerificationError, match=r"mismatch|match"):
        _handshake(ca, "127.0.0.1", "127.0.0.2", ca.cert_file)  # an IP it was not made for
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(ca, "localhost", "localhost", other.cert_file)


def test_a_client_naming_another_host_by_sni_is_refused(tmp_path: Path) -> None:
    ca = InstallationCA.open(tmp_path)
    with pytest.raises(ssl.SSLError, match=r"UNRECOGNIZED_NAME|unrecognized name"):
        _handshake(ca, "localhost", "api.example.com", ca.cert_file)


def test_leaves_are_cached_bounded_and_minted_again_before_they_end(tmp_path: Path) -> None:
    clock = Clock()
    ca = InstallationCA.open(tmp_path, clock=clock, cache_size=2)
    first = ca.context_for("a.example")
    assert ca.context_for("A.example.") is first  # the same host, however it is spelt
    ca.context_for("b.example")
    ca.context_for("a.example")  # a was used last: b is the oldest now
    ca.context_for("c.example")
    assert ca.context_for("a.example") is first
    assert ca.context_for("b.example") is not None  # minted again (it was evicted)
    clock.now += LEAF_VALIDITY - dt.timedelta(hours=12)  # near its end
    assert ca.context_for("a.example") is not first


@pytest.mark.parametrize("host", ["", "a..b", "-a.example", "a_b.example", "x" * 64 + ".com"])
def test_a_leaf_is_minted_only_for_a_dns_name_or_an_ip(tmp_path: Path, host: str) -> None:
    ca = InstallationCA.open(tmp_path)
    with pytest.raises(InvalidRequest, match="not a DNS name or an IP address"):
        ca.context_for(host)


def test_a_key_others_can_read_is_refused(tmp_path: Path) -> None:
    InstallationCA.open(tmp_path)
    (tmp_path / "egress" / "ca-key.pem").chmod(0o644)
    with pytest.raises(InvalidRequest, match="readable by others"):
        InstallationCA.open(tmp_path)


def test_a_certificate_without_its_key_or_with_another_key_is_refused(tmp_path: Path) -> None:
    InstallationCA.open(tmp_path / "one")
    InstallationCA.open(tmp_path / "two")
    one, two = tmp_path / "one" / "egress", tmp_path / "two" / "egress"
    (one / "ca-key.pem").write_bytes((two / "ca-key.pem").read_bytes())
    with pytest.raises(InvalidRequest, match="does not belong to"):
        InstallationCA.open(tmp_path / "one")
    (one / "ca-key.pem").unlink()
    with pytest.raises(InvalidRequest, match="has no private key beside it"):
        InstallationCA.open(tmp_path / "one")
    (one / "ca.pem").write_text("not a certificate")
    (one / "ca-key.pem").write_bytes((two / "ca-key.pem").read_bytes())
    (one / "ca-key.pem").chmod(0o600)
    with pytest.raises(InvalidRequest, match="is not a PEM certificate"):
        InstallationCA.open(tmp_path / "one")


def test_a_key_without_its_certificate_gets_one(tmp_path: Path) -> None:
    """A start that stopped between the two files: the pair is completed from the key."""
    made = InstallationCA.open(tmp_path)
    made.cert_file.unlink()
    again = InstallationCA.open(tmp_path)
    assert again.certificate.public_key() == made.certificate.public_key()
    assert _handshake(again, "localhost", "localhost", again.cert_file) == "hello"


def test_an_expired_ca_is_refused(tmp_path: Path) -> None:
    clock = Clock()
    InstallationCA.open(tmp_path, clock=clock)
    clock.now += CA_VALIDITY + dt.timedelta(days=1)
    with pytest.raises(InvalidRequest, match="is not valid now"):
        InstallationCA.open(tmp_path, clock=clock)


def test_tether_egress_ca_prints_the_certificate_and_its_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tether.cli.proxy import ca_command

    home = tmp_path / "home"
    monkeypatch.setenv("TETHER_HOME", str(home))
    with pytest.raises(Exception, match="is not initialised"):
        ca_command(json_=True)
    home.mkdir()
    ca_command(json_=True)
    shown = json.loads(capsys.readouterr().out)
    ca = InstallationCA.open(home)
    assert shown["path"] == str(ca.cert_file)
    assert shown["pem"] == ca.pem
    assert shown["sha256_fingerprint"] == ca.fingerprint
    assert "ca-key" not in json.dumps(shown) and "PRIVATE" not in json.dumps(shown)
    ca_command(json_=False)
    text = capsys.readouterr().out
    assert str(ca.cert_file) in text and ca.pem.strip() in text and "PRIVATE" not in text
