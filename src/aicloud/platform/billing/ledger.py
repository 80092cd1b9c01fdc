"""The double-entry ledger: accounts, all-or-nothing batches of transfers, reversals.

Transfers are append-only (the database refuses UPDATE and DELETE, see the migration). Each
account row caches the sum of its debits and credits; the cache is written in the transaction
that posts the transfers, after locking the account rows in id order (PostgreSQL) so that
concurrent posters never deadlock and never lose an update. SQLite serializes writers already.
"""

from __future__ import annotations

import functools
import json
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from operator import eq
from types import MappingProxyType
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, Select, and_, bindparam, func, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

from aicloud.platform import audit
from aicloud.platform.billing.models import AccountModel, HoldModel, TransferModel
from aicloud.platform.billing.money import CURRENCIES, MAX_AMOUNT, check_amount, check_currency
from aicloud.platform.billing.schemas import Account, Balance, Transfer
from aicloud.platform.billing.scopes import check_org
from aicloud.shared.clock import utcnow
from aicloud.shared.db import UTCDateTime, bulk
from aicloud.shared.errors import Conflict, NotFound, ValidationFailed
from aicloud.shared.idempotency import MAX_KEY_LENGTH, validate_key
from aicloud.shared.ids import int64_key, new_id, new_ids

ACCOUNT_TYPES = ("asset", "liability", "revenue", "expense")
OWNER_TYPES = ("platform", "organization", "department", "project")
DEBIT_NORMAL = frozenset({"asset", "expense"})
REASONS = frozenset({"usage", "hold_post", "top_up", "adjustment", "reversal", "transfer"})

# Platform accounts, one per currency: where top-up money comes from, where usage revenue
# goes, and the expense that balances goodwill adjustments.
PLATFORM_ACCOUNTS = {"funding": "asset", "revenue": "revenue", "adjustments": "expense"}


class TransferSpec(NamedTuple):
    """One transfer to post. A named tuple, not a dataclass: batches hold thousands, and a
    tuple is built several times faster and transposes into columns with one ``zip``."""

    debit_account_id: str
    credit_account_id: str
    amount: int
    currency: str
    idempotency_key: str
    reason: str
    usage_id: str | None = None
    hold_id: str | None = None
    cause_type: str | None = None
    cause_id: str | None = None
    reverses_transfer_id: str | None = None
    metadata: Mapping[str, Any] = MappingProxyType({})


# The transfer columns TransferSpec's fields fill, in field order.
_SPEC_COLUMNS = ("debit_account_id", "credit_account_id", "amount", "currency",
                 "idempotency_key", "reason", "usage_id", "hold_id", "cause_type", "cause_id",
                 "reverses_transfer_id", "metadata_json")


class Posted(NamedTuple):
    id: str
    idempotency_key: str
    replayed: bool


@functools.lru_cache(maxsize=65536)
def account_key(account_id: str) -> int:
    """The compact key transfers are indexed by for an account: a signed 64-bit hash of its
    id (BLAKE2b). Not unique by construction; every query also matches the id."""
    return int64_key(account_id)


def touches(account_id: str) -> ColumnElement[bool]:
    """Transfers debiting or crediting the account, through the account-key indexes."""
    T, key = TransferModel, account_key(account_id)
    return or_(and_(T.debit_key == key, T.debit_account_id == account_id),
               and_(T.credit_key == key, T.credit_account_id == account_id))


# Keys clients send (top-ups, adjustments, holds over the API) are stored under a prefix
# naming the operation, so one operation's key can never replay another's; this leaves
# room for the prefix within the key column.
MAX_CLIENT_KEY_LENGTH = 200


def namespaced_key(prefix: str, client_key: str) -> str:
    """The ledger key for a client's idempotency key, checked with a message naming it."""
    validate_key(client_key)
    if len(client_key) > MAX_CLIENT_KEY_LENGTH:
        raise ValidationFailed(f"the idempotency key is longer than {MAX_CLIENT_KEY_LENGTH} "
                               "characters", field="idempotency_key")
    return prefix + client_key


def normal_balance(account_type: str, debits: int, credits: int) -> int:
    return debits - credits if account_type in DEBIT_NORMAL else credits - debits


def account_model_to_account(m: AccountModel) -> Account:
    return Account(
        id=m.id, type=m.type, currency=m.currency, owner_type=m.owner_type,  # type: ignore[arg-type]
        owner_id=m.owner_id, scope_path=m.scope_path, purpose=m.purpose,
        enforce_floor=m.enforce_floor, credit_limit=m.credit_limit,
        strict_non_negative=m.strict_non_negative, debits_posted=m.debits_posted,
        credits_posted=m.credits_posted,
        balance=normal_balance(m.type, m.debits_posted, m.credits_posted),
    )


