"""Named Daraja accounts: one gateway serving several PayBills, Tills and B2C shortcodes.

A business rarely has one Daraja account: a PayBill (or an HO) takes STK pushes and C2B
payments, a Till takes Buy Goods, a B2C shortcode pays out with its own app credentials and
its own initiator. :class:`Accounts` holds them by name, with a default for calls that name
none.

Where they come from (:meth:`Accounts.from_settings`):

- the single-account ``PESA_*`` variables (``PESA_SHORTCODE``, ``PESA_PASSKEY``,
  ``PESA_CONSUMER_KEY``, ...) make the account named ``default``, exactly as before;
- ``PESA_ACCOUNTS_FILE`` names a TOML file of further accounts, one table each, with the
  same keys as those variables (lower case, without ``PESA_``)::

      default = "paybill"              # used when a call names no account

      [accounts.paybill]
      shortcode = "600997"
      passkey = { env = "PAYBILL_PASSKEY" }        # a secret: inline, from a variable,
      consumer_key = "..."                         # or { file = "/run/secrets/..." }
      consumer_secret = { env = "PAYBILL_SECRET" }
      c2b_register = true

      [accounts.shop]
      extends = "paybill"                          # every key not given here, except
      till = "5123456"                             # c2b_register

Everything is validated when the gateway starts, and every problem is reported at once
(:class:`pesa.ConfigurationError`). Secrets are :class:`pydantic.SecretStr`: never printed,
logged or put in an error message.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, SecretStr

from pesa._exceptions import ConfigurationError, ValidationError
from pesa.daraja import validate_shortcode

if TYPE_CHECKING:
    from pesa.config import Settings

__all__ = ["ACCOUNT_NAME_PATTERN", "DEFAULT_ACCOUNT", "Account", "Accounts"]

DEFAULT_ACCOUNT: Final = "default"
"""The name of the account the single-account ``PESA_*`` variables make."""

ACCOUNT_NAME_PATTERN: Final = r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}"
_NAME = re.compile(ACCOUNT_NAME_PATTERN)

C2BVersion = Literal[1, 2]
C2BResponseType = Literal["Completed", "Cancelled"]

# Keys an account table may have, and how each is read.
_SECRETS: Final = ("consumer_key", "consumer_secret", "passkey", "initiator_password")
_TEXTS: Final = ("initiator_name",)
_SHORTCODES: Final = ("shortcode", "till")
_KEYS: Final = frozenset(
    {
        *_SECRETS,
        *_TEXTS,
        *_SHORTCODES,
        "certificate_path",
        "c2b_register",
        "c2b_version",
        "c2b_response_type",
        "extends",
    }
)
# Keys that come in pairs: one without the other cannot be used.
_PAIRS: Final = (
    ("consumer_key", "consumer_secret"),
    ("initiator_name", "initiator_password"),
)


class Account(BaseModel):
    """One Daraja account: a shortcode and the credentials that act for it.

    Attributes:
        name: how API calls name it (``account`` in ``POST /v1/payments``, ...).
        shortcode: the PayBill, HO or organisation shortcode (``BusinessShortCode`` of STK
            pushes, ``ShortCode`` of C2B registration, ``PartyA`` of initiator APIs).
        till: a till number: STK pushes on this account are Buy Goods (``PartyB`` = till),
            and C2B payments to the till are this account's.
        consumer_key, consumer_secret: the Daraja app acting for this shortcode.
        passkey: the Lipa Na M-Pesa Online passkey (STK push and query).
        initiator_name, initiator_password: the API operator of the initiator APIs
            (Transaction Status, B2C, balance, reversal).
        certificate_path: the certificate the initiator password is encrypted with.
        c2b_register: register this shortcode's C2B URLs when the gateway starts.
        c2b_version: the C2B product on the app (1 sends hashed MSISDNs, 2 masked ones).
        c2b_response_type: what Daraja does when the validation URL does not answer in time.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    shortcode: str | None = None
    till: str | None = None
    consumer_key: SecretStr | None = None
    consumer_secret: SecretStr | None = None
    passkey: SecretStr | None = None
    initiator_name: str | None = None
    initiator_password: SecretStr | None = None
    certificate_path: Path | None = None
    c2b_register: bool = False
    c2b_version: C2BVersion = 2
    c2b_response_type: C2BResponseType = "Completed"

    @property
    def can_push(self) -> bool:
        """Whether STK pushes can be sent on this account (a shortcode and its passkey)."""
        return self.shortcode is not None and self.passkey is not None

    @property
    def has_initiator(self) -> bool:
        """Whether initiator APIs (Transaction Status, B2C, ...) can be called for it."""
        return self.initiator_name is not None and self.initiator_password is not None

    @property
    def c2b_shortcodes(self) -> tuple[str, ...]:
        """The shortcodes whose C2B payments are this account's (its till first)."""
        return tuple(code for code in (self.till, self.shortcode) if code)

    def client_options(self) -> dict[str, Any]:
        """The keyword arguments of :class:`pesa.AsyncDaraja` for this account (secrets as
        plain strings: pass them to the client, never to a log)."""

        def plain(value: SecretStr | None) -> str | None:
            return None if value is None else value.get_secret_value()

        return {
            "shortcode": self.shortcode,
            "till": self.till,
            "consumer_key": plain(self.consumer_key),
            "consumer_secret": plain(self.consumer_secret),
            "passkey": plain(self.passkey),
            "initiator_name": self.initiator_name,
            "initiator_password": plain(self.initiator_password),
            "certificate_path": self.certificate_path,
        }

    def describe(self, *, default: bool = False) -> dict[str, Any]:
        """What the API shows of this account: never a secret."""
        return {
            "name": self.name,
            "default": default,
            "shortcode": self.shortcode,
            "till": self.till,
            "stk": self.can_push,
            "initiator": self.has_initiator,
            "c2b_register": self.c2b_register,
            "c2b_version": self.c2b_version,
            "c2b_response_type": self.c2b_response_type,
        }


