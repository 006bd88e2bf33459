"""What to tell an administrator when a connection to Asterisk fails.

An error from the socket, OpenSSL or Asterisk names the symptom
(``Connect call failed``, ``CERTIFICATE_VERIFY_FAILED``, ``Authentication
failed``); the hints here add the setting to look at, on the side that has
it (router.toml, manager.conf or http.conf), worded alike for both
transports. Each takes what the client knows and returns text to append to
the error, ``""`` when it has nothing to add. No secret is in any (a CA path
or a user name is the administrator's own setting).
"""

from __future__ import annotations

import socket
import ssl
import urllib.parse

__all__ = [
    "HOSTNAME_MISMATCH",
    "IP_ADDRESS_MISMATCH",
    "NOT_TLS_REASONS",
    "lasting_tls_failure",
    "login_refused_hint",
    "silent_port_hint",
    "tls_hint",
    "unresolved_hint",
]

#: OpenSSL's reasons when the peer's first bytes are no TLS record: a plain AMI
#: port answers a ClientHello with its banner ("Asterisk Call Manager/...").
NOT_TLS_REASONS = frozenset(
    {
        "WRONG_VERSION_NUMBER",
        "UNKNOWN_PROTOCOL",
        "PACKET_LENGTH_TOO_LONG",
        "RECORD_LAYER_FAILURE",
        "HTTP_REQUEST",
    }
)
#: OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH: a chain it trusts, for another name.
HOSTNAME_MISMATCH = 62
#: OpenSSL's X509_V_ERR_IP_ADDRESS_MISMATCH: a chain it trusts, not for the
#: address in the url (``tls://127.0.0.1:5039`` to a certificate for a name).
IP_ADDRESS_MISMATCH = 64