def transfer_model_to_transfer(m: TransferModel) -> Transfer:
    return Transfer(
        id=m.id, seq=m.seq, debit_account_id=m.debit_account_id,
        credit_account_id=m.credit_account_id, amount=m.amount, currency=m.currency,
        idempotency_key=m.idempotency_key, reason=m.reason, usage_id=m.usage_id,
        hold_id=m.hold_id, cause_type=m.cause_type, cause_id=m.cause_id,
        reverses_transfer_id=m.reverses_transfer_id, metadata=json.loads(m.metadata_json),
        posted_at=m.posted_at,
    )


def _insert(session: Session):  # type: ignore[no-untyped-def]
    return pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert


def ensure_account(
    session: Session, *, type: str, currency: str, owner_type: str, owner_id: str,
    scope_path: str, purpose: str, enforce_floor: bool = False,
    strict_non_negative: bool = False,
) -> AccountModel:
    """The account of (owner, purpose, currency), created on first use without racing."""
    if type not in ACCOUNT_TYPES:
        raise ValidationFailed(f"account type must be one of {', '.join(ACCOUNT_TYPES)}")
    if owner_type not in OWNER_TYPES:
        raise ValidationFailed(f"owner type must be one of {', '.join(OWNER_TYPES)}")
    check_currency(currency)
    found = _find_account(session, owner_type, owner_id, purpose, currency)
    if found is not None:
        return found
    session.execute(
        _insert(session)(AccountModel).values(
            id=new_id("acct"), type=type, currency=currency, owner_type=owner_type,
            owner_id=owner_id, scope_path=scope_path, purpose=purpose,
            enforce_floor=enforce_floor, credit_limit=0,
            strict_non_negative=strict_non_negative, debits_posted=0, credits_posted=0,
            created_at=utcnow(),
        ).on_conflict_do_nothing()
    )
    found = _find_account(session, owner_type, owner_id, purpose, currency)
    assert found is not None
    return found


def _find_account(session: Session, owner_type: str, owner_id: str, purpose: str,
                  currency: str) -> AccountModel | None:
    return session.scalar(select(AccountModel).where(
        AccountModel.owner_type == owner_type, AccountModel.owner_id == owner_id,
        AccountModel.purpose == purpose, AccountModel.currency == currency))


def org_wallet(session: Session, org_id: str, currency: str) -> AccountModel:
    """An organization's prepaid wallet: what the platform owes it (a liability). Created on
    first use, only for an organization that exists in IAM."""
    found = find_wallet(session, org_id, currency)
    if found is not None:
        return found
    check_org(session, org_id)
    return ensure_account(
        session, type="liability", currency=currency, owner_type="organization",
        owner_id=org_id, scope_path=f"/{org_id}", purpose="wallet", enforce_floor=True)


def charge_accounts(session: Session, wallets: Iterable[tuple[str, str]],
                    ) -> tuple[dict[tuple[str, str], str], dict[str, str]]:
    """The account ids that charges to these (organization, currency) wallets move money
    between: the wallets, and the platform's revenue account of each currency. Made where
    missing (as org_wallet and platform_account make them); one query when they all exist,
    as for every batch of usage but an organization's first."""
    pairs = set(wallets)
    currencies = {currency for _, currency in pairs}
    found: dict[tuple[str, str], str] = {}
    revenue: dict[str, str] = {}
    if pairs:
        A = AccountModel
        for account_id, owner_type, owner_id, currency in session.connection().execute(
                select(A.id, A.owner_type, A.owner_id, A.currency).where(or_(
                    and_(A.owner_type == "organization", bulk.in_values(A.owner_id, "orgs"),
                         A.purpose == "wallet"),
                    and_(A.owner_type == "platform", A.owner_id == "platform",
                         A.purpose == "revenue"))),
                {"orgs": sorted({org for org, _ in pairs})}):
            if owner_type == "platform" and currency in currencies:
                revenue[currency] = account_id
            elif (owner_id, currency) in pairs:
                found[owner_id, currency] = account_id
        for org_id, currency in sorted(pairs - found.keys()):
            found[org_id, currency] = org_wallet(session, org_id, currency).id
        for currency in sorted(currencies - revenue.keys()):
            revenue[currency] = platform_account(session, "revenue", currency).id
    return found, revenue


