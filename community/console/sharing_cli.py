"""``carehub platform sharing``: a resident's sharing level, as the resident decided it (issue 18 item 5).

Without a sharing setting a resident is visible to nobody in the console (:func:`community.console.accounts.access`).
Each change is written to the audit log, with the operating-system user who made it as the actor.
"""

from __future__ import annotations

import datetime as _dt
import getpass
from pathlib import Path
from typing import Annotated

import typer

from community.config import PlatformConfigError, load_platform_config
from community.console.accounts import AccountError, AccountStore, Sharing, SharingLevel, accounts_path
from community.console.audit import AuditError, AuditLog, SqliteAuditStore, audit_path

__all__ = ["app"]

app = typer.Typer(help="Residents' sharing levels (who sees them in the console).", no_args_is_help=True)
_ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="The platform's TOML config file.")]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    return typer.Exit(2)


def _database(config: Path) -> Path:
    try:
        return load_platform_config(config).database
    except PlatformConfigError as exc:
        raise _fail(str(exc)) from None


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


@app.command("set")
def set_command(
    resident: Annotated[str, typer.Argument(help="The resident's id (as the hub names them).")],
    config: _ConfigOption,
    doctor: Annotated[str, typer.Option("--doctor", help="The resident's family doctor (a doctor's account).")],
    level: Annotated[SharingLevel, typer.Option("--level", help="own-doctor, care-team or family.")],
    family: Annotated[
        str | None, typer.Option("--family", help="The family member who sees status only (with --level family).")
    ] = None,
) -> None:
    """Set who may see a resident: their doctor only, the care team, or the care team and one family member."""
    database = _database(config)
    try:
        with AccountStore(accounts_path(database), _now) as accounts, SqliteAuditStore(audit_path(database)) as log:
            accounts.set_sharing(Sharing(resident, doctor, level, family))
            detail = f"doctor={doctor} level={level.value}" + (f" family={family}" if family else "")
            AuditLog(log, _now).record(getpass.getuser(), "sharing.set", resident, detail)
    except (AccountError, AuditError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"sharing of {resident}: {detail}")


@app.command("show")
def show_command(
    resident: Annotated[str, typer.Argument(help="The resident's id.")],
    config: _ConfigOption,
) -> None:
    """Show a resident's sharing setting (exit 1 when there is none: nobody sees them)."""
    try:
        with AccountStore(accounts_path(_database(config)), _now) as accounts:
            sharing = accounts.sharing(resident)
    except AccountError as exc:
        raise _fail(str(exc)) from None
    if sharing is None:
        typer.echo(f"{resident}: no sharing setting; nobody sees this resident in the console")
        raise typer.Exit(1)
    family = f" family={sharing.family_member}" if sharing.family_member else ""
    typer.echo(f"{resident}: doctor={sharing.doctor} level={sharing.level.value}{family}")
