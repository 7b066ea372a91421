"""`bulwark kernels`: Bulwark's compiled int8 kernel (bulwark.kernels): where it is, which path it takes on
this CPU, and building it."""

from __future__ import annotations

import click

from bulwark.cli.output import emit


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def kernels(ctx: click.Context, as_json: bool) -> None:
    """The int8 kernel the quantizer's *-vnni forms call: built or not, and its path on this CPU."""
    if ctx.invoked_subcommand is None:
        from bulwark import kernels as lib

        info = lib.status()
        emit(info, as_json=as_json, rows=[info])


@kernels.command("build")
@click.option("--force", is_flag=True, help="Build again even if built.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def kernels_build(force: bool, as_json: bool) -> None:
    """Compile the kernel library against the installed torch (needs a C++ compiler; about 10 s)."""
    from bulwark import kernels as lib

    lib.build(force=force)
    info = lib.status()
    emit(info, as_json=as_json, rows=[info])


COMMANDS = [kernels]