def find_wallet(session: Session, org_id: str, currency: str) -> AccountModel | None:
    return _find_account(session, "organization", org_id, "wallet", currency)


def wallet_balance(session: Session, org_id: str, currency: str,
                   now: datetime | None = None) -> Balance:
    """An org wallet's balance without creating the wallet (a read never writes): zeros
    before the first transfer."""
    check_currency(currency)
    found = find_wallet(session, org_id, currency)
    if found is None:
        return Balance(account_id=None, currency=currency, posted=0, held=0, available=0,
                       credit_limit=0)
    return balance(session, found.id, now)


def wallet_transfers(session: Session, org_id: str, currency: str, *, limit: int = 100,
                     after_seq: int = 0) -> list[Transfer]:
    """Transfers touching an org wallet, oldest first, after ``after_seq``."""
    check_currency(currency)
    found = find_wallet(session, org_id, currency)
    return [] if found is None else list_transfers(session, found.id, limit=limit,
                                                   after_seq=after_seq)


def platform_account(session: Session, purpose: str, currency: str) -> AccountModel:
    return ensure_account(
        session, type=PLATFORM_ACCOUNTS[purpose], currency=currency, owner_type="platform",
        owner_id="platform", scope_path="/", purpose=purpose)


def get_account(session: Session, account_id: str) -> AccountModel:
    m = session.get(AccountModel, account_id)
    if m is None:
        raise NotFound(f"account {account_id} not found")
    return m


def held_amount(session: Session, account_id: str, now: datetime | None = None) -> int:
    """Funds reserved by open holds (expired holds no longer reserve anything)."""
    return held_amounts(session, [account_id], now).get(account_id, 0)


def held_amounts(session: Session, account_ids: Iterable[str],
                 now: datetime | None = None,
                 excluding: Collection[str] = ()) -> dict[str, int]:
    ids = list(account_ids)
    if not ids:
        return {}
    H = HoldModel
    stmt = select(H.account_id, func.sum(H.amount)).where(
        bulk.in_values(H.account_id, "ids"), H.status == "pending",
        H.expires_at > (now or utcnow()))
    if excluding:
        stmt = stmt.where(H.id.not_in(sorted(excluding)))
    rows = session.execute(stmt.group_by(H.account_id), {"ids": ids})
    return {a: int(total) for a, total in rows}


def balance(session: Session, account_id: str, now: datetime | None = None, *,
            excluding_holds: Collection[str] = ()) -> Balance:
    """Posted, held and available. ``excluding_holds``: holds not to count as held (a
    product judging whether running work can go on leaves out that work's own
    reservations, whose cost the usage charges already carry)."""
    m = get_account(session, account_id)
    posted = normal_balance(m.type, m.debits_posted, m.credits_posted)
    held = held_amounts(session, [account_id], now, excluding_holds).get(account_id, 0)
    return Balance(account_id=m.id, currency=m.currency, posted=posted, held=held,
                   available=posted - held, credit_limit=m.credit_limit)


def lock_accounts(session: Session, account_ids: Iterable[str]) -> dict[str, AccountModel]:
    """Load accounts with row locks, always in id order so lockers never deadlock."""
    ids = sorted(set(account_ids))
    rows = session.scalars(
        select(AccountModel).where(AccountModel.id.in_(ids)).order_by(AccountModel.id)
        .with_for_update().execution_options(populate_existing=True)).all()
    found = {a.id: a for a in rows}
    missing = [i for i in ids if i not in found]
    if missing:
        raise ValidationFailed(f"unknown account(s): {', '.join(missing)}", field="account_id")
    return found


# What posting needs of each account it touches, read without the ORM (a batch touches few
# accounts, but loading them as objects costs more than the rest of the look-up), with the
# funds its open holds reserve: one statement instead of two. Built once: constructing a
# statement this size costs more than running it.
def _account_states_statement() -> Select[Any]:
    A, H = AccountModel, HoldModel
    held = select(func.coalesce(func.sum(H.amount), 0)).where(
        H.account_id == A.id, H.status == "pending",
        H.expires_at > bindparam("now", type_=UTCDateTime())).correlate(A).scalar_subquery()
    return (select(A.id, A.type, A.currency, A.enforce_floor, A.credit_limit,
                   A.strict_non_negative, A.debits_posted, A.credits_posted, A.closed_through,
                   held.label("held"))
            .where(bulk.in_values(A.id, "ids")).order_by(A.id).with_for_update(of=A))