def lasting_tls_failure(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it was raised from) is a TLS failure that
    trying again does not mend: a certificate not trusted, a port that does
    not speak TLS. A handshake cut short (an Asterisk restarting) is not."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ssl.SSLCertVerificationError) or (
            isinstance(cause, ssl.SSLError) and cause.reason in NOT_TLS_REASONS
        ):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def tls_hint(exc: ssl.SSLError, verify: bool | str = True, *, ajam: bool = False) -> str:
    """What to do about a failed TLS handshake: the name not in the
    certificate, a certificate not trusted, a port that does not speak TLS.
    ``verify``: the CA file given, which an untrusted certificate names (the
    hint said to set verify, which was set, to another CA). ``ajam``: the
    certificate is http.conf's (AJAM over https://), else manager.conf's."""
    conf = "http.conf" if ajam else "manager.conf"
    doc = "docs/asterisk-ajam.md" if ajam else "docs/asterisk.md, Native TCP AMI"
    code = getattr(exc, "verify_code", None)
    if isinstance(exc, ssl.SSLCertVerificationError) and code == HOSTNAME_MISMATCH:
        return (
            "; the certificate is trusted but not for this host name: put a name it "
            f"holds (its subjectAltName) in the url, or make {conf}'s tlscertfile "
            "for the name callrouter connects to"
        )
    if isinstance(exc, ssl.SSLCertVerificationError) and code == IP_ADDRESS_MISMATCH:
        # Not "not signed by the CA file": the chain is trusted, the address is
        # not among the certificate's subjectAltName IP entries.
        return (
            "; the certificate is trusted but not for this IP address: put a name or "
            f"address it holds (its subjectAltName) in the url, or make {conf}'s "
            "tlscertfile with this address (subjectAltName IP:...)"
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        if isinstance(verify, str):
            return (
                f"; the certificate is not signed by the CA file given as verify ({verify!r}, "
                "router.toml [asterisk] or --ca-file): give the CA that signed "
                f"{conf}'s tlscertfile (a self-signed certificate is its own CA) ({doc})"
            )
        return (
            "; the certificate is not trusted: for a private CA, set "
            'verify = "/path/ca.pem" in router.toml [asterisk], or --ca-file on the '
            f"command line ({doc})"
        )
    if exc.reason in NOT_TLS_REASONS:
        if ajam:
            return (
                "; this port does not speak TLS: use http:// there, or give the http.conf "
                "tlsbindaddr port (tlsenable = yes)"
            )
        return (
            "; this port does not speak TLS: for the plain AMI port use tcp://, "
            "or give the manager.conf tlsbindaddr port (tlsenable = yes, 5039 by default)"
        )
    return ""


def silent_port_hint(tls: bool) -> str:
    """Which url a port that sent no greeting may take: over tcp:// it may be
    AJAM's HTTP port or the manager's TLS port (both wait for the client's
    first bytes: a request, a ClientHello); over tls://, AJAM's HTTPS port."""
    if tls:
        return (
            "Asterisk's HTTPS port (AJAM, http.conf tlsbindaddr) takes an https:// url "
            "with its prefix, the manager's TLS port is manager.conf tlsbindaddr"
        )
    return (
        "Asterisk's HTTP port (AJAM) takes an http:// url with its prefix, the manager's "
        "TLS port (manager.conf tlsbindaddr) a tls:// url; the manager's plain port is "
        "manager.conf [general] port"
    )


def login_refused_hint(username: str, secret_source: str, message: str | None) -> str:
    """What to compare when Asterisk answers a Login ``Authentication
    failed``: it says so alike for a user manager.conf lacks, a wrong secret
    and a host the user's ``deny``/``permit`` refuses, and the bare answer
    named none of them, nor where the secret was read from
    (``secret_source``: ``ClientSettings.secret_source``).

    ``Login Already In Use`` is Asterisk's answer to a user with
    ``allowmultiplelogin = no`` that has a session already (a running
    callrouter, ``callrouter events``): the bare answer named neither the
    setting nor the other session (hast46's trial, Asterisk 22.10)."""
    said = (message or "").strip().lower()
    if said == "login already in use":
        return (
            f" (manager.conf [{username}] has allowmultiplelogin = no and '{username}' is "
            "logged in already: a running callrouter, or callrouter events, ami or check "
            "(over AJAM also one that ended less than manager.conf httptimeout ago); "
            f"set allowmultiplelogin = yes in manager.conf [{username}] and run "
            "asterisk -rx 'manager reload' (a reload keeps the no of a line only removed, "
            "until Asterisk restarts), or give the other tool a manager user of its own; "
            "docs/asterisk-ajam.md)"
        )
    if said != "authentication failed":
        return ""
    source = secret_source
    if source.startswith("env:"):
        where = f"the environment variable {source[4:]}"
    elif source == "command line":
        where = "the command line"
    elif source:
        where = f"{source} [asterisk] secret"
    else:
        where = "the settings"
    user = username
    return (
        f" (Asterisk says so for a user manager.conf lacks, a wrong secret and a host "
        f"the user's deny/permit refuses alike: compare the secret, read from {where}, "
        f"with manager.conf [{user}] secret, and its permit with this host; "
        f"asterisk -rx 'manager show user {user}')"
    )


def unresolved_hint(exc: BaseException, url: str) -> str:
    """What to check when the url's host name did not resolve: the bare
    ``[Errno -2] Name or service not known`` named neither the host nor where
    it was written. ``exc`` may carry the resolver's error in its chain (httpx
    wraps it twice); ``""`` for any other failure."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None or isinstance(seen, socket.gaierror):
            break
        seen = seen.__cause__ or seen.__context__
    if not isinstance(seen, socket.gaierror):
        return ""
    host = urllib.parse.urlsplit(url).hostname or ""
    where = "the url (router.toml [asterisk] url, or --url)"
    if seen.errno == socket.EAI_AGAIN:
        return (
            f"; the name {host!r} could not be looked up now (the resolver did not "
            f"answer): check this host's DNS (getent hosts {host}), or put an address "
            f"in {where}"
        )
    return (
        f"; no address is known for the host name {host!r}: check its spelling in "
        f"{where}, or add it to DNS or /etc/hosts (getent hosts {host})"
    )