class Accounts(Mapping[str, Account]):
    """The named accounts of one gateway, and which one calls get when they name none.

    Example:
        >>> accounts = Accounts([Account(name="paybill", shortcode="600997")], "paybill")
        >>> accounts.resolve(None).shortcode
        '600997'
        >>> accounts.resolve("nope")
        Traceback (most recent call last):
        ...
        pesa._exceptions.ValidationError: account: must be one of paybill (got 'nope')
    """

    def __init__(self, accounts: Iterable[Account], default: str) -> None:
        self._accounts: dict[str, Account] = {}
        for account in accounts:
            if account.name in self._accounts:
                raise ConfigurationError(f"account {account.name!r} is defined twice")
            self._accounts[account.name] = account
        if default not in self._accounts:
            raise ConfigurationError(f"the default account {default!r} is not defined")
        self._default = default

    def __getitem__(self, name: str) -> Account:
        return self._accounts[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._accounts)

    def __len__(self) -> int:
        return len(self._accounts)

    def __repr__(self) -> str:
        return f"Accounts({', '.join(self._accounts)}; default={self._default!r})"

    @property
    def default_name(self) -> str:
        """The name of the account calls get when they name none."""
        return self._default

    @property
    def default(self) -> Account:
        """The account calls get when they name none."""
        return self._accounts[self._default]

    def resolve(self, name: str | None, *, field: str = "account") -> Account:
        """The account called ``name``, or the default one for ``None``.

        Raises:
            ValidationError: no account has this name (names the field and the choices).
        """
        if name is None:
            return self.default
        account = self._accounts.get(name) if isinstance(name, str) else None
        if account is None:
            raise ValidationError(field, f"must be one of {', '.join(self._accounts)}", name)
        return account

    def for_shortcode(self, shortcode: str) -> Account | None:
        """The account whose C2B payments go to ``shortcode`` (a till, or a shortcode).

        A till beats a shortcode; among accounts sharing a shortcode, the one that registers
        C2B URLs wins, then the first defined.
        """
        code = shortcode.strip()
        tills = [a for a in self._accounts.values() if a.till == code]
        if tills:
            return tills[0]
        owners = [a for a in self._accounts.values() if a.shortcode == code]
        owners.sort(key=lambda a: not a.c2b_register)
        return owners[0] if owners else None

    def describe(self) -> list[dict[str, Any]]:
        """Every account as the API shows it (no secrets), the default marked."""
        return [a.describe(default=a.name == self._default) for a in self._accounts.values()]

    # -- loading --------------------------------------------------------------------------

    @classmethod
    def from_settings(
        cls, settings: Settings, *, environ: Mapping[str, str] | None = None
    ) -> Accounts:
        """The accounts of a gateway: ``default`` from ``PESA_*``, others from the file.

        The single-account variables make the account ``default`` when any of them is set,
        or when there is no accounts file. The file's top-level ``default`` key chooses the
        default account; without it, ``default`` is, or else the file's only account.

        Args:
            settings: the settings (``accounts_file`` and the single-account variables).
            environ: where ``{ env = "NAME" }`` secrets are read (``os.environ`` when
                omitted).

        Raises:
            ConfigurationError: every problem found, one per line, each naming the account
                and the key (or the ``PESA_*`` variable).
        """
        problems: list[str] = []
        accounts: list[Account] = []
        env_account = _env_account(settings, problems)
        file_default: str | None = None
        defined: set[str] = set()  # every name the file defines, even a broken account's
        if settings.accounts_file is not None:
            loaded, file_default, defined = _load_file(
                settings.accounts_file, environ if environ is not None else os.environ, problems
            )
            if env_account is not None and DEFAULT_ACCOUNT in {a.name for a in loaded}:
                problems.append(
                    f"accounts.{DEFAULT_ACCOUNT}: the name {DEFAULT_ACCOUNT!r} belongs to the "
                    "account of the PESA_SHORTCODE/PESA_CONSUMER_KEY/... variables; "
                    "rename the table or unset those variables"
                )
            accounts.extend(loaded)
        if env_account is not None:
            accounts.insert(0, env_account)
        names = [a.name for a in accounts]
        default = file_default
        if default is None:
            if DEFAULT_ACCOUNT in names:
                default = DEFAULT_ACCOUNT
            elif len(names) == 1:
                default = names[0]
            elif names:
                problems.append(
                    f"default: several accounts ({', '.join(names)}) and none is the default; "
                    'add default = "<name>" to the accounts file'
                )
        elif default not in names and default not in defined:
            known = ", ".join(dict.fromkeys([*names, *defined])) or "none"
            problems.append(f"default: {default!r} is not an account (have {known})")
        if not accounts and not problems:
            problems.append("the accounts file defines no account ([accounts.<name>] tables)")
        _check_c2b_owners(accounts, problems)
        if problems:
            source = (
                f"PESA_ACCOUNTS_FILE ({settings.accounts_file})"
                if settings.accounts_file is not None
                else "the account settings"
            )
            count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
            raise ConfigurationError(
                f"{source}: {count}:\n" + "\n".join(f"  - {p}" for p in problems)
            )
        assert default is not None
        return cls(accounts, default)


