"""Signing keys kept on a PKCS#11 token (an HSM, an agency's USB token; SoftHSM in the tests):
the key never leaves the token, lienthong hands it digests to sign.

A key is named by a PKCS#11 URI (RFC 7512)::

    pkcs11:token=lienthong;object=hub-H41?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/lienthong/hub.pin

The path chooses the token (``token``: its label, ``serial``, ``manufacturer``, ``model``,
``slot-id``) and the private key on it (``object``: its label, and/or ``id``: its CKA_ID,
percent-encoded; ``type=private`` may be said).  The query names the module (``module-path``)
and the PIN (``pin-source``: a file readable by its owner only).  A PIN in the URI itself
(``pin-value``) is refused: URIs end up in configuration files and process lists.

The module is a library loaded into the process, so only one on the allow-list is loaded:
:data:`DEFAULT_MODULES` (Debian's SoftHSM, OpenSC and the p11-kit module directories), or the
patterns a deployment gives (``LIENTHONG_PKCS11_MODULES``); its real path (links resolved) must
match, and it must be writable by its owner alone.  The PIN file must be a regular file (not a
link) of the user running lienthong, readable by it alone.  A PIN the token refuses raises
:class:`PinRefused`: a token locks after a few wrong PINs, so it must not be tried again
(``hub run`` exits :data:`EXIT_PIN_REFUSED`, which ``lienthong up`` does not restart).

:func:`open_key` returns an object implementing cryptography's ``RSAPrivateKey`` or
``EllipticCurvePrivateKey``, so XMLDSig signatures, hop records and receipts are made by the same
code as with a PEM key.  It hashes locally and has the token sign the digest (``CKM_RSA_PKCS``
over a DigestInfo, ``CKM_ECDSA``): the mechanisms every token has.  ``private_bytes`` and
``private_numbers`` raise :class:`TokenError`: the key is not there to give.  Opening a key
signs a probe and checks it with the certificate's public key, so a URI naming the wrong key
fails at start, not at the first message.  One logged-in session per token serves all its keys
in a process, under a lock (a PKCS#11 session is not for concurrent use); a session the token
dropped is opened again, once.

A shared module (the relay loads hub keys with it, the CLI the folder drop's and ``sign``'s):
it imports no other part of lienthong, and its errors are :class:`TokenError`, one sentence,
which callers turn into configuration errors.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, TypeVar
from urllib.parse import unquote_to_bytes

import pkcs11
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa, utils
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass

from broker.i18n import N_

SCHEME = "pkcs11:"
DEFAULT_MODULES = ("/usr/lib/softhsm/*.so", "/usr/lib/*/softhsm/*.so", "/usr/lib/pkcs11/*.so",
                   "/usr/lib/*/pkcs11/*.so", "/usr/lib/*/opensc-pkcs11.so", "/usr/lib/*/onepin-opensc-pkcs11.so")
"""Where a token's PKCS#11 library may be loaded from (real paths; ``*`` is one path segment)."""
EXIT_PIN_REFUSED = 78
"""The exit code of a worker whose token refused its PIN (sysexits' EX_CONFIG): not restarted."""
_TOKEN_ATTRS = ("token", "serial", "manufacturer", "model", "slot-id")
_PATH_ATTRS = {*_TOKEN_ATTRS, "object", "id", "type"}
_QUERY_ATTRS = {"module-path", "pin-source"}
_DIGEST_INFO = {  # RFC 8017, 9.2 note 1: the DER prefix of each hash's DigestInfo
    "sha1": bytes.fromhex("3021300906052b0e03021a05000414"),
    "sha224": bytes.fromhex("302d300d06096086480165030402040500041c"),
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
}
_DROPPED = (pkcs11.SessionHandleInvalid, pkcs11.SessionClosed, pkcs11.UserNotLoggedIn, pkcs11.DeviceRemoved,
            pkcs11.TokenNotPresent, pkcs11.ObjectHandleInvalid, pkcs11.KeyHandleInvalid)


