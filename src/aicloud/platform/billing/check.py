"""``ledger check``: recompute everything derived from the transfers and name each difference."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from aicloud.platform.billing.ledger import account_key, normal_balance
from aicloud.platform.billing.models import (
    AccountModel,
    HoldModel,
    TransferModel,
    UsageRecordModel,
)
from aicloud.platform.billing.schemas import Discrepancy, LedgerCheck


def check_ledger(session: Session) -> LedgerCheck:
    found: list[Discrepancy] = []

    def bad(code: str, message: str, subject: str | None = None) -> None:
        found.append(Discrepancy(code=code, message=message, subject=subject))

    accounts = {a.id: a for a in session.scalars(select(AccountModel))}
    T = TransferModel
    debits: dict[str, int] = defaultdict(int)
    credits: dict[str, int] = defaultdict(int)
    for side, account_col, key_col, sums in (("debit", T.debit_account_id, T.debit_key, debits),
                                             ("credit", T.credit_account_id, T.credit_key,
                                              credits)):
        for account_id, key, total, n in session.execute(
                select(account_col, key_col, func.sum(T.amount), func.count())
                .group_by(account_col, key_col)):
            sums[account_id] += int(total)
            if key != account_key(account_id):
                # Such transfers are missing from the account's history and statements.
                bad("account-key-mismatch", f"{n} transfer(s) carry {side} key {key} for "
                    f"account {account_id}, whose key is {account_key(account_id)}",
                    account_id)
    transfer_count = session.scalar(select(func.count()).select_from(T)) or 0

    for account_id in sorted(set(debits) | set(credits)):
        if account_id not in accounts:
            bad("unknown-account", f"transfers name account {account_id}, which does not exist",
                account_id)
    for a in sorted(accounts.values(), key=lambda a: a.id):
        d, c = debits.get(a.id, 0), credits.get(a.id, 0)
        if (a.debits_posted, a.credits_posted) != (d, c):
            bad("balance-cache-mismatch",
                f"account {a.id}: cached debits/credits {a.debits_posted}/{a.credits_posted}, "
                f"recomputed from transfers {d}/{c}", a.id)
        if a.strict_non_negative and normal_balance(a.type, d, c) < 0:
            bad("constraint-breached", f"account {a.id} must not go below zero but its "
                f"balance is {normal_balance(a.type, d, c)}", a.id)

    # Double entry: per currency, debits equal credits, in the transfers and in the cache.
    for source, sides in (("transfers", lambda a: (debits.get(a.id, 0), credits.get(a.id, 0))),
                          ("balance cache", lambda a: (a.debits_posted, a.credits_posted))):
        per_currency: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for a in accounts.values():
            d, c = sides(a)
            per_currency[a.currency][0] += d
            per_currency[a.currency][1] += c
        for currency, (d, c) in sorted(per_currency.items()):
            if d != c:
                bad("unbalanced-currency",
                    f"{source}, {currency}: total debits {d} != total credits {c}", currency)
        total_d = sum(v[0] for v in per_currency.values())
        total_c = sum(v[1] for v in per_currency.values())
        if total_d != total_c:
            bad("unbalanced-total", f"{source}: total debits {total_d} != total credits "
                f"{total_c}")

    for row in session.execute(select(T.id, T.currency, T.debit_account_id, T.credit_account_id)):
        for account_id in (row.debit_account_id, row.credit_account_id):
            a = accounts.get(account_id)
            if a is not None and a.currency != row.currency:
                bad("currency-mismatch", f"transfer {row.id} in {row.currency} touches "
                    f"account {account_id} in {a.currency}", row.id)
    for key, n in session.execute(select(T.idempotency_key, func.count()).group_by(
            T.idempotency_key).having(func.count() > 1)):
        bad("duplicate-idempotency-key", f"idempotency key {key!r} is used by {n} transfers",
            key)
    for tid, amount in session.execute(select(T.id, T.amount).where(T.amount <= 0)):
        bad("non-positive-amount", f"transfer {tid} has amount {amount}", tid)

    # Holds never post more than they reserved.
    posted_by_hold = dict(session.execute(select(T.hold_id, func.sum(T.amount)).where(
        T.hold_id.is_not(None)).group_by(T.hold_id)).all())
    for h in session.scalars(select(HoldModel)):
        total = int(posted_by_hold.get(h.id, 0))
        if total != h.posted_amount or total > h.amount:
            bad("hold-mismatch", f"hold {h.id}: amount {h.amount}, recorded posted "
                f"{h.posted_amount}, transfers post {total}", h.id)

    # Usage: every rated record with a charge has exactly one transfer of that amount.
    U = UsageRecordModel
    charged = dict(session.execute(select(T.usage_id, T.amount).where(
        T.usage_id.is_not(None))).all())
    for uid, state, charge in session.execute(select(U.id, U.state, U.charge)):
        got = charged.pop(uid, None)
        want = charge if state == 1 and charge else None
        if got != want:
            bad("usage-charge-mismatch", f"usage {uid}: rated charge {want}, ledger has "
                f"{got}", uid)
    for uid in sorted(charged):
        bad("usage-charge-orphan", f"a transfer charges usage {uid}, which does not exist",
            uid)
    return LedgerCheck(ok=not found, accounts=len(accounts), transfers=int(transfer_count),
                       discrepancies=found)