_ACCOUNT_STATES = _account_states_statement()


def _lock_account_states(session: Session, account_ids: Iterable[str],
                         now: datetime) -> dict[str, Any]:
    """lock_accounts for posting: the same locks in the same order, rows instead of objects.
    Holds on a locked account cannot change until commit (creating one locks it too)."""
    ids = sorted(set(account_ids))
    rows = session.connection().execute(_ACCOUNT_STATES, {"ids": ids, "now": now}).all()
    found = {a.id: a for a in rows}
    if len(found) != len(ids):
        missing = [i for i in ids if i not in found]
        raise ValidationFailed(f"unknown account(s): {', '.join(missing)}", field="account_id")
    return found


def validate_spec(spec: TransferSpec) -> None:
    check_amount(spec.amount)
    check_currency(spec.currency)
    validate_key(spec.idempotency_key)
    if spec.reason not in REASONS:
        raise ValidationFailed(f"unknown reason code {spec.reason!r}", field="reason")
    if spec.debit_account_id == spec.credit_account_id:
        raise ValidationFailed("debit and credit accounts must differ")


def post_transfers(
    session: Session, specs: Sequence[TransferSpec], *, enforce_floor: bool = True,
    check_replays: bool = True, now: datetime | None = None,
) -> list[Posted]:
    """Post a batch of transfers, all or nothing, in the caller's transaction.

    A spec whose idempotency key was already posted with the same payload is a replay and is
    returned as such; the same key with a different payload is a Conflict. A refused batch
    writes nothing.

    The transfers are posted at ``now``, or at the end of the last closed period of an
    account they touch if ``now`` is earlier (a caller whose clock lags, or a transaction
    that started before the period closed): a closed period never receives a transfer.
    """
    if not specs:
        return []
    columns = dict(zip(_SPEC_COLUMNS, map(list, zip(*specs, strict=True)), strict=True))
    ids, replayed = _post(session, columns, enforce_floor=enforce_floor,
                          check_replays=check_replays, now=now)
    return [Posted(i, k, k in replayed) for i, k in zip(ids, columns["idempotency_key"],
                                                         strict=True)]


def post_transfer_columns(
    session: Session, columns: dict[str, list[Any]], *, enforce_floor: bool = True,
    check_replays: bool = True, now: datetime | None = None,
) -> list[str]:
    """post_transfers for transfers given column by column (TransferSpec's fields in order,
    ``metadata_json`` holding each one's metadata mapping): what a caller posting thousands
    at once passes, without a tuple per transfer. Each transfer's id (a replay's is the one
    first posted)."""
    if not columns["idempotency_key"]:
        return []
    return _post(session, columns, enforce_floor=enforce_floor, check_replays=check_replays,
                 now=now)[0]


def _post(session: Session, columns: dict[str, list[Any]], *, enforce_floor: bool,
          check_replays: bool, now: datetime | None) -> tuple[list[str], set[str]]:
    """Each transfer's id, in order, and the keys that were replays."""
    now = now or utcnow()
    columns = _validated(columns)
    keys = columns["idempotency_key"]
    accounts = _lock_account_states(
        session, {*columns["debit_account_id"], *columns["credit_account_id"]}, now)
    # Read under the accounts' locks, which closing a period also takes: a close either saw
    # this batch or committed before it, and then its end is the earliest posting time.
    closed = [a.closed_through for a in accounts.values() if a.closed_through is not None]
    if closed and max(closed) > now:
        now = max(closed)
    if check_replays:
        # Optimistic: batches are nearly always all new. Insert them in a savepoint; if no
        # unique key clashed there was no replay, and the look-up of 1,000 keys is saved.
        # A plain INSERT, not ON CONFLICT DO NOTHING: PostgreSQL's speculative insertion
        # costs more than the rare retry below.
        savepoint = session.begin_nested()
        try:
            ids = _post_new(session, columns, accounts, enforce_floor, now, optimistic=True)
        except IntegrityError:
            savepoint.rollback()  # a key posted before (or another unique clash): look
        except BaseException:
            savepoint.rollback()
            raise
        else:
            savepoint.commit()
            return ids, set()
    replays: dict[str, _Existing] = {}
    if check_replays:
        replays = _existing_by_key(session, keys)
        # A replay is the same transfer in every column a caller fills (its reference,
        # note and links too): any difference is another request under a used key.
        for i, key in enumerate(keys):
            old = replays.get(key)
            if old is not None and old.payload != tuple(columns[c][i] for c in _SPEC_COLUMNS):
                raise Conflict(f"idempotency key {key!r} was already used for a different "
                               "transfer", transfer_id=old.id)
    fresh = [i for i, key in enumerate(keys) if key not in replays]
    if len(fresh) != len(keys):
        columns = {name: [values[i] for i in fresh] for name, values in columns.items()}
    stored = dict(zip(
        columns["idempotency_key"],
        _post_new(session, columns, accounts, enforce_floor, now, optimistic=False),
        strict=True)) if fresh else {}
    return [replays[k].id if k in replays else stored[k] for k in keys], set(replays)