T = TypeVar("T")


class TokenError(Exception):
    """A key on a token cannot be used (module, token, PIN, key); the message is one sentence, kept
    as its English template and fields apart like lienthong's own errors
    (:class:`broker.core.errors.LienthongError`), which the relay turns it into."""

    def __init__(self, message: str, **fields: object) -> None:
        super().__init__(message.format(**fields) if fields else message)
        self.template = message
        self.fields: dict[str, Any] = fields


class PinRefused(TokenError):
    """The token refused the PIN (wrong, or locked): trying it again could lock the token."""


def is_uri(spec: str | os.PathLike[str]) -> bool:
    """Whether a ``--key`` value (or a ``key.pkcs11`` file's content) is a PKCS#11 URI."""
    return str(spec)[:len(SCHEME)].lower() == SCHEME


@dataclass(frozen=True)
class KeyUri:
    """A parsed PKCS#11 URI naming one private key."""

    module: str
    pin_file: Path
    token: tuple[tuple[str, str], ...]
    """The token attributes given, in the order of ``_TOKEN_ATTRS``."""
    label: str | None
    key_id: bytes | None

    @classmethod
    def parse(cls, uri: str) -> KeyUri:
        if not is_uri(uri):
            raise TokenError(N_("{uri!r} is not a PKCS#11 URI (pkcs11:...)"), uri=uri[:40])
        path, _, query = uri.strip()[len(SCHEME):].partition("?")
        attrs, params = _pairs(path, ";", "path"), _pairs(query, "&", "query")
        if "pin-value" in params:
            raise TokenError(N_("a PIN in the PKCS#11 URI (pin-value) is refused: put it in a file readable by its "
                                "owner only and name that file with pin-source"))
        unknown = sorted({*attrs} - _PATH_ATTRS) + sorted({*params} - _QUERY_ATTRS)
        if unknown:
            raise TokenError(N_("the PKCS#11 URI has attribute(s) lienthong does not use: {names}"),
                             names=', '.join(unknown))
        if attrs.get("type", b"private") != b"private":
            raise TokenError(N_("the PKCS#11 URI must name a private key (type=private)"))
        if "object" not in attrs and "id" not in attrs:
            raise TokenError(N_("the PKCS#11 URI names no key: give object= (its label) or id="))
        if "module-path" not in params:
            raise TokenError(N_("the PKCS#11 URI names no module: give module-path= (the token's PKCS#11 library)"))
        if "pin-source" not in params:
            raise TokenError(N_("the PKCS#11 URI names no PIN: give pin-source= (a file readable by its owner only)"))
        pin = _text(params["pin-source"])
        return cls(module=_text(params["module-path"]),
                   pin_file=Path(pin[len("file:"):] if pin.startswith("file:") else pin),
                   token=tuple((a, _text(attrs[a])) for a in _TOKEN_ATTRS if a in attrs),
                   label=_text(attrs["object"]) if "object" in attrs else None, key_id=attrs.get("id"))

    @property
    def key_name(self) -> str:
        parts = ([f"label {self.label!r}"] if self.label is not None else []) + \
            ([f"id {self.key_id.hex()}"] if self.key_id is not None else [])
        return " and ".join(parts)

    @property
    def token_name(self) -> str:
        return ", ".join(f"{a}={v}" for a, v in self.token) or "(any)"


def _pairs(text: str, sep: str, part: str) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for item in filter(None, text.split(sep)):
        name, eq, value = item.partition("=")
        if not eq:
            raise TokenError(N_("the PKCS#11 URI's {part} attribute {name!r} has no value"), part=part, name=name)
        if name in out:
            raise TokenError(N_("the PKCS#11 URI gives {name!r} twice"), name=name)
        out[name] = unquote_to_bytes(value)
    return out


