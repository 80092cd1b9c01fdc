"""``aicloud audit``: verify the audit chain, sign checkpoints, export (acts on the database
directly, so it works with the API down)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from aicloud.cli.common import ProfileOption, context_or_exit
from aicloud.cli.output import OutputFormat, OutputOption, console, emit, err_console, fail
from aicloud.platform import access, audit
from aicloud.runtime import AppContext
from aicloud.shared.config import ConfigError
from aicloud.shared.db import migrate
from aicloud.shared.errors import ValidationFailed

app = typer.Typer(help="The hash-chained audit log: verify, seal, checkpoint, export; "
                  "replay terminal recordings.",
                  no_args_is_help=True)

# Below this many events a progress bar would only flicker.
PROGRESS_THRESHOLD = 20_000


def _migrated_context(profile: str | None) -> AppContext:
    ctx = context_or_exit(profile)
    if not migrate.is_up_to_date(ctx.db):
        raise fail("the database schema is not at head; run `aicloud db upgrade` first", 2)
    return ctx


def _signing_key(ctx: AppContext) -> audit.SigningKey:
    try:
        key = audit.signing_key(ctx.settings)
    except ConfigError as exc:
        raise fail(str(exc), 2) from None
    if key.derived:
        err_console.print("[yellow]note:[/yellow] audit_signing_key is not set; using the "
                          "development key derived from secret_key")
    return key


def _trusted(ctx: AppContext) -> dict[str, Ed25519PublicKey]:
    try:
        return audit.trusted_public_keys(ctx.settings)
    except ConfigError as exc:
        raise fail(str(exc), 2) from None


AgainstOption = Annotated[str | None, typer.Option(
    "--against", metavar="SINK",
    help="Also compare with the signed checkpoints published in SINK (dir:PATH or a "
         "directory, e.g. the profile's audit_anchor_sink): detects rollbacks, truncation "
         "and consistent rewrites up to the last publication.")]


def read_anchors(ctx: AppContext, spec: str) -> audit.Published:
    """The checkpoints published in ``spec``, each verified with the trusted keys (exit 2
    when the sink cannot be read; used by `ledger check --against` too)."""
    try:
        sink = audit.open_sink(spec)
    except ValueError as exc:
        raise fail(str(exc), 2) from None
    if isinstance(sink, audit.DirectorySink) and not sink.root.is_dir():
        raise fail(f"--against: {sink.root} is not a directory", 2)
    published = audit.read_published(sink, _trusted(ctx))
    if not published.checkpoints and not published.problems:
        err_console.print(f"[yellow]note:[/yellow] {sink.description} holds no published "
                          "checkpoint; there is nothing to compare with")
    return published


def _time(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise fail(f"{name}: not an ISO 8601 time (e.g. 2026-11-23T10:00:00Z)", 2) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@app.command()
def verify(
    profile: ProfileOption = None,
    output: OutputOption = OutputFormat.table,
    batch_size: Annotated[int, typer.Option(min=100, help="Events read per query.")] = 5000,
    against: AgainstOption = None,
    unsealed_bound: Annotated[float, typer.Option(
        "--unsealed-bound", min=0, metavar="SECONDS",
        help="An event still unsealed this long after it occurred is a problem (the sealer "
             "stopped).")] = audit.DEFAULT_UNSEALED_BOUND,
) -> None:
    """Recompute the whole chain, the head and every checkpoint; exit 1 at the first broken
    link, naming it, or when events have waited too long to be sealed. Without --against, a
    rollback to an earlier consistent state (tail and newest checkpoints removed, or
    everything emptied) cannot be told from a younger log."""
    ctx = _migrated_context(profile)
    trusted = _trusted(ctx)
    published = read_anchors(ctx, against) if against is not None else None
    progress = Progress(TextColumn("verifying"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=err_console, transient=True)
    task = progress.add_task("verify", total=None)
    started = False

    def on_progress(done: int, total: int) -> None:
        nonlocal started
        if output == OutputFormat.table and total >= PROGRESS_THRESHOLD:
            if not started:
                progress.start()
                started = True
            progress.update(task, completed=done, total=total)

    try:
        result = audit.verify_chain(ctx.db, trusted, batch_size=batch_size,
                                    on_progress=on_progress, published=published,
                                    unsealed_bound_seconds=unsealed_bound)
    finally:
        if started:
            progress.stop()
    if output == OutputFormat.json:
        emit(result.to_dict(), output)
    elif result.ok:
        console.print(f"[green]ok[/green]: {result.events_checked} event(s) chain to "
                      f"{result.last_hash[:16]}…, head row consistent, "
                      f"{result.checkpoints_checked} checkpoint(s) verified"
                      + (f", {result.published_checked} published checkpoint(s) in "
                         f"{result.published_sink} match" if published is not None else "")
                      + (f", {result.unsealed} event(s) not sealed yet (oldest "
                         f"{result.oldest_unsealed_age_seconds:.1f}s)" if result.unsealed
                         else ""))
    else:
        brk = result.first_break
        assert brk is not None
        console.print(f"[red]BROKEN[/red] after {result.events_checked} good event(s): "
                      f"first broken link at seq {brk.seq if brk.seq is not None else '-'} "
                      f"(event {brk.event_id or '-'}), kind [bold]{brk.kind}[/bold]")
        console.print(f"  {brk.message}")
    if not result.ok:
        raise typer.Exit(1)


@app.command()
def seal(profile: ProfileOption = None, output: OutputOption = OutputFormat.table) -> None:
    """Chain every committed, unsealed event now (what the audit-sealer controller does a few
    times a second); safe beside running sealers: they take turns."""
    ctx = _migrated_context(profile)
    try:
        n = audit.seal_pending(ctx.db)
    except audit.AuditChainBroken as exc:
        raise fail(str(exc)) from None
    emit({"sealed": n}, output)


@app.command()
def checkpoint(profile: ProfileOption = None, output: OutputOption = OutputFormat.table) -> None:
    """Sign a checkpoint of the current chain head and ledger digest now, and publish it to
    the profile's audit_anchor_sink."""
    ctx = _migrated_context(profile)
    _signing_key(ctx)  # a missing key fails here with exit 2; a derived one is announced
    sink = ctx.anchor_sink
    try:
        cp = ctx.audit_checkpoint(only_if_advanced=False)
    except audit.AuditChainBroken as exc:
        raise fail(str(exc)) from None
    except (OSError, audit.AnchorConflict) as exc:
        raise fail(f"the checkpoint was signed but not published to "
                   f"{sink.description if sink else '-'}: {exc}") from None
    if cp is None:
        raise fail("the audit chain is empty; there is nothing to sign yet")
    if sink is None:
        err_console.print("[yellow]note:[/yellow] audit_anchor_sink is not set; the checkpoint "
                          "is in the database only, which its owner can roll back")
    emit({**cp.to_dict(), "published_to": sink.description if sink else None}, output)