def _validated(columns: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """The transfer columns (name -> one value per transfer), validated set by set, metadata
    as stored (JSON).

    Each rule of validate_spec is checked over a whole column at once (C-speed set and map
    operations, where a loop over thousands of specs would cost more than inserting them);
    on any doubt validate_spec names the first bad spec.
    """
    amounts, keys = columns["amount"], columns["idempotency_key"]
    currencies, reasons = columns["currency"], columns["reason"]
    ok = (set(map(type, amounts)) == {int} and min(amounts) > 0 and max(amounts) <= MAX_AMOUNT
          and set(map(type, currencies)) == {str} and set(currencies) <= CURRENCIES
          and set(map(type, reasons)) == {str} and set(reasons) <= REASONS
          and set(map(type, keys)) == {str} and min(map(len, keys)) > 0
          and max(map(len, keys)) <= MAX_KEY_LENGTH and all(map(str.isprintable, keys))
          and not any(map(eq, columns["debit_account_id"], columns["credit_account_id"])))
    if not ok:
        for spec in zip(*(columns[c] for c in _SPEC_COLUMNS), strict=True):
            validate_spec(TransferSpec(*spec))
    if len(set(keys)) != len(keys):
        seen: set[str] = set()
        repeated = next(k for k in keys if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise ValidationFailed(f"idempotency key {repeated!r} repeats in the batch")
    metadata = columns["metadata_json"]
    return {**columns, "metadata_json": ["{}" if not m else json.dumps(
        dict(m), sort_keys=True, default=str) for m in metadata]}


def _post_new(session: Session, columns: dict[str, list[Any]], accounts: Mapping[str, Any],
              enforce_floor: bool, now: datetime, *, optimistic: bool) -> list[str]:
    """Insert transfers believed new (as columns) and update the cache; their ids, in
    order. When ``optimistic``, the balance rules are checked after the insert (the caller
    undoes its savepoint if they refuse the batch)."""
    debit_col, credit_col = columns["debit_account_id"], columns["credit_account_id"]
    amounts, currencies = columns["amount"], columns["currency"]
    for account_id, currency in {*zip(debit_col, currencies, strict=True),
                                 *zip(credit_col, currencies, strict=True)}:
        if accounts[account_id].currency != currency:
            raise ValidationFailed(
                f"currency mismatch: transfer in {currency}, account {account_id} holds "
                f"{accounts[account_id].currency}", field="currency")
    debits: dict[str, int] = defaultdict(int)
    credits: dict[str, int] = defaultdict(int)
    for account_id, amount in zip(debit_col, amounts, strict=True):
        debits[account_id] += amount
    for account_id, amount in zip(credit_col, amounts, strict=True):
        credits[account_id] += amount
    touched = {a: accounts[a] for a in debits.keys() | credits.keys()}
    if not optimistic:  # check before writing: a refused batch writes nothing
        _check_all(touched, debits, credits, enforce_floor)
    n = len(amounts)
    ids = new_ids("xfer", n)
    bulk.insert_columns(session.connection(), TransferModel.__table__, {
        **columns, "id": ids, "posted_at": [now] * n,
        "debit_key": list(map(account_key, debit_col)),
        "credit_key": list(map(account_key, credit_col))})
    if optimistic:
        _check_all(touched, debits, credits, enforce_floor)
    apply_to_cache(session, touched, debits, credits)
    return ids


def _check_all(accounts: Mapping[str, Any], debits: Mapping[str, int],
               credits: Mapping[str, int], enforce_floor: bool) -> None:
    for account_id, acct in accounts.items():
        _check_constraints(acct, debits.get(account_id, 0), credits.get(account_id, 0),
                           held=acct.held, enforce_floor=enforce_floor)


def apply_to_cache(session: Session, accounts: Mapping[str, Any],
                   debits: Mapping[str, int], credits: Mapping[str, int]) -> None:
    """Write the new totals of locked accounts: one set-based UPDATE for all of them.

    Absolute values are safe because the caller holds the rows' locks (PostgreSQL) or the
    database's write lock (SQLite) since it read them.
    """
    rows = [{"id": a, "debits_posted": accounts[a].debits_posted + debits.get(a, 0),
             "credits_posted": accounts[a].credits_posted + credits.get(a, 0)}
            for a in sorted(set(debits) | set(credits))]
    bulk.update_rows(session.connection(), AccountModel.__table__, "id", rows)
    # The UPDATE bypassed the ORM: refresh the totals of account objects this session holds.
    for row in rows if session.identity_map else ():
        acct = session.identity_map.get(identity_key(AccountModel, row["id"]))
        if acct is not None:
            set_committed_value(acct, "debits_posted", row["debits_posted"])
            set_committed_value(acct, "credits_posted", row["credits_posted"])


def _check_constraints(acct: Any, debit: int, credit: int, *, held: int,
                       enforce_floor: bool) -> None:
    after = normal_balance(acct.type, acct.debits_posted + debit, acct.credits_posted + credit)
    before = normal_balance(acct.type, acct.debits_posted, acct.credits_posted)
    if acct.strict_non_negative and after < 0:
        raise Conflict(f"account {acct.id} may not go below zero", account_id=acct.id)
    if enforce_floor and acct.enforce_floor and after < before:
        available = after - held
        if available < -acct.credit_limit:
            raise Conflict(
                f"insufficient funds in account {acct.id}: available after this transfer "
                f"would be {available}, the floor is {-acct.credit_limit}",
                account_id=acct.id)


@dataclass(frozen=True)
class _Existing:
    id: str
    payload: tuple[Any, ...]  # the stored _SPEC_COLUMNS, as _validated builds them


def _existing_by_key(session: Session, keys: Iterable[str]) -> dict[str, _Existing]:
    keys = list(keys)
    T = TransferModel
    out: dict[str, _Existing] = {}
    conn = session.connection()
    cols = [T.__table__.c[c] for c in _SPEC_COLUMNS]
    for i in range(0, len(keys), 500):
        for row in conn.execute(select(T.id, *cols).where(
                bulk.in_values(T.idempotency_key, "keys")), {"keys": keys[i:i + 500]}):
            payload = tuple(row[1:])
            out[payload[_SPEC_COLUMNS.index("idempotency_key")]] = _Existing(row[0], payload)
    return out


def get_transfer(session: Session, transfer_id: str) -> TransferModel:
    m = session.scalar(select(TransferModel).where(TransferModel.id == transfer_id))
    if m is None:
        raise NotFound(f"transfer {transfer_id} not found")
    return m


def list_transfers(session: Session, account_id: str, *, limit: int = 100,
                   after_seq: int = 0) -> list[Transfer]:
    rows = session.scalars(select(TransferModel).where(
        touches(account_id), TransferModel.seq > after_seq)
        .order_by(TransferModel.seq).limit(limit))
    return [transfer_model_to_transfer(m) for m in rows]


def reverse_transfer(session: Session, *, actor: audit.Actor, transfer_id: str,
                     note: str, idempotency_key: str | None = None) -> Transfer:
    """Correct a transfer by posting its mirror image; a transfer is reversed at most once."""
    original = get_transfer(session, transfer_id)
    if original.reverses_transfer_id is not None:
        raise ValidationFailed("a reversal cannot itself be reversed; post a new transfer")
    key = idempotency_key or f"reversal:{original.id}"
    already = session.scalar(select(TransferModel).where(
        TransferModel.reverses_transfer_id == original.id))
    if already is not None:
        if already.idempotency_key == key:
            return transfer_model_to_transfer(already)
        raise Conflict(f"transfer {original.id} was already reversed by {already.id}")
    [posted] = post_transfers(session, [TransferSpec(
        debit_account_id=original.credit_account_id,
        credit_account_id=original.debit_account_id, amount=original.amount,
        currency=original.currency, idempotency_key=key, reason="reversal",
        cause_type="transfer", cause_id=original.id, reverses_transfer_id=original.id,
        metadata={"note": note})], enforce_floor=False)
    audit.record(session, actor=actor, action="billing.transfer.reverse",
                 target_type="transfer", target_id=original.id,
                 details={"reversal_id": posted.id, "amount": original.amount,
                          "currency": original.currency, "note": note})
    return transfer_model_to_transfer(get_transfer(session, posted.id))