def _text(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise TokenError(N_("a PKCS#11 URI attribute is not UTF-8 once percent-decoded")) from None


def read_pin(path: Path) -> str:
    """The PIN in ``path``: a regular file, not a symbolic link, of the user running lienthong,
    readable by it only (like an SSH key).  Opened without following a link, then checked, so
    the file checked is the file read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise TokenError(N_("the PIN file {path} is a symbolic link: name the file itself"), path=path) from None
        raise TokenError(N_("cannot read the PIN file {path}: {reason}"), path=path, reason=exc.strerror) from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise TokenError(N_("the PIN file {path} is not a regular file"), path=path)
        if st.st_uid != os.geteuid():
            raise TokenError(N_("the PIN file {path} belongs to user {owner}, not to the user running lienthong "
                                "({user})"), path=path, owner=st.st_uid, user=os.geteuid())
        if st.st_mode & 0o077:
            raise TokenError(N_("the PIN file {path} is readable by others: make it private (chmod 600)"), path=path)
        try:
            return f.read().decode("utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise TokenError(N_("cannot read the PIN file {path}: {reason}"), path=path, reason=exc) from None


def allowed_module(module: str, patterns: tuple[str, ...] = DEFAULT_MODULES) -> Path:
    """``module``'s real path, if it is on the allow-list ``patterns`` and writable by its owner
    (root or this user) alone; else :class:`TokenError`."""
    path = Path(module)
    if not path.is_file():
        raise TokenError(N_("the PKCS#11 module {module} does not exist (install the token's driver)"), module=module)
    real = path.resolve()
    if not any(PurePath(real).match(p) for p in patterns or DEFAULT_MODULES):
        raise TokenError(N_("the PKCS#11 module {module} is not among the allowed ones ({allowed}; "
                            "LIENTHONG_PKCS11_MODULES sets them)"), module=real,
                         allowed=', '.join(patterns or DEFAULT_MODULES))
    st = real.stat()
    if st.st_mode & 0o022 or st.st_uid not in (0, os.geteuid()):
        raise TokenError(N_("the PKCS#11 module {module} may be changed by others than root or this user: refused"),
                         module=real)
    return real


class _Token:
    """One token of one module, logged in once for the process, used under a lock."""

    def __init__(self, token: Any, pin: str, name: str) -> None:
        self.token, self.pin, self.name = token, pin, name
        self.lock = threading.Lock()
        self._session: Any = None
        self._keys: dict[tuple[str | None, bytes | None], Any] = {}

    def open(self) -> Any:
        if self._session is None:
            try:
                self._session = self.token.open(user_pin=self.pin)
            except pkcs11.UserAlreadyLoggedIn:  # this process logged in already: sessions share it
                self._session = self.token.open()
            except (pkcs11.PinIncorrect, pkcs11.PinInvalid, pkcs11.PinLenRange):
                raise PinRefused(N_("the PIN is not the user PIN of token {name!r} (wrong PIN)"),
                                 name=self.name) from None
            except pkcs11.PinLocked:
                raise PinRefused(N_("the user PIN of token {name!r} is locked"), name=self.name) from None
            except pkcs11.PKCS11Error as exc:
                raise TokenError(N_("cannot log in to token {name!r}: {reason}"), name=self.name,
                                 reason=_why(exc)) from None
            self._keys.clear()
        return self._session

    def key(self, uri: KeyUri) -> Any:
        """The private key object ``uri`` names (the caller holds the lock)."""
        ref = (uri.label, uri.key_id)
        if ref not in self._keys:
            template: dict[Attribute, Any] = {Attribute.CLASS: ObjectClass.PRIVATE_KEY}
            if uri.label is not None:
                template[Attribute.LABEL] = uri.label
            if uri.key_id is not None:
                template[Attribute.ID] = uri.key_id
            found = list(self.open().get_objects(template))
            if not found:
                raise TokenError(N_("token {name!r} holds no private key with {key_name}"), name=self.name,
                                 key_name=uri.key_name)
            if len(found) > 1:
                raise TokenError(N_("token {name!r} holds {n} private keys with {key_name}; name the one to use by "
                                    "id as well"), name=self.name, n=len(found), key_name=uri.key_name)
            self._keys[ref] = found[0]
        return self._keys[ref]

    def run(self, uri: KeyUri, operation: Callable[[Any], T]) -> T:
        """``operation(key)`` under the lock; a session the token dropped is opened again, once."""
        with self.lock:
            for attempt in (1, 2):
                try:
                    return operation(self.key(uri))
                except _DROPPED as exc:
                    self._session = None
                    self._keys.clear()
                    if attempt == 2:
                        raise TokenError(N_("token {name!r} is not answering: {reason}"), name=self.name,
                                         reason=_why(exc)) from None
                except pkcs11.PKCS11Error as exc:
                    raise TokenError(N_("token {name!r} failed with the key with {key_name}: {reason}"), name=self.name,
                                     key_name=uri.key_name, reason=_why(exc)) from None
        raise AssertionError("unreachable")


_TOKENS: dict[tuple[str, int], _Token] = {}
_TOKENS_LOCK = threading.Lock()


def _why(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


def _token(uri: KeyUri, modules: tuple[str, ...]) -> _Token:
    module = str(allowed_module(uri.module, modules))  # the real path: one library, one key in _TOKENS
    wanted = dict(uri.token)
    matches = []
    try:
        for slot in pkcs11.lib(module).get_slots(token_present=True):
            tok = slot.get_token()
            serial = tok.serial.decode("ascii", "replace") if isinstance(tok.serial, bytes) else str(tok.serial)
            have = {"token": tok.label, "serial": serial.strip(), "manufacturer": tok.manufacturer_id,
                    "model": tok.model, "slot-id": str(slot.slot_id)}
            if all(have[a] == v for a, v in wanted.items()):
                matches.append((slot.slot_id, tok))
    except pkcs11.PKCS11Error as exc:
        raise TokenError(N_("cannot use the PKCS#11 module {module}: {reason}"), module=module,
                         reason=_why(exc)) from None
    if not matches:
        raise TokenError(N_("no token matching {token} is present in {module}"), token=uri.token_name, module=module)
    if len(matches) > 1:
        raise TokenError(N_("{n} tokens match {token} in {module}; name one by serial"), n=len(matches),
                         token=uri.token_name, module=module)
    slot_id, tok = matches[0]
    pin = read_pin(uri.pin_file)
    with _TOKENS_LOCK:
        known = _TOKENS.get((module, slot_id))
        if known is not None:
            if known.pin != pin:  # logged in already: the token would not check this PIN, so we do
                raise PinRefused(N_("token {name!r} is open in this process with another PIN (wrong PIN)"),
                                 name=known.name)
            return known
        token = _Token(tok, pin, tok.label)
        with token.lock:
            token.open()  # logs in: a wrong PIN fails here, and such a token is not kept
        _TOKENS[(module, slot_id)] = token
        return token


def open_key(uri: str, public_key: object, *,
             modules: tuple[str, ...] = DEFAULT_MODULES) -> TokenRSAKey | TokenECKey:
    """The private key ``uri`` names, checked to belong to ``public_key`` (its certificate's);
    its module must match one of ``modules`` (:func:`allowed_module`)."""
    parsed = KeyUri.parse(uri)
    token = _token(parsed, modules)
    key_type = token.run(parsed, lambda k: k.key_type)
    probe = b"lienthong: does this key belong to the certificate?"
    try:
        if key_type == KeyType.RSA and isinstance(public_key, rsa.RSAPublicKey):
            rsa_key = TokenRSAKey(token, parsed, public_key)
            public_key.verify(rsa_key.sign(probe, PKCS1v15(), hashes.SHA256()), probe, PKCS1v15(), hashes.SHA256())
            return rsa_key
        if key_type == KeyType.EC and isinstance(public_key, ec.EllipticCurvePublicKey):
            ec_key = TokenECKey(token, parsed, public_key)
            public_key.verify(ec_key.sign(probe, ec.ECDSA(hashes.SHA256())), probe, ec.ECDSA(hashes.SHA256()))
            return ec_key
    except InvalidSignature:
        pass
    raise TokenError(N_("the key with {key_name} on token {name!r} does not belong to the certificate"),
                     key_name=parsed.key_name, name=token.name)


def _digest(data: Any, algorithm: Any) -> tuple[bytes, hashes.HashAlgorithm]:
    if isinstance(algorithm, utils.Prehashed):
        return bytes(data), algorithm._algorithm
    if not isinstance(algorithm, hashes.HashAlgorithm):
        raise TokenError(N_("a key on a token signs a hash, not {kind}"), kind=type(algorithm).__name__)
    h = hashes.Hash(algorithm)
    h.update(bytes(data))
    return h.finalize(), algorithm


def _no_export() -> TokenError:
    return TokenError(N_("the private key stays on its token: it cannot be exported"))


class TokenRSAKey(rsa.RSAPrivateKey):
    """An RSA key on a token: signs with PKCS#1 v1.5 (the XMLDSig RSA methods)."""

    def __init__(self, token: _Token, uri: KeyUri, public: rsa.RSAPublicKey) -> None:
        self._token, self._uri, self._public = token, uri, public

    def sign(self, data: Any, padding: Any, algorithm: Any) -> bytes:
        if not isinstance(padding, PKCS1v15):
            raise TokenError(N_("a key on a token signs with PKCS#1 v1.5 here"))
        digest, hash_algorithm = _digest(data, algorithm)
        if hash_algorithm.name not in _DIGEST_INFO:
            raise TokenError(N_("a key on a token signs SHA-1 or SHA-2 digests, not {name}"), name=hash_algorithm.name)
        info = _DIGEST_INFO[hash_algorithm.name] + digest
        return self._token.run(self._uri, lambda k: bytes(k.sign(info, mechanism=Mechanism.RSA_PKCS)))

    def decrypt(self, ciphertext: bytes, padding: Any) -> bytes:
        raise TokenError(N_("lienthong uses a key on a token only to sign"))

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def public_key(self) -> rsa.RSAPublicKey:
        return self._public

    def private_numbers(self) -> rsa.RSAPrivateNumbers:
        raise _no_export()

    def private_bytes(self, encoding: Any, format: Any, encryption_algorithm: Any) -> bytes:
        raise _no_export()

    def __copy__(self) -> TokenRSAKey:
        return self

    def __deepcopy__(self, memo: dict[Any, Any]) -> TokenRSAKey:
        return self


class TokenECKey(ec.EllipticCurvePrivateKey):
    """An elliptic-curve key on a token: signs with ECDSA (DER signature, as cryptography's keys)."""

    def __init__(self, token: _Token, uri: KeyUri, public: ec.EllipticCurvePublicKey) -> None:
        self._token, self._uri, self._public = token, uri, public

    def sign(self, data: Any, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        if not isinstance(signature_algorithm, ec.ECDSA):
            raise TokenError(N_("a key on a token signs with ECDSA here"))
        digest, _ = _digest(data, signature_algorithm.algorithm)
        raw = self._token.run(self._uri, lambda k: bytes(k.sign(digest, mechanism=Mechanism.ECDSA)))
        half = len(raw) // 2  # the token answers r || s
        return utils.encode_dss_signature(int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big"))

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        raise TokenError(N_("lienthong uses a key on a token only to sign"))

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._public.curve

    @property
    def key_size(self) -> int:
        return self._public.curve.key_size

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public

    def private_numbers(self) -> ec.EllipticCurvePrivateNumbers:
        raise _no_export()

    def private_bytes(self, encoding: Any, format: Any, encryption_algorithm: Any) -> bytes:
        raise _no_export()

    def __copy__(self) -> TokenECKey:
        return self

    def __deepcopy__(self, memo: dict[Any, Any]) -> TokenECKey:
        return self