@app.command("public-key")
def public_key(profile: ProfileOption = None, output: OutputOption = OutputFormat.table) -> None:
    """Print the key that verifies checkpoints, for third parties to check them."""
    ctx = context_or_exit(profile)
    key = _signing_key(ctx)
    emit({"key_id": key.key_id, "algorithm": "Ed25519", "public_key": key.public_key_b64,
          "derived_development_key": key.derived,
          "trusted_earlier_keys": list(ctx.settings.audit_trusted_public_keys)}, output)


@app.command("generate-key")
def generate_key(output: OutputOption = OutputFormat.table) -> None:
    """Generate a new signing key to put in AICLOUD_AUDIT_SIGNING_KEY (printed once)."""
    private_b64 = audit.generate_key_b64()
    key = audit.SigningKey.from_b64(private_b64)
    emit({"audit_signing_key": private_b64, "key_id": key.key_id,
          "public_key": key.public_key_b64}, output)


@app.command()
def export(
    output_file: Annotated[Path, typer.Option("--output-file", "-f", help=(
        "JSON Lines file to write ('-' for standard output)."))],
    since: Annotated[str | None, typer.Option(help="Events at or after this ISO 8601 time "
                                                   "(UTC when no zone is given).")] = None,
    until: Annotated[str | None, typer.Option(help="Events before this time.")] = None,
    scope: Annotated[str | None, typer.Option(help="Only this scope path and below.")] = None,
    actor: Annotated[str | None, typer.Option(help="Only this actor id.")] = None,
    action: Annotated[str | None, typer.Option(
        help="Only this action; a trailing * matches a prefix (iam.user.*).")] = None,
    profile: ProfileOption = None,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Export events as JSON Lines, one canonical JSON event per line, in recording order
    (seq, prev_hash and hash are null on events not sealed yet)."""
    ctx = _migrated_context(profile)
    try:
        flt = audit.EventFilter(scope=scope, actor_id=actor, action=action,
                                since=_time(since, "--since"), until=_time(until, "--until"))
    except ValidationFailed as exc:
        raise fail(exc.detail, 2) from None
    to_stdout = str(output_file) == "-"
    count = 0
    with (open(1, "w", closefd=False) if to_stdout
          else output_file.open("w", encoding="utf-8")) as out, \
            err_console.status("exporting…") as status:
        for line in audit.iter_jsonl(ctx.db, allowed_scopes=None, filter=flt):
            out.write(line)
            count += 1
            if count % 5000 == 0:
                status.update(f"exporting… {count:,} event(s)")
    if to_stdout:
        return
    emit({"file": str(output_file), "events": count}, output)


@app.command("replay")
def replay_recording(
    recording: Annotated[Path, typer.Argument(
        metavar="RECORDING", help="A terminal session's asciicast v2 file (<session>.cast).")],
    sha256: Annotated[str | None, typer.Option(
        "--sha256", metavar="HEX",
        help="The digest recorded when the session ended (from its audit event). Without "
             "it, the .sha256 file beside the recording is used, which only shows the file "
             "is whole, not that nobody rewrote both.")] = None,
    speed: Annotated[float, typer.Option(min=0.01, help="Replay this many times faster.")] = 1.0,
    max_wait: Annotated[float, typer.Option(
        "--max-wait", min=0, metavar="SECONDS",
        help="Cap every pause at this (an idle hour replays in seconds).")] = 2.0,
    plain: Annotated[bool, typer.Option(
        "--plain", help="Print all the output at once, without the timing.")] = False,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Check a terminal recording against its digest and replay it (exit 1 when the file
    was altered, truncated or is not asciicast v2). Works on the file alone: no database."""
    expected = sha256 or access.sidecar_digest(recording)
    if expected is None:
        raise fail(f"no digest for {recording}: pass --sha256 (from the session's audit "
                   "event); without one nothing can tell an altered recording", 2)
    if sha256 is None:
        err_console.print("[yellow]note:[/yellow] checked against the digest file beside the "
                          "recording; pass --sha256 from the audit event to prove it unaltered")
    try:
        rec = access.read_recording(recording, sha256=expected)
    except access.RecordingInvalid as exc:
        raise fail(str(exc)) from None
    if output == OutputFormat.json:
        emit({"file": str(recording), "sha256": rec.digest.sha256, "size": rec.digest.size,
              "verified_against": "--sha256" if sha256 else "digest file",
              "width": rec.width, "height": rec.height,
              "timestamp": rec.header.get("timestamp"), "title": rec.header.get("title"),
              "duration_seconds": rec.duration,
              "events": {code: sum(1 for e in rec.events if e.code == code)
                         for code in ("o", "i", "r")},
              "output": rec.output()}, output)
        return
    out = sys.stdout
    if plain:
        out.write(rec.output())
    else:
        access.replay(rec, lambda text: (out.write(text), out.flush()), speed=speed,
                      max_wait=max_wait)
    out.flush()
    err_console.print(f"[green]ok[/green]: {recording} matches sha256 {rec.digest.sha256[:16]}…, "
                      f"{rec.width}x{rec.height}, {rec.duration:.1f}s")
