"""Who may do what at a station: roles, permissions, local accounts and the signed-in user (Qt-free).

Three roles, each allowed everything of the one below it:

* operator: run the line (start / stop / step), choose a recipe, mark a verdict as a false call;
* engineer: thresholds, region of interest, category, model and its settings, recipes, calibration,
  training, line outputs;
* administrator: users and the station settings.

Accounts live in one JSON file (`accounts.json` in the user data folder) with scrypt password hashes
(hashlib.scrypt, a random 16-byte salt per password). Sign-in is off by default (a personal
workstation: whoever uses it may do everything and is named by the OS account); the station settings
turn it on, optionally starting locked (operator role until someone signs in) and locking back to the
operator role after some minutes without input.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import json
import os
import re
import secrets
import socket
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

__all__ = ["OPERATOR", "ENGINEER", "ADMINISTRATOR", "LOCKED", "ROLES", "PERMISSIONS", "PermissionDenied", "AccountError",
           "allowed", "role_of", "hash_password", "verify_password", "Account", "StationPolicy", "AccountStore",
           "AccessState", "DEFAULT_SHIFTS"]

OPERATOR, ENGINEER, ADMINISTRATOR = "operator", "engineer", "administrator"
LOCKED = "locked"   # a station set to start locked, before anyone signed in: nothing but signing in
ROLES = (OPERATOR, ENGINEER, ADMINISTRATOR)   # lowest first: each role may do what the ones before it may

# action -> the lowest role allowed to do it
PERMISSIONS = {
    "run": OPERATOR, "choose_recipe": OPERATOR, "false_call": OPERATOR, "source": OPERATOR,
    "thresholds": ENGINEER, "roi": ENGINEER, "category": ENGINEER, "model": ENGINEER, "model_settings": ENGINEER,
    "recipe_edit": ENGINEER, "calibration": ENGINEER, "training": ENGINEER, "line_outputs": ENGINEER,
    "users": ADMINISTRATOR, "station_settings": ADMINISTRATOR,
}
ACTION_TEXT = {
    "run": "start or stop inspection", "choose_recipe": "choose a recipe", "false_call": "mark false calls",
    "source": "open a source", "thresholds": "change thresholds", "roi": "change the region of interest",
    "category": "change the category", "model": "change the model", "model_settings": "change model settings",
    "recipe_edit": "save or delete recipes", "calibration": "calibrate thresholds", "training": "train models",
    "line_outputs": "change the line outputs", "users": "manage users", "station_settings": "change station settings",
}

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 14, 8, 1   # about 50 ms and 16 MB per hash
SALT_BYTES = 16
HASH_BYTES = 32
MIN_PASSWORD = 6
NAME_PATTERN = re.compile(r"^[\w.@-]{1,40}$")
DEFAULT_LOCK_MINUTES = 15.0
DEFAULT_SHIFTS = (("early", "06:00"), ("late", "14:00"), ("night", "22:00"))   # name, start (local time)
ACCOUNTS_FORMAT = "deco-inspector-accounts"


class PermissionDenied(Exception):
    """The signed-in role may not do this; the message says who and what."""


class AccountError(Exception):
    """A bad user name, password or accounts file; the message names the thing and the problem."""


def role_of(name: str) -> str:
    if name not in ROLES:
        raise AccountError(f"role {name!r} is not one of {', '.join(ROLES)}")
    return name


def allowed(role: str, action: str) -> bool:
    """Whether `role` may do `action` (a key of PERMISSIONS)."""
    if action not in PERMISSIONS:
        raise KeyError(f"unknown action {action!r}")
    return role in ROLES and ROLES.index(role) >= ROLES.index(PERMISSIONS[action])


def hash_password(password: str, salt: bytes | None = None) -> str:
    """'scrypt$N$r$p$salt$hash' (base64 salt and hash)."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                            dklen=HASH_BYTES)
    b64 = lambda b: base64.b64encode(b).decode("ascii")  # noqa: E731
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt)}${b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """True when `password` matches a hash from hash_password (constant-time comparison)."""
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        expected = base64.b64decode(digest)
        got = hashlib.scrypt(password.encode("utf-8"), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


@dataclass
class Account:
    name: str
    role: str
    password_hash: str
    created: str = ""


@dataclass
class StationPolicy:
    """The station settings an administrator sets. sign_in: accounts and roles are enforced;
    start_locked: the app starts in the operator role until someone signs in; lock_minutes: without
    input for this long the station locks back to the operator role (0 = never); shifts: (name, 'HH:MM'
    start) in local time, each shift runs until the next one starts."""

    sign_in: bool = False
    start_locked: bool = False
    lock_minutes: float = DEFAULT_LOCK_MINUTES
    station: str = field(default_factory=socket.gethostname)
    shifts: tuple = DEFAULT_SHIFTS

    def __post_init__(self) -> None:
        self.sign_in, self.start_locked = bool(self.sign_in), bool(self.start_locked)
        try:
            self.lock_minutes = max(0.0, float(self.lock_minutes))
        except (TypeError, ValueError):
            raise AccountError(f"lock_minutes must be a number of minutes, got {self.lock_minutes!r}") from None
        self.station = str(self.station or socket.gethostname())
        self.shifts = parse_shifts(self.shifts)


def parse_shifts(shifts) -> tuple:
    """((name, 'HH:MM'), ...) sorted by start; accepts 'early=06:00,late=14:00' or pairs."""
    if isinstance(shifts, str):
        pairs = []
        for item in filter(None, (s.strip() for s in shifts.split(","))):
            name, sep, start = item.partition("=")
            if not sep:
                raise AccountError(f"shift {item!r}: write name=HH:MM")
            pairs.append((name.strip(), start.strip()))
        shifts = pairs
    out = []
    for item in shifts:
        try:
            name, start = item
        except (TypeError, ValueError):
            raise AccountError(f"shift {item!r}: expected a name and a start time") from None
        m = re.fullmatch(r"(\d{1,2}):(\d{2})", str(start))
        if not m or int(m[1]) > 23 or int(m[2]) > 59:
            raise AccountError(f"shift {name!r}: start {start!r} is not a time HH:MM")
        out.append((str(name), f"{int(m[1]):02d}:{m[2]}"))
    if not out:
        raise AccountError("at least one shift is needed")
    if len({s for _, s in out}) != len(out):
        raise AccountError("two shifts start at the same time")
    return tuple(sorted(out, key=lambda s: s[1]))


class AccountStore:
    """The accounts file: users and the station policy, written atomically."""

    def __init__(self, path):
        self.path = Path(path)
        self.accounts: dict[str, Account] = {}
        self.policy = StationPolicy()
        self.load()

    def load(self) -> None:
        if not self.path.is_file():
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("format") != ACCOUNTS_FORMAT:
                raise AccountError(f"{self.path}: not a DeCo Inspector accounts file")
            self.accounts = {a["name"]: Account(**a) for a in data.get("accounts", [])}
            policy = data.get("policy", {})
            self.policy = StationPolicy(**{k: v for k, v in policy.items() if k in StationPolicy.__dataclass_fields__})
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError, KeyError, AttributeError) as e:
            raise AccountError(f"{self.path}: cannot read the accounts ({e})") from None

    def save(self) -> None:
        data = {"format": ACCOUNTS_FORMAT, "version": 1, "policy": asdict(self.policy),
                "accounts": [asdict(a) for a in self.accounts.values()]}
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise AccountError(f"{self.path}: cannot save the accounts ({e.strerror or e})") from None

    def needs_first_administrator(self) -> bool:
        return not any(a.role == ADMINISTRATOR for a in self.accounts.values())

    def add(self, name: str, role: str, password: str, created: str = "") -> Account:
        name = str(name).strip()
        if not NAME_PATTERN.match(name):
            raise AccountError(f"user name {name!r}: 1-40 letters, digits or . _ @ -")
        if name in self.accounts:
            raise AccountError(f"user {name!r} exists already")
        _check_password(password)
        account = Account(name, role_of(role), hash_password(password), created)
        self.accounts[name] = account
        self.save()
        return account

    def _get(self, name: str) -> Account:
        if name not in self.accounts:
            raise AccountError(f"there is no user {name!r}")
        return self.accounts[name]

    def set_role(self, name: str, role: str) -> str:
        """Returns the old role; the last administrator keeps the role."""
        account = self._get(name)
        old = account.role
        if old == ADMINISTRATOR and role != ADMINISTRATOR and self._administrators() == 1:
            raise AccountError(f"{name} is the last administrator")
        self.accounts[name] = replace(account, role=role_of(role))
        self.save()
        return old

    def set_password(self, name: str, password: str) -> None:
        _check_password(password)
        self.accounts[name] = replace(self._get(name), password_hash=hash_password(password))
        self.save()

    def remove(self, name: str) -> Account:
        account = self._get(name)
        if account.role == ADMINISTRATOR and self._administrators() == 1:
            raise AccountError(f"{name} is the last administrator")
        del self.accounts[name]
        self.save()
        return account

    def _administrators(self) -> int:
        return sum(a.role == ADMINISTRATOR for a in self.accounts.values())

    def authenticate(self, name: str, password: str) -> Account | None:
        account = self.accounts.get(str(name).strip())
        if account is None:
            hash_password(password)   # the same time whether or not the user exists
            return None
        return account if verify_password(password, account.password_hash) else None

    def set_policy(self, **changes) -> StationPolicy:
        """Returns the old policy."""
        old = self.policy
        self.policy = replace(old, **changes)
        self.save()
        return old


def _check_password(password: str) -> None:
    if len(password or "") < MIN_PASSWORD:
        raise AccountError(f"a password needs at least {MIN_PASSWORD} characters")


class AccessState:
    """Who is at the station now. With sign-in off everyone is an administrator named by the OS
    account. With it on, nobody signed in means the operator role ('' user), or, on a station set to
    start locked, nothing at all until someone signs in (LOCKED). `touch(now)` on every input;
    `idle_lock(now)` falls back to the operator role after the policy's minutes."""

    def __init__(self, store: AccountStore, now: float = 0.0):
        self.store = store
        self.user = ""
        self.signed_in_role = LOCKED if store.policy.start_locked else OPERATOR
        self.last_input = now

    @property
    def enabled(self) -> bool:
        return self.store.policy.sign_in

    @property
    def role(self) -> str:
        return self.signed_in_role if self.enabled else ADMINISTRATOR

    @property
    def who(self) -> str:
        """The name the audit trail records."""
        if not self.enabled:
            return _os_user()
        return self.user or "operator (not signed in)"

    def describe(self) -> str:
        if not self.enabled:
            return f"{_os_user()} (sign-in off)"
        if self.role == LOCKED:
            return "locked: sign in"
        return f"{self.user} ({self.role})" if self.user else "operator (not signed in)"

    def may(self, action: str) -> bool:
        return allowed(self.role, action)

    def require(self, action: str) -> None:
        if not self.may(action):
            raise PermissionDenied(f"{self.describe()}: may not {ACTION_TEXT.get(action, action)}, "
                                   f"this needs the {PERMISSIONS[action]} role (sign in)")

    def sign_in(self, name: str, password: str, now: float = 0.0) -> Account:
        account = self.store.authenticate(name, password)
        if account is None:
            raise AccountError("wrong user name or password")
        self.user, self.signed_in_role, self.last_input = account.name, account.role, now
        return account

    def sign_out(self) -> None:
        self.user, self.signed_in_role = "", OPERATOR

    def policy_changed(self) -> None:
        """The station settings changed while running: nobody signed in means the operator role now."""
        if not self.user:
            self.signed_in_role = OPERATOR

    def touch(self, now: float) -> None:
        self.last_input = now

    def idle(self, now: float) -> bool:
        """Someone is signed in and there was no input for the policy's minutes."""
        minutes = self.store.policy.lock_minutes
        return self.enabled and bool(self.user) and minutes > 0 and now - self.last_input >= minutes * 60.0

    def idle_lock(self, now: float) -> bool:
        """Lock back to the operator role when idle too long; True when it just locked."""
        if not self.idle(now):
            return False
        self.sign_out()
        return True


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "local user"
