"""``ledger check``: recompute everything derived from the transfers and name each difference."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from aicloud.platform import audit
from aicloud.platform.billing.closings import (
    PeriodActivity,
    next_period,
    period_column,
    period_of,
    previous_period,
)
from aicloud.platform.billing.digest import LedgerDigest, ledger_digests_at
from aicloud.platform.billing.ledger import account_key, normal_balance
from aicloud.platform.billing.models import (
    AccountModel,
    HoldModel,
    PeriodClosingModel,
    TransferModel,
    UsageRecordModel,
)
from aicloud.platform.billing.schemas import Discrepancy, LedgerCheck


def check_ledger(session: Session, *, published: audit.Published | None = None) -> LedgerCheck:
    """Everything the transfers imply, and with ``published`` (signed checkpoints read from a
    sink outside the database) that the transfers still hash to every published digest.

    Without ``published`` a consistent edit is invisible: change a transfer's amount or
    account, or forge one, and fix the balance caches to match, and every sum agrees."""
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
    found.extend(_check_closings(session, accounts))
    if published is not None:
        found.extend(_against(session, published))
    return LedgerCheck(ok=not found, accounts=len(accounts), transfers=int(transfer_count),
                       discrepancies=found,
                       published_sink=published.sink if published else None,
                       published_checked=len(published.checkpoints) if published else None)


def _check_closings(session: Session, accounts: dict[str, AccountModel]) -> list[Discrepancy]:
    """Every closing recomputed from the transfers: the cumulative totals at the month's
    end, its seq bounds, and rows exactly from the account's first month to its last closed
    one (a transfer posted into a closed month shows as a mismatch)."""
    C, T = PeriodClosingModel, TransferModel
    stored: dict[str, dict[str, PeriodClosingModel]] = defaultdict(dict)
    for c in session.scalars(select(C)):
        stored[c.account_id][c.period] = c
    closed = {a.id: previous_period(period_of(a.closed_through))
              for a in accounts.values() if a.closed_through is not None}
    out: list[Discrepancy] = []
    if not stored and not closed:
        return out
    month = period_column(session)
    activity: dict[str, dict[str, PeriodActivity]] = defaultdict(dict)
    for account_col, debit in ((T.debit_account_id, True), (T.credit_account_id, False)):
        for account_id, period, total, n, lo, hi in session.execute(
                select(account_col, month, func.sum(T.amount), func.count(), func.min(T.seq),
                       func.max(T.seq)).group_by(account_col, month)):
            if account_id in closed or account_id in stored:
                total = int(total)
                activity[account_id].setdefault(period, PeriodActivity()).add(
                    total if debit else 0, 0 if debit else total, int(n), int(lo), int(hi))
    for account_id in sorted(set(stored) | set(closed)):
        rows, months = stored.get(account_id, {}), activity.get(account_id, {})
        last = closed.get(account_id)
        started = [p for p in months if last is not None and p <= last]
        expected: list[str] = []
        period = min(started) if started else None
        while period is not None and last is not None and period <= last:
            expected.append(period)
            period = next_period(period)
        for p in sorted(set(rows) - set(expected)):
            out.append(Discrepancy(code="closing-orphan", subject=account_id, message=(
                f"account {account_id} has a closing for {p}, outside its closed months "
                f"({expected[0] + '..' + expected[-1] if expected else 'none'})")))
        d = c_ = n = last_seq = 0
        for p in expected:
            a = months.get(p)
            if a is not None:
                d, c_, n, last_seq = d + a.debits, c_ + a.credits, n + a.transfers, max(
                    last_seq, a.max_seq)
            row = rows.get(p)
            if row is None:
                out.append(Discrepancy(code="closing-missing", subject=account_id, message=(
                    f"account {account_id} is closed through {last} but has no closing "
                    f"for {p}")))
                continue
            later = min((x.min_seq for q, x in months.items()
                         if q > p and x.min_seq is not None), default=None)
            # next_seq may be low (it only bounds a search), never above a later month's seq.
            if ((row.debits, row.credits, row.transfers, row.last_seq) != (d, c_, n, last_seq)
                    or (later is not None and row.next_seq > later)):
                out.append(Discrepancy(code="closing-mismatch", subject=account_id, message=(
                    f"account {account_id}, closing of {p}: stored debits/credits "
                    f"{row.debits}/{row.credits} over {row.transfers} transfer(s), seqs "
                    f"..{row.last_seq} next {row.next_seq}; recomputed from transfers "
                    f"{d}/{c_} over {n}, seqs ..{last_seq} next "
                    f"{'<= ' + str(later) if later is not None else 'any'}")))
    return out


def _against(session: Session, published: audit.Published) -> list[Discrepancy]:
    """Recompute the digest from scratch at every published point and compare."""
    out = [Discrepancy(code="anchor-invalid", message=f"{published.sink}: {p}")
           for p in published.problems]
    signed = [(cp, LedgerDigest.from_dict(cp.contributions["ledger"]))
              for cp in published.checkpoints if "ledger" in (cp.contributions or {})]
    now = ledger_digests_at(session, (d.last_seq for _, d in signed))
    good: LedgerDigest | None = None
    for cp, want in sorted(signed, key=lambda x: (x[1].last_seq, x[1].transfers)):
        got = now[want.last_seq]
        if got == want:
            good = want
            continue
        since = (f"after seq {good.last_seq} (the last published point that still matches)"
                 if good else "from the first transfer")
        where = f"checkpoint {cp.id} published in {published.sink}"
        if got.transfers < want.transfers or got.last_seq < want.last_seq:
            out.append(Discrepancy(
                code="ledger-rolled-back", subject=cp.id, message=(
                    f"{where} signed {want.transfers} transfer(s) up to seq {want.last_seq}; "
                    f"the database has {got.transfers} up to seq {got.last_seq}: transfers "
                    f"{since} were deleted")))
        else:
            out.append(Discrepancy(
                code="ledger-digest-mismatch", subject=cp.id, message=(
                    f"{where} signed digest {want.digest[:16]}… over {want.transfers} "
                    f"transfer(s) up to seq {want.last_seq}; recomputed {got.digest[:16]}… over "
                    f"{got.transfers}: a transfer {since} was edited (amount, account), forged "
                    "or replaced")))
        break  # every later point differs too; the first one says where it started
    return out