def _env_account(settings: Settings, problems: list[str]) -> Account | None:
    """The ``default`` account of the single-account ``PESA_*`` variables, if any is set."""
    values: dict[str, Any] = {
        name: getattr(settings, name)
        for name in (*_SECRETS, *_TEXTS, *_SHORTCODES, "certificate_path")
    }
    if settings.accounts_file is not None and all(v in (None, "") for v in values.values()):
        return None
    for name in _SHORTCODES:
        if values[name] not in (None, ""):
            try:
                values[name] = validate_shortcode(values[name], field=name)
            except ValidationError as err:
                problems.append(f"PESA_{name.upper()}: {err.rule} (got {values[name]!r})")
                values[name] = None
        else:
            values[name] = None
    for name in (*_SECRETS, *_TEXTS):
        value = values[name]
        if isinstance(value, SecretStr) and not value.get_secret_value() or value == "":
            values[name] = None
    return Account(
        name=DEFAULT_ACCOUNT,
        c2b_register=settings.c2b_register,
        c2b_version=settings.c2b_version,
        c2b_response_type=settings.c2b_response_type,
        **values,
    )


def _load_file(
    path: Path, environ: Mapping[str, str], problems: list[str]
) -> tuple[list[Account], str | None, set[str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        problems.append(f"cannot read {path}: {err.strerror or err}")
        return [], None, set()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        problems.append(f"not valid TOML: {err}")
        return [], None, set()
    for key in data:
        if key not in ("default", "accounts"):
            problems.append(f"{key}: unknown key (the file has 'default' and [accounts.<name>])")
    default = data.get("default")
    if default is not None and not isinstance(default, str):
        problems.append("default: must be the name of an account (a string)")
        default = None
    tables = data.get("accounts", {})
    if not isinstance(tables, dict):
        problems.append("accounts: must be tables, [accounts.<name>]")
        return [], default, set()
    raw: dict[str, dict[str, Any]] = {}
    for name, table in tables.items():
        where = f"accounts.{name}"
        if _NAME.fullmatch(name) is None:
            problems.append(
                f"{where}: the name must be 1 to 32 letters, digits, '-' or '_' "
                "(starting with a letter or digit)"
            )
            continue
        if not isinstance(table, dict):
            problems.append(f"{where}: must be a table ([{where}])")
            continue
        for key in table:
            if key not in _KEYS:
                problems.append(f"{where}.{key}: unknown key (allowed: {', '.join(sorted(_KEYS))})")
        raw[name] = table
    resolved = {name: _inherit(name, raw, problems) for name in raw}
    accounts = []
    for name, table in resolved.items():
        account = _account(name, table, path.parent, environ, problems)
        if account is not None:
            accounts.append(account)
    return accounts, default, set(raw)


def _inherit(name: str, raw: Mapping[str, dict[str, Any]], problems: list[str]) -> dict[str, Any]:
    """The table of ``name`` with every key it does not set taken from what it extends."""
    chain = [name]
    table = dict(raw[name])
    parent = table.pop("extends", None)
    while parent is not None:
        where = f"accounts.{chain[-1]}.extends"
        if not isinstance(parent, str) or parent not in raw:
            problems.append(f"{where}: {parent!r} is not an account in this file")
            break
        if parent in chain:
            if chain[0] == name:
                problems.append(f"{where}: a cycle ({' -> '.join([*chain, parent])})")
            break
        chain.append(parent)
        base = dict(raw[parent])
        parent = base.pop("extends", None)
        # A registration belongs to one account: c2b_register is never inherited.
        base.pop("c2b_register", None)
        table = {**base, **table}
    return table


def _account(
    name: str,
    table: Mapping[str, Any],
    base_dir: Path,
    environ: Mapping[str, str],
    problems: list[str],
) -> Account | None:
    where = f"accounts.{name}"
    values: dict[str, Any] = {}
    before = len(problems)
    for key in _SECRETS:
        if key in table:
            text = _text(table[key], f"{where}.{key}", base_dir, environ, problems, secret=True)
            if text is not None:
                values[key] = SecretStr(text)
    for key in _TEXTS:
        if key in table:
            values[key] = _text(table[key], f"{where}.{key}", base_dir, environ, problems)
    for key in _SHORTCODES:
        if key in table:
            raw = table[key]
            if isinstance(raw, dict):
                raw = _text(raw, f"{where}.{key}", base_dir, environ, problems)
            if raw is None:
                continue
            try:
                values[key] = validate_shortcode(raw, field=key)
            except ValidationError as err:
                problems.append(f"{where}.{key}: {err.rule} (got {raw!r})")
    if "certificate_path" in table:
        raw = _text(table["certificate_path"], f"{where}.certificate_path", base_dir, environ, [])
        if raw is None:
            problems.append(f"{where}.certificate_path: must be a path (a string)")
        else:
            path = Path(raw).expanduser()
            path = path if path.is_absolute() else base_dir / path
            if not path.is_file():
                problems.append(f"{where}.certificate_path: no such file: {path}")
            values["certificate_path"] = path
    if "c2b_register" in table:
        flag = table["c2b_register"]
        if isinstance(flag, bool):
            values["c2b_register"] = flag
        else:
            problems.append(f"{where}.c2b_register: must be true or false")
    if "c2b_version" in table:
        version = table["c2b_version"]
        if version in (1, 2) and not isinstance(version, bool):
            values["c2b_version"] = version
        else:
            problems.append(f"{where}.c2b_version: must be 1 or 2 (got {version!r})")
    if "c2b_response_type" in table:
        response = table["c2b_response_type"]
        if response in ("Completed", "Cancelled"):
            values["c2b_response_type"] = response
        else:
            problems.append(
                f"{where}.c2b_response_type: must be 'Completed' or 'Cancelled' "
                f"(Daraja's spelling; got {response!r})"
            )
    for first, second in _PAIRS:
        if (first in values) != (second in values):
            given, missing = (first, second) if first in values else (second, first)
            problems.append(f"{where}: {given} is set but {missing} is not (they go together)")
    if "passkey" in values and "shortcode" not in values:
        problems.append(f"{where}: passkey is set but shortcode is not (STK needs both)")
    if values.get("c2b_register") and "shortcode" not in values:
        problems.append(f"{where}: c2b_register needs a shortcode to register")
    if len(problems) > before:
        return None
    return Account(name=name, **values)


def _text(
    value: Any,
    where: str,
    base_dir: Path,
    environ: Mapping[str, str],
    problems: list[str],
    *,
    secret: bool = False,
) -> str | None:
    """A string value: given inline, or ``{ env = "NAME" }``, or ``{ file = "path" }``."""
    if isinstance(value, bool):
        problems.append(f"{where}: must be a string")
        return None
    if isinstance(value, str | int):
        text = str(value).strip()
        if not text:
            problems.append(f"{where}: must not be empty")
            return None
        return text
    if isinstance(value, dict) and len(value) == 1:
        ((kind, ref),) = value.items()
        if kind == "env" and isinstance(ref, str):
            found = environ.get(ref)
            if found is None or not found.strip():
                problems.append(f"{where}: the variable {ref} is not set")
                return None
            return found.strip()
        if kind == "file" and isinstance(ref, str):
            path = Path(ref).expanduser()
            path = path if path.is_absolute() else base_dir / path
            try:
                content = path.read_text(encoding="utf-8").strip()
            except OSError as err:
                problems.append(f"{where}: cannot read {path}: {err.strerror or err}")
                return None
            if not content:
                problems.append(f"{where}: {path} is empty")
                return None
            return content
    kinds = '"...", { env = "NAME" } or { file = "path" }'
    if not secret:
        kinds = '"..." or { env = "NAME" }'
    problems.append(f"{where}: must be {kinds}")
    return None


def _check_c2b_owners(accounts: list[Account], problems: list[str]) -> None:
    """Two accounts registering C2B URLs for one shortcode cannot both own its payments."""
    owners: dict[str, str] = {}
    for account in accounts:
        if not account.c2b_register or account.shortcode is None:
            continue
        other = owners.setdefault(account.shortcode, account.name)
        if other != account.name:
            problems.append(
                f"accounts.{account.name}.c2b_register: account {other!r} already registers "
                f"C2B URLs for shortcode {account.shortcode}"
            )
